//! Docker's formats, as pure functions and types: what a Docker client
//! sends and what Docker writes, read and written exactly as Docker does,
//! with Docker's error texts.
//!
//! # Design
//! Nothing here does I/O, waits, or knows containerd, gRPC or HTTP: the
//! crate is the vocabulary both `commit-engine` (image configs it writes,
//! the config merge it applies) and `commit-api` (request bodies, query
//! values, filters) speak, and the one the fuzz targets exercise without
//! building the rest of the stack. Each error is an enum whose `Display`
//! is Docker's message; which HTTP status it becomes is `commit-api`'s
//! decision.

pub mod body;
pub mod changes;
pub mod container;
pub mod duration;
pub mod filters;
pub mod go;
mod go_json;
pub mod image;
pub mod merge;
pub mod ports;
pub mod reference;
pub mod registry;
pub mod signal;
pub mod size;
pub mod time;
