//! An exclusive lock on a data directory, held while a process rewrites partitions.
//!
//! A mutex serializes the writers of one process, and this file lock serializes writers in
//! different processes. Two imports into one dataset therefore merge one after the other.
//! Without it, both could read the same partition and the later rename would drop the
//! other's rows.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::{Error, Result};

/// Name of the lock file in the data directory.
pub const LOCK_FILE_NAME: &str = ".write.lock";

/// The data directory's write lock, held until dropped. The operating system releases it
/// when the process dies, so a killed import never leaves the dataset locked.
#[derive(Debug)]
pub struct DatasetLock {
    _file: File,
}

/// Serializes the writers of this process; the file lock does the same across processes.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// Both write locks of a data directory, released together when dropped.
#[derive(Debug)]
pub(crate) struct WriteGuard {
    // Field order matters: the file lock is released before the process mutex.
    _dataset: DatasetLock,
    _process: MutexGuard<'static, ()>,
}

/// Takes the process mutex, then the data directory's file lock.
///
/// # Errors
///
/// The errors of [`lock_dataset`].
pub(crate) fn lock_for_write(data_dir: &Path) -> Result<WriteGuard> {
    let process = WRITE_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(WriteGuard {
        _dataset: lock_dataset(data_dir)?,
        _process: process,
    })
}

/// Takes the exclusive write lock of `data_dir`, waiting while another process holds it.
///
/// # Errors
///
/// [`Error::Io`] naming the lock file when it cannot be created or locked.
pub fn lock_dataset(data_dir: &Path) -> Result<DatasetLock> {
    let path = data_dir.join(LOCK_FILE_NAME);
    let io_error = |source, path: &PathBuf| Error::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(|source| io_error(source, &data_dir.into()))?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| io_error(source, &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            tracing::info!(
                lock = %path.display(),
                "another process is writing to this dataset; waiting for it to finish"
            );
            file.lock().map_err(|source| io_error(source, &path))?;
        }
        Err(TryLockError::Error(source)) => return Err(io_error(source, &path)),
    }
    Ok(DatasetLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_waits_for_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dataset(dir.path()).unwrap();

        // A second handle on the same file cannot take the lock while the first holds it.
        let other = File::options()
            .write(true)
            .open(dir.path().join(LOCK_FILE_NAME))
            .unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));

        drop(first);
        assert!(other.try_lock().is_ok());
    }
}
