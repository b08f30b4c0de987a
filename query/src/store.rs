//! The store handle, opening and schema migrations.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use duckdb::types::{TimeUnit, Value};
use duckdb::{Connection, Transaction, params};
use tracing::info;

use crate::cache::{BacktestCache, BacktestWrite, WriteScope};
use crate::error::{Error, Result};
use crate::schema::MIGRATIONS;

/// Default age after which the claim of a running backtest is stale: 10 minutes.
pub const DEFAULT_CLAIM_STALE_AFTER: Duration = Duration::from_secs(600);

/// Number of read connections beside the write connection.
const READ_CONNECTIONS: usize = 4;

/// Handle to the DuckDB metadata database of strategies, backtests and trades.
///
/// Clones share one write connection behind a mutex, so writes run one at a time, and a few
/// read connections, so reads run beside each other and beside a write. A read reflects every
/// write that returned before it started. Every method blocks, so async callers run them on a
/// blocking thread, except the `cached_*` lookups.
#[derive(Debug, Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
    /// Write connection of the `bots` and `deals` tables. No transaction spans them and another
    /// table, so bot writes need not wait behind a long backtest write.
    bots_connection: Arc<Mutex<Connection>>,
    readers: Arc<[Mutex<Connection>]>,
    /// Index of the read connection that the next read tries first.
    next_reader: Arc<AtomicUsize>,
    pub(crate) backtest_cache: Arc<BacktestCache>,
    /// Age after which [`Store::claim_backtest_for_worker`] may take a running backtest from
    /// the worker that claimed it.
    pub(crate) claim_stale_after: TimeDelta,
}

impl Store {
    /// Opens the database file at `path`, creating it if it does not exist, and applies the
    /// migrations it lacks. The folder that contains the file must exist.
    pub fn open(path: &Path) -> Result<Store> {
        let folder = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty());
        if folder.is_some_and(|folder| !folder.is_dir()) {
            return Err(Error::MissingFolder {
                path: path.to_owned(),
            });
        }
        let connection = Connection::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        info!(path = %path.display(), "opened DuckDB metadata store");
        Self::from_connection(connection)
    }

    /// Opens an empty database that lives in memory and disappears when the last clone is
    /// dropped.
    pub fn open_in_memory() -> Result<Store> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut connection: Connection) -> Result<Store> {
        migrate(&mut connection, Utc::now())?;
        let readers = (0..READ_CONNECTIONS)
            .map(|_| connection.try_clone().map(Mutex::new))
            .collect::<duckdb::Result<Vec<_>>>()?;
        let bots_connection = Arc::new(Mutex::new(connection.try_clone()?));
        Ok(Store {
            connection: Arc::new(Mutex::new(connection)),
            bots_connection,
            readers: readers.into(),
            next_reader: Arc::new(AtomicUsize::new(0)),
            backtest_cache: Arc::new(BacktestCache::default()),
            claim_stale_after: time_delta(DEFAULT_CLAIM_STALE_AFTER),
        })
    }

    /// Sets the age after which the claim of a running backtest is stale, so that another
    /// worker may claim the backtest again. Clones made before this call keep the old value.
    #[must_use]
    pub fn with_claim_stale_after(mut self, after: Duration) -> Store {
        self.claim_stale_after = time_delta(after);
        self
    }

    /// Returns the age after which the claim of a running backtest is stale.
    pub fn claim_stale_after(&self) -> Duration {
        self.claim_stale_after.to_std().unwrap_or(Duration::MAX)
    }

    /// Returns the highest applied migration version, or 0 for an empty database.
    pub fn schema_version(&self) -> Result<i64> {
        let connection = self.read();
        let version = connection.query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )?;
        Ok(version)
    }

    /// Locks the write connection. Methods that write the `backtests` table call
    /// [`Store::lock_backtests`] instead, and those of bots and deals [`Store::lock_bots`].
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A thread that panicked while it held the lock left no transaction open, because
        // dropping a `duckdb::Transaction` rolls it back, so the connection is still usable.
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the write connection for a write to the `backtests` table; the cached backtest
    /// reads that the write may have changed are dropped when the returned guard is.
    pub(crate) fn lock_backtests(&self) -> BacktestWrite<'_> {
        BacktestWrite {
            connection: self.lock(),
            cache: &self.backtest_cache,
            scope: WriteScope::All,
        }
    }

    /// Locks the write connection of the `bots` and `deals` tables.
    pub(crate) fn lock_bots(&self) -> MutexGuard<'_, Connection> {
        self.bots_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `read` in one transaction on a read connection, so that its queries, such as an
    /// existence check followed by the rows, see one snapshot of the database.
    pub(crate) fn read_snapshot<T>(
        &self,
        read: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut connection = self.read();
        let transaction = connection.transaction()?;
        let value = read(&transaction)?;
        transaction.commit()?;
        Ok(value)
    }

    /// Locks an idle read connection, or waits for one when all are busy. Only queries that
    /// write nothing may run on it, because its writes would bypass the cache invalidation.
    pub(crate) fn read(&self) -> MutexGuard<'_, Connection> {
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.readers.len() {
            let reader = &self.readers[(first + offset) % self.readers.len()];
            match reader.try_lock() {
                Ok(connection) => return connection,
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.readers[first % self.readers.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Applies, in version order, each migration whose version is not in `schema_migrations`.
fn migrate(connection: &mut Connection, now: DateTime<Utc>) -> Result<()> {
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            applied_at TIMESTAMP NOT NULL
        )",
    )?;
    let applied: HashSet<i64> = {
        let mut statement = connection.prepare("SELECT version FROM schema_migrations")?;
        statement
            .query_map([], |row| row.get(0))?
            .collect::<duckdb::Result<_>>()?
    };

    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let version = migration.version;
        let to_migration_error = |source| Error::Migration { version, source };
        let transaction = connection.transaction().map_err(to_migration_error)?;
        transaction
            .execute_batch(migration.sql)
            .map_err(to_migration_error)?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                params![version, timestamp(now)],
            )
            .map_err(to_migration_error)?;
        transaction.commit().map_err(to_migration_error)?;
        info!(version, "applied schema migration");
    }
    Ok(())
}

/// Converts a UTC time to a DuckDB `TIMESTAMP` parameter, truncated to whole microseconds
/// because that is the precision of `TIMESTAMP`.
pub(crate) fn timestamp(time: DateTime<Utc>) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, time.timestamp_micros())
}

/// Converts an optional UTC time to a DuckDB `TIMESTAMP` parameter or NULL.
pub(crate) fn optional_timestamp(time: Option<DateTime<Utc>>) -> Option<Value> {
    time.map(timestamp)
}

/// Converts a duration to a `TimeDelta`, capping it at the largest one.
fn time_delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// Converts a page bound to a `LIMIT` or `OFFSET` parameter, capping it at `i64::MAX`.
pub(crate) fn page_bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
