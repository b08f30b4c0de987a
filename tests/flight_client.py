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
    # pyarrow has no exception class of its own for FAILED_PRECONDITION, but its message
    # contains "gRPC returned precondition failed error".
    if "precondition failed" in str(error):
        return "FAILED_PRECONDITION"
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


def read_ticket(client, ticket):
    """Read the whole result of a JSON ticket."""
    return client.do_get(flight.Ticket(json.dumps(ticket))).read_all()


def error_code(call):
    """Run `call` and return OK or the status name of the error it raised."""
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the class is what is checked
        return pyarrow_code(error)
    return "OK"


def error_detail(call):
    """Run `call` and return [OK, ""] or [status name, message] of the error it raised."""
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the class is what is checked
        return [pyarrow_code(error), str(error)]
    return ["OK", ""]


def table_columns(table):
    """Return a table as {column name: list of values}, with timestamps as epoch integers in
    the unit of their type."""
    columns = {}
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_timestamp(field.type):
            column = column.cast(pa.int64())
        columns[field.name] = column.to_pylist()
    return columns


def column_types(table):
    """Return {column name: Arrow type name}, such as "timestamp[ms, tz=UTC]"."""
    return {field.name: str(field.type) for field in table.schema}


def list_datasets(client):
    """Return every FlightInfo of list_flights with its ticket."""
    listed = []
    for info in client.list_flights():
        listed.append(
            {
                "path": [part.decode() for part in info.descriptor.path],
                "total_records": info.total_records,
                "app_metadata": json.loads(info.app_metadata),
                "ticket": info.endpoints[0].ticket.ticket.decode(),
            }
        )
    return listed


def datasets(port):
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    listed = list_datasets(client)
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


def klines(port):
    """Read BTCUSDT 1m whole and return every column."""
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    table = read_ticket(client, KLINES_1M)
    return {
        "names": table.column_names,
        "types": column_types(table),
        "columns": table_columns(table),
    }


def ticks(port):
    """List the datasets and read the BTCUSD inverse ticks through the ticket that
    list_flights returns, whole and for one hour."""
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    listed = list_datasets(client)
    ticks_info = next(info for info in listed if info["path"][0] == "ticks")
    table = client.do_get(flight.Ticket(ticks_info["ticket"])).read_all()
    hour = read_ticket(
        client,
        json.loads(ticks_info["ticket"])
        | {"start": "2019-10-01T12:00:00Z", "end": "2019-10-01T13:00:00Z"},
    )
    hour_ts = hour.column("ts").cast(pa.int64())
    return {
        "datasets": listed,
        "names": table.column_names,
        "types": column_types(table),
        "columns": table_columns(table),
        "sum_size": pc.sum(table.column("size")).as_py(),
        "hour_rows": hour.num_rows,
        "hour_first_us": hour_ts[0].as_py(),
        "hour_last_us": hour_ts[-1].as_py(),
    }


def backtest(port, backtest_id):
    """Read a backtest's trades and equity curve, and the status of an unknown id."""
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    backtest_id = int(backtest_id)
    trades = read_ticket(client, {"backtest_id": backtest_id, "table": "trades"})
    equity = read_ticket(client, {"backtest_id": backtest_id, "table": "equity"})
    equity_descriptor = flight.FlightDescriptor.for_command(
        json.dumps({"backtest_id": backtest_id, "table": "equity"})
    )
    unknown_id = backtest_id + 1000
    unknown = {}
    for table_name in ("trades", "equity"):
        ticket = {"backtest_id": unknown_id, "table": table_name}
        unknown[table_name] = error_code(lambda ticket=ticket: read_ticket(client, ticket))
    unknown_descriptor = flight.FlightDescriptor.for_command(
        json.dumps({"backtest_id": unknown_id, "table": "trades"})
    )
    unknown["schema"] = error_code(lambda: client.get_schema(unknown_descriptor))
    return {
        "trade_types": column_types(trades),
        "trades": table_columns(trades),
        "equity_types": column_types(equity),
        "equity": table_columns(equity),
        "equity_schema": client.get_schema(equity_descriptor).schema.names,
        "unknown": unknown,
    }


def protobuf_varint(value):
    """Encode an unsigned integer as a protobuf varint."""
    encoded = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            encoded.append(byte | 0x80)
        else:
            encoded.append(byte)
            return bytes(encoded)


