//! The images of a namespace as Docker users see them: one image per
//! config digest (Docker's image ID), with every name that points at it.
//!
//! containerd keeps image *records* (a name → a manifest or index); Docker
//! shows *images* (an ID, several tags). This module groups records into
//! images, resolves what users type (`name[:tag]`, `sha256:<id>`, a short
//! ID), and finds the containers that use an image. Manifests and configs
//! are immutable, so what was read for a target digest is kept in a small
//! cache.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use containerd_client::services::v1::Image as Record;
use docker_format::image::{Descriptor, ImageConfig, Manifest, host_platform};
use docker_format::reference::ImageRef;

use crate::client::Containerd;
use crate::container::ContainerRecord;
use crate::error::{Error, Result};
use crate::images::{self, Resolved};
use crate::keyed::{Key, KeyedLocks};

/// The content label on a committed image's config naming the image its
/// container was made from (by ID).
pub(crate) const PARENT_LABEL: &str = "commitd.io/parent";

/// One image: a config digest and the records naming it.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:…` of the config.
    pub id: String,
    /// The records pointing at it, names sorted; dangling ones included.
    pub records: Vec<ImageRecord>,
    pub resolved: Arc<Resolved>,
}

/// One name of an image, as containerd keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// The normalized name (`docker.io/library/app:1`), or Docker's
    /// `moby-dangling@<manifest digest>` for an untagged image.
    pub name: String,
    /// When the record last changed (unix seconds).
    pub updated_at: Option<i64>,
    /// A `moby-dangling@…` record, or the CRI plugin's `sha256:<id>`
    /// record: no name of its own. Not listed as a repository; removed with
    /// the image's last name.
    pub dangling: bool,
}

impl ImageRecord {
    fn of(r: &Record) -> Self {
        Self {
            name: r.name.clone(),
            updated_at: r.updated_at.as_ref().map(|t| t.seconds),
            dangling: images::is_dangling(r) || is_cri_id_record(&r.name),
        }
    }
}

/// The record the CRI plugin adds to every image of `k8s.io`, named by the
/// image's ID (`sha256:<64 hex>`): no reference a user can type.
fn is_cri_id_record(name: &str) -> bool {
    name.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Image {
    /// The record names that are real names (not `moby-dangling@…`).
    pub fn names(&self) -> Vec<&str> {
        self.records
            .iter()
            .filter(|r| !r.dangling)
            .map(|r| r.name.as_str())
            .collect()
    }

    pub fn config(&self) -> &ImageConfig {
        &self.resolved.config
    }

    pub fn manifest(&self) -> &Manifest {
        &self.resolved.manifest
    }

    pub fn target(&self) -> &Descriptor {
        &self.resolved.target
    }

    /// The newest update of any of its records, in seconds.
    pub fn last_tagged(&self) -> Option<i64> {
        self.records.iter().filter_map(|r| r.updated_at).max()
    }
}

/// Resolved manifests and configs, by record target digest.
#[derive(Default, Clone)]
pub(crate) struct Cache {
    inner: Arc<Mutex<HashMap<String, Arc<Resolved>>>>,
}

/// Entries kept; an image store with more targets just re-reads some.
const CACHE_MAX: usize = 4096;

impl Cache {
    /// Keeps only the entries of `live` targets.
    fn retain<'a>(&self, live: impl Iterator<Item = &'a str>) {
        let live: std::collections::HashSet<&str> = live.collect();
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|digest, _| live.contains(digest.as_str()));
    }

    async fn resolve(&self, c: &Containerd, record: &Record) -> Result<Arc<Resolved>> {
        let Some(target) = &record.target else {
            return Err(Error::Malformed(format!(
                "image {} has no target",
                record.name
            )));
        };
        if let Some(hit) = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target.digest)
        {
            return Ok(Arc::clone(hit));
        }
        let resolved = Arc::new(images::resolve(c, record, &host_platform()).await?);
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(target.digest.clone(), Arc::clone(&resolved));
        Ok(resolved)
    }
}

/// Every image of the namespace, oldest first. Records whose content is
/// missing or foreign (another platform only, not an image) are left out.
async fn list(c: &Containerd, cache: &Cache) -> Result<Vec<Image>> {
    let records = images::list(c, Vec::new()).await?;
    // The whole store is in hand: forget what is no longer in it, so the
    // cache follows the store's size rather than every image ever seen.
    cache.retain(
        records
            .iter()
            .filter_map(|r| r.target.as_ref())
            .map(|t| t.digest.as_str()),
    );
    group(c, cache, records).await
}

