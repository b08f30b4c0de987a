//! Ingest processes killed at random moments, and ingests racing on one dataset.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bst_ingest::{Category, Timeframe, writer};

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// Kills per run of the kill test; `BST_KILL_COUNT` overrides it.
const DEFAULT_KILL_COUNT: usize = 20;

fn sample_files() -> Vec<PathBuf> {
    let dir = bst_ingest::samples::require_datasets_dir().join("bybit/klines");
    [
        "BTCUSDT_1m.csv.gz",
        "ETHUSDT_1m.csv.gz",
        "BTCUSDT_5m.csv.gz",
    ]
    .into_iter()
    .map(|name| dir.join(name))
    .collect()
}

/// Counts the data lines of a gzip CSV file.
fn csv_rows(path: &Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .skip(1)
        .count()
}

fn ingest_command(data_dir: &Path, files: &[PathBuf]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["ingest", "klines", "--data-dir"])
        .arg(data_dir)
        .args(files)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Reads every Parquet file under the data directory and returns the number of rows.
fn read_every_file(data_dir: &Path) -> usize {
    let mut rows = 0;
    let mut pending = vec![data_dir.join("klines")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .is_some_and(|extension| extension == "parquet")
            {
                let klines = writer::read_partition_file(&path)
                    .unwrap_or_else(|error| panic!("{} is unreadable: {error}", path.display()));
                rows += klines.len();
            }
        }
    }
    rows
}

/// A small seeded generator for kill delays, so that a failing run can be repeated.
struct Delays(u64);

impl Delays {
    fn next_below(&mut self, bound_ms: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound_ms.max(1)
    }
}

#[test]
fn killed_ingest_leaves_whole_files_and_rerun_completes() {
    let files = sample_files();
    let expected: usize = files.iter().map(|file| csv_rows(file)).sum();
    let kill_count = std::env::var("BST_KILL_COUNT")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(DEFAULT_KILL_COUNT);

    // Time one full run to spread the kills over it.
    let timing_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let status = ingest_command(timing_dir.path(), &files).status().unwrap();
    assert!(status.success());
    let full_run_ms = started.elapsed().as_millis() as u64;
    assert_eq!(read_every_file(timing_dir.path()), expected);

    let data_dir = tempfile::tempdir().unwrap();
    let mut delays = Delays(0x2545_F491_4F6C_DD1D);
    for kill in 0..kill_count {
        let mut child = ingest_command(data_dir.path(), &files).spawn().unwrap();
        let delay_ms = delays.next_below(full_run_ms);
        std::thread::sleep(Duration::from_millis(delay_ms));
        // Child::kill sends SIGKILL on Unix.
        let _ = child.kill();
        child.wait().unwrap();

        let rows = read_every_file(data_dir.path());
        assert!(
            rows <= expected,
            "kill {kill} after {delay_ms} ms: {rows} rows"
        );
    }

    let status = ingest_command(data_dir.path(), &files).status().unwrap();
    assert!(status.success());
    assert_eq!(read_every_file(data_dir.path()), expected);
    for (symbol, timeframe, file) in [
        ("BTCUSDT", Timeframe::Minutes(1), &files[0]),
        ("ETHUSDT", Timeframe::Minutes(1), &files[1]),
        ("BTCUSDT", Timeframe::Minutes(5), &files[2]),
    ] {
        let stored =
            writer::read_series(data_dir.path(), Category::Linear, symbol, timeframe).unwrap();
        let parsed = bst_ingest::csv_klines::read_kline_csv(file).unwrap();
        assert_eq!(stored, parsed, "{symbol} {timeframe}");
    }
}

/// Writes every other data line of a gzip kline CSV (starting at `parity`) to a plain CSV.
fn write_alternate_rows(source: &Path, parity: usize, target: &Path) {
    let file = std::fs::File::open(source).unwrap();
    let mut lines = BufReader::new(flate2::read::GzDecoder::new(file)).lines();
    let mut output = std::fs::File::create(target).unwrap();
    writeln!(output, "{}", lines.next().unwrap().unwrap()).unwrap();
    for line in lines.skip(parity).step_by(2) {
        writeln!(output, "{}", line.unwrap()).unwrap();
    }
}

#[test]
fn concurrent_ingests_lose_no_rows() {
    let source = &sample_files()[0];
    let expected = csv_rows(source);
    let inputs = tempfile::tempdir().unwrap();
    let halves: Vec<PathBuf> = (0..2)
        .map(|parity| {
            let path = inputs.path().join(format!("half{parity}.csv"));
            write_alternate_rows(source, parity, &path);
            path
        })
        .collect();

    for round in 0..3 {
        let data_dir = tempfile::tempdir().unwrap();
        let children: Vec<_> = halves
            .iter()
            .map(|half| {
                let mut command = ingest_command(data_dir.path(), std::slice::from_ref(half));
                command.args(["--symbol", "BTCUSDT", "--interval", "1"]);
                command.spawn().unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        let stored = writer::read_series(
            data_dir.path(),
            Category::Linear,
            "BTCUSDT",
            Timeframe::Minutes(1),
        )
        .unwrap();
        assert_eq!(stored.len(), expected, "round {round}");
    }
}

/// Reads every tick Parquet file under the data directory and returns the number of rows.
fn read_every_tick_file(data_dir: &Path) -> usize {
    let mut rows = 0;
    let mut pending = vec![data_dir.join("ticks")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .is_some_and(|extension| extension == "parquet")
            {
                let ticks = bst_ingest::tick_writer::read_tick_partition_file(&path)
                    .unwrap_or_else(|error| panic!("{} is unreadable: {error}", path.display()));
                rows += ticks.len();
            }
        }
    }
    rows
}

#[test]
fn killed_trade_import_reruns_exactly() {
    let dump =
        bst_ingest::samples::require_datasets_dir().join("bybit/trading/BTCUSD2019-10-01.csv.gz");
    // The dump contains one trade per data line.
    let expected_ticks = csv_rows(&dump);
    // The dump covers one whole day, so every minute of it gets a derived bar.
    let expected_bars = 24 * 60;
    let kill_count = std::env::var("BST_KILL_COUNT")
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .unwrap_or(DEFAULT_KILL_COUNT)
        .div_ceil(2);
    let import = |data_dir: &Path| {
        let mut command = Command::new(BIN);
        command
            .args(["ingest", "trades", "--data-dir"])
            .arg(data_dir)
            .arg(&dump)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };

    let timing_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    assert!(import(timing_dir.path()).status().unwrap().success());
    let full_run_ms = started.elapsed().as_millis() as u64;
    assert_eq!(read_every_tick_file(timing_dir.path()), expected_ticks);

    let data_dir = tempfile::tempdir().unwrap();
    let mut delays = Delays(0x9E37_79B9_7F4A_7C15);
    for kill in 0..kill_count {
        let mut child = import(data_dir.path()).spawn().unwrap();
        let delay_ms = delays.next_below(full_run_ms);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let ticks = read_every_tick_file(data_dir.path());
        assert!(
            ticks == 0 || ticks == expected_ticks,
            "kill {kill} after {delay_ms} ms: {ticks} ticks, a partial day file"
        );
        assert!(read_every_file(data_dir.path()) <= expected_bars);
    }

    assert!(import(data_dir.path()).status().unwrap().success());
    assert_eq!(read_every_tick_file(data_dir.path()), expected_ticks);
    assert_eq!(read_every_file(data_dir.path()), expected_bars);
}
