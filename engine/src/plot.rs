//! SVG chart of a backtest: equity over time, the drawdown in a panel below it, and a marker
//! at each trade's entry and exit.
//!
//! The chart is drawn with plotters' SVG backend, which writes text as `<text>` elements, so no
//! font files are read. Trade markers are written as one `<g id="trades">` group with a
//! `<g class="trade">` per trade, whose `<title>` a browser shows as a tooltip.

use std::fmt::Write as _;
use std::ops::Range;

use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::backtest::EquityPoint;
use crate::simulate::{Side, TradeRecord};
use crate::{Error, Result};

/// Size of the whole picture in pixels.
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 760;
/// Height of the legend row under the title, in pixels.
const LEGEND_HEIGHT: u32 = 30;
/// Height of the equity panel in pixels. The drawdown panel takes the rest at the bottom.
const EQUITY_PANEL_HEIGHT: u32 = 450;
/// Width of the y-axis label area, the same in both panels so that their x axes line up.
const Y_LABEL_AREA: u32 = 90;
/// Points drawn per series at most. Longer curves keep the minimum and maximum of each of
/// `MAX_DRAWN_POINTS / 2` time buckets, which is about two buckets per pixel column.
const MAX_DRAWN_POINTS: usize = 4_000;
/// Time axis labels at most.
const TIME_LABELS: usize = 10;

const EQUITY_COLOR: RGBColor = RGBColor(31, 119, 180);
const DRAWDOWN_COLOR: RGBColor = RGBColor(214, 39, 40);
const LONG_ENTRY_COLOR: RGBColor = RGBColor(27, 158, 119);
const SHORT_ENTRY_COLOR: RGBColor = RGBColor(117, 112, 179);
const PROFIT_COLOR: RGBColor = RGBColor(44, 160, 44);
const LOSS_COLOR: RGBColor = RGBColor(214, 39, 40);

/// A pixel position in the picture, as plotters' backends take it.
type BackendCoord = (i32, i32);

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// A closed trade as the chart marks it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TradeMarker {
    pub side: Side,
    pub entry_time_ms: i64,
    pub exit_time_ms: i64,
    pub entry_price: f64,
    pub exit_price: f64,
    /// Net pnl in quote currency, which sets the exit marker's color.
    pub pnl: f64,
    pub pnl_pct: f64,
}

impl From<&TradeRecord> for TradeMarker {
    fn from(trade: &TradeRecord) -> Self {
        Self {
            side: trade.side,
            entry_time_ms: trade.entry_time_ms,
            exit_time_ms: trade.exit_time_ms,
            entry_price: trade.entry_price,
            exit_price: trade.exit_price,
            pnl: trade.pnl,
            pnl_pct: trade.pnl_pct,
        }
    }
}

/// Draws the equity curve, its drawdown and the trades as one SVG document.
///
/// Entries are triangles on the equity line, pointing up for a long and down for a short.
/// Exits are circles, green for a trade with positive pnl and red otherwise. Curves longer
/// than the picture is wide are thinned to the minimum and maximum of each time bucket, so
/// the peaks and the deepest drawdown stay visible.
///
/// # Errors
///
/// [`Error::InvalidParameter`] when `points` is empty, and [`Error::Internal`] when plotters
/// fails to draw.
pub fn equity_svg(points: &[EquityPoint], trades: &[TradeMarker], title: &str) -> Result<String> {
    if points.is_empty() {
        return Err(Error::InvalidParameter {
            name: "equity".to_string(),
            message: "the equity curve has no points, so there is nothing to plot".to_string(),
        });
    }
    let mut svg = String::new();
    let markers = {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_failed)?;
        let body = root
            .titled(title, ("sans-serif", 22))
            .map_err(drawing_failed)?;
        let (legend, panels) = body.split_vertically(LEGEND_HEIGHT);
        draw_legend(&legend)?;
        let (upper, lower) = panels.split_vertically(EQUITY_PANEL_HEIGHT);
        let time = TimeAxis::new(
            points[0].open_time_ms,
            points[points.len() - 1].open_time_ms,
        );
        let markers = draw_equity_panel(&upper, points, trades, time)?;
        draw_drawdown_panel(&lower, points, time)?;
        root.present().map_err(drawing_failed)?;
        markers
    };
    let end = svg
        .rfind("</svg>")
        .ok_or_else(|| Error::Internal("plotters wrote an SVG without </svg>".to_string()))?;
    svg.insert_str(end, &markers);
    Ok(svg)
}

