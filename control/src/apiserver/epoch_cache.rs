//! A value read from the store once and kept until an object of its kind is written: what an
//! admission step reads on every create (the default PriorityClass, the LimitRanges) then
//! costs a lock instead of a read. The API's write hook calls [`EpochCache::changed`] after
//! each write of the kind has reached the store.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ApiResult;

/// The cached value and the write epoch it was read at.
#[derive(Debug)]
pub struct EpochCache<T> {
    /// Bumped after every write of the kind has reached the store.
    epoch: AtomicU64,
    cached: Mutex<Option<(u64, T)>>,
}

impl<T> Default for EpochCache<T> {
    fn default() -> Self {
        EpochCache {
            epoch: AtomicU64::new(0),
            cached: Mutex::new(None),
        }
    }
}

impl<T: Clone> EpochCache<T> {
    /// An object of the kind was written: read again next time.
    pub fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The value as read since the last write, or `load`ed now.
    pub async fn get_or_load<F, Fut>(&self, load: F) -> ApiResult<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ApiResult<T>>,
    {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Some((at, value)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner())
            && *at == epoch
        {
            return Ok(value.clone());
        }
        // A write that lands while this reads bumps the epoch after it: the next call reads
        // again, whatever this one saw.
        let value = load().await?;
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((epoch, value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_value_is_read_once_until_a_write_and_again_after_it() {
        let cache = EpochCache::<u32>::default();
        let reads = std::cell::Cell::new(0);
        let load = || async {
            reads.set(reads.get() + 1);
            Ok(reads.get())
        };
        assert_eq!(cache.get_or_load(load).await.unwrap(), 1);
        assert_eq!(cache.get_or_load(load).await.unwrap(), 1);
        cache.changed();
        assert_eq!(cache.get_or_load(load).await.unwrap(), 2);
        assert_eq!(reads.get(), 2);
    }
}
