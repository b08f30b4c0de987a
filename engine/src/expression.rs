//! Expression strategies: SQL boolean conditions planned as DataFusion window expressions.
//!
//! A condition is a DataFusion SQL expression over the bar columns. Indicator functions and
//! `lag` are written without an `OVER` clause; the engine adds `OVER (ORDER BY open_time)` to
//! each call, so every call reads only the current bar and earlier ones. Anything that could
//! read later bars is rejected: explicit `OVER` clauses, `lead` and other window functions,
//! a negative `lag` offset, and subqueries.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::ExprSchemable;
use datafusion::prelude::{DataFrame, Expr, SessionContext, col};
use datafusion::sql::sqlparser::ast::{
    self as sql, ExprWithAlias, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    OrderByExpr, OrderByOptions, UnaryOperator, Value, WindowSpec, WindowType,
    visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::indicators::Indicator;
use crate::{Error, Result};

/// Columns an expression can read.
pub const BAR_COLUMNS: [&str; 7] = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "turnover",
];

/// Maximum length of a condition, in characters.
const MAX_EXPRESSION_LENGTH: usize = 4_000;

/// Returns an error naming the expression `name` with its text.
fn invalid(name: &str, text: &str, message: impl std::fmt::Display) -> Error {
    Error::InvalidParameter {
        name: name.to_string(),
        message: format!("{text:?} is not a valid condition: {message}"),
    }
}