def protobuf_bytes_field(number, payload):
    """Encode a length-delimited protobuf field."""
    return protobuf_varint(number << 3 | 2) + protobuf_varint(len(payload)) + payload


def get_sql_info_command(info_ids):
    """Encode a Flight SQL CommandGetSqlInfo, wrapped in google.protobuf.Any as a command
    descriptor carries it. pyarrow has no Flight SQL messages, so the two messages are
    written by hand: CommandGetSqlInfo has one field, `repeated uint32 info = 1` (packed)."""
    packed_ids = b"".join(protobuf_varint(info_id) for info_id in info_ids)
    command = protobuf_bytes_field(1, packed_ids)
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandGetSqlInfo"
    return protobuf_bytes_field(1, type_url) + protobuf_bytes_field(2, command)


# SqlInfo ids of the Flight SQL protocol (FlightSql.proto).
SQL_INFO_IDS = {
    "FLIGHT_SQL_SERVER_NAME": 0,
    "FLIGHT_SQL_SERVER_VERSION": 1,
    "FLIGHT_SQL_SERVER_ARROW_VERSION": 2,
    "FLIGHT_SQL_SERVER_READ_ONLY": 3,
    "FLIGHT_SQL_SERVER_SQL": 4,
    "FLIGHT_SQL_SERVER_SUBSTRAIT": 5,
}


