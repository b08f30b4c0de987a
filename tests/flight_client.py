"""Flight clients that tests/flight_e2e.rs drives against a running `bst serve`.

Usage: python flight_client.py CHECK PORT [ARG]. Each check prints one JSON object on
stdout. Status codes are reported by name (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED,
...), taken from the exception class of pyarrow.flight or the status code of ADBC errors.
"""

import json
import sys
import warnings

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

warnings.filterwarnings("ignore", message="Cannot disable autocommit")

KLINES_1M = {"dataset": "klines", "symbol": "BTCUSDT", "timeframe": "1"}


def pyarrow_code(error):
    """Return the gRPC status name of a pyarrow.flight exception."""
    if isinstance(error, flight.FlightUnauthenticatedError):
        return "UNAUTHENTICATED"
    if isinstance(error, flight.FlightInternalError):
        return "INTERNAL"
    if isinstance(error, pa.ArrowKeyError):
        return "NOT_FOUND"
    if isinstance(error, pa.ArrowInvalid):
        return "INVALID_ARGUMENT"
    if isinstance(error, pa.ArrowNotImplementedError):
        return "UNIMPLEMENTED"
    return type(error).__name__


def adbc_code(error):
    """Return the ADBC status name of an ADBC exception, such as INVALID_ARGUMENT."""
    code = getattr(error, "status_code", None)
    return code.name if code is not None else type(error).__name__


def datasets(port):
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    listed = []
    for info in client.list_flights():
        listed.append(
            {
                "path": [part.decode() for part in info.descriptor.path],
                "total_records": info.total_records,
                "app_metadata": json.loads(info.app_metadata),
            }
        )
    table = client.do_get(flight.Ticket(json.dumps(KLINES_1M))).read_all()
    open_times = table.column("open_time").cast(pa.int64())
    ranged = client.do_get(
        flight.Ticket(
            json.dumps(
                dict(
                    KLINES_1M,
                    start="2025-06-01T00:00:00Z",
                    end=1748822400000,
                    columns=["open_time", "close"],
                )
            )
        )
    ).read_all()
    descriptor = flight.FlightDescriptor.for_path("klines", "linear", "BTCUSDT", "1")
    schema = client.get_schema(descriptor).schema
    info = client.get_flight_info(descriptor)
    return {
        "datasets": listed,
        "rows": table.num_rows,
        "sum_close": pc.sum(table.column("close")).as_py(),
        "first_open_ms": open_times[0].as_py(),
        "last_open_ms": open_times[-1].as_py(),
        "ranged_rows": ranged.num_rows,
        "ranged_columns": ranged.column_names,
        "schema_columns": schema.names,
        "info_records": info.total_records,
    }


def adbc(port):
    import adbc_driver_flightsql.dbapi as dbapi
    import polars as pl

    with dbapi.connect(f"grpc://127.0.0.1:{port}") as connection:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT count(*), min(low), max(high) FROM klines "
            "WHERE symbol = 'BTCUSDT' AND timeframe = '1'"
        )
        count, min_low, max_high = cursor.fetchone()
        # The driver sends the SQL as written, so the placeholder is DataFusion's $1.
        cursor.execute(
            "SELECT count(*) FROM klines WHERE symbol = 'BTCUSDT' AND close > $1",
            parameters=(100000.0,),
        )
        (above,) = cursor.fetchone()
        frame = pl.read_database(
            "SELECT open_time, close FROM klines WHERE timeframe = '1' ORDER BY open_time",
            connection,
        )
        objects = connection.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = sorted(
            table["table_name"]
            for catalog in objects
            for schema in catalog["catalog_db_schemas"]
            for table in schema["db_schema_tables"]
        )
        cursor.close()
    return {
        "count": count,
        "min_low": min_low,
        "max_high": max_high,
        "above": above,
        "polars_rows": frame.height,
        "polars_sum_close": frame["close"].sum(),
        "tables": tables,
    }


def errors(port):
    import adbc_driver_flightsql.dbapi as dbapi

    client = flight.connect(f"grpc://127.0.0.1:{port}")
    tickets = {
        "bad_ticket": b'{"dataset": "klines", "symbol": "BTCUSDT"}',
        "unknown_dataset": json.dumps(dict(KLINES_1M, symbol="NOPEUSDT")).encode(),
        "unknown_backtest": b'{"backtest_id": 999999, "table": "trades"}',
    }
    codes = {}
    for name, ticket in tickets.items():
        try:
            client.do_get(flight.Ticket(ticket)).read_all()
            codes[name] = "OK"
        except Exception as error:  # noqa: BLE001 - the class is what is checked
            codes[name] = pyarrow_code(error)
    statements = {
        "bad_sql": "SELEC 1 FROM klines",
        "copy": "COPY (SELECT 1) TO '/tmp/bst_flight_copy.csv'",
        "create_table": "CREATE TABLE t (a INT)",
    }
    with dbapi.connect(f"grpc://127.0.0.1:{port}") as connection:
        for name, sql in statements.items():
            cursor = connection.cursor()
            try:
                cursor.execute(sql)
                cursor.fetchall()
                codes[name] = "OK"
            except Exception as error:  # noqa: BLE001
                codes[name] = adbc_code(error)
                codes[name + "_message"] = str(error)
            finally:
                cursor.close()
    return codes


def auth(port, key):
    ticket = flight.Ticket(json.dumps(KLINES_1M))
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    result = {}
    try:
        client.do_get(ticket).read_all()
        result["missing_key"] = "OK"
    except Exception as error:  # noqa: BLE001
        result["missing_key"] = pyarrow_code(error)
    wrong = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer wrong")])
    try:
        client.do_get(ticket, wrong).read_all()
        result["wrong_key"] = "OK"
    except Exception as error:  # noqa: BLE001
        result["wrong_key"] = pyarrow_code(error)
    bearer = flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {key}".encode())]
    )
    result["bearer_rows"] = client.do_get(ticket, bearer).read_all().num_rows
    header, value = client.authenticate_basic_token(b"bst", key.encode())
    handshake = flight.FlightCallOptions(headers=[(header, value)])
    result["handshake_rows"] = client.do_get(ticket, handshake).read_all().num_rows
    return result


def stream(port, symbol):
    """Read a whole kline series batch by batch without keeping it."""
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    ticket = {"dataset": "klines", "symbol": symbol, "timeframe": "1"}
    reader = client.do_get(flight.Ticket(json.dumps(ticket)))
    rows = 0
    batches = 0
    for chunk in reader:
        rows += chunk.data.num_rows
        batches += 1
    return {"rows": rows, "batches": batches}


def main():
    check, port = sys.argv[1], int(sys.argv[2])
    extra = sys.argv[3:]
    result = {
        "datasets": datasets,
        "adbc": adbc,
        "errors": errors,
        "auth": auth,
        "stream": stream,
    }[check](port, *extra)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
