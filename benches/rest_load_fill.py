"""Stores one strategy and N queued backtests through the REST API for the load benchmark.

Usage: python3 rest_load_fill.py BASE_URL N, where BASE_URL ends in /api/v1. The server must
run with --workers 0 so that the backtests stay queued. Prints the first and the last
backtest id on one line. Exits non-zero on any status other than 201 and when the stored
total differs from N.
"""

import http.client
import json
import sys
import urllib.parse


def main() -> None:
    base_url, count = sys.argv[1], int(sys.argv[2])
    parsed = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)

    def post(path: str, body: dict) -> dict:
        connection.request(
            "POST",
            parsed.path + path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        text = response.read()
        if response.status != 201:
            sys.exit(f"POST {path} returned {response.status}: {text[:300]!r}")
        return json.loads(text)

    strategy = post(
        "/strategies",
        {
            "name": "load benchmark",
            "strategy_type": "sma_crossover",
            "config": {"fast_period": 10, "slow_period": 30},
            "is_active": True,
        },
    )
    ids = []
    for index in range(count):
        created = post(
            "/backtests",
            {
                "strategy_id": strategy["id"],
                "symbol": "BTCUSDT",
                "timeframe": "1",
                "start_date": "2025-05-01T00:00:00Z",
                "end_date": "2025-06-01T00:00:00Z",
                "initial_capital": 10000.0 + index,
            },
        )
        ids.append(created["id"])
    connection.request("GET", parsed.path + "/backtests?limit=1")
    response = connection.getresponse()
    total = json.loads(response.read())["total"]
    if total != count:
        sys.exit(f"the store lists {total} backtests, expected {count}")
    print(min(ids), max(ids))


if __name__ == "__main__":
    main()
