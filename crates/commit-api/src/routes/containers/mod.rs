//! Docker's container routes, read from containerd's containers and tasks
//! through the engine, one file per job: `list` (`docker ps` and its
//! filters), `inspect` (`docker inspect`), `spec` (the OCI runtime spec
//! read back as Docker's fields), `state` (Docker's state names and status
//! text). This file holds what both routes see of one container.
//!
//! # How containerd's records become Docker's
//! - **State** comes from the task: running, paused (listed as running, as
//!   Docker does), stopped (`exited`, with the task's exit status and time),
//!   no task or a task not started (`created`), unknown (`dead`).
//! - **Name** is the engine's: nerdctl's `nerdctl/name` label, else
//!   Kubernetes' `namespace/pod/container`, else the ID — the names the
//!   commit route resolves, so whatever `docker ps` shows, `docker commit`
//!   accepts.
//! - **Image** is the container's image record (familiar form); **ImageID**
//!   the image the engine finds it was made from (`ImageIndex::image_of`:
//!   by its snapshot's layers and when its name moved). When the record no
//!   longer leads there (retagged, e.g. by a commit to the same name), the
//!   summary's `Image` becomes that image's ID, as Docker's `refreshImage`
//!   does; `Config.Image` keeps the name.
//!
//! # Limits
//! - No ports, no networks (`NetworkSettings.Networks` is empty): CNI state
//!   is not containerd's.
//! - `size=1` fills `SizeRw`/`SizeRootFs` from the snapshotter's usage
//!   (see `routes::df`).
//! - `StartedAt` is the task process's start time as this host's `/proc`
//!   shows it; a start time before the container's creation (another pid
//!   namespace) is replaced by the creation time.

mod inspect;
mod list;
mod spec;
mod state;

use std::collections::BTreeMap;

use commit_engine::{ContainerRecord as Container, ImageIndex, ImageOf, TaskInfo};
use docker_format::image::Descriptor;
use docker_format::reference::familiar_name;
use oci_spec::runtime::Spec;

pub(crate) use inspect::get_route;
pub(crate) use list::{all_with_sizes, list};

use crate::Api;
use crate::error::ApiError;
use crate::version::compare;
use crate::views::containers as v;
use spec::{MountedFiles, mount_points, process, sorted};
use state::state_name;

/// One container, as both routes see it.
struct Seen {
    ct: Container,
    task: TaskInfo,
    name: String,
    /// The image it was made from (the engine's rule).
    image: ImageOf,
    /// The summary's `Image`: the record's familiar name, or the image's ID
    /// when the name no longer leads to it (or there is none).
    image_text: String,
    /// Container labels over the image's (Docker merges them at create).
    labels: BTreeMap<String, String>,
    mounts: Vec<v::MountPoint>,
    files: MountedFiles,
}

impl Seen {
    fn new(ct: Container, task: TaskInfo, image: ImageOf, images: &ImageIndex) -> Self {
        let mut labels: BTreeMap<String, String> = images
            .get(&image)
            .and_then(|e| e.config().config.as_ref())
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        labels.extend(ct.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (mounts, files) = mount_points(ct.spec.as_ref());
        let image_text = if ct.image.is_empty() || (image.moved && !image.id.is_empty()) {
            image.id.clone()
        } else {
            familiar_name(&ct.image).to_string()
        };
        Self {
            name: ct.name.clone(),
            task,
            image,
            image_text,
            labels,
            mounts,
            files,
            ct,
        }
    }

    fn spec(&self) -> Option<&Spec> {
        self.ct.spec.as_ref()
    }

    fn args(&self) -> &[String] {
        process(self.spec())
            .and_then(|p| p.args().as_deref())
            .unwrap_or_default()
    }

    fn created(&self) -> i64 {
        self.ct.created.map(|(s, _)| s).unwrap_or(0)
    }

    fn state(&self) -> &'static str {
        state_name(&self.task)
    }

    /// The image's manifest, as Docker's `ImageManifestDescriptor`.
    fn manifest_descriptor(&self, images: &ImageIndex) -> Option<Descriptor> {
        let e = images.get(&self.image)?;
        let mut d = e.resolved.manifest_descriptor.clone();
        if d.platform.is_none() {
            let cfg = e.config();
            d.platform = Some(docker_format::image::Platform {
                architecture: cfg.architecture.clone(),
                os: cfg.os.clone(),
                os_version: None,
                variant: cfg.variant.clone(),
            });
        }
        Some(d)
    }
}

async fn see(api: &Api, ct: Container, images: &ImageIndex) -> Result<Seen, ApiError> {
    let containers = api.engine().containers();
    let (task, image) = tokio::join!(containers.task(&ct.id), containers.image_of(&ct, images));
    Ok(Seen::new(ct, task?, image, images))
}

