//! In-memory cache of backtest reads, emptied by every write to the `backtests` table.
//!
//! Each entry is tagged with the write generation that was current before its query ran. A
//! write bumps the generation after its commit and before the store method returns, so a
//! lookup that starts after a write has returned never returns an entry read before that
//! write.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use duckdb::Connection;

use crate::model::{Backtest, BacktestFilter, Page};

/// Maximum number of cached backtests. A backtest row is about a kilobyte, so a full cache
/// stays in the tens of MiB.
pub(crate) const MAX_CACHED_BACKTESTS: usize = 16_384;

/// Maximum number of cached list pages, each with up to the list route's maximum limit of rows.
pub(crate) const MAX_CACHED_PAGES: usize = 256;

/// Cached `get_backtest` and `list_backtests` results.
#[derive(Debug, Default)]
pub(crate) struct BacktestCache {
    generation: AtomicU64,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// `None` records that no backtest had the id.
    backtests: HashMap<i64, Option<Backtest>>,
    pages: HashMap<BacktestFilter, Page<Backtest>>,
    /// Generation that every entry above was read in.
    generation: u64,
}

impl BacktestCache {
    /// Returns the generation to pass to the `insert_*` methods; read it before the query.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drops every entry, because the `backtests` table changed.
    pub(crate) fn invalidate(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.backtests.clear();
        entries.pages.clear();
    }

    /// Returns the cached read of backtest `id`: `Some(None)` when it is known not to exist,
    /// `None` when it is not cached.
    pub(crate) fn backtest(&self, id: i64) -> Option<Option<Backtest>> {
        let entries = self.current_entries()?;
        entries.backtests.get(&id).cloned()
    }

    /// Returns the cached page of this filter.
    pub(crate) fn page(&self, filter: &BacktestFilter) -> Option<Page<Backtest>> {
        let entries = self.current_entries()?;
        entries.pages.get(filter).cloned()
    }

    /// Caches the read of backtest `id`, unless a write happened after `generation`.
    pub(crate) fn insert_backtest(&self, generation: u64, id: i64, backtest: Option<Backtest>) {
        let Some(mut entries) = self.entries_of(generation) else {
            return;
        };
        if entries.backtests.len() >= MAX_CACHED_BACKTESTS {
            entries.backtests.clear();
        }
        entries.backtests.insert(id, backtest);
    }

    /// Caches the page of `filter`, unless a write happened after `generation`.
    pub(crate) fn insert_page(
        &self,
        generation: u64,
        filter: BacktestFilter,
        page: Page<Backtest>,
    ) {
        let Some(mut entries) = self.entries_of(generation) else {
            return;
        };
        if entries.pages.len() >= MAX_CACHED_PAGES {
            entries.pages.clear();
        }
        entries.pages.insert(filter, page);
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Every update of the maps is a single call, so a panic leaves them consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the entries if they belong to the current generation.
    fn current_entries(&self) -> Option<MutexGuard<'_, Entries>> {
        let entries = self.lock();
        (entries.generation == self.generation()).then_some(entries)
    }

    /// Locks the entries for an insert read in `generation`, or returns `None` if a write has
    /// happened since. Entries of an older generation are dropped first.
    fn entries_of(&self, generation: u64) -> Option<MutexGuard<'_, Entries>> {
        let mut entries = self.lock();
        if generation != self.generation() {
            return None;
        }
        if entries.generation != generation {
            entries.backtests.clear();
            entries.pages.clear();
            entries.generation = generation;
        }
        Some(entries)
    }
}

/// The store's write connection, locked by a method that writes the `backtests` table.
///
/// Dropping it empties the [`BacktestCache`], so it must outlive the write's commit or
/// rollback. A transaction borrows it, so the transaction always ends first.
pub(crate) struct BacktestWrite<'a> {
    pub(crate) connection: MutexGuard<'a, Connection>,
    pub(crate) cache: &'a BacktestCache,
}

impl Deref for BacktestWrite<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.connection
    }
}

impl DerefMut for BacktestWrite<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }
}

impl Drop for BacktestWrite<'_> {
    fn drop(&mut self) {
        self.cache.invalidate();
    }
}
