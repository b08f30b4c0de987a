//! Hand-computed cases for every fill, funding and metric rule of the oracle's `backtest`, and
//! for the alignment of its indicators.
//!
//! Each test builds a few bars, works out the expected fills and numbers in plain arithmetic,
//! and compares them with the oracle's report.

use bst_engine::oracle::indicators::{
    average_true_range, bollinger_bands, exponential_moving_average, macd, relative_strength_index,
};
use bst_engine::oracle::{
    EXIT_REASON_END_OF_DATA, EXIT_REASON_LIQUIDATION, EXIT_REASON_SIGNAL, EXIT_REASON_STOP_LOSS,
    EXIT_REASON_TAKE_PROFIT, OracleBar, OracleConfig, OracleDirection, OracleOrders, OracleReport,
    OracleSignals, OracleTrade, SIDE_LONG, SIDE_SHORT, backtest, long_only,
};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// 2024-01-01T22:00:00Z, two hours before a funding instant.
const JAN_1_22H_MS: i64 = 1_704_146_400_000;

/// 2024-01-02T00:00:00Z, a funding instant (a multiple of 8 hours since the epoch).
const JAN_2_MIDNIGHT_MS: i64 = 1_704_153_600_000;

/// Builds a 1-minute bar at minute `index`.
fn bar(index: i64, open: f64, high: f64, low: f64, close: f64) -> OracleBar {
    OracleBar {
        open_time_ms: index * MINUTE_MS,
        open,
        high,
        low,
        close,
    }
}

/// Builds 1-minute bars from opens and closes, with high and low spanning the two.
fn bars_from(opens: &[f64], closes: &[f64]) -> Vec<OracleBar> {
    assert_eq!(opens.len(), closes.len(), "test series lengths differ");
    let mut bars = Vec::new();
    for index in 0..opens.len() {
        let open = opens[index];
        let close = closes[index];
        bars.push(bar(
            index as i64,
            open,
            open.max(close),
            open.min(close),
            close,
        ));
    }
    bars
}

/// Commission-free account of 10,000 without leverage.
fn plain_config() -> OracleConfig {
    OracleConfig {
        initial_capital: 10_000.0,
        commission: 0.0,
        position_size: 1.0,
        leverage: 1.0,
        bars_per_year: 525_600.0,
    }
}

/// Crossing signals with `long` true at `long_bars` and `short` true at `short_bars`.
fn crossings(bar_count: usize, long_bars: &[usize], short_bars: &[usize]) -> OracleSignals {
    let mut long = vec![false; bar_count];
    let mut short = vec![false; bar_count];
    for &index in long_bars {
        long[index] = true;
    }
    for &index in short_bars {
        short[index] = true;
    }
    OracleSignals::Crossings { long, short }
}

/// Three bars: a signal at bar 0, an entry at bar 1's open of exactly 100 on a quiet bar,
/// then `test_bar` as bar 2.
fn entry_then(test_bar: OracleBar) -> Vec<OracleBar> {
    vec![
        bar(0, 100.0, 100.0, 100.0, 100.0),
        bar(1, 100.0, 100.5, 99.5, 100.0),
        test_bar,
    ]
}

#[track_caller]
fn assert_close(actual: f64, expected: f64, label: &str) {
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{label}: expected {expected}, got {actual}"
    );
}

#[track_caller]
fn assert_some_close(actual: Option<f64>, expected: f64, label: &str) {
    match actual {
        Some(value) => assert_close(value, expected, label),
        None => panic!("{label}: expected {expected}, got None"),
    }
}

#[track_caller]
fn assert_curve(actual: &[f64], expected: &[f64], label: &str) {
    assert_eq!(actual.len(), expected.len(), "{label}: curve length");
    for (index, (&value, &want)) in actual.iter().zip(expected).enumerate() {
        assert_close(value, want, &format!("{label} at bar {index}"));
    }
}

#[track_caller]
fn single_trade(report: &OracleReport) -> &OracleTrade {
    assert_eq!(report.trades.len(), 1, "trades: {:?}", report.trades);
    &report.trades[0]
}

#[test]
fn long_stop_and_take_profit_fills() {
    let orders = OracleOrders {
        stop_loss: Some(0.05),
        take_profit: Some(0.05),
        ..OracleOrders::default()
    };
    // Entry at 100 with 10,000 and no commission buys 100 units. Stop 95, take-profit 105.
    let quantity = 10_000.0 / 100.0;
    let cases = [
        // The bar reaches both levels, so the adverse one fills.
        (
            bar(2, 100.0, 106.0, 94.0, 101.0),
            95.0,
            EXIT_REASON_STOP_LOSS,
        ),
        // The open gaps below the stop and fills at the open.
        (
            bar(2, 93.0, 106.0, 92.0, 104.0),
            93.0,
            EXIT_REASON_STOP_LOSS,
        ),
        // Only the high reaches a level.
        (
            bar(2, 100.0, 106.0, 99.0, 104.0),
            105.0,
            EXIT_REASON_TAKE_PROFIT,
        ),
    ];
    for (test_bar, exit_price, reason) in cases {
        let bars = entry_then(test_bar);
        let report = backtest(&bars, &crossings(3, &[0], &[]), &plain_config(), &orders);

        let trade = single_trade(&report);
        assert_eq!(trade.side, SIDE_LONG);
        assert_eq!(trade.entry_time_ms, MINUTE_MS);
        assert_eq!(trade.exit_time_ms, 2 * MINUTE_MS);
        assert_close(trade.entry_price, 100.0, "entry price");
        assert_close(trade.exit_price, exit_price, "exit price");
        assert_close(trade.quantity, quantity, "quantity");
        let pnl = quantity * (exit_price - 100.0);
        assert_close(trade.pnl, pnl, "pnl");
        assert_close(trade.pnl_pct, pnl / 10_000.0 * 100.0, "pnl_pct");
        assert_eq!(trade.exit_reason, reason, "exit at {exit_price}");
        assert_curve(
            &report.equity,
            &[10_000.0, 10_000.0, 10_000.0 + pnl],
            "equity",
        );
        // The close of bar 2 finds the position closed.
        assert_close(report.metrics.exposure_pct, 1.0 / 3.0 * 100.0, "exposure");
    }
}

