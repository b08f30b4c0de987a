"""Run the SMA crossover grid of benches/sweep_vs_vectorbt.sh in vectorbt and check it.

Subcommands:

- ``grid`` runs every (fast, slow) pair in one ``vbt.Portfolio.from_signals`` call, once
  untimed to compile vectorbt's Numba functions and once timed, and writes the final values,
  trade counts and the timed seconds as JSON.
- ``oracle`` compares vectorbt with a plain Python loop of bst's semantics on a few pairs.
- ``compare`` checks the ``grid`` output against the JSON of ``bst sweep --json``.
- ``bst-grid`` prints the ``--grid`` JSON of ``bst sweep`` for the same pairs.
- ``synthetic`` writes a seeded random walk of 1-minute bars as a Bybit kline CSV.gz.

The semantics are bst's (docs/backtesting.md). A strategy decides at bar t's close and fills
at bar t+1's open, with commission on both legs and all-in long-only sizing,
``quantity = equity / (open * (1 + commission))``. A position still open after the last bar
is closed at the last close with the exit commission.
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import pandas as pd


def parse_range(text):
    """Parse ``low:high:step`` (high included) or a comma-separated list into integers."""
    if ":" in text:
        low, high, step = (int(part) for part in text.split(":"))
        if step <= 0 or low > high:
            raise argparse.ArgumentTypeError(
                f"invalid range {text!r}: expected low:high:step with low <= high and step > 0"
            )
        return list(range(low, high + 1, step))
    return [int(part) for part in text.split(",")]


def parse_pairs(text):
    """Parse ``fast:slow,fast:slow,...`` into a list of integer pairs."""
    pairs = []
    for item in text.split(","):
        fast, slow = (int(part) for part in item.split(":"))
        pairs.append((fast, slow))
    return pairs


def grid_pairs(fast_periods, slow_periods):
    """Return every (fast, slow) pair with fast < slow, as bst sweep skips the others."""
    return [(fast, slow) for fast in fast_periods for slow in slow_periods if fast < slow]


def load_bars(path):
    """Read the open and close columns of a kline CSV (plain or gzip) in time order."""
    frame = pd.read_csv(path, usecols=["timestamp", "open", "close"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame.sort_values("timestamp", kind="stable")
    return frame["open"].to_numpy(np.float64), frame["close"].to_numpy(np.float64)


def crossing_signals(fast_sma, slow_sma):
    """Return (cross above, cross below) at each bar's close, False where a value is NaN.

    A crosses above B at bar t when A[t] > B[t] and A[t-1] <= B[t-1]. A comparison with NaN
    is False, so no signal comes before the second bar on which both SMAs are defined.
    """
    previous_fast = np.full_like(fast_sma, np.nan)
    previous_slow = np.full_like(slow_sma, np.nan)
    previous_fast[1:] = fast_sma[:-1]
    previous_slow[1:] = slow_sma[:-1]
    with np.errstate(invalid="ignore"):
        cross_above = (fast_sma > slow_sma) & (previous_fast <= previous_slow)
        cross_below = (fast_sma < slow_sma) & (previous_fast >= previous_slow)
    return cross_above, cross_below


def shift_one_bar(signals):
    """Move each signal to the next bar, where its order fills, and drop the last bar's."""
    shifted = np.zeros_like(signals)
    shifted[1:] = signals[:-1]
    return shifted


def moving_averages(closes, windows, method):
    """Return {window: SMA of closes}, NaN during warm-up, computed by ``method``.

    ``running-total`` is TA-Lib's running total, the order of additions bst's SMA uses, and
    ``pandas`` is pandas' rolling mean. Where the fast and slow SMAs are equal in decimal,
    the two methods round differently and can disagree on a crossing. The ``vbt.MA`` of
    vectorbt 1.2.0 subtracts cumulative sums and rounds differently again.
    """
    if method == "pandas":
        series = pd.Series(closes)
        return {window: series.rolling(window).mean().to_numpy() for window in windows}
    return {window: np.array(running_total_mean(closes, window)) for window in windows}


