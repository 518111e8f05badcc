//! `changes`: Dockerfile instructions applied to the committed image's config.
