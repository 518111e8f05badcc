//! `POST /commit`'s answer.

use serde::Serialize;

/// Docker's `IDResponse`, with what commitd's own parameters did (only
/// when asked for, so Docker's clients see Docker's answer).
#[derive(Debug, Serialize)]
pub struct IdResponse {
    #[serde(rename = "Id")]
    pub id: String,
    /// Entries `exclude` left out (with `exclude` only).
    #[serde(rename = "Excluded", skip_serializing_if = "Option::is_none")]
    pub excluded: Option<u64>,
}

/// One image of a pod snapshot (`POST /pods/{namespace}/{pod}/commit`).
#[derive(Debug, Serialize)]
pub struct PodCommitted {
    #[serde(rename = "Container")]
    pub container: String,
    #[serde(rename = "Id")]
    pub id: String,
}