def run_vectorbt(vbt, opens, closes, pairs, commission, initial_capital, sma_method):
    """Simulate every pair in one vectorbt portfolio and return (final values, trade counts)."""
    windows = sorted({period for pair in pairs for period in pair})
    sma_by_window = moving_averages(closes, windows, sma_method)
    fast_sma = np.column_stack([sma_by_window[fast] for fast, _ in pairs])
    slow_sma = np.column_stack([sma_by_window[slow] for _, slow in pairs])
    cross_above, cross_below = crossing_signals(fast_sma, slow_sma)

    # With price=open, an order on row t fills at bar t's open, so the signals decided at
    # bar t - 1's close move to row t. In vectorbt 1.2.0, size=inf with fees buys
    # cash / (open * (1 + fees)), bst's all-in quantity.
    portfolio = vbt.Portfolio.from_signals(
        close=closes[:, np.newaxis],
        entries=shift_one_bar(cross_above),
        exits=shift_one_bar(cross_below),
        price=opens[:, np.newaxis],
        size=np.inf,
        fees=commission,
        init_cash=initial_capital,
        direction="longonly",
    )
    final_values = np.asarray(portfolio.final_value(), dtype=np.float64)
    # vectorbt values an open position at the last close without the exit fee, and bst
    # closes it there with the fee.
    open_quantity = np.asarray(portfolio.assets(), dtype=np.float64)[-1]
    final_values = final_values - open_quantity * closes[-1] * commission
    # The trade records include a position still open as one trade, as bst counts its
    # end-of-data exit.
    trade_counts = np.asarray(portfolio.trades.count(), dtype=np.int64)
    return final_values, trade_counts


def running_total_mean(values, window):
    """Return TA-Lib's SMA of each bar as a list, NaN during warm-up.

    The total starts as the sum of the first window - 1 values; at each bar it adds the bar's
    value, is divided by the window, then drops the window's oldest value. Plain Python floats
    keep every addition in this order.
    """
    values = [float(value) for value in values]
    means = [math.nan] * len(values)
    if len(values) < window:
        return means
    total = 0.0
    for bar in range(window - 1):
        total += values[bar]
    for bar in range(window - 1, len(values)):
        total += values[bar]
        means[bar] = total / window
        total -= values[bar + 1 - window]
    return means


def loop_moving_average(closes, window):
    """Return the SMA of each bar as a list, NaN during warm-up, from the running total."""
    return running_total_mean(closes.tolist(), window)


def simulate_loop(opens, closes, fast, slow, commission, initial_capital):
    """Return (final capital, trade count) of one SMA crossover from a plain bar loop."""
    fast_sma = loop_moving_average(closes, fast)
    slow_sma = loop_moving_average(closes, slow)
    cash = initial_capital
    in_position = False
    quantity = entry_price = entry_commission = 0.0
    trades = 0
    pending = None
    for bar in range(len(opens)):
        # The order decided at the previous close fills at this bar's open.
        if pending == "enter":
            entry_price = opens[bar]
            quantity = cash / (entry_price * (1 + commission))
            entry_commission = quantity * entry_price * commission
            in_position = True
            trades += 1
        elif pending == "exit":
            exit_price = opens[bar]
            exit_commission = quantity * exit_price * commission
            cash += quantity * (exit_price - entry_price) - entry_commission - exit_commission
            in_position = False
        pending = None

        if bar == 0:
            continue
        now_fast, now_slow = fast_sma[bar], slow_sma[bar]
        before_fast, before_slow = fast_sma[bar - 1], slow_sma[bar - 1]
        if any(math.isnan(value) for value in (now_fast, now_slow, before_fast, before_slow)):
            continue
        crosses_above = now_fast > now_slow and before_fast <= before_slow
        crosses_below = now_fast < now_slow and before_fast >= before_slow
        if crosses_above and not in_position:
            pending = "enter"
        elif crosses_below and in_position:
            pending = "exit"

    if in_position:
        exit_price = closes[-1]
        exit_commission = quantity * exit_price * commission
        cash += quantity * (exit_price - entry_price) - entry_commission - exit_commission
    return cash, trades


def decimal_tie_count(closes, fast, slow):
    """Return how many bars have fast and slow SMAs equal in decimal, or None if unknown.

    The closes are scaled to integers by the smallest power of ten (up to 10**8) that makes
    them whole, so the window sums are exact. None means no such power was found.
    """
    for decimals in range(9):
        scale = 10.0**decimals
        units = np.round(closes * scale)
        if np.array_equal(units / scale, closes):
            break
    else:
        return None
    prefix_sums = np.concatenate([[0], np.cumsum(units.astype(np.int64))])
    fast_sums = prefix_sums[slow:] - prefix_sums[slow - fast : -fast]
    slow_sums = prefix_sums[slow:] - prefix_sums[:-slow]
    return int(np.count_nonzero(fast_sums * slow == slow_sums * fast))


def relative_difference(value, reference):
    return abs(value - reference) / max(abs(reference), 1e-300)