fn drawing_failed(error: impl std::fmt::Display) -> Error {
    Error::Internal(format!("drawing the equity chart failed: {error}"))
}

/// Draws one centered row that names the line, the markers and the drawdown area. It sits
/// above the panels so that it never hides the curve.
fn draw_legend(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<()> {
    let entries = [
        "equity",
        "long entry",
        "short entry",
        "exit with profit",
        "exit with loss or zero pnl",
        "drawdown below the running peak",
    ];
    // The SVG backend cannot measure text, so widths are estimated at 7 px per character.
    let entry_width = |label: &str| 34 + 7 * i32::try_from(label.len()).unwrap_or(0) + 18;
    let total: i32 = entries.iter().map(|label| entry_width(label)).sum();
    let (width, height) = area.dim_in_pixel();
    let mut x = (i32::try_from(width).unwrap_or(0) - total).max(0) / 2;
    let y = i32::try_from(height / 2).unwrap_or(0);
    let label_style = TextStyle::from(("sans-serif", 14).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center))
        .color(&BLACK);
    for (index, label) in entries.into_iter().enumerate() {
        let symbol = (x + 12, y);
        match index {
            0 => area.draw(&PathElement::new(
                vec![(x, y), (x + 24, y)],
                EQUITY_COLOR.stroke_width(2),
            )),
            1 => area.draw(&triangle_polygon(symbol, true, LONG_ENTRY_COLOR)),
            2 => area.draw(&triangle_polygon(symbol, false, SHORT_ENTRY_COLOR)),
            3 => area.draw(&Circle::new(symbol, 4, PROFIT_COLOR.filled())),
            4 => area.draw(&Circle::new(symbol, 4, LOSS_COLOR.filled())),
            _ => area.draw(&Rectangle::new(
                [(x, y - 6), (x + 24, y + 6)],
                DRAWDOWN_COLOR.mix(0.25).filled(),
            )),
        }
        .map_err(drawing_failed)?;
        area.draw(&Text::new(label, (x + 34, y), label_style.clone()))
            .map_err(drawing_failed)?;
        x += entry_width(label);
    }
    Ok(())
}

/// Draws the equity line and returns the SVG group of the trade markers,
/// placed with the panel's coordinate mapping.
fn draw_equity_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    points: &[EquityPoint],
    trades: &[TradeMarker],
    time: TimeAxis,
) -> Result<String> {
    let (low, high) = value_bounds(points.iter().map(|point| point.equity));
    let padding = ((high - low) * 0.05).max(high.abs() * 1e-4).max(1e-9);
    let mut chart = ChartBuilder::on(area)
        .margin_left(10)
        .margin_right(30)
        .margin_top(10)
        .x_label_area_size(0)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(time, (low - padding)..(high + padding))
        .map_err(drawing_failed)?;
    let span = high - low;
    chart
        .configure_mesh()
        .x_labels(TIME_LABELS)
        .y_labels(8)
        .y_desc("equity (quote currency)")
        .y_label_formatter(&|value| format_amount(*value, span))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(drawing_failed)?;

    let drawn = thin_indices(points, |point| point.equity, MAX_DRAWN_POINTS);
    chart
        .draw_series(LineSeries::new(
            drawn
                .iter()
                .map(|&index| (points[index].open_time_ms, points[index].equity)),
            EQUITY_COLOR.stroke_width(2),
        ))
        .map_err(drawing_failed)?;

    let mut group = String::from("<g id=\"trades\">\n");
    for trade in trades {
        let entry =
            chart.backend_coord(&(trade.entry_time_ms, equity_at(points, trade.entry_time_ms)));
        let exit =
            chart.backend_coord(&(trade.exit_time_ms, equity_at(points, trade.exit_time_ms)));
        write_trade_marker(&mut group, trade, entry, exit);
    }
    group.push_str("</g>\n");
    Ok(group)
}

