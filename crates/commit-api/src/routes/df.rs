//! Disk usage: `GET /system/df` (`docker system df [-v]`) and the sizes of
//! `docker ps -s` / `docker inspect -s`.
//!
//! Sizes are containerd's (see `commit_engine::usage`): a container's
//! `SizeRw` is the usage of its snapshot — `du` of its upper directory, what
//! a commit would capture — and `SizeRootFs` adds the image snapshots below
//! it; an image's `Size` is its blobs plus its unpacked snapshots, its
//! `SharedSize` the part other images hold too (Docker's containerd image
//! store counts the same). No volumes and no build cache live here: both
//! are empty.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use commit_engine::{ContainerRecord, ContainerSize, DEFAULT_SNAPSHOTTER};

use super::images::summary;
use crate::Api;
use crate::error::ApiError;
use crate::extract::{ApiVersion, Query, bool_value};
use crate::version::compare;
use crate::views::containers::ContainerSummary;
use crate::views::{self, df as v};

/// A container's `SizeRw` and `SizeRootFs`. A container whose snapshot
/// cannot be measured has none, as Docker logs and leaves them out.
pub(crate) async fn sizes(api: &Api, ct: &ContainerRecord) -> Option<ContainerSize> {
    match api.engine().containers().size(ct).await {
        Ok(size) => size,
        Err(e) => {
            tracing::warn!(container = %ct.id, cause = %e, "container size not measured");
            None
        }
    }
}

/// What `type=` asked for (all of it before API 1.42 or without `type`).
struct Wanted {
    containers: bool,
    images: bool,
    volumes: bool,
    build_cache: bool,
}

impl Wanted {
    fn parse(q: &Query, version: &str) -> Result<Self, ApiError> {
        let types = q.all("type");
        if compare(version, "1.42").is_lt() || types.is_empty() {
            return Ok(Wanted {
                containers: true,
                images: true,
                volumes: true,
                build_cache: true,
            });
        }
        let mut w = Wanted {
            containers: false,
            images: false,
            volumes: false,
            build_cache: false,
        };
        for t in &types {
            match t.as_str() {
                "container" => w.containers = true,
                "image" => w.images = true,
                "volume" => w.volumes = true,
                "build-cache" => w.build_cache = true,
                other => {
                    return Err(ApiError::InvalidRequest(format!(
                        "unknown object type: {other}"
                    )));
                }
            }
        }
        Ok(w)
    }
}

/// `GET /system/df`.
pub(crate) async fn disk_usage(
    State(api): State<Api>,
    ApiVersion(version): ApiVersion,
    q: Query,
) -> Result<Response, ApiError> {
    let wanted = Wanted::parse(&q, &version)?;
    let before = |v: &str| compare(&version, v).is_lt();
    // API 1.52 answers both shapes unless the client asks for `verbose`
    // (then it knows the new one).
    let (legacy, current) = if before("1.52") {
        (true, false)
    } else {
        (!bool_value(q.get("verbose")), true)
    };

    let containers = match wanted.containers {
        true => Some(super::containers::all_with_sizes(&api, &version).await?),
        false => None,
    };
    let images = match wanted.images {
        true => Some(image_usage(&api, before("1.44")).await?),
        false => None,
    };

    let mut out = v::DiskUsage::default();
    if let Some(items) = &containers {
        let mut items = items.clone();
        let mut usage = v::Usage::<ContainerSummary> {
            total_count: items.len() as i64,
            active_count: items.len() as i64,
            ..Default::default()
        };
        for c in &mut items {
            let size = c.size_rw.unwrap_or(0);
            usage.total_size += size;
            if !matches!(c.state, "running" | "paused" | "restarting") {
                usage.reclaimable += size;
                usage.active_count -= 1;
            }
            // Docker leaves the image manifest out of df's containers.
            c.image_manifest_descriptor = None;
        }
        usage.items = items;
        if legacy {
            out.containers = Some(usage.items.clone());
        }
        if current {
            out.container_usage = Some(usage);
        }
    }
    if let Some((items, total)) = images {
        let mut usage = v::Usage::<v::ImageItem> {
            total_count: items.len() as i64,
            total_size: total,
            ..Default::default()
        };
        for i in items.iter().map(|i| &i.summary) {
            if i.containers > 0 {
                usage.active_count += 1;
            } else if i.containers == 0 {
                usage.reclaimable += i.size - i.shared_size;
            }
        }
        usage.items = items;
        if legacy {
            out.layers_size = total;
            out.images = Some(usage.items.clone());
        }
        if current {
            out.image_usage = Some(usage);
        }
    }
    if wanted.volumes {
        if legacy {
            out.volumes = Some(Vec::new());
        }
        if current {
            out.volume_usage = Some(v::Usage::default());
        }
    }
    if wanted.build_cache {
        if legacy {
            out.build_cache = Some(Vec::new());
        }
        if current {
            out.build_cache_usage = Some(v::Usage::default());
        }
    }
    Ok(views::json(StatusCode::OK, &out))
}

/// Every image with its sizes (newest first, as `docker images`), and
/// what they hold together.
async fn image_usage(
    api: &Api,
    with_virtual_size: bool,
) -> Result<(Vec<v::ImageItem>, i64), ApiError> {
    let store = api.engine().images();
    let all = store.list().await?;
    let usage = store.usage(&all, DEFAULT_SNAPSHOTTER).await?;
    let by_id: HashMap<&str, &commit_engine::ImageUsage> =
        usage.images.iter().map(|u| (u.id.as_str(), u)).collect();
    let mut items = Vec::new();
    for e in all.iter().rev() {
        let Some(u) = by_id.get(e.id.as_str()) else {
            continue;
        };
        items.push(v::ImageItem {
            summary: summary(e, u.containers, u.shared, u.size),
            virtual_size: with_virtual_size.then_some(u.size),
        });
    }
    Ok((items, usage.total))
}