#[test]
fn short_stop_and_take_profit_fills() {
    let orders = OracleOrders {
        direction: OracleDirection::Short,
        stop_loss: Some(0.05),
        take_profit: Some(0.05),
        ..OracleOrders::default()
    };
    // A short at 100 has its stop at 105 and its take-profit at 95.
    let quantity = 10_000.0 / 100.0;
    let cases = [
        (
            bar(2, 100.0, 106.0, 94.0, 99.0),
            105.0,
            EXIT_REASON_STOP_LOSS,
        ),
        (
            bar(2, 107.0, 108.0, 94.0, 96.0),
            107.0,
            EXIT_REASON_STOP_LOSS,
        ),
        (
            bar(2, 100.0, 101.0, 94.0, 96.0),
            95.0,
            EXIT_REASON_TAKE_PROFIT,
        ),
        // An open below the take-profit level fills at the open.
        (
            bar(2, 93.0, 94.0, 92.0, 93.0),
            93.0,
            EXIT_REASON_TAKE_PROFIT,
        ),
    ];
    for (test_bar, exit_price, reason) in cases {
        let bars = entry_then(test_bar);
        let report = backtest(&bars, &crossings(3, &[], &[0]), &plain_config(), &orders);

        let trade = single_trade(&report);
        assert_eq!(trade.side, SIDE_SHORT);
        assert_close(trade.entry_price, 100.0, "entry price");
        assert_close(trade.exit_price, exit_price, "exit price");
        assert_close(trade.quantity, quantity, "quantity");
        assert_close(trade.pnl, quantity * (100.0 - exit_price), "pnl");
        assert_eq!(trade.exit_reason, reason, "exit at {exit_price}");
    }
}

#[test]
fn long_liquidation_at_leverage_ten() {
    let config = OracleConfig {
        commission: 0.001,
        leverage: 10.0,
        ..plain_config()
    };
    let liquidation_price = 100.0 * (1.0 - 1.0 / 10.0 + 0.005);
    assert_close(
        liquidation_price,
        90.5,
        "hand value of the liquidation price",
    );

    let bars = entry_then(bar(2, 99.0, 100.0, 90.0, 95.0));
    let report = backtest(
        &bars,
        &crossings(3, &[0], &[]),
        &config,
        &OracleOrders::default(),
    );

    // Margin plus entry fee use all the equity: 10,000 / (100 * (0.1 + 0.001)).
    let quantity = 10_000.0 / (100.0 * (0.1 + 0.001));
    let commission = quantity * 100.0 * 0.001 + quantity * liquidation_price * 0.001;
    let pnl = quantity * (liquidation_price - 100.0) - commission;
    let trade = single_trade(&report);
    assert_close(trade.quantity, quantity, "quantity");
    assert_close(trade.exit_price, liquidation_price, "exit price");
    assert_close(trade.commission, commission, "commission");
    assert_close(trade.pnl, pnl, "pnl");
    assert_eq!(trade.exit_reason, EXIT_REASON_LIQUIDATION);
    assert_eq!(report.metrics.liquidations, 1);
    assert_close(
        report.metrics.final_capital,
        10_000.0 + pnl,
        "final capital",
    );
}

#[test]
fn nearer_adverse_level_fills_first() {
    // Leverage 10 puts the liquidation price at 90.5. A 5 % stop (95) is nearer the entry
    // than it, a 20 % stop (80) is farther.
    let config = OracleConfig {
        leverage: 10.0,
        ..plain_config()
    };
    let liquidation_price = 100.0 * (1.0 - 1.0 / 10.0 + 0.005);
    let cases = [
        // Inside the bar.
        (
            0.05,
            bar(2, 99.0, 100.0, 79.0, 85.0),
            95.0,
            EXIT_REASON_STOP_LOSS,
        ),
        (
            0.2,
            bar(2, 99.0, 100.0, 79.0, 85.0),
            liquidation_price,
            EXIT_REASON_LIQUIDATION,
        ),
        // At the open, which passes both levels or only the liquidation price.
        (
            0.05,
            bar(2, 85.0, 86.0, 84.0, 85.0),
            85.0,
            EXIT_REASON_STOP_LOSS,
        ),
        (
            0.2,
            bar(2, 85.0, 86.0, 84.0, 85.0),
            85.0,
            EXIT_REASON_LIQUIDATION,
        ),
    ];
    for (stop_loss, test_bar, exit_price, reason) in cases {
        let orders = OracleOrders {
            stop_loss: Some(stop_loss),
            ..OracleOrders::default()
        };
        let bars = entry_then(test_bar);
        let report = backtest(&bars, &crossings(3, &[0], &[]), &config, &orders);

        let trade = single_trade(&report);
        assert_close(trade.exit_price, exit_price, "exit price");
        assert_eq!(
            trade.exit_reason, reason,
            "stop {stop_loss}, exit at {exit_price}"
        );
    }
}