fn draw_drawdown_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    points: &[EquityPoint],
    time: TimeAxis,
) -> Result<()> {
    let (_, deepest) = value_bounds(points.iter().map(|point| point.drawdown));
    // Drawdown is plotted below zero, so the panel reads as distance below the peak.
    let bottom = -(deepest * 1.1).max(0.1);
    let mut chart = ChartBuilder::on(area)
        .margin_left(10)
        .margin_right(30)
        .margin_top(10)
        .margin_bottom(10)
        .x_label_area_size(50)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(time, bottom..0.0)
        .map_err(drawing_failed)?;
    chart
        .configure_mesh()
        .x_labels(TIME_LABELS)
        .y_labels(5)
        .x_desc(time.description())
        .y_desc("drawdown (%)")
        .y_label_formatter(&|value| format_percent(*value))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(drawing_failed)?;

    let drawn = thin_indices(points, |point| point.drawdown, MAX_DRAWN_POINTS);
    chart
        .draw_series(
            AreaSeries::new(
                drawn
                    .iter()
                    .map(|&index| (points[index].open_time_ms, -points[index].drawdown)),
                0.0,
                DRAWDOWN_COLOR.mix(0.25),
            )
            .border_style(DRAWDOWN_COLOR.stroke_width(1)),
        )
        .map_err(drawing_failed)?;
    Ok(())
}

/// Returns the smallest and largest of the values.
fn value_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), value| {
        (low.min(value), high.max(value))
    })
}

/// Returns the ascending indices of the points to draw. A curve of at most `max_points` points
/// is drawn whole. A longer one is cut into `max_points / 2` equal runs of points, and each run
/// keeps its smallest and largest value, next to the first and the last point.
fn thin_indices(
    points: &[EquityPoint],
    value: impl Fn(&EquityPoint) -> f64,
    max_points: usize,
) -> Vec<usize> {
    if points.len() <= max_points {
        return (0..points.len()).collect();
    }
    let buckets = (max_points / 2).max(1);
    let mut indices = Vec::with_capacity(max_points + 2);
    indices.push(0);
    for bucket in 0..buckets {
        let start = bucket * points.len() / buckets;
        let end = (bucket + 1) * points.len() / buckets;
        let mut lowest = start;
        let mut highest = start;
        for index in start..end {
            if value(&points[index]) < value(&points[lowest]) {
                lowest = index;
            }
            if value(&points[index]) > value(&points[highest]) {
                highest = index;
            }
        }
        indices.push(lowest.min(highest));
        indices.push(lowest.max(highest));
    }
    indices.push(points.len() - 1);
    indices.dedup();
    indices
}

/// Returns the equity of the last point whose open time is at or before `open_time_ms`, or
/// of the first point when the time precedes the curve.
fn equity_at(points: &[EquityPoint], open_time_ms: i64) -> f64 {
    let after = points.partition_point(|point| point.open_time_ms <= open_time_ms);
    points[after.saturating_sub(1)].equity
}

/// Appends one trade's markers: the entry triangle and the exit circle, with a tooltip.
fn write_trade_marker(
    svg: &mut String,
    trade: &TradeMarker,
    entry: BackendCoord,
    exit: BackendCoord,
) {
    let is_long = trade.side == Side::Long;
    let entry_color = if is_long {
        LONG_ENTRY_COLOR
    } else {
        SHORT_ENTRY_COLOR
    };
    let exit_color = if trade.pnl > 0.0 {
        PROFIT_COLOR
    } else {
        LOSS_COLOR
    };
    let tooltip = format!(
        "{} entry {} at {}, exit {} at {}, pnl {:+.2} ({:+.2} %)",
        trade.side.as_str(),
        format_instant(trade.entry_time_ms),
        trade.entry_price,
        format_instant(trade.exit_time_ms),
        trade.exit_price,
        trade.pnl,
        trade.pnl_pct
    );
    let vertices: Vec<String> = triangle_vertices(entry, is_long)
        .iter()
        .map(|(x, y)| format!("{x},{y}"))
        .collect();
    // `write!` into a String cannot fail.
    let _ = writeln!(
        svg,
        "<g class=\"trade {side}\">\
         <title>{tooltip}</title>\
         <polygon class=\"entry\" points=\"{points}\" fill=\"{entry_fill}\" \
         stroke=\"#FFFFFF\" stroke-width=\"1\"/>\
         <circle class=\"exit\" cx=\"{exit_x}\" cy=\"{exit_y}\" r=\"3.5\" fill=\"{exit_fill}\" \
         stroke=\"#FFFFFF\" stroke-width=\"1\"/>\
         </g>",
        side = trade.side.as_str(),
        tooltip = escape_xml(&tooltip),
        points = vertices.join(" "),
        entry_fill = hex(entry_color),
        exit_x = exit.0,
        exit_y = exit.1,
        exit_fill = hex(exit_color),
    );
}

