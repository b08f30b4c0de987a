//! `bst ingest trades` on the real BTCUSD trade dump, run through the binary.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_bst");

fn ingest_trades(data_dir: &Path, extra_args: &[&str]) -> Output {
    let dump =
        bst_ingest::samples::require_datasets_dir().join("bybit/trading/BTCUSD2019-10-01.csv.gz");
    assert!(dump.is_file(), "sample file {} not found", dump.display());
    Command::new(BIN)
        .args(["ingest", "trades", "--data-dir"])
        .arg(data_dir)
        .args(extra_args)
        .arg(&dump)
        .env_remove("BST_DATASETS_DIR")
        .output()
        .expect("failed to run the bst binary")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "bst ingest trades failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn ingest_trades_prints_counts() {
    let data = tempfile::tempdir().unwrap();
    let first = stdout_of(&ingest_trades(data.path(), &[]));
    assert!(first.contains("ticks read 93598,"), "{first}");
    assert!(first.contains("ticks written 93598,"), "{first}");
    assert!(first.contains("duplicates skipped 0,"), "{first}");
    assert!(
        first.contains("tick partitions touched 1 (2019-10-01)"),
        "{first}"
    );
    assert!(
        first.contains("derived 1m bars 1440, written 1440, skipped 0"),
        "{first}"
    );
    let part = data
        .path()
        .join("ticks/category=inverse/symbol=BTCUSD/date=2019-10-01/part-0000.parquet");
    assert!(part.is_file(), "{} missing", part.display());

    let second = stdout_of(&ingest_trades(data.path(), &[]));
    assert!(second.contains("ticks written 0,"), "{second}");
    assert!(second.contains("duplicates skipped 93598,"), "{second}");
    assert!(second.contains("tick partitions touched 0;"), "{second}");
    assert!(
        second.contains("derived 1m bars 1440, written 0, skipped 1440"),
        "{second}"
    );
}

#[test]
fn ingest_trades_category_flag() {
    let data = tempfile::tempdir().unwrap();
    let output = stdout_of(&ingest_trades(data.path(), &["--category", "spot"]));
    assert!(output.contains("ticks written 93598,"), "{output}");
    assert!(
        data.path()
            .join("ticks/category=spot/symbol=BTCUSD")
            .is_dir()
    );

    let bad = ingest_trades(data.path(), &["--category", "futures"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("invalid category \"futures\""), "{stderr}");
}

#[test]
fn ingest_trades_unknown_category_asks_flag() {
    let input = tempfile::tempdir().unwrap();
    let dump = input.path().join("BTCPERP2025-06-01.csv");
    std::fs::write(
        &dump,
        "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,\
         foreignNotional\n1748736000.5,BTCPERP,Buy,0.001,104200.5,PlusTick,p1,0,0.001,104.2005\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["ingest", "trades", "--data-dir"])
        .arg(data.path())
        .arg(&dump)
        .output()
        .expect("failed to run the bst binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("BTCPERP"), "{stderr}");
    assert!(stderr.contains("pass --category"), "{stderr}");
    assert!(!data.path().join("ticks").exists());
}