#[test]
fn slippage_worsens_market_fills_only() {
    let orders = OracleOrders {
        stop_loss: Some(0.05),
        take_profit: Some(0.05),
        slippage: 0.01,
        ..OracleOrders::default()
    };
    // The entry at an open of 100 fills at 101, so the stop is at 95.95 and the take-profit
    // at 106.05.
    let entry_price = 100.0 * (1.0 + 0.01);
    let stop_price = entry_price * (1.0 - 0.05);
    let take_profit_price = entry_price * (1.0 + 0.05);
    assert_close(stop_price, 95.95, "hand value of the stop");
    assert_close(take_profit_price, 106.05, "hand value of the take-profit");
    let quantity = 10_000.0 / entry_price;

    let cases = [
        (
            bar(2, 100.0, 101.0, 95.0, 96.0),
            stop_price * (1.0 - 0.01),
            EXIT_REASON_STOP_LOSS,
        ),
        (
            bar(2, 100.0, 107.0, 99.0, 106.0),
            take_profit_price,
            EXIT_REASON_TAKE_PROFIT,
        ),
    ];
    for (test_bar, exit_price, reason) in cases {
        let bars = entry_then(test_bar);
        let report = backtest(&bars, &crossings(3, &[0], &[]), &plain_config(), &orders);

        let trade = single_trade(&report);
        assert_close(trade.entry_price, entry_price, "entry price");
        assert_close(trade.quantity, quantity, "quantity");
        assert_close(trade.exit_price, exit_price, "exit price");
        assert_close(trade.pnl, quantity * (exit_price - entry_price), "pnl");
        assert_eq!(trade.exit_reason, reason);
    }
}

#[test]
fn slippage_on_short_signal_exit() {
    let orders = OracleOrders {
        direction: OracleDirection::Short,
        slippage: 0.01,
        ..OracleOrders::default()
    };
    let bars = bars_from(&[100.0, 100.0, 98.0, 97.0], &[100.0, 99.0, 97.0, 97.0]);
    // Short at bar 1's open, long signal at bar 1 exits at bar 2's open.
    let report = backtest(&bars, &crossings(4, &[1], &[0]), &plain_config(), &orders);

    let entry_price = 100.0 * (1.0 - 0.01);
    let exit_price = 98.0 * (1.0 + 0.01);
    let quantity = 10_000.0 / entry_price;
    let trade = single_trade(&report);
    assert_close(trade.entry_price, entry_price, "entry price");
    assert_close(trade.exit_price, exit_price, "exit price");
    assert_close(trade.pnl, quantity * (entry_price - exit_price), "pnl");
    assert_eq!(trade.exit_time_ms, 2 * MINUTE_MS);
    assert_eq!(trade.exit_reason, EXIT_REASON_SIGNAL);
}

/// Hourly bars with the given opens and closes, the first at `first_open_ms`.
fn hourly_bars(first_open_ms: i64, opens: &[f64], closes: &[f64]) -> Vec<OracleBar> {
    let mut bars = bars_from(opens, closes);
    for (index, bar) in bars.iter_mut().enumerate() {
        bar.open_time_ms = first_open_ms + index as i64 * HOUR_MS;
    }
    bars
}

#[test]
fn funding_across_midnight() {
    let rate = 0.0001;
    // 22:00 signal, 23:00 entry at 100, 00:00 funding at an open of 102, 01:00 end of data.
    let opens = [100.0, 100.0, 102.0, 103.0];
    let closes = [100.0, 101.0, 103.0, 104.0];
    let bars = hourly_bars(JAN_1_22H_MS, &opens, &closes);
    assert_eq!(bars[2].open_time_ms, JAN_2_MIDNIGHT_MS);
    let quantity = 10_000.0 / 100.0;
    let payment = rate * quantity * 102.0;
    assert_close(payment, 1.02, "hand value of the payment");

    for (direction, signals, funding) in [
        (OracleDirection::Long, crossings(4, &[0], &[]), payment),
        (OracleDirection::Short, crossings(4, &[], &[0]), -payment),
    ] {
        let orders = OracleOrders {
            direction,
            funding_rate: Some(rate),
            ..OracleOrders::default()
        };
        let report = backtest(&bars, &signals, &plain_config(), &orders);

        let trade = single_trade(&report);
        let gross = match direction {
            OracleDirection::Short => quantity * (100.0 - 104.0),
            _ => quantity * (104.0 - 100.0),
        };
        assert_close(trade.funding, funding, "trade funding");
        assert_close(trade.pnl, gross - funding, "pnl");
        assert_close(report.metrics.total_funding, funding, "total funding");
        let gross_at_midnight_close = match direction {
            OracleDirection::Short => quantity * (100.0 - 103.0),
            _ => quantity * (103.0 - 100.0),
        };
        assert_close(
            report.equity[2],
            10_000.0 + gross_at_midnight_close - funding,
            "equity at the midnight close",
        );
    }
}