/// Vertices of a marker triangle centered on `center`, pointing up or down.
fn triangle_vertices((x, y): BackendCoord, pointing_up: bool) -> [BackendCoord; 3] {
    if pointing_up {
        [(x, y - 6), (x + 5, y + 3), (x - 5, y + 3)]
    } else {
        [(x, y + 6), (x + 5, y - 3), (x - 5, y - 3)]
    }
}

fn triangle_polygon(
    center: BackendCoord,
    pointing_up: bool,
    color: RGBColor,
) -> Polygon<BackendCoord> {
    Polygon::new(
        triangle_vertices(center, pointing_up).to_vec(),
        color.filled(),
    )
}

fn hex(color: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", color.0, color.1, color.2)
}

fn escape_xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Formats an amount with decimals suited to the span of the axis.
fn format_amount(value: f64, span: f64) -> String {
    if span >= 100.0 {
        format!("{value:.0}")
    } else if span >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

fn format_percent(value: f64) -> String {
    if value.abs() < 0.005 {
        "0 %".to_string()
    } else {
        format!("{value:.2} %")
    }
}

/// Formats an open time as `YYYY-MM-DD HH:MM` UTC.
fn format_instant(open_time_ms: i64) -> String {
    DateTime::from_timestamp_millis(open_time_ms).map_or_else(
        || open_time_ms.to_string(),
        |time| time.format("%Y-%m-%d %H:%M").to_string(),
    )
}

/// Formats a time axis label: the date for steps of a day or more, else the time of day,
/// with the date at midnight.
fn format_time_label(open_time_ms: i64, step: TickStep) -> String {
    let Some(time) = DateTime::from_timestamp_millis(open_time_ms) else {
        return open_time_ms.to_string();
    };
    let at_midnight = time.hour() == 0 && time.minute() == 0;
    match step {
        TickStep::Fixed(step_ms) if step_ms < DAY_MS && !at_midnight => {
            time.format("%H:%M").to_string()
        }
        TickStep::Fixed(_) => time.format("%Y-%m-%d").to_string(),
        TickStep::Months(_) => time.format("%Y-%m").to_string(),
    }
}

/// Spacing of time axis ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TickStep {
    /// A fixed number of milliseconds, aligned to multiples since the Unix epoch (UTC).
    Fixed(i64),
    /// A number of calendar months, on the first day of a month.
    Months(u32),
}

/// Fixed tick steps from a minute to a week.
const FIXED_STEPS_MS: [i64; 16] = [
    MINUTE_MS,
    2 * MINUTE_MS,
    5 * MINUTE_MS,
    10 * MINUTE_MS,
    15 * MINUTE_MS,
    30 * MINUTE_MS,
    HOUR_MS,
    2 * HOUR_MS,
    3 * HOUR_MS,
    6 * HOUR_MS,
    12 * HOUR_MS,
    DAY_MS,
    2 * DAY_MS,
    4 * DAY_MS,
    7 * DAY_MS,
    14 * DAY_MS,
];

/// Month tick steps for spans too long for two-week ticks.
const MONTH_STEPS: [u32; 6] = [1, 2, 3, 6, 12, 24];

/// The x axis: open times in milliseconds, with ticks on round UTC times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeAxis {
    start_ms: i64,
    end_ms: i64,
}

impl TimeAxis {
    /// Creates an axis from the first to the last open time, or a minute either side of a
    /// single time.
    fn new(first_ms: i64, last_ms: i64) -> Self {
        if first_ms < last_ms {
            Self {
                start_ms: first_ms,
                end_ms: last_ms,
            }
        } else {
            Self {
                start_ms: first_ms - MINUTE_MS,
                end_ms: first_ms + MINUTE_MS,
            }
        }
    }

    /// Returns the smallest step that gives at most `max_ticks` ticks.
    fn label_step(self, max_ticks: usize) -> TickStep {
        let span = self.end_ms - self.start_ms;
        let max_ticks = i64::try_from(max_ticks.max(1)).unwrap_or(i64::MAX);
        if let Some(&step) = FIXED_STEPS_MS.iter().find(|&&step| span / step < max_ticks) {
            return TickStep::Fixed(step);
        }
        // Months are at least 28 days, so this count is an upper bound.
        let months = span / (28 * DAY_MS);
        let step = MONTH_STEPS
            .iter()
            .copied()
            .find(|&step| months / i64::from(step) < max_ticks)
            .unwrap_or(MONTH_STEPS[MONTH_STEPS.len() - 1]);
        TickStep::Months(step)
    }