def command_grid(arguments):
    import vectorbt as vbt

    opens, closes = load_bars(arguments.csv)
    pairs = grid_pairs(arguments.fast, arguments.slow)
    if not pairs:
        sys.exit("the grid is empty: every fast period is at least every slow period")

    run = lambda: run_vectorbt(
        vbt,
        opens,
        closes,
        pairs,
        arguments.commission,
        arguments.initial_capital,
        arguments.sma,
    )
    # The first run compiles vectorbt's Numba functions and is not timed.
    run()
    start = time.perf_counter()
    final_values, trade_counts = run()
    seconds = time.perf_counter() - start

    results = [
        {
            "params": {"fast_period": fast, "slow_period": slow},
            "final_value": float(final_value),
            "total_trades": int(trade_count),
        }
        for (fast, slow), final_value, trade_count in zip(pairs, final_values, trade_counts)
    ]
    output = {
        "vectorbt_version": vbt.__version__,
        "bars": len(opens),
        "combinations": len(pairs),
        "seconds": seconds,
        "results": results,
    }
    with open(arguments.output, "w") as handle:
        json.dump(output, handle)
    print(
        f"vectorbt {vbt.__version__}: {len(pairs)} combinations x {len(opens)} bars "
        f"in {seconds:.3f} s after a warm-up run",
        file=sys.stderr,
    )


def command_oracle(arguments):
    import vectorbt as vbt

    opens, closes = load_bars(arguments.csv)
    pairs = arguments.pairs
    final_values, trade_counts = run_vectorbt(
        vbt,
        opens,
        closes,
        pairs,
        arguments.commission,
        arguments.initial_capital,
        arguments.sma,
    )
    failures = 0
    for (fast, slow), final_value, trade_count in zip(pairs, final_values, trade_counts):
        loop_value, loop_trades = simulate_loop(
            opens, closes, fast, slow, arguments.commission, arguments.initial_capital
        )
        difference = relative_difference(final_value, loop_value)
        matches = difference <= arguments.tolerance and trade_count == loop_trades
        failures += not matches
        print(
            f"fast {fast} slow {slow}: vectorbt {final_value:.10f} ({trade_count} trades), "
            f"loop {loop_value:.10f} ({loop_trades} trades), relative difference "
            f"{difference:.2e}: {'ok' if matches else 'MISMATCH'}"
        )
    if failures:
        sys.exit(f"{failures} of {len(pairs)} pairs differ from the loop")


def command_compare(arguments):
    with open(arguments.vectorbt) as handle:
        vectorbt_output = json.load(handle)
    with open(arguments.bst) as handle:
        bst_output = json.load(handle)

    def key(params):
        return (int(params["fast_period"]), int(params["slow_period"]))

    bst_by_pair = {key(result["params"]): result["metrics"] for result in bst_output["results"]}
    vectorbt_by_pair = {key(result["params"]): result for result in vectorbt_output["results"]}
    closes = load_bars(arguments.csv)[1] if arguments.csv else None
    mismatches = []
    for pair in sorted(vectorbt_by_pair.keys() - bst_by_pair.keys()):
        mismatches.append(f"fast {pair[0]} slow {pair[1]}: missing from the bst sweep results")
    for pair in sorted(bst_by_pair.keys() - vectorbt_by_pair.keys()):
        mismatches.append(f"fast {pair[0]} slow {pair[1]}: in bst's results but not in the grid")
    for pair in sorted(vectorbt_by_pair.keys() & bst_by_pair.keys()):
        expected, actual = vectorbt_by_pair[pair], bst_by_pair[pair]
        difference = relative_difference(actual["final_capital"], expected["final_value"])
        if actual["total_trades"] != expected["total_trades"] or difference > arguments.tolerance:
            mismatches.append(
                f"fast {pair[0]} slow {pair[1]}: bst final_capital {actual['final_capital']!r} "
                f"with {actual['total_trades']} trades, vectorbt {expected['final_value']!r} "
                f"with {expected['total_trades']} trades (relative difference {difference:.2e})"
            )
            ties = None if closes is None else decimal_tie_count(closes, *pair)
            if ties:
                mismatches[-1] += (
                    f"; the SMAs are equal in decimal at {ties} bar{'s' if ties > 1 else ''}, where "
                    "their rounding "
                    "decides whether a crossing happens"
                )
    if bst_output["bars"] != vectorbt_output["bars"]:
        mismatches.append(
            f"bst swept {bst_output['bars']} bars and vectorbt {vectorbt_output['bars']}"
        )
    for line in mismatches:
        print(line, file=sys.stderr)
    if mismatches:
        sys.exit(f"{len(mismatches)} mismatches between bst sweep and vectorbt")
    print(
        f"all {len(vectorbt_by_pair)} combinations agree: equal trade counts, final values "
        f"within {arguments.tolerance:g} relative",
        file=sys.stderr,
    )