#[test]
fn funding_skips_entry_at_instant() {
    let orders = OracleOrders {
        funding_rate: Some(0.0001),
        ..OracleOrders::default()
    };
    // 23:00 signal, 00:00 entry at the open, 01:00 and 02:00 hold.
    let opens = [100.0, 100.0, 101.0, 102.0];
    let bars = hourly_bars(JAN_1_22H_MS + HOUR_MS, &opens, &opens);
    assert_eq!(bars[1].open_time_ms, JAN_2_MIDNIGHT_MS);

    let report = backtest(&bars, &crossings(4, &[0], &[]), &plain_config(), &orders);

    let trade = single_trade(&report);
    assert_eq!(trade.entry_time_ms, JAN_2_MIDNIGHT_MS);
    assert_eq!(trade.funding, 0.0);
    assert_eq!(report.metrics.total_funding, 0.0);
}

#[test]
fn funding_charged_on_exit_at_instant() {
    let rate = 0.0002;
    let orders = OracleOrders {
        funding_rate: Some(rate),
        ..OracleOrders::default()
    };
    // 22:00 signal, 23:00 entry at 100, short signal at 23:00 exits at 00:00's open of 105.
    let opens = [100.0, 100.0, 105.0, 106.0];
    let bars = hourly_bars(JAN_1_22H_MS, &opens, &opens);

    let report = backtest(&bars, &crossings(4, &[0], &[1]), &plain_config(), &orders);

    let quantity = 10_000.0 / 100.0;
    let funding = rate * quantity * 105.0;
    let trade = single_trade(&report);
    assert_eq!(trade.exit_time_ms, JAN_2_MIDNIGHT_MS);
    assert_eq!(trade.exit_reason, EXIT_REASON_SIGNAL);
    assert_close(trade.funding, funding, "funding");
    assert_close(trade.pnl, quantity * (105.0 - 100.0) - funding, "pnl");
}

#[test]
fn funding_counts_every_instant_in_gap() {
    let rate = 0.0001;
    let orders = OracleOrders {
        funding_rate: Some(rate),
        ..OracleOrders::default()
    };
    // Bars at 06:00, 07:00 (entry) and 17:00, so the gap passes 08:00 and 16:00.
    let six_am = JAN_2_MIDNIGHT_MS + 6 * HOUR_MS;
    let bars = vec![
        OracleBar {
            open_time_ms: six_am,
            ..bar(0, 100.0, 100.0, 100.0, 100.0)
        },
        OracleBar {
            open_time_ms: six_am + HOUR_MS,
            ..bar(0, 100.0, 100.0, 100.0, 100.0)
        },
        OracleBar {
            open_time_ms: six_am + 11 * HOUR_MS,
            ..bar(0, 110.0, 110.0, 110.0, 110.0)
        },
    ];

    let report = backtest(&bars, &crossings(3, &[0], &[]), &plain_config(), &orders);

    let funding = 2.0 * rate * 100.0 * 110.0;
    let trade = single_trade(&report);
    assert_close(trade.funding, funding, "funding for two instants");
}

#[test]
fn both_reverses_in_one_fill() {
    let config = OracleConfig {
        commission: 0.001,
        ..plain_config()
    };
    let orders = OracleOrders {
        direction: OracleDirection::Both,
        ..OracleOrders::default()
    };
    // Long signal at bar 0, short signal at bar 1: long at 100, reversed at bar 2's open of
    // 110, short closed at the end of data at 104.
    let bars = bars_from(&[100.0, 100.0, 110.0, 106.0], &[100.0, 108.0, 107.0, 104.0]);
    let report = backtest(&bars, &crossings(4, &[0], &[1]), &config, &orders);

    let long_quantity = 10_000.0 / (100.0 * (1.0 + 0.001));
    let long_commission = long_quantity * 100.0 * 0.001 + long_quantity * 110.0 * 0.001;
    let long_pnl = long_quantity * (110.0 - 100.0) - long_commission;
    let cash_after_long = 10_000.0 + long_pnl;
    let short_quantity = cash_after_long / (110.0 * (1.0 + 0.001));
    let short_commission = short_quantity * 110.0 * 0.001 + short_quantity * 104.0 * 0.001;
    let short_pnl = short_quantity * (110.0 - 104.0) - short_commission;

    assert_eq!(report.trades.len(), 2, "trades: {:?}", report.trades);
    let long = &report.trades[0];
    let short = &report.trades[1];
    assert_eq!(long.side, SIDE_LONG);
    assert_eq!(long.exit_reason, EXIT_REASON_SIGNAL);
    assert_close(long.exit_price, 110.0, "long exit price");
    assert_close(long.pnl, long_pnl, "long pnl");
    assert_eq!(short.side, SIDE_SHORT);
    assert_eq!(long.exit_time_ms, short.entry_time_ms);
    assert_eq!(short.entry_time_ms, 2 * MINUTE_MS);
    assert_close(short.entry_price, 110.0, "short entry price");
    assert_close(short.quantity, short_quantity, "short quantity");
    assert_close(short.pnl, short_pnl, "short pnl");
    assert_close(
        short.pnl_pct,
        short_pnl / cash_after_long * 100.0,
        "short pnl_pct",
    );
    assert_eq!(short.exit_reason, EXIT_REASON_END_OF_DATA);
    assert_close(
        report.metrics.total_commission,
        long_commission + short_commission,
        "total commission",
    );
    assert_close(
        report.metrics.final_capital,
        cash_after_long + short_pnl,
        "final capital",
    );
    // Bar 2 closes with the short open, bar 3 closes at the end of data.
    assert_close(
        report.equity[2],
        cash_after_long + short_quantity * (110.0 - 107.0) - short_quantity * 110.0 * 0.001,
        "equity after the reversal",
    );
    assert_close(report.metrics.exposure_pct, 75.0, "exposure");
}

