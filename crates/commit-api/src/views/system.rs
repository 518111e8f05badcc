//! `/version` and the error body.

use serde::Serialize;

/// Docker's error body.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody {
    pub message: String,
}

/// Docker's `types.Version`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Version {
    pub platform: Platform,
    pub components: Vec<Component>,
    pub version: String,
    pub api_version: &'static str,
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: &'static str,
    pub git_commit: String,
    pub go_version: &'static str,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
    /// containerd's version; `null` while containerd does not answer.
    pub containerd_version: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Platform {
    pub name: String,
}

/// One component of the daemon: the engine, containerd.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Component {
    pub name: &'static str,
    pub version: String,
    pub details: ComponentDetails,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum ComponentDetails {
    #[serde(rename_all = "PascalCase")]
    Engine {
        api_version: &'static str,
        #[serde(rename = "MinAPIVersion")]
        min_api_version: &'static str,
        git_commit: String,
        os: String,
        arch: String,
        kernel_version: String,
    },
    #[serde(rename_all = "PascalCase")]
    Containerd { address: String, namespace: String },
}