    fn ticks(self, step: TickStep) -> Vec<i64> {
        match step {
            TickStep::Fixed(step_ms) => {
                let first = self.start_ms.div_euclid(step_ms) * step_ms;
                (0..)
                    .map(|index| first + index * step_ms)
                    .skip_while(|&tick| tick < self.start_ms)
                    .take_while(|&tick| tick <= self.end_ms)
                    .collect()
            }
            TickStep::Months(months) => {
                let Some(start) = DateTime::from_timestamp_millis(self.start_ms) else {
                    return Vec::new();
                };
                let mut year = start.year();
                let mut month = start.month0();
                month -= month % months;
                let mut ticks = Vec::new();
                loop {
                    let Some(day) = NaiveDate::from_ymd_opt(year, month + 1, 1) else {
                        return ticks;
                    };
                    let tick = day
                        .and_hms_opt(0, 0, 0)
                        .map_or(i64::MAX, |time| time.and_utc().timestamp_millis());
                    if tick > self.end_ms {
                        return ticks;
                    }
                    if tick >= self.start_ms {
                        ticks.push(tick);
                    }
                    month += months;
                    year += i32::try_from(month / 12).unwrap_or(0);
                    month %= 12;
                }
            }
        }
    }

    /// Returns the x axis title: the time zone and the dates of the range.
    fn description(self) -> String {
        let date = |ms: i64| {
            DateTime::from_timestamp_millis(ms).map_or_else(
                || ms.to_string(),
                |time| time.format("%Y-%m-%d %H:%M").to_string(),
            )
        };
        format!(
            "bar open time (UTC), {} to {}",
            date(self.start_ms),
            date(self.end_ms)
        )
    }
}

impl Ranged for TimeAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = i64;

    fn map(&self, value: &i64, limit: (i32, i32)) -> i32 {
        let span = (self.end_ms - self.start_ms) as f64;
        let fraction = (*value - self.start_ms) as f64 / span;
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<i64> {
        self.ticks(self.label_step(hint.max_num_points()))
    }

    fn range(&self) -> Range<i64> {
        self.start_ms..self.end_ms
    }
}

impl ValueFormatter<i64> for TimeAxis {
    fn format(open_time_ms: &i64) -> String {
        format_instant(*open_time_ms)
    }