async fn group(c: &Containerd, cache: &Cache, records: Vec<Record>) -> Result<Vec<Image>> {
    let mut by_id: BTreeMap<String, Image> = BTreeMap::new();
    for record in records {
        let resolved = match cache.resolve(c, &record).await {
            Ok(r) => r,
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => {
                tracing::debug!(image = %record.name, cause = %e, "image left out of the list");
                continue;
            }
        };
        let id = resolved.manifest.config.digest.clone();
        by_id
            .entry(id.clone())
            .or_insert_with(|| Image {
                id,
                records: Vec::new(),
                resolved,
            })
            .records
            .push(ImageRecord::of(&record));
    }
    let mut out: Vec<Image> = by_id.into_values().collect();
    for e in &mut out {
        e.records.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out.sort_by(|a, b| {
        a.config()
            .created
            .cmp(&b.config().created)
            .then(a.id.cmp(&b.id))
    });
    Ok(out)
}

impl Image {
    /// The one rule for what a user's image reference names among
    /// `images`, as Docker's lookup: a name (then the short ID it may also
    /// be), a full ID, or a unique ID prefix — an ambiguous prefix is
    /// `InvalidArgument` (Docker's 400), none is `ImageNotFound`.
    pub fn find_in<'a>(images: &'a [Image], image: &ImageRef) -> Result<&'a Image> {
        match image {
            ImageRef::Name { name, or_id_prefix } => {
                match images
                    .iter()
                    .find(|e| e.records.iter().any(|r| &r.name == name))
                {
                    Some(hit) => Ok(hit),
                    None => match or_id_prefix {
                        Some(p) => with_prefix(images, p),
                        None => Err(Error::ImageNotFound(name.clone())),
                    },
                }
            }
            ImageRef::Id(id) => images
                .iter()
                .find(|e| &e.id == id)
                .ok_or_else(|| Error::ImageNotFound(id.clone())),
            ImageRef::IdPrefix(p) => with_prefix(images, p),
        }
    }
}

/// The namespace's images, indexed the ways a container finds its own
/// (`ImageStore::index`): by record name and by the chain ID of their
/// layers. Which image is a container's is [`ImageIndex::image_of`]'s rule.
pub struct ImageIndex {
    entries: Vec<Image>,
    /// Record name → (image, when the record last changed, unix seconds).
    by_name: HashMap<String, (usize, i64)>,
    /// Chain ID → the images with these layers, oldest first.
    by_chain: HashMap<String, Vec<usize>>,
}

/// Which image a container turned out to be made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOf {
    index: Option<usize>,
    /// `sha256:…` of the config, or empty when the image is gone.
    pub id: String,
    /// The container's image record no longer leads to this image (the
    /// name moved, or names other layers): Docker then shows the ID.
    pub moved: bool,
}

