//! In-memory cache of backtest reads, kept current by every write to the `backtests` table.
//!
//! A write that changes one backtest drops that backtest's entry and every cached list page,
//! and any other write drops everything. Each write also bumps a generation, and a read is cached
//! only if no write happened between the start of its query and its insert. So a lookup that
//! starts after a write has returned never returns an entry read before that write.
//!
//! Entries are shared through [`Arc`], and each keeps its JSON text once a caller asked for
//! it, so a cache hit costs neither a deep clone nor a second serialization.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use duckdb::Connection;
use serde::Serialize;
use serde_json::Value;

use crate::model::{Backtest, BacktestFilter, Page};

/// Maximum number of cached backtests.
pub(crate) const MAX_CACHED_BACKTESTS: usize = 16_384;

/// Maximum number of cached list pages.
pub(crate) const MAX_CACHED_PAGES: usize = 256;

/// Budget of the estimated size of all cached rows, pages included, in bytes. The estimate
/// counts the JSON text of `config`, `params` and `metrics`. A parsed JSON value takes a few
/// times its text on the heap, and an entry's JSON text, once made, adds about its estimate
/// again, so the real memory may be a few times this budget.
pub(crate) const MAX_CACHED_BYTES: usize = 32 * 1024 * 1024;

/// Largest estimated size of one entry that is cached; larger ones are read every time.
const MAX_ENTRY_BYTES: usize = MAX_CACHED_BYTES / 16;

/// Number of locks that serialize the reads filling the cache. Keys are spread over them by
/// hash, so concurrent misses of one key run one query while other keys run beside it.
const FILL_LOCKS: usize = 16;

/// Maximum number of keys recorded as too large to cache. A record that is full is emptied.
const MAX_OVERSIZED_KEYS: usize = 1_024;

/// A read from the store, shared between the cache and its callers, with its JSON text made
/// on first request.
#[derive(Debug)]
pub struct CachedRead<T> {
    value: T,
    /// Estimated heap size of `value`, from [`estimated_bytes`].
    bytes: usize,
    json: OnceLock<Bytes>,
}

impl<T: Serialize> CachedRead<T> {
    fn new(value: T, bytes: usize) -> Self {
        Self {
            value,
            bytes,
            json: OnceLock::new(),
        }
    }

    /// Returns the value that was read.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// Returns the value as JSON text, the same text that `serde_json::to_vec` gives. The
    /// first call serializes it and later calls share that text.
    pub fn json(&self) -> Result<Bytes, serde_json::Error> {
        if let Some(json) = self.json.get() {
            return Ok(json.clone());
        }
        let json = Bytes::from(serde_json::to_vec(&self.value)?);
        // A concurrent first call may have set it already, and both texts are equal.
        Ok(self.json.get_or_init(|| json).clone())
    }
}

/// A cached backtest read: `None` records that no backtest had the id.
pub type BacktestRead = Option<Arc<CachedRead<Backtest>>>;

/// A cached page of backtests.
pub type PageRead = Arc<CachedRead<Page<Backtest>>>;

/// Cached `get_backtest` and `list_backtests` results.
#[derive(Debug, Default)]
pub(crate) struct BacktestCache {
    /// Bumped by every write to the `backtests` table, under the entries' lock.
    generation: AtomicU64,
    entries: Mutex<Entries>,
    fill_locks: [Mutex<()>; FILL_LOCKS],
}

#[derive(Debug, Default)]
struct Entries {
    backtests: HashMap<i64, BacktestRead>,
    pages: HashMap<BacktestFilter, PageRead>,
    /// Estimated size of the entries above.
    bytes: usize,
    /// Ids and filters whose last read was too large to cache. Their readers skip the fill
    /// lock, because waiting for another reader's query gains nothing when it is not cached.
    oversized: HashSet<FillKey>,
}

impl Entries {
    fn clear(&mut self) {
        self.backtests.clear();
        self.clear_pages();
        self.oversized.clear();
        self.bytes = 0;
    }

    fn clear_pages(&mut self) {
        let page_bytes: usize = self.pages.values().map(|page| page.bytes).sum();
        self.pages.clear();
        self.bytes -= page_bytes;
        self.oversized
            .retain(|key| matches!(key, FillKey::Backtest(_)));
    }

    fn remove_backtest(&mut self, id: i64) {
        if let Some(Some(read)) = self.backtests.remove(&id) {
            self.bytes -= read.bytes;
        }
        self.oversized.remove(&FillKey::Backtest(id));
    }