/// Level signals from per-bar flags written as strings of `0` and `1`.
fn levels(entry_long: &str, exit_long: &str, entry_short: &str, exit_short: &str) -> OracleSignals {
    let parse = |flags: &str| flags.chars().map(|flag| flag == '1').collect::<Vec<_>>();
    OracleSignals::Levels {
        entry_long: parse(entry_long),
        exit_long: parse(exit_long),
        entry_short: parse(entry_short),
        exit_short: parse(exit_short),
    }
}

#[test]
fn levels_exit_wins_over_entry() {
    // Bar 0 has entry and exit true, so the entry waits. Bar 1 enters at bar 2's open. The
    // entry staying true while long adds nothing, and bar 3's exit wins over its entry and
    // leaves at bar 4's open.
    let bars = bars_from(
        &[10.0, 11.0, 12.0, 13.0, 14.0, 15.0],
        &[10.0, 11.0, 12.0, 13.0, 14.0, 15.0],
    );
    let signals = levels("111100", "100100", "000000", "000000");
    let report = backtest(&bars, &signals, &plain_config(), &OracleOrders::default());

    let trade = single_trade(&report);
    assert_eq!(trade.entry_time_ms, 2 * MINUTE_MS);
    assert_eq!(trade.exit_time_ms, 4 * MINUTE_MS);
    assert_eq!(trade.exit_reason, EXIT_REASON_SIGNAL);
}

#[test]
fn levels_never_reverse_in_one_fill() {
    let orders = OracleOrders {
        direction: OracleDirection::Both,
        ..OracleOrders::default()
    };
    let closes = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0];
    let bars = bars_from(&closes, &closes);
    // Long entry at bar 0, then bar 2 has the long exit and a short entry: the exit fills at
    // bar 3's open and the short waits for bar 3's close, filling at bar 4's open.
    let signals = levels("100000", "001000", "001100", "000000");
    let report = backtest(&bars, &signals, &plain_config(), &orders);

    assert_eq!(report.trades.len(), 2, "trades: {:?}", report.trades);
    let long = &report.trades[0];
    let short = &report.trades[1];
    assert_eq!(long.side, SIDE_LONG);
    assert_eq!(long.entry_time_ms, MINUTE_MS);
    assert_eq!(long.exit_time_ms, 3 * MINUTE_MS);
    assert_eq!(short.side, SIDE_SHORT);
    assert_eq!(short.entry_time_ms, 4 * MINUTE_MS);
    assert_eq!(short.exit_reason, EXIT_REASON_END_OF_DATA);
}

#[test]
fn levels_both_entries_enter_neither() {
    let orders = OracleOrders {
        direction: OracleDirection::Both,
        ..OracleOrders::default()
    };
    let closes = [10.0, 11.0, 12.0, 13.0];
    let bars = bars_from(&closes, &closes);

    // Both entries are true on bars 0 and 1. Bar 2 also has a short exit, so only the long
    // counts.
    let signals = levels("1110", "0000", "1110", "0010");
    let report = backtest(&bars, &signals, &plain_config(), &orders);

    let trade = single_trade(&report);
    assert_eq!(trade.side, SIDE_LONG);
    assert_eq!(trade.entry_time_ms, 3 * MINUTE_MS);
}

#[test]
fn levels_long_ignores_short_pair() {
    let closes = [10.0, 11.0, 12.0];
    let bars = bars_from(&closes, &closes);
    let signals = levels("000", "000", "110", "000");

    let report = backtest(&bars, &signals, &plain_config(), &OracleOrders::default());

    assert!(report.trades.is_empty(), "trades: {:?}", report.trades);
}

#[test]
fn end_of_data_exit_has_slippage() {
    let slippage = 0.01;
    let bars = bars_from(&[100.0, 100.0, 105.0], &[100.0, 104.0, 110.0]);
    for (direction, signals) in [
        (OracleDirection::Long, crossings(3, &[0], &[])),
        (OracleDirection::Short, crossings(3, &[], &[0])),
    ] {
        let orders = OracleOrders {
            direction,
            slippage,
            ..OracleOrders::default()
        };
        let report = backtest(&bars, &signals, &plain_config(), &orders);

        let (entry_price, exit_price) = match direction {
            OracleDirection::Short => (100.0 * (1.0 - slippage), 110.0 * (1.0 + slippage)),
            _ => (100.0 * (1.0 + slippage), 110.0 * (1.0 - slippage)),
        };
        let quantity = 10_000.0 / entry_price;
        let pnl = match direction {
            OracleDirection::Short => quantity * (entry_price - exit_price),
            _ => quantity * (exit_price - entry_price),
        };
        let trade = single_trade(&report);
        assert_eq!(trade.exit_reason, EXIT_REASON_END_OF_DATA);
        assert_eq!(trade.exit_time_ms, 2 * MINUTE_MS);
        assert_close(trade.exit_price, exit_price, "exit price");
        assert_close(trade.pnl, pnl, "pnl");
        assert_close(report.equity[2], 10_000.0 + pnl, "last equity");
        assert_close(
            report.metrics.final_capital,
            10_000.0 + pnl,
            "final capital",
        );
        assert_close(report.metrics.exposure_pct, 2.0 / 3.0 * 100.0, "exposure");
    }
}