impl ImageIndex {
    pub fn new(entries: Vec<Image>) -> Self {
        let mut by_name = HashMap::new();
        let mut by_chain: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for r in &e.records {
                by_name.insert(r.name.clone(), (i, r.updated_at.unwrap_or(0)));
            }
            if let Some(chain) = e.resolved.chain_id() {
                by_chain.entry(chain).or_default().push(i);
            }
        }
        Self {
            entries,
            by_name,
            by_chain,
        }
    }

    /// The one rule for the image a container was made from, as `docker
    /// ps` and `inspect` show it, given its snapshot's parent (the chain ID
    /// of the image's layers, [`images::footing`]): the image its record
    /// names if that has the same layers and has not been renamed since
    /// the container was made; else an image with the parent's layers (the
    /// one a moved name left behind, as Docker's `refreshImage` finds);
    /// else none.
    pub fn image_of(&self, ct: &ContainerRecord, snapshot_parent: Option<&str>) -> ImageOf {
        let named = self.by_name.get(&ct.image).copied();
        let created = ct.created.map(|(s, _)| s).unwrap_or(0);
        let same_layers = |i: usize, p: &str| self.entries[i].resolved.footing(p).is_some();
        let with_layers = |p: &str, not: Option<usize>| {
            self.by_chain
                .iter()
                .filter(|(chain, _)| images::footing(p, chain).is_some())
                .flat_map(|(_, images)| images.iter().copied())
                .find(|&i| Some(i) != not)
        };
        let (index, moved) = match (named, snapshot_parent) {
            (Some((i, _)), None) => (Some(i), false),
            (Some((i, updated)), Some(p)) if same_layers(i, p) => {
                // Renamed after the container was made: another image with
                // these layers is the one it was made from, if there is one.
                match with_layers(p, Some(i)).filter(|_| updated > created) {
                    Some(other) => (Some(other), true),
                    None => (Some(i), false),
                }
            }
            (named, Some(p)) => match with_layers(p, None) {
                Some(i) => (Some(i), true),
                None => (None, named.is_some()),
            },
            (None, None) => (None, false),
        };
        let id = index
            .map(|i| self.entries[i].id.clone())
            .unwrap_or_default();
        ImageOf { index, id, moved }
    }

    /// The image `of` names.
    pub fn get(&self, of: &ImageOf) -> Option<&Image> {
        of.index.map(|i| &self.entries[i])
    }

    /// The IDs of the images `refs` name ([`Image::find_in`]); those that
    /// name none or several are left out (Docker logs and skips them).
    pub fn ids_of<'a>(&self, refs: impl IntoIterator<Item = &'a ImageRef>) -> HashSet<String> {
        refs.into_iter()
            .filter_map(|r| Image::find_in(&self.entries, r).ok())
            .map(|e| e.id.clone())
            .collect()
    }
}

/// The one image whose ID starts with `prefix` (`sha256:` optional).
fn with_prefix<'a>(images: &'a [Image], prefix: &str) -> Result<&'a Image> {
    let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::ImageNotFound(prefix.to_string()));
    }
    let mut found = images
        .iter()
        .filter(|e| e.id.trim_start_matches("sha256:").starts_with(hex));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(Error::ImageNotFound(prefix.to_string())),
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "multiple IDs found with provided prefix: {prefix}"
        ))),
    }
}

/// Finds one image as Docker does ([`Image::find_in`]); a name is read
/// from its record first, so a name whose content does not read says why.
async fn find(c: &Containerd, cache: &Cache, image: &ImageRef) -> Result<Image> {
    match image {
        ImageRef::Name { name, or_id_prefix } => {
            if let Some(record) = images::get(c, name).await? {
                let resolved = cache.resolve(c, &record).await?;
                let id = resolved.manifest.config.digest.clone();
                // The image with all its names.
                return list(c, cache)
                    .await?
                    .into_iter()
                    .find(|e| e.id == id)
                    .ok_or_else(|| Error::ImageNotFound(name.clone()));
            }
            match or_id_prefix {
                Some(p) => with_prefix(&list(c, cache).await?, p).cloned(),
                None => Err(Error::ImageNotFound(name.clone())),
            }
        }
        ImageRef::Id(_) | ImageRef::IdPrefix(_) => {
            Image::find_in(&list(c, cache).await?, image).cloned()
        }
    }
}

/// The containers whose root filesystem is built on `image`: their image
/// record names it, or their snapshot's parent is its top snapshot.
async fn users(c: &Containerd, image: &Image) -> Result<Vec<ContainerRecord>> {
    let names: Vec<&str> = image.records.iter().map(|r| r.name.as_str()).collect();
    let mut out = Vec::new();
    for ct in crate::container::list(c, Vec::new()).await? {
        let by_name = names.contains(&ct.image.as_str());
        // A container whose image record is gone (or was never there)
        // still stands on the image's snapshot.
        let orphan =
            !by_name && (ct.image.is_empty() || images::get(c, &ct.image).await?.is_none());
        let by_snapshot = orphan && !ct.snapshot_key.is_empty() && {
            let sn = crate::snapshot::Snapshots::new(
                c,
                crate::container::snapshotter_of(&ct.snapshotter),
            );
            // A user-namespace remapped copy of the image's snapshot
            // stands on it too.
            sn.stat(&ct.snapshot_key)
                .await
                .is_ok_and(|i| image.resolved.footing(&i.parent).is_some())
        };
        if by_name || by_snapshot {
            out.push(ContainerRecord::of(ct));
        }
    }
    Ok(out)
}

