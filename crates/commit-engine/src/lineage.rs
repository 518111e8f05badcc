//! Lineages: images committed from containers of images committed before.
//!
//! Every manifest commitd writes says what its base is, with OCI's
//! annotations `org.opencontainers.image.base.name` and
//! `org.opencontainers.image.base.digest`, and how many of its layers are
//! the base's ([`BASE_LAYERS`]). A commit of a container whose image has
//! them inherits them: the base of a lineage is the image its first commit
//! started from, however often it is committed again. An image without
//! them (pulled, built, or committed by someone else) is the base itself.
//!
//! This is what `squash=new` folds (every layer above the base) and what it
//! keeps shared with other images (the base's layers).

use std::collections::BTreeMap;

use docker_format::image::{History, Manifest};

use crate::images::Resolved;

/// OCI's annotation: the base image's name.
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
/// OCI's annotation: the base image's digest.
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// commitd's: how many of the manifest's first layers are the base's.
pub const BASE_LAYERS: &str = "dev.commitd.image.base.layers";

/// What a commit does with the layers below its new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Squash {
    /// Keep every layer: the new one goes on top.
    #[default]
    No,
    /// Fold every layer above the base image's (the lineage's layers and
    /// the container's changes) into one: depth stays base + 1.
    New,
    /// One layer holding the whole filesystem.
    All,
}

impl std::str::FromStr for Squash {
    type Err = crate::OptionError;
    fn from_str(s: &str) -> Result<Self, crate::OptionError> {
        match s {
            "no" | "none" | "false" | "0" => Ok(Squash::No),
            "new" => Ok(Squash::New),
            "all" | "true" | "1" => Ok(Squash::All),
            other => Err(crate::OptionError::Squash(other.to_string())),
        }
    }
}

/// The base of a lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Base {
    pub name: String,
    pub digest: String,
    /// How many of the image's first layers are the base's.
    pub layers: usize,
}

impl Base {
    /// The base of `parent` (the container's image, named `parent_name`):
    /// inherited from its annotations when it is a lineage commitd wrote,
    /// else the parent itself.
    pub(crate) fn of(parent: &Resolved, parent_name: &str) -> Base {
        let own = parent.manifest.layers.len();
        let inherited = parent.manifest.annotations.as_ref().and_then(|a| {
            let layers = a.get(BASE_LAYERS)?.parse::<usize>().ok()?;
            (layers <= own).then(|| Base {
                name: a.get(BASE_NAME).cloned().unwrap_or_default(),
                digest: a.get(BASE_DIGEST).cloned().unwrap_or_default(),
                layers,
            })
        });
        inherited.unwrap_or_else(|| Base {
            name: parent_name.to_string(),
            digest: parent.target.digest.clone(),
            layers: own,
        })
    }

    /// The annotations of a manifest on this base.
    pub(crate) fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([(BASE_LAYERS.to_string(), self.layers.to_string())]);
        if !self.name.is_empty() {
            a.insert(BASE_NAME.into(), self.name.clone());
        }
        if !self.digest.is_empty() {
            a.insert(BASE_DIGEST.into(), self.digest.clone());
        }
        a
    }
}

/// The layers of a parent a commit keeps below its new layer.
pub(crate) fn kept_layers(squash: Squash, parent: Option<&Resolved>, base: Option<&Base>) -> usize {
    let all = parent.map(|p| p.manifest.layers.len()).unwrap_or(0);
    match squash {
        Squash::No => all,
        Squash::New => base.map(|b| b.layers).unwrap_or(0).min(all),
        Squash::All => 0,
    }
}

/// The parent's history with the entries of folded layers marked empty
/// (their changes are in the new layer now): the first `kept` layers keep
/// their entries as they were.
pub(crate) fn folded_history(history: &[History], kept: usize) -> Vec<History> {
    let mut layers = 0;
    history
        .iter()
        .map(|h| {
            let mut h = h.clone();
            if !h.empty_layer {
                layers += 1;
                if layers > kept {
                    h.empty_layer = true;
                }
            }
            h
        })
        .collect()
}

/// The kept part of a manifest's layers.
pub(crate) fn kept_manifest_layers(
    m: &Manifest,
    kept: usize,
) -> Vec<docker_format::image::Descriptor> {
    m.layers.iter().take(kept).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(empty: bool) -> History {
        History {
            created: None,
            created_by: None,
            author: None,
            comment: None,
            empty_layer: empty,
        }
    }

    #[test]
    fn folded_history_keeps_the_base_entries() {
        let hist = [h(false), h(true), h(false), h(false), h(true), h(false)];
        let folded = folded_history(&hist, 2);
        let empty: Vec<bool> = folded.iter().map(|h| h.empty_layer).collect();
        assert_eq!(empty, [false, true, false, true, true, true]);
    }

    #[test]
    fn squash_values() {
        assert_eq!("new".parse::<Squash>(), Ok(Squash::New));
        assert_eq!("all".parse::<Squash>(), Ok(Squash::All));
        assert_eq!("no".parse::<Squash>(), Ok(Squash::No));
        assert!("some".parse::<Squash>().is_err());
    }
}