def command_bst_grid(arguments):
    print(json.dumps({"fast_period": arguments.fast, "slow_period": arguments.slow}))


def command_synthetic(arguments):
    """Write a random walk of 1-minute bars with prices on a 0.1 tick, like Bybit's BTCUSDT."""
    generator = np.random.default_rng(arguments.seed)
    bars = arguments.bars
    log_returns = generator.normal(0.0, 0.0007, bars)
    closes = np.round(arguments.start_price * np.exp(np.cumsum(log_returns)), 1)
    opens = np.empty(bars)
    opens[0] = arguments.start_price
    opens[1:] = closes[:-1]
    wick_up = np.round(np.abs(generator.normal(0.0, 15.0, bars)), 1)
    wick_down = np.round(np.abs(generator.normal(0.0, 15.0, bars)), 1)
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range(arguments.first_open, periods=bars, freq="1min", tz="UTC"),
            "open": opens,
            "high": np.round(np.maximum(opens, closes) + wick_up, 1),
            "low": np.round(np.minimum(opens, closes) - wick_down, 1),
            "close": closes,
            "volume": np.round(generator.gamma(2.0, 100.0, bars), 3),
        }
    )
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S+00:00")
    frame.to_csv(arguments.output, index=False, float_format="%.10g", compression="gzip")
    print(f"wrote {bars} bars to {arguments.output}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def add_order_options(subparser):
        subparser.add_argument("--commission", type=float, default=0.00055)
        subparser.add_argument("--initial-capital", type=float, default=10000.0)
        subparser.add_argument(
            "--sma",
            choices=["running-total", "pandas"],
            default="running-total",
            help="how vectorbt's side computes the SMAs (see moving_averages)",
        )

    grid = commands.add_parser("grid", help="time the grid in vectorbt and write JSON")
    grid.add_argument("--csv", required=True, help="kline CSV file, plain or gzip")
    grid.add_argument("--fast", type=parse_range, required=True, help="low:high:step or a,b,c")
    grid.add_argument("--slow", type=parse_range, required=True, help="low:high:step or a,b,c")
    grid.add_argument("--output", required=True, help="JSON file to write")
    add_order_options(grid)
    grid.set_defaults(handler=command_grid)

    oracle = commands.add_parser("oracle", help="compare vectorbt with a plain loop")
    oracle.add_argument("--csv", required=True, help="kline CSV file, plain or gzip")
    oracle.add_argument(
        "--pairs",
        type=parse_pairs,
        default=parse_pairs("5:20,10:50,20:100"),
        help="fast:slow pairs, comma-separated",
    )
    oracle.add_argument(
        "--tolerance", type=float, default=1e-9, help="maximum relative difference of final values"
    )
    add_order_options(oracle)
    oracle.set_defaults(handler=command_oracle)

    compare = commands.add_parser("compare", help="check bst sweep JSON against grid JSON")
    compare.add_argument("--vectorbt", required=True, help="output of the grid subcommand")
    compare.add_argument("--bst", required=True, help="output of bst sweep --json")
    compare.add_argument(
        "--tolerance", type=float, default=1e-6, help="maximum relative difference of final values"
    )
    compare.add_argument(
        "--csv", help="kline CSV of the run, to count SMA ties for each mismatching pair"
    )
    compare.set_defaults(handler=command_compare)

    bst_grid = commands.add_parser("bst-grid", help="print the --grid JSON of bst sweep")
    bst_grid.add_argument("--fast", type=parse_range, required=True)
    bst_grid.add_argument("--slow", type=parse_range, required=True)
    bst_grid.set_defaults(handler=command_bst_grid)

    synthetic = commands.add_parser("synthetic", help="write seeded random-walk klines")
    synthetic.add_argument("--bars", type=int, default=525_600)
    synthetic.add_argument("--seed", type=int, default=20230101)
    synthetic.add_argument("--start-price", type=float, default=40000.0)
    synthetic.add_argument("--first-open", default="2023-01-01T00:00:00Z")
    synthetic.add_argument("--output", required=True, help="CSV.gz file to write")
    synthetic.set_defaults(handler=command_synthetic)

    arguments = parser.parse_args()
    arguments.handler(arguments)


if __name__ == "__main__":
    main()
