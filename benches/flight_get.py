"""Times DoGet of a kline series over loopback Flight beside pyarrow.parquet reading the files.

Usage:
  python flight_get.py write DATA_DIR ROWS   write ROWS seeded synthetic 1-minute bars
  python flight_get.py time DATA_DIR PORT    time both readers and print the figures as JSON

`write` lays the bars out as bst stores them (one ZSTD Parquet file per month under
klines/category=linear/symbol=SYNTHUSDT/timeframe=1/month=YYYY-MM/) with the kline schema.
`time` reads the whole series three times each way and keeps the fastest run; GB/s is the
size of the Arrow table in memory (Table.nbytes) over the wall time.
"""

import datetime
import json
import pathlib
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pyarrow.parquet as pq

SYMBOL = "SYNTHUSDT"
START_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
RUNS = 3

SCHEMA = pa.schema(
    [
        pa.field("open_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("turnover", pa.float64()),
    ]
)


def series_dir(data_dir):
    return (
        pathlib.Path(data_dir)
        / "klines/category=linear"
        / f"symbol={SYMBOL}"
        / "timeframe=1"
    )


def month_starts_ms(first_ms, last_ms):
    """Return the epoch milliseconds of each month start after first_ms up to last_ms."""
    day = datetime.datetime.fromtimestamp(first_ms / 1000, datetime.timezone.utc)
    year, month = day.year, day.month
    starts = []
    while True:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        start = datetime.datetime(year, month, 1, tzinfo=datetime.timezone.utc)
        start_ms = int(start.timestamp() * 1000)
        if start_ms > last_ms:
            return starts
        starts.append(start_ms)


def write(data_dir, rows):
    # pyarrow's random() with a fixed initializer gives the same series on every run.
    steps = pc.subtract(pc.multiply(pc.random(rows, initializer=20_260_101), 10.0), 5.0)
    close = pc.max_element_wise(pc.add(pc.cumulative_sum(steps), 10_000.0), 1.0)
    open_ = pa.concat_arrays([pa.array([10_000.0]), close.slice(0, rows - 1)])
    spread = pc.multiply(pc.random(rows, initializer=7), 3.0)
    open_time = pa.array(
        range(START_MS, START_MS + rows * 60_000, 60_000), pa.int64()
    ).cast(pa.timestamp("ms", tz="UTC"))
    table = pa.table(
        {
            "open_time": open_time,
            "open": open_,
            "high": pc.add(pc.max_element_wise(open_, close), spread),
            "low": pc.subtract(pc.min_element_wise(open_, close), spread),
            "close": close,
            "volume": pc.add(pc.multiply(pc.random(rows, initializer=11), 100.0), 0.1),
            "turnover": pc.multiply(close, 10.0),
        },
        schema=SCHEMA,
    )

    last_ms = START_MS + (rows - 1) * 60_000
    bounds = [0]
    bounds += [(start - START_MS) // 60_000 for start in month_starts_ms(START_MS, last_ms)]
    bounds.append(rows)

    for begin, end in zip(bounds, bounds[1:]):
        first = datetime.datetime.fromtimestamp(
            (START_MS + begin * 60_000) / 1000, datetime.timezone.utc
        )
        folder = series_dir(data_dir) / f"month={first:%Y-%m}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            table.slice(begin, end - begin),
            folder / "part-0000.parquet",
            compression="zstd",
        )


def best_of(read):
    best = None
    table = None
    for _ in range(RUNS):
        began = time.perf_counter()
        table = read()
        seconds = time.perf_counter() - began
        best = seconds if best is None else min(best, seconds)
    return table, best


def time_readers(data_dir, port):
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    ticket = flight.Ticket(
        json.dumps({"dataset": "klines", "symbol": SYMBOL, "timeframe": "1"})
    )
    flight_table, flight_seconds = best_of(lambda: client.do_get(ticket).read_all())

    files = sorted(str(path) for path in series_dir(data_dir).glob("month=*/*.parquet"))
    parquet_table, parquet_seconds = best_of(
        lambda: pq.ParquetDataset(files, partitioning=None).read()
    )
    if flight_table.num_rows != parquet_table.num_rows:
        raise SystemExit(
            f"row counts differ: Flight {flight_table.num_rows}, "
            f"Parquet {parquet_table.num_rows}"
        )
    return {
        "rows": flight_table.num_rows,
        "bytes": flight_table.nbytes,
        "flight_gbps": flight_table.nbytes / flight_seconds / 1e9,
        "parquet_gbps": parquet_table.nbytes / parquet_seconds / 1e9,
    }


def main():
    command = sys.argv[1]
    if command == "write":
        write(sys.argv[2], int(sys.argv[3]))
    elif command == "time":
        print(json.dumps(time_readers(sys.argv[2], int(sys.argv[3]))))
    else:
        raise SystemExit(f"unknown command {command!r}: expected write or time")


if __name__ == "__main__":
    main()
