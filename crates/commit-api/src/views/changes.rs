//! `GET /containers/{id}/changes` (Docker's `container.FilesystemChange`).

use serde::Serialize;

/// One changed path: `Kind` 0 modified, 1 added, 2 deleted.
#[derive(Debug, Serialize)]
pub(crate) struct FilesystemChange {
    #[serde(rename = "Path")]
    pub path: String,
    #[serde(rename = "Kind")]
    pub kind: u8,
}