#[test]
fn blown_account_takes_no_entry() {
    let config = OracleConfig {
        leverage: 10.0,
        ..plain_config()
    };
    // Long at 100 with 1,000 units. Bar 2 opens at 50, below the liquidation price of 90.5,
    // and fills there. The long signal at bar 2 finds the equity below zero.
    let bars = bars_from(
        &[100.0, 100.0, 50.0, 60.0, 70.0],
        &[100.0, 100.0, 55.0, 65.0, 70.0],
    );
    let report = backtest(
        &bars,
        &crossings(5, &[0, 2], &[]),
        &config,
        &OracleOrders::default(),
    );

    let quantity = 10_000.0 / (100.0 * (1.0 / 10.0));
    let pnl = quantity * (50.0 - 100.0);
    assert_close(pnl, -50_000.0, "hand value of pnl");
    let trade = single_trade(&report);
    assert_close(trade.exit_price, 50.0, "exit price");
    assert_eq!(trade.exit_reason, EXIT_REASON_LIQUIDATION);
    assert_close(report.metrics.final_capital, -40_000.0, "final capital");
    assert_curve(
        &report.equity,
        &[10_000.0, 10_000.0, -40_000.0, -40_000.0, -40_000.0],
        "equity",
    );
    assert_eq!(report.metrics.sharpe_ratio, None);
    assert_eq!(report.metrics.sortino_ratio, None);
    assert_eq!(report.metrics.calmar_ratio, None);
    assert_close(report.metrics.max_drawdown, 500.0, "max drawdown");
}

#[test]
fn metrics_of_two_trades_by_hand() {
    // Long at 100 (bar 1) out at 120 (bar 3), long at 120 (bar 4) out at 95 (bar 6).
    let opens = [100.0, 100.0, 110.0, 120.0, 120.0, 90.0, 95.0, 100.0];
    let closes = [100.0, 110.0, 105.0, 120.0, 100.0, 90.0, 95.0, 104.0];
    let bars = bars_from(&opens, &closes);
    let config = OracleConfig {
        bars_per_year: 16.0,
        ..plain_config()
    };
    let report = backtest(
        &bars,
        &crossings(8, &[0, 3], &[2, 5]),
        &config,
        &OracleOrders::default(),
    );

    let equity = [
        10_000.0, 11_000.0, 10_500.0, 12_000.0, 10_000.0, 9_000.0, 9_500.0, 9_500.0,
    ];
    assert_curve(&report.equity, &equity, "equity");
    let drawdown = [
        0.0,
        0.0,
        500.0 / 11_000.0 * 100.0,
        0.0,
        2_000.0 / 12_000.0 * 100.0,
        25.0,
        2_500.0 / 12_000.0 * 100.0,
        2_500.0 / 12_000.0 * 100.0,
    ];
    assert_curve(&report.drawdown, &drawdown, "drawdown");

    let metrics = &report.metrics;
    assert_eq!(report.trades.len(), 2, "trades: {:?}", report.trades);
    assert_close(report.trades[0].pnl, 2_000.0, "pnl 1");
    assert_close(report.trades[1].pnl, -2_500.0, "pnl 2");
    let pnl_pct_1 = 2_000.0 / 10_000.0 * 100.0;
    let pnl_pct_2 = -2_500.0 / 12_000.0 * 100.0;
    assert_close(report.trades[1].pnl_pct, pnl_pct_2, "pnl_pct 2");

    assert_close(metrics.final_capital, 9_500.0, "final capital");
    assert_close(metrics.total_return, -5.0, "total return");
    assert_eq!(metrics.total_trades, 2);
    assert_eq!(metrics.winning_trades, 1);
    assert_eq!(metrics.losing_trades, 1);
    assert_some_close(metrics.win_rate, 50.0, "win rate");
    assert_some_close(metrics.profit_factor, 0.8, "profit factor");
    assert_some_close(metrics.expectancy, -250.0, "expectancy");
    assert_some_close(
        metrics.avg_trade_pct,
        (pnl_pct_1 + pnl_pct_2) / 2.0,
        "avg trade pct",
    );
    assert_some_close(metrics.largest_win, 2_000.0, "largest win");
    assert_some_close(metrics.largest_loss, -2_500.0, "largest loss");
    // Bars 1, 2, 4 and 5 close with a position open.
    assert_close(metrics.exposure_pct, 50.0, "exposure");
    assert_close(metrics.buy_and_hold_return, 4.0, "buy and hold");
    assert_close(metrics.max_drawdown, 25.0, "max drawdown");
    // Runs: bar 1 to its recovery at bar 3 (2 bars), then bar 3 to the last bar (4 bars).
    assert_eq!(metrics.max_drawdown_duration_bars, 4);
    assert_eq!(metrics.max_drawdown_duration_seconds, 240);
    assert_eq!(metrics.total_commission, 0.0);
    assert_eq!(metrics.total_funding, 0.0);
    assert_eq!(metrics.liquidations, 0);

    let returns: [f64; 7] = [
        11_000.0 / 10_000.0 - 1.0,
        10_500.0 / 11_000.0 - 1.0,
        12_000.0 / 10_500.0 - 1.0,
        10_000.0 / 12_000.0 - 1.0,
        9_000.0 / 10_000.0 - 1.0,
        9_500.0 / 9_000.0 - 1.0,
        0.0,
    ];
    let mean = returns.iter().sum::<f64>() / 7.0;
    let downside = (returns[1].powi(2) + returns[3].powi(2) + returns[4].powi(2)) / 7.0;
    // sqrt(16 bars per year) is 4.
    let sortino = mean / downside.sqrt() * 4.0;
    assert_some_close(metrics.sortino_ratio, sortino, "sortino");
    let variance = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / 6.0;
    assert_some_close(metrics.sharpe_ratio, mean / variance.sqrt() * 4.0, "sharpe");
    // (9,500 / 10,000)^(16 / 8) - 1 = 0.9025 - 1.
    let annualized_return = 0.95_f64 * 0.95 - 1.0;
    assert_some_close(metrics.calmar_ratio, annualized_return / 0.25, "calmar");
}

