//! `POST /commit`'s answer.

use serde::Serialize;

/// Docker's `IDResponse`, with what commitd's own parameters did (only
/// when asked for, so Docker's clients see Docker's answer).
#[derive(Debug, Serialize)]
pub(crate) struct IdResponse {
    #[serde(rename = "Id")]
    pub id: String,
    /// Entries `exclude` left out (with `exclude` only).
    #[serde(rename = "Excluded", skip_serializing_if = "Option::is_none")]
    pub excluded: Option<u64>,
    /// What `incremental=1` made of the commit (with `incremental` only).
    #[serde(rename = "Incremental", skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalView>,
}

/// `{"Parent": "sha256:…"}` for an incremental commit (the image it
/// stands on), `{"Plain": "why"}` for a plain one.
#[derive(Debug, Serialize)]
pub(crate) struct IncrementalView {
    #[serde(rename = "Parent", skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(rename = "Plain", skip_serializing_if = "Option::is_none")]
    pub plain: Option<String>,
}

impl IncrementalView {
    pub(crate) fn of(i: &commit_engine::Incremental) -> Option<Self> {
        match i {
            commit_engine::Incremental::NotAsked => None,
            commit_engine::Incremental::On(parent) => Some(IncrementalView {
                parent: Some(parent.clone()),
                plain: None,
            }),
            commit_engine::Incremental::Plain(why) => Some(IncrementalView {
                parent: None,
                plain: Some(why.clone()),
            }),
        }
    }
}

/// One image of a pod snapshot (`POST /pods/{namespace}/{pod}/commit`).
#[derive(Debug, Serialize)]
pub(crate) struct PodCommitted {
    #[serde(rename = "Container")]
    pub container: String,
    #[serde(rename = "Id")]
    pub id: String,
}
