//! Commit a containerd container's changes into a new image.

pub mod image;

pub use containerd_client;
pub use tonic;
