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
use serde_json::Value;

use crate::model::{Backtest, BacktestFilter, Page};

/// Maximum number of cached backtests.
pub(crate) const MAX_CACHED_BACKTESTS: usize = 16_384;

/// Maximum number of cached list pages.
pub(crate) const MAX_CACHED_PAGES: usize = 256;

/// Budget of the estimated size of all cached rows, pages included, in bytes. The estimate
/// counts the JSON text of `config`, `params` and `metrics`, and a parsed JSON value takes a
/// few times its text on the heap, so the real memory may be a few times this budget.
pub(crate) const MAX_CACHED_BYTES: usize = 32 * 1024 * 1024;

/// Largest estimated size of one entry that is cached; larger ones are read every time.
const MAX_ENTRY_BYTES: usize = MAX_CACHED_BYTES / 16;

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
    /// Estimated size of the entries above, from [`estimated_bytes`].
    bytes: usize,
}

impl Entries {
    fn clear(&mut self) {
        self.backtests.clear();
        self.pages.clear();
        self.bytes = 0;
    }

    /// Makes room for an entry of `bytes`, emptying the cache when it would exceed a bound.
    /// Returns false when the entry is too large to cache.
    fn make_room(&mut self, bytes: usize) -> bool {
        if bytes > MAX_ENTRY_BYTES {
            return false;
        }
        if self.bytes + bytes > MAX_CACHED_BYTES
            || self.backtests.len() >= MAX_CACHED_BACKTESTS
            || self.pages.len() >= MAX_CACHED_PAGES
        {
            self.clear();
        }
        self.bytes += bytes;
        true
    }
}

/// Estimates the heap size of a backtest from its strings and the JSON text of its JSON
/// fields. It serializes those fields, so call it only when a read missed the cache.
fn estimated_bytes(backtest: &Backtest) -> usize {
    let json_bytes = |value: Option<&Value>| {
        value.map_or(0, |value| {
            serde_json::to_vec(value).map_or(0, |text| text.len())
        })
    };
    let text_bytes = |text: Option<&String>| text.map_or(0, String::len);
    std::mem::size_of::<Backtest>()
        + backtest.symbol.len()
        + backtest.timeframe.len()
        + text_bytes(backtest.error_message.as_ref())
        + text_bytes(backtest.engine_version.as_ref())
        + json_bytes(Some(&backtest.config))
        + json_bytes(backtest.metrics.as_ref())
        + json_bytes(backtest.params.as_ref())
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
        entries.clear();
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
        let bytes = backtest.as_ref().map_or(0, estimated_bytes);
        let Some(mut entries) = self.entries_of(generation) else {
            return;
        };
        // A concurrent read of the same id may have cached it already.
        if entries.backtests.contains_key(&id) || !entries.make_room(bytes) {
            return;
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
        let bytes = page.items.iter().map(estimated_bytes).sum::<usize>();
        let Some(mut entries) = self.entries_of(generation) else {
            return;
        };
        if entries.pages.contains_key(&filter) || !entries.make_room(bytes) {
            return;
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
            entries.clear();
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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::{NewBacktest, NewStrategy, Store};

    /// Returns a stored backtest whose `params` hold `params_bytes` characters of text.
    fn large_backtest(params_bytes: usize) -> Backtest {
        let store = Store::open_in_memory().unwrap();
        let strategy = store
            .create_strategy(&NewStrategy {
                name: "cache".to_owned(),
                description: None,
                strategy_type: "sma_crossover".to_owned(),
                config: json!({}),
                is_active: true,
            })
            .unwrap();
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let new = NewBacktest {
            strategy_id: strategy.id,
            symbol: "BTCUSDT".to_owned(),
            timeframe: "60".to_owned(),
            start_date: start,
            end_date: start + chrono::Duration::days(1),
            initial_capital: 10_000.0,
            leverage: 1.0,
            commission: 0.0,
            config: json!({}),
        };
        let mut backtest = store.create_backtest(&new, start).unwrap();
        backtest.params = Some(json!({ "note": "x".repeat(params_bytes) }));
        backtest
    }

    #[test]
    fn pages_stay_within_byte_budget() {
        let cache = BacktestCache::default();
        let row = large_backtest(40 * 1024);
        let page = Page {
            items: vec![row; 40],
            total: 40,
        };
        let page_bytes: usize = page.items.iter().map(estimated_bytes).sum();
        assert!(page_bytes > 1024 * 1024, "page estimate {page_bytes}");
        assert!(page_bytes < MAX_ENTRY_BYTES, "page estimate {page_bytes}");
        let mut max_pages = 0;

        for offset in 0..200 {
            let filter = BacktestFilter {
                offset,
                ..BacktestFilter::default()
            };
            cache.insert_page(cache.generation(), filter, page.clone());
            let entries = cache.lock();
            assert!(
                entries.bytes <= MAX_CACHED_BYTES,
                "{} bytes cached after page {offset}",
                entries.bytes
            );
            assert_eq!(entries.bytes, entries.pages.len() * page_bytes);
            max_pages = max_pages.max(entries.pages.len());
        }
        assert_eq!(max_pages, MAX_CACHED_BYTES / page_bytes);
    }

    #[test]
    fn oversized_entry_is_not_cached() {
        let cache = BacktestCache::default();
        let row = large_backtest(MAX_ENTRY_BYTES);
        cache.insert_backtest(cache.generation(), row.id, Some(row.clone()));
        assert_eq!(cache.backtest(row.id), None);

        let small = large_backtest(10);
        cache.insert_backtest(cache.generation(), small.id, Some(small.clone()));
        assert_eq!(cache.backtest(small.id), Some(Some(small)));
    }
}
