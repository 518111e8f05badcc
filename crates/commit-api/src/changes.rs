//! `changes`: Dockerfile instructions applied to the committed image's config.
// PLACEHOLDER (lead): replaced by the helper.
#[derive(Debug)]
pub struct ChangeError(pub String);
impl std::fmt::Display for ChangeError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.0) } }