    /// Records that the read of `key` was too large to cache.
    fn mark_oversized(&mut self, key: FillKey) {
        if self.oversized.len() >= MAX_OVERSIZED_KEYS {
            self.oversized.clear();
        }
        self.oversized.insert(key);
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

/// The key of a cache fill: a backtest id or a list filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum FillKey {
    /// The row of this backtest id.
    Backtest(i64),
    /// The list page of this filter.
    Page(BacktestFilter),
}

/// The set of cached reads that a write to the `backtests` table may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteScope {
    /// Any row: every entry is dropped.
    All,
    /// The row of this id only, besides the list pages, which every write drops.
    Backtest(i64),
}

impl BacktestCache {
    /// Returns the generation to pass to the `insert_*` methods; read it before the query.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drops the entries that a committed write of `scope` may have changed.
    pub(crate) fn invalidate(&self, scope: WriteScope) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        match scope {
            WriteScope::All => entries.clear(),
            WriteScope::Backtest(id) => {
                entries.remove_backtest(id);
                entries.clear_pages();
            }
        }
    }

    /// Returns the cached read of backtest `id`, or `None` when it is not cached.
    pub(crate) fn backtest(&self, id: i64) -> Option<BacktestRead> {
        self.lock().backtests.get(&id).cloned()
    }

    /// Returns the cached page of this filter.
    pub(crate) fn page(&self, filter: &BacktestFilter) -> Option<PageRead> {
        self.lock().pages.get(filter).cloned()
    }

    /// Caches the read of backtest `id`, unless a write happened after `generation`, and
    /// returns the shared read.
    pub(crate) fn insert_backtest(
        &self,
        generation: u64,
        id: i64,
        backtest: Option<Backtest>,
    ) -> BacktestRead {
        let read = backtest.map(|backtest| {
            let bytes = estimated_bytes(&backtest);
            Arc::new(CachedRead::new(backtest, bytes))
        });
        let bytes = read.as_ref().map_or(0, |read| read.bytes);
        let mut entries = self.lock();
        if bytes > MAX_ENTRY_BYTES {
            entries.mark_oversized(FillKey::Backtest(id));
        }
        // A concurrent read of the same id may have cached it already.
        if generation != self.generation()
            || entries.backtests.contains_key(&id)
            || !entries.make_room(bytes)
        {
            return read;
        }
        entries.backtests.insert(id, read.clone());
        read
    }

    /// Caches the page of `filter`, unless a write happened after `generation`, and returns
    /// the shared read.
    pub(crate) fn insert_page(
        &self,
        generation: u64,
        filter: BacktestFilter,
        page: Page<Backtest>,
    ) -> PageRead {
        let bytes = page.items.iter().map(estimated_bytes).sum::<usize>();
        let read = Arc::new(CachedRead::new(page, bytes));
        let mut entries = self.lock();
        if bytes > MAX_ENTRY_BYTES {
            entries.mark_oversized(FillKey::Page(filter.clone()));
        }
        if generation != self.generation()
            || entries.pages.contains_key(&filter)
            || !entries.make_room(bytes)
        {
            return read;
        }
        entries.pages.insert(filter, Arc::clone(&read));
        read
    }

    /// Locks the fill lock of `key`. A reader that missed the cache takes it, looks again and
    /// only then queries, so that the readers that missed together wait for one query instead
    /// of each running it. Take it before a read connection, never while holding one.
    ///
    /// Returns `None`, holding nothing, when the last read of `key` was too large to cache,
    /// so that readers of a large row neither queue behind each other nor hold up the other
    /// keys of the lock.
    pub(crate) fn fill_lock(&self, key: &FillKey) -> Option<MutexGuard<'_, ()>> {
        if self.is_oversized(key) {
            return None;
        }
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let index = (hasher.finish() % FILL_LOCKS as u64) as usize;
        let guard = self.fill_locks[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The reader that held the lock before may have found the read too large.
        if self.is_oversized(key) {
            return None;
        }
        Some(guard)
    }

    fn is_oversized(&self, key: &FillKey) -> bool {
        self.lock().oversized.contains(key)
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Every update of the maps is a single call, so a panic leaves them consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The store's write connection, locked by a method that writes the `backtests` table.
///
/// Dropping it drops the cached reads that the write may have changed, so it must outlive the
/// write's commit or rollback. A transaction borrows it, so the transaction always ends
/// first.
pub(crate) struct BacktestWrite<'a> {
    pub(crate) connection: MutexGuard<'a, Connection>,
    pub(crate) cache: &'a BacktestCache,
    /// Scope of the write, [`WriteScope::All`] unless a method narrows it after a commit that
    /// changed one row.
    pub(crate) scope: WriteScope,
}

