//! `GET /system/df` (`docker system df`): the legacy shape (API < 1.52:
//! `LayersSize`, `Images`, `Containers`, `Volumes`, `BuildCache`) and the
//! current one (`ImageUsage`, `ContainerUsage`, `VolumeUsage`,
//! `BuildCacheUsage`), each present when the API version has it.

use serde::Serialize;
use serde_json::Value;

use super::containers::ContainerSummary;
use super::images::ImageSummary;

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Docker's `diskUsageCompat`: the legacy fields and the current ones.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DiskUsage {
    #[serde(skip_serializing_if = "is_zero")]
    pub layers_size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<ImageItem>>,
    /// Container summaries, with `SizeRw` and `SizeRootFs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerSummary>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_cache: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_usage: Option<Usage<ImageItem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_usage: Option<Usage<ContainerSummary>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_usage: Option<Usage<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_cache_usage: Option<Usage<Value>>,
}

/// Docker's `image.DiskUsage`, `container.DiskUsage`, … (every field
/// `omitempty`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Usage<T> {
    #[serde(skip_serializing_if = "is_zero")]
    pub active_count: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "is_zero")]
    pub reclaimable: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub total_count: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub total_size: i64,
}

impl<T> Default for Usage<T> {
    fn default() -> Self {
        Self {
            active_count: 0,
            items: Vec::new(),
            reclaimable: 0,
            total_count: 0,
            total_size: 0,
        }
    }
}

/// Docker's `image.Summary` with its sizes counted (`VirtualSize` before
/// API 1.44).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageItem {
    #[serde(flatten)]
    pub summary: ImageSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_size: Option<i64>,
}