#[test]
fn metrics_without_trades() {
    let closes = [100.0, 101.0, 102.0];
    let bars = bars_from(&[99.0, 101.0, 102.0], &closes);
    let report = backtest(
        &bars,
        &crossings(3, &[], &[]),
        &plain_config(),
        &OracleOrders::default(),
    );

    let metrics = &report.metrics;
    assert_eq!(metrics.total_trades, 0);
    assert_eq!(metrics.win_rate, None);
    assert_eq!(metrics.profit_factor, None);
    assert_eq!(metrics.expectancy, None);
    assert_eq!(metrics.avg_trade_pct, None);
    assert_eq!(metrics.largest_win, None);
    assert_eq!(metrics.largest_loss, None);
    assert_eq!(metrics.sharpe_ratio, None);
    assert_eq!(metrics.sortino_ratio, None);
    assert_eq!(metrics.calmar_ratio, None);
    assert_eq!(metrics.max_drawdown, 0.0);
    assert_eq!(metrics.max_drawdown_duration_bars, 0);
    assert_eq!(metrics.max_drawdown_duration_seconds, 0);
    assert_eq!(metrics.exposure_pct, 0.0);
    assert_close(
        metrics.buy_and_hold_return,
        (102.0 / 99.0 - 1.0) * 100.0,
        "buy and hold",
    );
    assert_eq!(metrics.final_capital, 10_000.0);
}

#[test]
fn five_bar_expression_case() {
    let bars = vec![
        bar(0, 100.0, 101.0, 99.0, 100.0),
        bar(1, 100.0, 106.0, 100.0, 105.0),
        bar(2, 108.0, 110.0, 107.0, 109.0),
        bar(3, 109.0, 109.0, 103.0, 104.0),
        bar(4, 103.0, 104.0, 101.0, 102.0),
    ];
    // entry_long = close > 1.04 * close[t-1], exit_long = close < close[t-1], both null (false)
    // on the first bar.
    let mut entry_long = vec![false];
    let mut exit_long = vec![false];
    for pair in bars.windows(2) {
        entry_long.push(pair[1].close > 1.04 * pair[0].close);
        exit_long.push(pair[1].close < pair[0].close);
    }
    assert_eq!(entry_long, [false, true, false, false, false]);
    assert_eq!(exit_long, [false, false, false, true, true]);
    let signals = OracleSignals::Levels {
        entry_long,
        exit_long,
        entry_short: vec![false; 5],
        exit_short: vec![false; 5],
    };
    let config = OracleConfig::default();

    let report = backtest(&bars, &signals, &config, &OracleOrders::default());

    let quantity = 10_000.0 / (108.0 * (1.0 + 0.000_55));
    let commission = quantity * 108.0 * 0.000_55 + quantity * 103.0 * 0.000_55;
    let trade = single_trade(&report);
    assert_eq!(trade.side, SIDE_LONG);
    assert_eq!(trade.entry_time_ms, 2 * MINUTE_MS);
    assert_eq!(trade.exit_time_ms, 4 * MINUTE_MS);
    assert_close(trade.entry_price, 108.0, "entry price");
    assert_close(trade.exit_price, 103.0, "exit price");
    assert_close(trade.quantity, quantity, "quantity");
    assert_close(trade.commission, commission, "commission");
    assert_close(trade.pnl, quantity * (103.0 - 108.0) - commission, "pnl");
    assert_eq!(trade.exit_reason, EXIT_REASON_SIGNAL);
}

#[test]
fn default_orders_match_long_only() {
    let opens = [
        10.0, 10.0, 10.0, 11.0, 12.5, 14.0, 13.0, 10.0, 9.0, 10.0, 10.0, 8.5,
    ];
    let closes = [
        10.0, 10.0, 10.0, 12.0, 14.0, 13.0, 11.0, 9.0, 10.0, 10.0, 8.0, 8.0,
    ];
    let bars = bars_from(&opens, &closes);
    let long = [3, 9];
    let short = [6, 10];
    let signals = crossings(bars.len(), &long, &short);
    let OracleSignals::Crossings {
        long: long_flags,
        short: short_flags,
    } = &signals
    else {
        unreachable!("crossings() builds crossing signals")
    };
    let config = OracleConfig::default();

    let report = backtest(&bars, &signals, &config, &OracleOrders::default());
    let expected = long_only(&bars, long_flags, short_flags, &config);

    assert_eq!(report.trades.len(), expected.trades.len());
    for (trade, want) in report.trades.iter().zip(&expected.trades) {
        assert_eq!(trade.entry_time_ms, want.entry_time_ms);
        assert_eq!(trade.exit_time_ms, want.exit_time_ms);
        assert_close(trade.pnl, want.pnl, "pnl");
        assert_eq!(trade.exit_reason, want.exit_reason);
    }
    assert_curve(&report.equity, &expected.equity, "equity");
    assert_close(
        report.metrics.final_capital,
        expected.final_capital,
        "final capital",
    );
    // The two loops add the same terms in a different order, so only the last bits differ.
    let expected_sharpe = expected
        .sharpe_ratio
        .expect("a curve with varying returns has a Sharpe ratio");
    assert_some_close(report.metrics.sharpe_ratio, expected_sharpe, "sharpe");
}