impl BacktestWrite<'_> {
    /// Records that the committed write changed only the row of backtest `id`.
    pub(crate) fn changed_only(&mut self, id: i64) {
        self.scope = WriteScope::Backtest(id);
    }
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
        self.cache.invalidate(self.scope);
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

    /// Returns the value of the cached read of `id`, as [`Store::cached_backtest`] does.
    fn cached(cache: &BacktestCache, id: i64) -> Option<Option<Backtest>> {
        cache
            .backtest(id)
            .map(|read| read.map(|read| read.value().clone()))
    }

    #[test]
    fn oversized_entry_is_not_cached() {
        let cache = BacktestCache::default();
        let row = large_backtest(MAX_ENTRY_BYTES);
        let read = cache.insert_backtest(cache.generation(), row.id, Some(row.clone()));
        assert_eq!(read.map(|read| read.value().clone()), Some(row.clone()));
        assert_eq!(cached(&cache, row.id), None);

        let small = large_backtest(10);
        cache.insert_backtest(cache.generation(), small.id, Some(small.clone()));
        assert_eq!(cached(&cache, small.id), Some(Some(small)));
    }

    #[test]
    fn oversized_reads_skip_fill_lock() {
        let cache = BacktestCache::default();
        let row = large_backtest(MAX_ENTRY_BYTES);
        let key = FillKey::Backtest(row.id);
        let page_key = FillKey::Page(BacktestFilter::default());
        assert!(
            cache.fill_lock(&key).is_some(),
            "an unread row skipped the lock"
        );

        cache.insert_backtest(cache.generation(), row.id, Some(row.clone()));
        let page = Page {
            items: vec![row.clone()],
            total: 1,
        };
        cache.insert_page(cache.generation(), BacktestFilter::default(), page);
        assert!(
            cache.fill_lock(&key).is_none(),
            "the large row was not marked"
        );
        assert!(
            cache.fill_lock(&page_key).is_none(),
            "the large page was not marked"
        );
        let other = FillKey::Backtest(row.id + 1);
        assert!(cache.fill_lock(&other).is_some());

        // The row may be small after a write, so the write removes its mark.
        cache.invalidate(WriteScope::Backtest(row.id + 1));
        assert!(
            cache.fill_lock(&key).is_none(),
            "another row's write dropped the mark"
        );
        assert!(
            cache.fill_lock(&page_key).is_some(),
            "a write kept the page's mark"
        );
        cache.invalidate(WriteScope::Backtest(row.id));
        assert!(
            cache.fill_lock(&key).is_some(),
            "the row's write kept the mark"
        );
    }

    #[test]
    fn row_write_keeps_other_rows() {
        let cache = BacktestCache::default();
        let mut first = large_backtest(10);
        first.id = 1;
        let mut second = large_backtest(10);
        second.id = 2;
        let generation = cache.generation();
        cache.insert_backtest(generation, 1, Some(first.clone()));
        cache.insert_backtest(generation, 2, Some(second.clone()));
        cache.insert_backtest(generation, 3, None);
        let page = Page {
            items: vec![first.clone(), second.clone()],
            total: 2,
        };
        cache.insert_page(generation, BacktestFilter::default(), page);

        cache.invalidate(WriteScope::Backtest(1));
        assert_eq!(cached(&cache, 1), None);
        assert_eq!(cached(&cache, 2), Some(Some(second.clone())));
        assert_eq!(cached(&cache, 3), Some(None));
        assert!(cache.page(&BacktestFilter::default()).is_none());
        assert_eq!(cache.lock().bytes, estimated_bytes(&second));

        cache.invalidate(WriteScope::Backtest(3));
        assert_eq!(cached(&cache, 3), None, "a create must drop a cached miss");
        cache.invalidate(WriteScope::All);
        assert_eq!(cached(&cache, 2), None);
        assert_eq!(cache.lock().bytes, 0);
    }

    #[test]
    fn read_older_than_a_write_is_not_cached() {
        let cache = BacktestCache::default();
        let row = large_backtest(10);
        let generation = cache.generation();
        // A write to another row commits while the read of `row` runs.
        cache.invalidate(WriteScope::Backtest(row.id + 1));
        let read = cache.insert_backtest(generation, row.id, Some(row.clone()));
        assert!(read.is_some(), "the caller still gets its read");
        assert_eq!(cached(&cache, row.id), None);
        let page = Page {
            items: vec![row.clone()],
            total: 1,
        };
        cache.insert_page(generation, BacktestFilter::default(), page);
        assert!(cache.page(&BacktestFilter::default()).is_none());
    }

    #[test]
    fn json_text_matches_serde_json() {
        let cache = BacktestCache::default();
        let row = large_backtest(100);
        let read = cache
            .insert_backtest(cache.generation(), row.id, Some(row.clone()))
            .unwrap();
        let expected = serde_json::to_vec(&row).unwrap();
        assert_eq!(read.json().unwrap(), expected);
        let again = cached(&cache, row.id);
        assert_eq!(again, Some(Some(row)));
        let shared = cache.backtest(read.value().id).unwrap().unwrap();
        assert_eq!(
            shared.json().unwrap(),
            expected,
            "a hit reuses the same text"
        );
    }
}