def sql_info(port):
    """Call CommandGetSqlInfo through the ADBC driver and directly with pyarrow.flight."""
    import adbc_driver_flightsql.dbapi as dbapi

    with dbapi.connect(f"grpc://127.0.0.1:{port}") as connection:
        adbc_info = connection.adbc_get_info()
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    descriptor = flight.FlightDescriptor.for_command(
        get_sql_info_command(SQL_INFO_IDS.values())
    )
    info = client.get_flight_info(descriptor)
    table = client.do_get(info.endpoints[0].ticket).read_all()
    names = {info_id: name for name, info_id in SQL_INFO_IDS.items()}
    values = {names[row["info_name"]]: row["value"] for row in table.to_pylist()}
    return {
        "adbc": {str(key): value for key, value in adbc_info.items()},
        "values": values,
        "rows": table.num_rows,
        "columns": table.column_names,
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


def execute_statement_query(cursor, sql):
    """Run `sql` as a Flight SQL statement query, without the prepared statement that
    cursor.execute() creates, and read its result."""
    statement = cursor.adbc_statement
    statement.set_sql_query(sql)
    handle, _ = statement.execute_query()
    return pa.RecordBatchReader._import_from_c(handle.address).read_all()


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
        codes[name] = error_code(
            lambda ticket=ticket: client.do_get(flight.Ticket(ticket)).read_all()
        )
    statements = {
        "bad_sql": "SELEC 1 FROM klines",
        "copy": "COPY (SELECT 1) TO '/tmp/bst_flight_copy.csv'",
        "create_table": "CREATE TABLE t (a INT)",
        "insert": "INSERT INTO klines SELECT * FROM klines",
        "update": "UPDATE klines SET close = 0 WHERE symbol = 'BTCUSDT'",
        "delete": "DELETE FROM klines WHERE symbol = 'BTCUSDT'",
        "drop_table": "DROP TABLE klines",
        # 2,000 terms nest 1,999 levels deep, which overflowed a server thread's stack.
        "deep_sql": "SELECT " + "+".join(["1"] * 2000),
    }
    with dbapi.connect(f"grpc://127.0.0.1:{port}") as connection:
        for name, sql in statements.items():
            # The statement's execute_query() sends a query (CommandStatementQuery),
            # executescript() an update (CommandStatementUpdate through DoPut), and
            # execute() creates a prepared statement first.
            paths = {
                "": lambda cursor, sql=sql: execute_statement_query(cursor, sql),
                "_update": lambda cursor, sql=sql: cursor.executescript(sql),
                "_prepared": lambda cursor, sql=sql: (cursor.execute(sql), cursor.fetchall()),
            }
            for suffix, run in paths.items():
                cursor = connection.cursor()
                try:
                    run(cursor)
                    codes[name + suffix] = "OK"
                except Exception as error:  # noqa: BLE001
                    codes[name + suffix] = adbc_code(error)
                    codes[name + suffix + "_message"] = str(error)
                finally:
                    cursor.close()
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM klines")
        (codes["rows_after"],) = cursor.fetchone()
        cursor.close()
    return codes


def ticket_errors(port):
    """Send tickets and descriptors that are neither JSON tickets nor Flight SQL commands, and
    JSON tickets that do not validate."""
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    tickets = {
        "text": b"not a ticket",
        "empty": b"",
        # Field 1 (type_url) of a protobuf Any, with a type that is no Flight SQL command.
        "unknown_any": protobuf_bytes_field(1, b"type.googleapis.com/bst.Nothing"),
        # A length prefix longer than the bytes that follow.
        "truncated_protobuf": b"\x0a\x7fabc",
        "malformed_json": b'{"dataset": ',
        "backtest_id_text": b'{"backtest_id": "one", "table": "trades"}',
        "start_object": b'{"dataset": "klines", "symbol": "BTCUSDT", "timeframe": "1", '
        b'"start": {"day": 1}}',
        "long_table": json.dumps({"backtest_id": 1, "table": "x" * 100000}).encode(),
    }
    result = {}
    for name, ticket in tickets.items():
        result[name] = error_detail(
            lambda ticket=ticket: client.do_get(flight.Ticket(ticket)).read_all()
        )
    descriptors = {
        "descriptor_text": b"not a command",
        "descriptor_unknown_any": protobuf_bytes_field(1, b"type.googleapis.com/bst.Nothing"),
    }
    for name, command in descriptors.items():
        descriptor = flight.FlightDescriptor.for_command(command)
        result[name] = error_detail(lambda descriptor=descriptor: client.get_flight_info(descriptor))
    return result


def put_action_errors(port):
    """Send DoAction and DoPut calls that the server does not run or cannot decode, and list
    the actions."""
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    unknown_any = protobuf_bytes_field(1, b"type.googleapis.com/bst.Nothing")
    actions = {
        "action_text_body": ("CreatePreparedStatement", b"not protobuf"),
        "action_truncated_body": ("ClosePreparedStatement", b"\x0a\x7fabc"),
        "action_unknown_any": ("CreatePreparedStatement", unknown_any),
        "action_unknown_type": ("Explode" * 20, b""),
        "action_transaction": ("BeginTransaction", b""),
    }
    result = {}
    for name, (action_type, body) in actions.items():
        action = flight.Action(action_type, body)
        result[name] = error_detail(lambda action=action: list(client.do_action(action)))
    result["action_types"] = sorted(action.type for action in client.list_actions())

    schema = pa.schema([("x", pa.int64())])
    descriptors = {
        "put_text": flight.FlightDescriptor.for_command(b"not a command"),
        "put_truncated": flight.FlightDescriptor.for_command(b"\x0a\x7fabc"),
        "put_unknown_any": flight.FlightDescriptor.for_command(unknown_any),
        "put_path": flight.FlightDescriptor.for_path("klines"),
    }
    for name, descriptor in descriptors.items():

        def put(descriptor=descriptor):
            writer, _ = client.do_put(descriptor, schema)
            writer.write_table(pa.table({"x": [1]}, schema=schema))
            writer.close()

        result[name] = error_detail(put)
    return result


def unfinished_backtest(port, backtest_id):
    """Read the results of a backtest that has not completed, by ticket and by descriptor."""
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    result = {}
    for table_name in ("trades", "equity"):
        ticket = {"backtest_id": int(backtest_id), "table": table_name}
        result[table_name] = error_detail(lambda ticket=ticket: read_ticket(client, ticket))
    descriptor = flight.FlightDescriptor.for_command(
        json.dumps({"backtest_id": int(backtest_id), "table": "trades"})
    )
    result["flight_info"] = error_detail(lambda: client.get_flight_info(descriptor))
    return result


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
        "klines": klines,
        "ticks": ticks,
        "backtest": backtest,
        "sql_info": sql_info,
        "adbc": adbc,
        "errors": errors,
        "ticket_errors": ticket_errors,
        "put_action_errors": put_action_errors,
        "unfinished_backtest": unfinished_backtest,
        "auth": auth,
        "stream": stream,
    }[check](port, *extra)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
