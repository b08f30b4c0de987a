//! Lines written to standard output. A reader that exits early, such as `head -1`, ends the
//! command quietly with status 0 instead of a panic in `println!`.

use std::fmt;
use std::io::{self, Write};

/// Error of a write to standard output after its reader closed the pipe.
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("standard output was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes one line to standard output.
///
/// # Errors
///
/// [`StdoutClosed`] when the reader has closed the pipe (`EPIPE`), and other write errors.
pub(crate) fn write_line(line: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}").map_err(|error| {
        if error.kind() == io::ErrorKind::BrokenPipe {
            anyhow::Error::new(StdoutClosed)
        } else {
            anyhow::Error::new(error).context("failed to write to standard output")
        }
    })
}

/// Returns true when `error` comes from a write to a standard output that its reader closed.
pub(crate) fn is_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<StdoutClosed>())
}

/// Formats and writes one line to standard output like `println!`, and returns the
/// `anyhow::Result` of [`write_line`] in place of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::write_line(format_args!($($arg)*))
    };
}

pub(crate) use outln;
