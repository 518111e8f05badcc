//! `POST /commit`'s answer.

use serde::Serialize;

/// Docker's `IDResponse`.
#[derive(Debug, Serialize)]
pub struct IdResponse {
    #[serde(rename = "Id")]
    pub id: String,
}
