//! Cosigned heads kept for the calls anyone may make (checkpoints, proofs against the latest
//! head, trust bundles): collecting cosignatures asks every member, so a thousand callers must
//! not cost a thousand rounds.
//!
//! One [`HeadCache`] holds the last head it made. A caller takes it while it is good enough
//! (the caller says what that means); otherwise one caller refreshes it while every caller that
//! arrives meanwhile waits and then shares the result. Refreshes start at least
//! [`REFRESH_SPACING`] apart, so no pattern of calls makes a node ask its members more often.
//! Every wait here is bounded by the refresh's own bound (the cosign timeout).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::error::NotaryError;

/// Least time between the starts of two refreshes of one cache: at most ten rounds of
/// cosignature requests a second per kind of head, whatever the callers do.
pub(super) const REFRESH_SPACING: Duration = Duration::from_millis(100);

/// A head as kept: its tree size, when its refresh started, whether every member then known
/// cosigned it, and which refresh made it.
#[derive(Debug, Clone)]
pub(super) struct Kept<T> {
    pub value: T,
    pub size: u64,
    pub started: Instant,
    /// Every member that was asked answered: asking again cannot add a signature until the
    /// membership changes.
    pub complete: bool,
    /// The members asked (this node excluded), to notice a membership change.
    pub members: Vec<u64>,
    generation: u64,
}

/// What a refresh produced.
pub(super) struct Fresh<T> {
    pub value: T,
    pub size: u64,
    pub complete: bool,
    pub members: Vec<u64>,
}

/// One kind of head, kept and refreshed one at a time (see the module header).
#[derive(Debug)]
pub(super) struct HeadCache<T> {
    kept: Mutex<Option<Kept<T>>>,
    /// Held by the one caller refreshing; the others queue on it and then share its result.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    generation: AtomicU64,
}

impl<T> Default for HeadCache<T> {
    fn default() -> Self {
        HeadCache {
            kept: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }
}

impl<T: Clone> HeadCache<T> {
    fn kept(&self) -> Option<Kept<T>> {
        // Poisoned only by a panic while cloning or assigning: the value is still whole.
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The kept head if `good_enough` accepts it; otherwise a refresh by `refresh`, shared with
    /// the callers that arrive while it runs. A caller that waited for another's refresh takes
    /// that result if its size passes `size_ok` (a head made after the caller arrived is as new
    /// as any it could make). A failed refresh keeps nothing and fails its caller only.
    pub(super) async fn get<F, Fut>(
        &self,
        good_enough: impl Fn(&Kept<T>) -> bool,
        size_ok: impl Fn(u64) -> bool,
        refresh: F,
    ) -> Result<T, NotaryError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fresh<T>, NotaryError>>,
    {
        let seen = match self.kept() {
            Some(k) if good_enough(&k) => return Ok(k.value),
            Some(k) => Some(k.generation),
            None => None,
        };
        let mut last_start = self.refreshing.lock().await;
        if let Some(k) = self.kept()
            && (good_enough(&k) || (Some(k.generation) != seen && size_ok(k.size)))
        {
            return Ok(k.value);
        }
        if let Some(at) = *last_start {
            tokio::time::sleep_until(at + REFRESH_SPACING).await;
        }
        let started = Instant::now();
        *last_start = Some(started);
        let fresh = refresh().await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let kept = Kept {
            value: fresh.value.clone(),
            size: fresh.size,
            started,
            complete: fresh.complete,
            members: fresh.members,
            generation,
        };
        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
        Ok(fresh.value)
    }
}

/// Cosignature traffic of one node since it started, for metrics: requests it sent to members
/// (every attempt, retries included) and requests members sent it, by kind of head.
#[derive(Debug, Default)]
pub struct CosignStats {
    pub checkpoint_requests_sent: AtomicU64,
    pub status_list_requests_sent: AtomicU64,
    pub checkpoint_requests_served: AtomicU64,
    pub status_list_requests_served: AtomicU64,
}

// Real time, briefly: tokio's paused clock needs its `test-util` feature, which would make the
// workspace's test build compile tokio and everything above it a second time.
#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn fresh(size: u64) -> Fresh<u64> {
        Fresh {
            value: size,
            size,
            complete: true,
            members: vec![2, 3],
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let cache = Arc::new(HeadCache::<u64>::default());
        let refreshes = Arc::new(AtomicUsize::new(0));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (cache, refreshes) = (cache.clone(), refreshes.clone());
            calls.spawn(async move {
                cache
                    .get(
                        |_| false,
                        |_| true,
                        || async {
                            refreshes.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            Ok(fresh(7))
                        },
                    )
                    .await
            });
        }
        while let Some(answer) = calls.join_next().await {
            assert_eq!(answer.ok().and_then(Result::ok), Some(7));
        }
        assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_head_too_small_for_the_caller_is_refreshed_no_sooner_than_the_spacing() {
        let cache = HeadCache::<u64>::default();
        let t0 = Instant::now();
        let first = cache
            .get(|_| false, |_| true, || async { Ok(fresh(5)) })
            .await;
        assert_eq!(first, Ok(5));
        // Kept while it covers what the caller needs.
        let kept = cache
            .get(|k| k.size >= 5, |s| s >= 5, || async { Ok(fresh(99)) })
            .await;
        assert_eq!(kept, Ok(5));
        let newer = cache
            .get(|k| k.size >= 6, |s| s >= 6, || async { Ok(fresh(6)) })
            .await;
        assert_eq!(newer, Ok(6));
        assert!(t0.elapsed() >= REFRESH_SPACING, "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_nothing() {
        let cache = HeadCache::<u64>::default();
        let failed = cache
            .get(
                |_| true,
                |_| true,
                || async { Err(NotaryError::NoCheckpoint("no key".into())) },
            )
            .await;
        assert!(failed.is_err());
        let next = cache
            .get(|_| true, |_| true, || async { Ok(fresh(3)) })
            .await;
        assert_eq!(next, Ok(3));
    }
}