/// The image store of the engine's namespace, as Docker users see it.
/// Every change of a name takes that name's lock, the one commits take
/// when they name their image: writers of one name take turns.
pub struct ImageStore<'a> {
    pub(crate) c: &'a Containerd,
    pub(crate) cache: &'a Cache,
    pub(crate) sizes: &'a crate::unpacked::Sizes,
    pub(crate) locks: &'a KeyedLocks,
}

impl ImageStore<'_> {
    /// Every image, oldest first. Records whose content is missing or
    /// foreign (another platform only, not an image) are left out.
    pub async fn list(&self) -> Result<Vec<Image>> {
        list(self.c, self.cache).await
    }

    /// Every image, indexed for finding containers' images.
    pub async fn index(&self) -> Result<ImageIndex> {
        Ok(ImageIndex::new(self.list().await?))
    }

    /// The image a user named: by name (then the short ID it may also
    /// be), full ID or unique ID prefix (ambiguous: `InvalidArgument`).
    pub async fn find(&self, image: &ImageRef) -> Result<Image> {
        find(self.c, self.cache, image).await
    }

    /// Points `name` at `image` (`docker tag`). Tagging writes a record
    /// only; it needs no lease (the content is referenced by the image's
    /// other records).
    pub async fn tag(&self, image: &Image, name: &str) -> Result<()> {
        let _turn = self.locks.lock(Key::Images).await;
        images::name_image(self.c, "", name, image.target()).await
    }

    /// The ID of the image `image` was committed from (Docker's `Parent`),
    /// as a commit here labelled its config; `None` for other images.
    pub async fn parent(&self, image: &Image) -> Result<Option<String>> {
        match crate::content::info(self.c, &image.id).await {
            Ok(info) => Ok(info
                .labels
                .get(PARENT_LABEL)
                .filter(|p| !p.is_empty())
                .cloned()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the record `name` (one name of an image, or its dangling
    /// record); the content goes with the last reference.
    pub async fn untag(&self, name: &str) -> Result<()> {
        let _turn = self.locks.lock(Key::Images).await;
        images::delete(self.c, name).await
    }

    /// The unpacked size of each of `image`'s layers, in manifest order, as
    /// Docker reports them (see `unpacked`): 0 for a layer whose blob is
    /// not here.
    pub async fn layer_sizes(&self, image: &Image) -> Result<Vec<i64>> {
        let mut out = Vec::new();
        for l in &image.manifest().layers {
            out.push(self.sizes.layer(self.c, l).await?);
        }
        Ok(out)
    }

    /// The image's size as Docker shows it (`docker images`, inspect's
    /// `Size`): its layers' unpacked sizes.
    pub async fn size(&self, image: &Image) -> Result<i64> {
        Ok(self.layer_sizes(image).await?.iter().sum())
    }

    /// The containers whose root filesystem is built on `image`: their
    /// image record names it, or their snapshot's parent is its top
    /// snapshot.
    pub async fn users(&self, image: &Image) -> Result<Vec<ContainerRecord>> {
        users(self.c, image).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, names: &[&str]) -> Image {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": id, "size": 2 },
            "layers": [],
        }))
        .unwrap();
        let config: ImageConfig = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
        }))
        .unwrap();
        Image {
            id: id.into(),
            records: names
                .iter()
                .map(|n| ImageRecord {
                    name: n.to_string(),
                    updated_at: None,
                    dangling: false,
                })
                .collect(),
            resolved: Arc::new(Resolved {
                target: manifest.config.clone(),
                manifest_descriptor: manifest.config.clone(),
                manifest,
                config,
            }),
        }
    }

    #[test]
    fn references_name_images_as_dockers_lookup() {
        let all = [
            image("sha256:abc1", &["docker.io/library/app:1"]),
            image("sha256:abc2", &["docker.io/library/abc2:latest"]),
            image("sha256:def0", &[]),
        ];
        let find =
            |r: &str| Image::find_in(&all, &ImageRef::parse(r).unwrap()).map(|e| e.id.as_str());
        assert_eq!(find("app:1").unwrap(), "sha256:abc1");
        // A name first, then the short ID it may also be.
        assert_eq!(find("abc2").unwrap(), "sha256:abc2");
        assert_eq!(find("def").unwrap(), "sha256:def0");
        assert_eq!(find("sha256:abc1").unwrap(), "sha256:abc1");
        // Ambiguous: Docker's 400, everywhere it is asked.
        assert!(matches!(find("abc"), Err(Error::InvalidArgument(_))));
        assert!(matches!(find("sha256:abc"), Err(Error::InvalidArgument(_))));
        assert!(matches!(find("app:2"), Err(Error::ImageNotFound(_))));
        assert!(matches!(find("fff"), Err(Error::ImageNotFound(_))));
    }

    #[test]
    fn cri_id_records_are_not_names() {
        let id = format!("sha256:{}", "ab12".repeat(16));
        assert!(is_cri_id_record(&id));
        assert!(!is_cri_id_record("sha256:ab12"));
        assert!(!is_cri_id_record("docker.io/library/app:1"));
        assert!(!is_cri_id_record(&format!("sha256:{}", "zz".repeat(32))));
    }
    /// An image of one layer (`diff_id`), with records updated at the given
    /// times.
    fn layered(id: &str, diff_id: &str, records: &[(&str, i64)]) -> Image {
        let mut image = image(id, &[]);
        let mut resolved = (*image.resolved).clone();
        resolved.config.rootfs.diff_ids = vec![diff_id.to_string()];
        image.resolved = Arc::new(resolved);
        image.records = records
            .iter()
            .map(|(name, updated)| ImageRecord {
                name: name.to_string(),
                updated_at: Some(*updated),
                dangling: false,
            })
            .collect();
        image
    }

    #[test]
    fn containers_keep_the_image_they_were_made_from() {
        // `app:1` was moved at 200 from A to B, an empty commit of A (same
        // layers); C has other layers.
        let index = ImageIndex::new(vec![
            layered("sha256:a", "sha256:l1", &[("moby-dangling@sha256:m", 200)]),
            layered("sha256:b", "sha256:l1", &[("docker.io/library/app:1", 200)]),
            layered(
                "sha256:c",
                "sha256:l2",
                &[("docker.io/library/other:1", 50)],
            ),
        ]);
        let of = |image: &str, created: i64, parent: Option<&str>| {
            let ct = ContainerRecord {
                id: "x".into(),
                name: "x".into(),
                image: image.into(),
                labels: HashMap::new(),
                created: Some((created, 0)),
                snapshotter: String::new(),
                snapshot_key: String::new(),
                runtime: String::new(),
                spec: None,
                ..Default::default()
            };
            let o = index.image_of(&ct, parent);
            assert_eq!(index.get(&o).map(|e| e.id.as_str()).unwrap_or(""), o.id);
            (o.id, o.moved)
        };
        let app = "docker.io/library/app:1";
        // Made before the move: A, which the name no longer leads to.
        assert_eq!(of(app, 150, Some("sha256:l1")), ("sha256:a".into(), true));
        // Made after it: B, by name.
        assert_eq!(of(app, 250, Some("sha256:l1")), ("sha256:b".into(), false));
        // A user-namespace remapped snapshot stands on the same layers.
        assert_eq!(of(app, 250, Some("sha256:l1-1000-1000")).0, "sha256:b");
        // No snapshot to look at: the record.
        assert_eq!(of(app, 150, None), ("sha256:b".into(), false));
        // The name now has other layers: the image with the container's.
        assert_eq!(
            of("docker.io/library/other:1", 100, Some("sha256:l1")),
            ("sha256:a".into(), true)
        );
        // Layers nobody has: no ID rather than a wrong one.
        assert_eq!(
            of("docker.io/library/other:1", 100, Some("sha256:l9")),
            (String::new(), true)
        );
        assert_eq!(
            of("docker.io/library/gone:1", 100, None),
            (String::new(), false)
        );
        // `ancestor=` values: by name, ID and short ID; unknown ones name
        // nothing.
        let ids = |v: &[&str]| {
            let refs: Vec<ImageRef> = v.iter().filter_map(|r| ImageRef::parse(r).ok()).collect();
            let mut ids: Vec<String> = index.ids_of(&refs).into_iter().collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&["app:1"]), ["sha256:b"]);
        assert_eq!(ids(&["other:1", "nope"]), ["sha256:c"]);
        assert!(ids(&["nope:2"]).is_empty());
    }
}