/// Parses `text` and adds the window clause to every indicator and `lag` call.
fn parse_condition(name: &str, text: &str) -> Result<sql::Expr> {
    if text.trim().is_empty() {
        return Err(invalid(name, text, "it is empty"));
    }
    if text.chars().count() > MAX_EXPRESSION_LENGTH {
        return Err(invalid(
            name,
            text,
            format!("it is longer than {MAX_EXPRESSION_LENGTH} characters"),
        ));
    }
    crate::sql_limits::check_operator_count(text)
        .map_err(|message| invalid(name, text, message))?;
    let mut parsed = Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .and_then(|mut parser| {
            let expr = parser.parse_expr()?;
            parser.expect_token(&datafusion::sql::sqlparser::tokenizer::Token::EOF)?;
            Ok(expr)
        })
        .map_err(|error| invalid(name, text, error))?;

    let windowed: HashSet<&str> = Indicator::ALL
        .iter()
        .map(|indicator| indicator.name())
        .chain(["lag"])
        .collect();
    let flow = visit_expressions_mut(&mut parsed, |expr| {
        match expr {
            sql::Expr::Subquery(_) | sql::Expr::Exists { .. } | sql::Expr::InSubquery { .. } => {
                return ControlFlow::Break("subqueries are not allowed".to_string());
            }
            sql::Expr::Function(function) => {
                let function_name = function.name.to_string().to_ascii_lowercase();
                if function.over.is_some() {
                    return ControlFlow::Break(format!(
                        "{function_name}(...) OVER is not allowed: write {function_name}(...) \
                         and the engine orders it by open_time"
                    ));
                }
                if ["lead", "last_value", "nth_value"].contains(&function_name.as_str()) {
                    return ControlFlow::Break(format!(
                        "{function_name} reads later bars; use lag(x, k) for the value k bars \
                         earlier"
                    ));
                }
                if !windowed.contains(function_name.as_str()) {
                    return ControlFlow::Continue(());
                }
                if function_name == "lag"
                    && let Err(message) = check_lag_offset(&function.args)
                {
                    return ControlFlow::Break(message);
                }
                if function_name != "lag"
                    && let Err(message) = check_indicator_numbers(&function_name, &function.args)
                {
                    return ControlFlow::Break(message);
                }
                function.over = Some(WindowType::WindowSpec(WindowSpec {
                    window_name: None,
                    partition_by: vec![],
                    order_by: vec![OrderByExpr {
                        expr: sql::Expr::Identifier(Ident::new("open_time")),
                        options: OrderByOptions {
                            asc: Some(true),
                            nulls_first: Some(false),
                        },
                        with_fill: None,
                    }],
                    window_frame: None,
                }));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    if let ControlFlow::Break(message) = flow {
        return Err(invalid(name, text, message));
    }
    Ok(parsed)
}

/// Rejects a numeric literal argument of an indicator, such as the period in
/// `sma(close, 20)`, that is not above 0 and at most [`MAX_PERIOD`](crate::indicators::MAX_PERIOD), so a strategy
/// with such a call fails when it is stored rather than in every backtest.
fn check_indicator_numbers(
    function_name: &str,
    arguments: &FunctionArguments,
) -> std::result::Result<(), String> {
    let FunctionArguments::List(list) = arguments else {
        return Ok(());
    };
    for argument in &list.args {
        let FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) = argument else {
            continue;
        };
        let number = match expr {
            sql::Expr::Value(value) => match &value.value {
                Value::Number(number, _) => number.parse::<f64>().ok(),
                _ => None,
            },
            sql::Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr: inner,
            } if matches!(inner.as_ref(), sql::Expr::Value(_)) => Some(-1.0),
            _ => None,
        };
        if let Some(number) = number
            && !(number > 0.0 && number <= crate::indicators::MAX_PERIOD as f64)
        {
            return Err(format!(
                "{function_name}: the period or width {expr} must be a positive number up to \
                 100000"
            ));
        }
    }
    Ok(())
}

/// Accepts `lag(x)` and `lag(x, k)` with a whole-number literal k of at least 0.
fn check_lag_offset(arguments: &FunctionArguments) -> std::result::Result<(), String> {
    let FunctionArguments::List(list) = arguments else {
        return Err("lag needs arguments, as in lag(close, 1)".to_string());
    };
    let Some(offset) = list.args.get(1) else {
        return Ok(());
    };
    let literal = match offset {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(sql::Expr::Value(value))) => {
            match &value.value {
                Value::Number(number, _) => number.parse::<u64>().ok(),
                _ => None,
            }
        }
        _ => None,
    };
    match literal {
        Some(_) => Ok(()),
        None => Err(format!(
            "the offset of lag must be a whole number of bars of at least 0, got {offset}"
        )),
    }
}

/// Adds one boolean column per condition to `bars`, named after the condition; null results
/// become false.
///
/// `bars` must have the [`BAR_COLUMNS`]. Window calls nested inside other window calls (such
/// as `lag(sma(close, 20), 1)`) are computed innermost first, one projection per level.
///
/// # Errors
///
/// [`Error::InvalidParameter`] naming the condition when it does not parse, names an unknown
/// column or function, reads later bars or is not boolean.
pub fn plan_conditions(
    ctx: &SessionContext,
    bars: DataFrame,
    conditions: &[(&str, &str)],
) -> Result<DataFrame> {
    let columns: Vec<Expr> = BAR_COLUMNS.iter().map(|name| col(*name)).collect();
    let mut frame = bars.select(columns.clone())?;
    let state = ctx.state();

    let mut exprs = Vec::with_capacity(conditions.len());
    for (name, text) in conditions {
        let parsed = parse_condition(name, text)?;
        let expr = state
            .create_logical_expr_from_sql_expr(
                ExprWithAlias {
                    expr: parsed,
                    alias: None,
                },
                frame.schema(),
            )
            .map_err(|error| invalid(name, text, error))?;
        let mut aggregate = None;
        let _ = expr.apply(|node| {
            if let Expr::AggregateFunction(function) = node {
                aggregate = Some(function.func.name().to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if let Some(function) = aggregate {
            return Err(invalid(
                name,
                text,
                format!(
                    "the aggregate function {function} reads every bar of the range; use a \
                     window function over past bars such as sma(close, 20) or highest(high, 20)"
                ),
            ));
        }
        let data_type = expr
            .get_type(frame.schema())
            .map_err(|error| invalid(name, text, error))?;
        if data_type != DataType::Boolean && data_type != DataType::Null {
            return Err(invalid(
                name,
                text,
                format!("it is of type {data_type}, not a boolean"),
            ));
        }
        exprs.push(expr);
    }

    let mut hoisted = 0;
    loop {
        let innermost = innermost_windows(&exprs);
        if innermost.is_empty() {
            break;
        }
        let mut projection: Vec<Expr> = frame
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let mut replacements = Vec::with_capacity(innermost.len());
        for window in innermost {
            let alias = format!("__window_{hoisted}");
            hoisted += 1;
            projection.push(window.clone().alias(&alias));
            replacements.push((window, col(alias)));
        }
        frame = frame.select(projection)?;
        exprs = exprs
            .into_iter()
            .map(|expr| replace_all(expr, &replacements))
            .collect::<Result<_>>()?;
    }

    let mut projection = columns;
    for ((name, _), expr) in conditions.iter().zip(exprs) {
        projection.push(expr.is_true().alias(*name));
    }
    Ok(frame.select(projection)?)
}

/// Plans `conditions` over an empty series with the kline schema, to report an invalid
/// condition before any data is read.
///
/// # Errors
///
/// The errors of [`plan_conditions`].
pub fn check_conditions(ctx: &SessionContext, conditions: &[(&str, &str)]) -> Result<()> {
    let empty = RecordBatch::new_empty(bst_ingest::layout::kline_schema());
    let bars = ctx.read_batch(empty)?;
    plan_conditions(ctx, bars, conditions)?;
    Ok(())
}

/// Returns the distinct window calls of `exprs` whose arguments contain no window call.
fn innermost_windows(exprs: &[Expr]) -> Vec<Expr> {
    let mut found: Vec<Expr> = Vec::new();
    for expr in exprs {
        let _ = expr.apply(|node| {
            if let Expr::WindowFunction(_) = node
                && !contains_nested_window(node)
                && !found.contains(node)
            {
                found.push(node.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    found
}

/// Returns true when a window call has another window call among its descendants.
fn contains_nested_window(window: &Expr) -> bool {
    let mut nested = false;
    let _ = window.apply_children(|child| {
        child.apply(|node| {
            if matches!(node, Expr::WindowFunction(_)) {
                nested = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
    });
    nested
}

fn replace_all(expr: Expr, replacements: &[(Expr, Expr)]) -> Result<Expr> {
    Ok(expr
        .transform_down(
            |node| match replacements.iter().find(|(window, _)| *window == node) {
                Some((_, column)) => Ok(Transformed::new(
                    column.clone(),
                    true,
                    TreeNodeRecursion::Jump,
                )),
                None => Ok(Transformed::no(node)),
            },
        )?
        .data)
}
