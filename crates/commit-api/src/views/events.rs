//! `GET /events`: Docker's `events.Message`, one JSON object per line.

use std::collections::BTreeMap;

use serde::Serialize;

/// Docker's `events.Message`, fields in Docker's order.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Message {
    /// The action again (Docker's deprecated field, still sent).
    pub status: String,
    pub id: String,
    /// The container's image (container events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: &'static str,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}
