"""Writes to the backtests table at a steady rate while the load benchmark reads.

Usage: python3 rest_load_writer.py BASE_URL FIRST_ID LAST_ID RATE, where BASE_URL ends in
/api/v1. It sends RATE updates per second of the `initial_capital` of a random queued backtest
between FIRST_ID and LAST_ID until it is killed, and exits non-zero on any status other than
200. Each update drops that backtest and every list page from the server's read cache, so the
reads that run beside it include uncached reads.
"""

import http.client
import json
import random
import sys
import time
import urllib.parse


def main() -> None:
    base_url, first_id, last_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rate = float(sys.argv[4])
    parsed = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    interval = 1.0 / rate
    next_time = time.monotonic()
    count = 0
    while True:
        count += 1
        backtest_id = random.randint(first_id, last_id)
        connection.request(
            "PUT",
            f"{parsed.path}/backtests/{backtest_id}",
            body=json.dumps({"initial_capital": 20000.0 + count}),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        text = response.read()
        if response.status != 200:
            sys.exit(f"PUT /backtests/{backtest_id} returned {response.status}: {text[:300]!r}")
        next_time += interval
        time.sleep(max(0.0, next_time - time.monotonic()))


if __name__ == "__main__":
    main()
