//! Per-key async locks: commits of the same container take turns to
//! capture (two pauses of one task would trip over each other), and
//! writers of the same image name take turns to move it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// What a lock guards. Every writer of image records (commits naming
/// their image, tag, untag, delete, prune, load, import) takes the one
/// [`Key::Images`]: naming an image also writes and drops the dangling
/// records of the images it moves off and onto, so writers of different
/// names still meet there. Each write is a few records, so one turn for
/// all costs little. Every capture of a container takes
/// [`Key::Container`]; a holder of both takes the container's first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Container(&'a str),
    Images,
}

impl Key<'_> {
    fn text(&self) -> String {
        match self {
            Key::Container(id) => format!("container:{id}"),
            Key::Images => "images".to_string(),
        }
    }
}

#[derive(Default, Clone)]
pub(crate) struct KeyedLocks {
    map: Arc<Mutex<HashMap<String, Weak<AsyncMutex<()>>>>>,
}

impl KeyedLocks {
    /// Waits for the lock of `key`; released when the guard drops.
    pub(crate) async fn lock(&self, key: Key<'_>) -> OwnedMutexGuard<()> {
        let key = key.text();
        let key = key.as_str();
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            // Forget locks nobody holds any more, so the map stays small.
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(AsyncMutex::new(()));
                    map.insert(key.to_string(), Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let locks = KeyedLocks::default();
        let a = locks.lock(Key::Container("a")).await;
        let _b = locks.lock(Key::Container("b")).await;
        let waiting = tokio::spawn({
            let locks = locks.clone();
            async move { locks.lock(Key::Container("a")).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "second holder of `a` waits");
        // The image records' turn is another key.
        let images = locks.lock(Key::Images).await;
        let next = tokio::spawn({
            let locks = locks.clone();
            async move { locks.lock(Key::Images).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!next.is_finished(), "one writer of image records at a time");
        drop(a);
        drop(images);
        for w in [waiting, next] {
            tokio::time::timeout(std::time::Duration::from_secs(1), w)
                .await
                .unwrap()
                .unwrap();
        }
    }
}