/// `ImageManifestDescriptor`, from API 1.48 on.
fn manifest_for(s: &Seen, images: &ImageIndex, version: &str) -> Option<Descriptor> {
    if compare(version, "1.48").is_lt() {
        return None;
    }
    s.manifest_descriptor(images)
}

// ---------------------------------------------------------------------------

/// The spec's annotations, from API 1.46 on (`HostConfig.Annotations`).
fn annotations(spec: Option<&Spec>, version: &str) -> Option<BTreeMap<String, String>> {
    if compare(version, "1.46").is_lt() {
        return None;
    }
    sorted(spec.and_then(|s| s.annotations().as_ref()))
}

#[cfg(test)]
mod fixtures {
    //! Containers and tasks as the engine hands them over.

    use commit_engine::{ContainerRecord as Container, ImageIndex, ImageOf, TaskInfo, TaskState};
    use oci_spec::runtime::Spec;
    use serde_json::Value;

    use super::Seen;

    /// A spec from its JSON (`null`: none).
    pub(super) fn spec(v: Value) -> Option<Spec> {
        (!v.is_null()).then(|| serde_json::from_value(v).unwrap())
    }

    pub(super) fn to_json(v: impl serde::Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    pub(super) fn task(state: TaskState) -> TaskInfo {
        TaskInfo {
            state: Some(state),
            ..Default::default()
        }
    }

    /// A container named by its ID (see [`named`]).
    pub(super) fn container(id: &str, labels: &[(&str, &str)], json_spec: Value) -> Container {
        Container {
            id: id.into(),
            name: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            snapshotter: "overlayfs".into(),
            runtime: "io.containerd.runc.v2".into(),
            spec: spec(json_spec),
            ..Default::default()
        }
    }

    /// A container with the name the engine gave it (the engine's own
    /// tests hold how it names one).
    pub(super) fn named(name: &str, ct: Container) -> Container {
        Container {
            name: name.into(),
            ..ct
        }
    }

    pub(super) fn seen(ct: Container, t: TaskInfo) -> Seen {
        Seen::new(ct, t, ImageOf::default(), &ImageIndex::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{container, task};
    use super::*;
    use commit_engine::TaskState;
    use serde_json::{Value, json};

    fn entry(id: &str, diff_id: &str, records: &[(&str, i64)]) -> commit_engine::Image {
        let manifest: docker_format::image::Manifest = serde_json::from_value(json!({
            "schemaVersion": 2,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": id, "size": 2 },
            "layers": [],
        }))
        .unwrap();
        let config: docker_format::image::ImageConfig = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Labels": { "from": "image", "team": "image" } },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        }))
        .unwrap();
        let records = records
            .iter()
            .map(|(name, updated)| commit_engine::ImageRecord {
                name: name.to_string(),
                updated_at: Some(*updated),
                dangling: false,
            })
            .collect();
        commit_engine::Image {
            id: id.into(),
            records,
            resolved: std::sync::Arc::new(commit_engine::Resolved {
                target: manifest.config.clone(),
                manifest_descriptor: manifest.config.clone(),
                manifest,
                config,
            }),
        }
    }

    fn made_at(mut ct: Container, image: &str, created: i64) -> Container {
        ct.image = image.into();
        ct.created = Some((created, 0));
        ct
    }

    #[test]
    fn summaries_name_the_image_as_docker_does() {
        // `app:1` was moved at 200 from A to B, an empty commit of A (same
        // layers). Which image is the container's is the engine's rule
        // (its tests hold it); what the summary shows of it is Docker's.
        let images = ImageIndex::new(vec![
            entry("sha256:a", "sha256:l1", &[("moby-dangling@sha256:m", 200)]),
            entry("sha256:b", "sha256:l1", &[("docker.io/library/app:1", 200)]),
        ]);
        let seen = |image: &str, created: i64, parent: Option<&str>| {
            let ct = made_at(
                container("x", &[("team", "infra")], Value::Null),
                image,
                created,
            );
            let of = images.image_of(&ct, parent);
            Seen::new(ct, task(TaskState::Running), of, &images)
        };
        let app = "docker.io/library/app:1";
        // Made before the move: A, shown by ID.
        let s = seen(app, 150, Some("sha256:l1"));
        assert_eq!(
            (s.image.id.as_str(), s.image_text.as_str()),
            ("sha256:a", "sha256:a")
        );
        // Made after it: B, by its familiar name.
        let s = seen(app, 250, Some("sha256:l1"));
        assert_eq!(
            (s.image.id.as_str(), s.image_text.as_str()),
            ("sha256:b", "app:1")
        );
        // Image labels under the container's, as Docker merges them.
        assert_eq!(s.labels["team"], "infra");
        assert_eq!(s.labels["from"], "image");
        // Layers nobody has: no ID rather than a wrong one, and the name.
        let s = seen("docker.io/library/other:1", 100, Some("sha256:l9"));
        assert_eq!(
            (s.image.id.as_str(), s.image_text.as_str()),
            ("", "other:1")
        );
    }
}
