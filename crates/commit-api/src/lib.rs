//! Docker's Engine API for commits, served over [`commit_engine`].
//!
//! This is the only crate that knows Docker's wire format: routes, query
//! parameters, JSON bodies, the Dockerfile syntax of `changes`, and the
//! mapping from engine errors to HTTP status codes.

pub mod changes;