#[test]
#[should_panic(expected = "invalid stop_loss")]
fn stop_loss_of_one_panics() {
    let bars = bars_from(&[100.0], &[100.0]);
    let orders = OracleOrders {
        stop_loss: Some(1.0),
        ..OracleOrders::default()
    };
    backtest(&bars, &crossings(1, &[], &[]), &plain_config(), &orders);
}

#[test]
#[should_panic(expected = "at least one bar")]
fn empty_bars_panic() {
    backtest(
        &[],
        &crossings(0, &[], &[]),
        &plain_config(),
        &OracleOrders::default(),
    );
}

#[track_caller]
fn assert_series(got: &[Option<f64>], expected: &[Option<f64>], tolerance: f64) {
    assert_eq!(got.len(), expected.len(), "series length");
    for (index, (got, want)) in got.iter().zip(expected).enumerate() {
        match (got, want) {
            (Some(got), Some(want)) => assert!(
                (got - want).abs() <= tolerance,
                "value {index}: got {got}, expected {want}"
            ),
            (None, None) => {}
            _ => panic!("value {index}: got {got:?}, expected {want:?}"),
        }
    }
}

#[test]
fn ema_seeds_with_sma() {
    // Alpha 2 / (3 + 1) = 0.5, seeded at index 2 by (1 + 2 + 3) / 3 = 2, then 2 + 0.5 x
    // (4 - 2) = 3 and 3 + 0.5 x (5 - 3) = 4.
    let ema = exponential_moving_average(&[1.0, 2.0, 3.0, 4.0, 5.0], 3);
    assert_series(&ema, &[None, None, Some(2.0), Some(3.0), Some(4.0)], 1e-12);
}

#[test]
fn rsi_of_twelve_closes() {
    // Wilder's RSI(5), rounded to 4 decimals: the first value averages the changes +2, -1,
    // +2, +3, -2 into gain 1.4 and loss 0.6, so 100 x 1.4 / 2.0 = 70.
    let closes = [
        100.0, 102.0, 101.0, 103.0, 106.0, 104.0, 105.0, 108.0, 107.0, 110.0, 109.0, 111.0,
    ];
    let mut expected = vec![None; 5];
    for value in [70.0, 73.3333, 81.1765, 72.3144, 80.3563, 71.6808, 77.6998] {
        expected.push(Some(value));
    }
    assert_series(&relative_strength_index(&closes, 5), &expected, 0.5e-4);
}

#[test]
fn macd_seeds_both_emas_together() {
    // MACD(2, 3, 2) of 1, 2, 4, 8, 16, 32. Both EMAs start at index 2: the slow one at
    // (1 + 2 + 4) / 3 = 7/3, the fast one at (2 + 4) / 2 = 3, not at an EMA(2) seeded at
    // index 1. The line is 2/3, 7/6, 79/36, 929/216 from index 2, and the signal starts at
    // index 3 with (2/3 + 7/6) / 2 = 11/12, where all three outputs begin.
    let output = macd(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0], 2, 3, 2);
    let blank = [None, None, None];
    let line = [7.0 / 6.0, 79.0 / 36.0, 929.0 / 216.0];
    let signal = [11.0 / 12.0, 191.0 / 108.0, 280.0 / 81.0];
    let histogram = [1.0 / 4.0, 23.0 / 54.0, 547.0 / 648.0];
    let with_blank = |values: [f64; 3]| -> Vec<Option<f64>> {
        blank.iter().copied().chain(values.map(Some)).collect()
    };
    assert_series(&output.line, &with_blank(line), 1e-12);
    assert_series(&output.signal, &with_blank(signal), 1e-12);
    assert_series(&output.histogram, &with_blank(histogram), 1e-12);
}

#[test]
fn bollinger_bands_use_population_std() {
    // Window 1, 2, 3: mean 2, population variance (1 + 0 + 1) / 3.
    let bands = bollinger_bands(&[1.0, 2.0, 3.0], 3, 2.0);
    let deviation = (2.0_f64 / 3.0).sqrt();
    assert_series(&bands.middle, &[None, None, Some(2.0)], 1e-12);
    assert_series(
        &bands.upper,
        &[None, None, Some(2.0 + 2.0 * deviation)],
        1e-12,
    );
    assert_series(
        &bands.lower,
        &[None, None, Some(2.0 - 2.0 * deviation)],
        1e-12,
    );
}

#[test]
fn atr_is_wilder_average_of_true_range() {
    // True ranges from the second bar: max(11 - 9, |11 - 9|, |9 - 9|) = 2,
    // max(12 - 9, |12 - 10|, |9 - 10|) = 3 and max(11 - 7, |11 - 11|, |7 - 11|) = 4.
    // ATR(2) starts at index 2 with (2 + 3) / 2 = 2.5, then (2.5 x 1 + 4) / 2 = 3.25.
    let high = [10.0, 11.0, 12.0, 11.0];
    let low = [8.0, 9.0, 9.0, 7.0];
    let close = [9.0, 10.0, 11.0, 8.0];
    let atr = average_true_range(&high, &low, &close, 2);
    assert_series(&atr, &[None, None, Some(2.5), Some(3.25)], 1e-12);
}
