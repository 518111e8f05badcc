//! The image routes' answers: `docker images`, `docker image inspect`,
//! `docker history`, `docker rmi`.

use std::collections::BTreeMap;

use docker_format::image::{Descriptor, RunConfig};
use serde::Serialize;

/// Docker's `image.Summary` (`GET /images/json`, `system df`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageSummary {
    /// Containers made from it (API 1.51+); -1 before, as Docker.
    pub containers: i64,
    pub created: i64,
    pub id: String,
    /// `null` when the image has none.
    pub labels: Option<BTreeMap<String, String>>,
    pub parent_id: &'static str,
    pub descriptor: Descriptor,
    pub repo_digests: Vec<String>,
    pub repo_tags: Vec<String>,
    pub shared_size: i64,
    pub size: i64,
}

/// Docker's `image.InspectResponse` (`GET /images/{name}/json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageInspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// The image it was committed from; empty for others.
    pub parent: String,
    pub comment: String,
    pub created: Option<String>,
    pub docker_version: &'static str,
    pub author: String,
    pub config: Option<RunConfig>,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub os: String,
    pub size: i64,
    pub graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
    pub metadata: Metadata,
    pub descriptor: Descriptor,
}

/// Docker's `DriverData`; its `Data` is `null` here.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GraphDriver {
    pub name: String,
    pub data: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RootFs {
    #[serde(rename = "Type")]
    pub kind: String,
    pub layers: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Metadata {
    pub last_tag_time: String,
}

/// Docker's `image.HistoryResponseItem` (`GET /images/{name}/history`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HistoryItem {
    /// The image ID on the newest entry, `<missing>` on the others.
    pub id: String,
    pub created: i64,
    pub created_by: String,
    /// The image's tags on the newest entry; `null` elsewhere.
    pub tags: Option<Vec<String>>,
    pub size: i64,
    pub comment: String,
}

/// One line of Docker's `image.DeleteResponse` (`DELETE /images/{name}`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) enum DeleteItem {
    Untagged(String),
    Deleted(String),
}

/// Docker's `image.PruneReport` (`POST /images/prune`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PruneReport {
    /// `null` when nothing was deleted, as Docker answers.
    pub images_deleted: Option<Vec<DeleteItem>>,
    pub space_reclaimed: u64,
}
