//! `POST /commit`'s answer.

use serde::Serialize;

/// Docker's `IDResponse`.
#[derive(Debug, Serialize)]
pub struct IdResponse {
    #[serde(rename = "Id")]
    pub id: String,
}

/// One image of a pod snapshot (`POST /pods/{namespace}/{pod}/commit`).
#[derive(Debug, Serialize)]
pub struct PodCommitted {
    #[serde(rename = "Container")]
    pub container: String,
    #[serde(rename = "Id")]
    pub id: String,
}