    fn format_ext(&self, open_time_ms: &i64) -> String {
        format_time_label(*open_time_ms, self.label_step(TIME_LABELS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(count: i64, step_ms: i64) -> Vec<EquityPoint> {
        let mut peak = f64::MIN;
        (0..count)
            .map(|index| {
                let equity = 10_000.0 + 300.0 * (index as f64 / 50.0).sin() + index as f64;
                peak = peak.max(equity);
                EquityPoint {
                    open_time_ms: 1_748_736_000_000 + index * step_ms,
                    equity,
                    drawdown: (peak - equity) / peak * 100.0,
                }
            })
            .collect()
    }

    fn marker(side: Side, entry_time_ms: i64, exit_time_ms: i64, pnl: f64) -> TradeMarker {
        TradeMarker {
            side,
            entry_time_ms,
            exit_time_ms,
            entry_price: 100.0,
            exit_price: 100.0 + pnl,
            pnl,
            pnl_pct: pnl,
        }
    }

    #[test]
    fn svg_parses_and_marks_each_trade() {
        let points = curve(3_000, MINUTE_MS);
        let start = points[0].open_time_ms;
        let trades = [
            marker(
                Side::Long,
                start + 10 * MINUTE_MS,
                start + 90 * MINUTE_MS,
                12.5,
            ),
            marker(
                Side::Short,
                start + 200 * MINUTE_MS,
                start + 260 * MINUTE_MS,
                -3.0,
            ),
            marker(
                Side::Long,
                start + 900 * MINUTE_MS,
                start + 2_999 * MINUTE_MS,
                0.0,
            ),
        ];
        let svg = equity_svg(&points, &trades, "SMA <10/30> & \"test\"").unwrap();

        let document = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
        let root = document.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert!(
            document
                .descendants()
                .any(|node| node.has_tag_name("polyline") || node.has_tag_name("path")),
            "the SVG has no line"
        );
        let texts: Vec<&str> = document
            .descendants()
            .filter(|node| node.has_tag_name("text"))
            .filter_map(|node| node.text())
            .map(str::trim)
            .collect();
        assert!(texts.contains(&"SMA <10/30> & \"test\""), "{texts:?}");
        assert!(texts.contains(&"equity"), "{texts:?}");
        assert!(texts.contains(&"long entry"), "{texts:?}");
        assert!(texts.contains(&"drawdown (%)"), "{texts:?}");
        assert!(
            texts.iter().any(|text| text.starts_with("2025-06-0")),
            "{texts:?}"
        );

        let group = document
            .descendants()
            .find(|node| node.attribute("id") == Some("trades"))
            .expect("a trades group");
        let markers: Vec<_> = group
            .children()
            .filter(|node| node.has_tag_name("g"))
            .collect();
        assert_eq!(markers.len(), trades.len());
        for (node, trade) in markers.iter().zip(&trades) {
            let class = node.attribute("class").unwrap();
            assert_eq!(class, format!("trade {}", trade.side.as_str()));
            assert_eq!(
                node.children()
                    .filter(|child| child.attribute("class") == Some("entry"))
                    .count(),
                1
            );
            let exit = node
                .children()
                .find(|child| child.attribute("class") == Some("exit"))
                .expect("an exit marker");
            let expected_fill = if trade.pnl > 0.0 {
                "#2CA02C"
            } else {
                "#D62728"
            };
            assert_eq!(exit.attribute("fill"), Some(expected_fill));
        }
    }

    #[test]
    fn svg_of_single_point_draws() {
        let points = curve(1, MINUTE_MS);
        let svg = equity_svg(&points, &[], "one bar").unwrap();
        roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
    }

    #[test]
    fn svg_of_empty_curve_rejected() {
        let error = equity_svg(&[], &[], "nothing").unwrap_err();
        assert!(matches!(error, Error::InvalidParameter { .. }), "{error}");
    }

    #[test]
    fn thinning_keeps_extremes_and_ends() {
        let mut points = curve(100_000, MINUTE_MS);
        points[54_321].equity = 1.0;
        points[77_777].equity = 1e9;
        let kept = thin_indices(&points, |point| point.equity, 1_000);
        assert!(kept.len() <= 1_002, "{} points kept", kept.len());
        assert_eq!(kept.first(), Some(&0));
        assert_eq!(kept.last(), Some(&99_999));
        assert!(kept.contains(&54_321));
        assert!(kept.contains(&77_777));
        assert!(kept.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(
            thin_indices(&points[..10], |point| point.equity, 1_000).len(),
            10
        );
    }

    #[test]
    fn time_ticks_are_round() {
        let two_weeks = TimeAxis::new(1_748_736_000_000, 1_748_736_000_000 + 14 * DAY_MS);
        let step = two_weeks.label_step(10);
        assert_eq!(step, TickStep::Fixed(2 * DAY_MS));
        let ticks = two_weeks.ticks(step);
        assert_eq!(ticks.len(), 8);
        assert!(ticks.iter().all(|tick| tick % DAY_MS == 0));
        assert_eq!(format_time_label(ticks[0], step), "2025-06-01");

        let hours = TimeAxis::new(
            1_748_736_000_000 + 5 * MINUTE_MS,
            1_748_736_000_000 + 5 * HOUR_MS,
        );
        let step = hours.label_step(10);
        assert_eq!(step, TickStep::Fixed(30 * MINUTE_MS));
        assert_eq!(format_time_label(hours.ticks(step)[0], step), "00:30");

        // 2025-01-01 to 2026-01-01: month ticks on the first of a month.
        let year = TimeAxis::new(1_735_689_600_000, 1_767_225_600_000);
        let step = year.label_step(10);
        assert_eq!(step, TickStep::Months(2));
        let labels: Vec<String> = year
            .ticks(step)
            .into_iter()
            .map(|tick| format_time_label(tick, step))
            .collect();
        assert_eq!(
            labels,
            [
                "2025-01", "2025-03", "2025-05", "2025-07", "2025-09", "2025-11", "2026-01"
            ]
        );
    }
}
