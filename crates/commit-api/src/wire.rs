//! PLACEHOLDER written by the lead so the crate builds; helper replaces it.
use commit_engine::image::RunConfig;
#[derive(Debug, Default, serde::Deserialize)]
pub struct ContainerConfig {}
impl From<ContainerConfig> for RunConfig { fn from(_: ContainerConfig) -> Self { RunConfig::default() } }
#[derive(Debug)]
pub struct BodyError(pub String);
impl std::fmt::Display for BodyError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.0) } }
pub fn decode_body(bytes: &[u8]) -> Result<Option<ContainerConfig>, BodyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) { return Ok(None); }
    serde_json::from_slice::<Option<ContainerConfig>>(bytes).map_err(|e| BodyError(format!("invalid JSON: {e}")))
}
