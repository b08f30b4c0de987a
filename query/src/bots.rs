//! Paper bots and their deals.
//!
//! The API names bots and deals with strings such as `bot_1` and `deal_1`, and DuckDB keys
//! them by BIGINT sequences. The prefix is added when a row is read and removed when an id
//! is parsed, so an id that does not have the prefix and a positive number is not found.
//!
//! No order leaves the process: a bot is a status that a supervisor moves, and a deal is a
//! long position recorded at the prices the caller gives.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use duckdb::{Connection, OptionalExt, Row, params};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use crate::error::Error;
use crate::model::Page;
use crate::store::{Store, page_bound, timestamp};

/// Prefix of bot ids, as in `bot_1`.
pub const BOT_ID_PREFIX: &str = "bot_";

/// Prefix of deal ids, as in `deal_1`.
pub const DEAL_ID_PREFIX: &str = "deal_";

/// Failures of the bot and deal methods.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// No bot or deal has this id.
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },

    /// The bot's or deal's current status does not allow the requested change. The message
    /// names the status and what to do.
    #[error("{message}")]
    Conflict { message: String },

    /// An invalid input value or a failed query.
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<duckdb::Error> for BotError {
    fn from(error: duckdb::Error) -> Self {
        BotError::Store(Error::Database(error))
    }
}

/// Result of the bot and deal methods.
pub type BotResult<T> = std::result::Result<T, BotError>;

/// Life cycle of a paper bot: `stopped` -> `awaiting_start` -> `running` -> `awaiting_stop`
/// -> `stopped`. The supervisor moves the two awaiting states. `error` is in the status set
/// of the REST contract, but paper bots never enter it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BotStatus {
    Running,
    Stopped,
    AwaitingStart,
    AwaitingStop,
    Error,
}

impl BotStatus {
    /// Every status.
    pub const ALL: [BotStatus; 5] = [
        Self::Running,
        Self::Stopped,
        Self::AwaitingStart,
        Self::AwaitingStop,
        Self::Error,
    ];

    /// Returns the snake_case name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::AwaitingStart => "awaiting_start",
            Self::AwaitingStop => "awaiting_stop",
            Self::Error => "error",
        }
    }
}

impl FromStr for BotStatus {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| Error::InvalidValue {
                field: "bot status",
                value: value.to_owned(),
                expected: join_names(Self::ALL.iter().map(|status| status.as_str())),
            })
    }
}

impl_text_column!(BotStatus);

/// Life cycle of a deal: `active` until it is closed or cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DealStatus {
    Active,
    Closed,
    Cancelled,
}

impl DealStatus {
    /// Every status.
    pub const ALL: [DealStatus; 3] = [Self::Active, Self::Closed, Self::Cancelled];

    /// Returns the lowercase name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Closed => "closed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl FromStr for DealStatus {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| Error::InvalidValue {
                field: "deal status",
                value: value.to_owned(),
                expected: join_names(Self::ALL.iter().map(|status| status.as_str())),
            })
    }
}

impl_text_column!(DealStatus);

/// A paper bot.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Bot {
    /// Bot id, `bot_` and a number, such as `bot_1`.
    #[schema(example = "bot_1")]
    pub id: String,
    /// Display name, 1 to 200 characters.
    pub name: String,
    /// Name of the strategy the bot runs, free text such as `scalper_v1`.
    pub strategy: String,
    /// Instruments the bot trades, Bybit symbols such as `BTCUSDT`.
    pub symbols: Vec<String>,
    /// Capital assigned to the bot, in quote currency (USDT for USDT contracts).
    pub capital_allocated: f64,
    /// Current status. `awaiting_start` and `awaiting_stop` last about a second at most.
    pub status: BotStatus,
    /// Creation time, ISO 8601 UTC.
    pub created_at: DateTime<Utc>,
    /// Time of the last status change, or the creation time, ISO 8601 UTC.
    pub updated_at: DateTime<Utc>,
}

/// Fields of a bot to create, checked by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBot {
    pub name: String,
    pub strategy: String,
    pub symbols: Vec<String>,
    /// Capital in quote currency, finite and positive.
    pub capital_allocated: f64,
}

/// A deal of a paper bot: a long position of `quantity` at `entry_price`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deal {
    /// Deal id, `deal_` and a number.
    pub id: String,
    pub bot_id: String,
    pub symbol: String,
    /// Average entry price, in quote currency per unit of the base coin.
    pub entry_price: f64,
    /// Position size in the base coin.
    pub quantity: f64,
    pub status: DealStatus,
    pub opened_at: DateTime<Utc>,
    /// Time of the close or cancel, or `None` while active.
    pub closed_at: Option<DateTime<Utc>>,
    /// Price the deal was closed at, or `None` unless closed.
    pub exit_price: Option<f64>,
    /// `(exit_price - entry_price) * quantity` in quote currency, or `None` unless closed.
    pub realized_pnl: Option<f64>,
}

/// Fields of a deal to open, checked by the caller except for the bot and symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeal {
    /// Id of an existing bot, such as `bot_1`.
    pub bot_id: String,
    /// One of the bot's symbols.
    pub symbol: String,
    /// Entry price in quote currency, finite and positive.
    pub entry_price: f64,
    /// Quantity in the base coin, finite and positive.
    pub quantity: f64,
}

/// A status change that the supervisor made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotTransition {
    pub bot_id: String,
    pub from: BotStatus,
    pub to: BotStatus,
}

/// Returns the number of an id such as `bot_12`, or `None` when `id` lacks the prefix or a
/// positive number.
fn id_number(id: &str, prefix: &str) -> Option<i64> {
    let digits = id.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|number| *number > 0)
}

fn bot_key(id: &str) -> BotResult<i64> {
    id_number(id, BOT_ID_PREFIX).ok_or_else(|| bot_not_found(id))
}

fn deal_key(id: &str) -> BotResult<i64> {
    id_number(id, DEAL_ID_PREFIX).ok_or_else(|| deal_not_found(id))
}

fn bot_not_found(id: &str) -> BotError {
    BotError::NotFound {
        entity: "bot",
        id: id.to_owned(),
    }
}

fn deal_not_found(id: &str) -> BotError {
    BotError::NotFound {
        entity: "deal",
        id: id.to_owned(),
    }
}

impl Store {
    /// Inserts a bot with status `stopped`.
    pub fn create_bot(&self, new: &NewBot) -> BotResult<Bot> {
        let symbols = serde_json::Value::from(new.symbols.clone()).to_string();
        let now = timestamp(Utc::now());
        let connection = self.lock_bots();
        let bot = connection.query_row(
            "INSERT INTO bots (name, strategy, symbols, capital_allocated, status, created_at,
                updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             RETURNING *",
            params![
                new.name,
                new.strategy,
                symbols,
                new.capital_allocated,
                BotStatus::Stopped,
                now,
                now
            ],
            bot_from_row,
        )?;
        info!(bot_id = %bot.id, name = %bot.name, "created bot");
        Ok(bot)
    }

    /// Returns the bot with this id.
    ///
    /// Fails with [`BotError::NotFound`] when there is none.
    pub fn get_bot(&self, id: &str) -> BotResult<Bot> {
        let key = bot_key(id)?;
        let connection = self.lock_bots();
        find_bot(&connection, key)?.ok_or_else(|| bot_not_found(id))
    }

    /// Returns one page of bots ordered by id and the number of bots.
    pub fn list_bots(&self, limit: u64, offset: u64) -> BotResult<Page<Bot>> {
        let connection = self.lock_bots();
        let total = connection.query_row("SELECT count(*) FROM bots", [], |row| row.get(0))?;
        let mut statement =
            connection.prepare("SELECT * FROM bots ORDER BY id LIMIT ? OFFSET ?")?;
        let items = statement
            .query_map(params![page_bound(limit), page_bound(offset)], bot_from_row)?
            .collect::<duckdb::Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    /// Moves a `stopped` or `error` bot to `awaiting_start` and returns it.
    ///
    /// Fails with [`BotError::Conflict`] from any other status.
    pub fn request_bot_start(&self, id: &str) -> BotResult<Bot> {
        self.request_bot_status(
            id,
            &[BotStatus::Stopped, BotStatus::Error],
            BotStatus::AwaitingStart,
            "start",
        )
    }

    /// Moves a `running` or `awaiting_start` bot to `awaiting_stop` and returns it.
    ///
    /// Fails with [`BotError::Conflict`] from any other status.
    pub fn request_bot_stop(&self, id: &str) -> BotResult<Bot> {
        self.request_bot_status(
            id,
            &[BotStatus::Running, BotStatus::AwaitingStart],
            BotStatus::AwaitingStop,
            "stop",
        )
    }

    fn request_bot_status(
        &self,
        id: &str,
        allowed: &[BotStatus],
        to: BotStatus,
        action: &str,
    ) -> BotResult<Bot> {
        let key = bot_key(id)?;
        let connection = self.lock_bots();
        let bot = find_bot(&connection, key)?.ok_or_else(|| bot_not_found(id))?;
        if !allowed.contains(&bot.status) {
            return Err(BotError::Conflict {
                message: format!(
                    "bot {id} is {}, so it cannot {action}; {action} is allowed from {}",
                    bot.status,
                    join_names(allowed.iter().map(|status| status.as_str()))
                ),
            });
        }
        let bot = connection.query_row(
            "UPDATE bots SET status = ?, updated_at = ? WHERE id = ? RETURNING *",
            params![to, timestamp(Utc::now()), key],
            bot_from_row,
        )?;
        info!(bot_id = %bot.id, status = %bot.status, "requested bot status change");
        Ok(bot)
    }

    /// Deletes a `stopped` or `error` bot that has no active deal.
    ///
    /// Fails with [`BotError::Conflict`] when the bot is in another status or still has
    /// active deals. Its closed and cancelled deals stay stored.
    pub fn delete_bot(&self, id: &str) -> BotResult<()> {
        let key = bot_key(id)?;
        let connection = self.lock_bots();
        let bot = find_bot(&connection, key)?.ok_or_else(|| bot_not_found(id))?;
        if !matches!(bot.status, BotStatus::Stopped | BotStatus::Error) {
            return Err(BotError::Conflict {
                message: format!(
                    "bot {id} is {}, so it cannot be deleted; stop it first",
                    bot.status
                ),
            });
        }
        let active: i64 = connection.query_row(
            "SELECT count(*) FROM deals WHERE bot_id = ? AND status = ?",
            params![key, DealStatus::Active],
            |row| row.get(0),
        )?;
        if active > 0 {
            return Err(BotError::Conflict {
                message: format!(
                    "bot {id} has {active} active deals, so it cannot be deleted; close or \
                     cancel them first"
                ),
            });
        }
        connection.execute("DELETE FROM bots WHERE id = ?", [key])?;
        info!(bot_id = %id, "deleted bot");
        Ok(())
    }

    /// Moves every `awaiting_start` bot to `running` and every `awaiting_stop` bot to
    /// `stopped`, and returns the changes.
    pub fn advance_bots(&self) -> BotResult<Vec<BotTransition>> {
        let connection = self.lock_bots();
        // The status names are literals of this file, so no request text reaches the SQL.
        let mut statement = connection.prepare(
            "UPDATE bots
             SET status = CASE status WHEN 'awaiting_start' THEN 'running' ELSE 'stopped' END,
                 updated_at = ?
             WHERE status IN ('awaiting_start', 'awaiting_stop')
             RETURNING id, status",
        )?;
        let transitions = statement
            .query_map([timestamp(Utc::now())], |row| {
                let key: i64 = row.get(0)?;
                let to: BotStatus = row.get(1)?;
                let from = if to == BotStatus::Running {
                    BotStatus::AwaitingStart
                } else {
                    BotStatus::AwaitingStop
                };
                Ok(BotTransition {
                    bot_id: format!("{BOT_ID_PREFIX}{key}"),
                    from,
                    to,
                })
            })?
            .collect::<duckdb::Result<Vec<_>>>()?;
        Ok(transitions)
    }

    /// Opens an active deal of a bot.
    ///
    /// Fails with [`BotError::NotFound`] for an unknown bot and with [`Error::InvalidValue`]
    /// when the symbol is not one of the bot's symbols.
    pub fn create_deal(&self, new: &NewDeal) -> BotResult<Deal> {
        let bot_key = bot_key(&new.bot_id)?;
        let connection = self.lock_bots();
        let bot = find_bot(&connection, bot_key)?.ok_or_else(|| bot_not_found(&new.bot_id))?;
        if !bot.symbols.contains(&new.symbol) {
            return Err(Error::InvalidValue {
                field: "symbol",
                value: new.symbol.clone(),
                expected: format!(
                    "one of the symbols of bot {}: {}",
                    bot.id,
                    bot.symbols.join(", ")
                ),
            }
            .into());
        }
        let deal = connection.query_row(
            "INSERT INTO deals (bot_id, symbol, entry_price, quantity, status, opened_at)
             VALUES (?, ?, ?, ?, ?, ?)
             RETURNING *",
            params![
                bot_key,
                new.symbol,
                new.entry_price,
                new.quantity,
                DealStatus::Active,
                timestamp(Utc::now())
            ],
            deal_from_row,
        )?;
        info!(deal_id = %deal.id, bot_id = %deal.bot_id, symbol = %deal.symbol, "opened deal");
        Ok(deal)
    }

    /// Returns the deal with this id, whatever its status.
    ///
    /// Fails with [`BotError::NotFound`] when there is none.
    pub fn get_deal(&self, id: &str) -> BotResult<Deal> {
        let key = deal_key(id)?;
        let connection = self.lock_bots();
        find_deal(&connection, key)?.ok_or_else(|| deal_not_found(id))
    }

    /// Returns one page of active deals ordered by id, of one bot when `bot_id` is given, and
    /// the number of such deals.
    ///
    /// Fails with [`BotError::NotFound`] for an unknown bot.
    pub fn list_active_deals(
        &self,
        bot_id: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> BotResult<Page<Deal>> {
        let connection = self.lock_bots();
        let bot_key = match bot_id {
            Some(id) => {
                let key = bot_key(id)?;
                find_bot(&connection, key)?.ok_or_else(|| bot_not_found(id))?;
                Some(key)
            }
            None => None,
        };
        let total = connection.query_row(
            "SELECT count(*) FROM deals
             WHERE status = $1 AND ($2::BIGINT IS NULL OR bot_id = $2::BIGINT)",
            params![DealStatus::Active, bot_key],
            |row| row.get(0),
        )?;
        let mut statement = connection.prepare(
            "SELECT * FROM deals
             WHERE status = $1 AND ($2::BIGINT IS NULL OR bot_id = $2::BIGINT)
             ORDER BY id LIMIT $3 OFFSET $4",
        )?;
        let items = statement
            .query_map(
                params![
                    DealStatus::Active,
                    bot_key,
                    page_bound(limit),
                    page_bound(offset)
                ],
                deal_from_row,
            )?
            .collect::<duckdb::Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    /// Closes an active deal at `price` and stores its realized pnl,
    /// `(price - entry_price) * quantity`.
    ///
    /// Fails with [`BotError::Conflict`] when the deal is closed or cancelled.
    pub fn close_deal(&self, id: &str, price: f64) -> BotResult<Deal> {
        let key = deal_key(id)?;
        let connection = self.lock_bots();
        let deal = active_deal(&connection, id, key, "closed")?;
        let pnl = (price - deal.entry_price) * deal.quantity;
        if !pnl.is_finite() {
            return Err(BotError::Conflict {
                message: format!(
                    "cannot close deal {id} at price {price}: its pnl (price - entry price \
                     {:e}) x quantity {:e} overflows to infinity; cancel the deal instead",
                    deal.entry_price, deal.quantity
                ),
            });
        }
        let deal = connection.query_row(
            "UPDATE deals SET status = ?, closed_at = ?, exit_price = ?, realized_pnl = ?
             WHERE id = ? RETURNING *",
            params![DealStatus::Closed, timestamp(Utc::now()), price, pnl, key],
            deal_from_row,
        )?;
        info!(deal_id = %deal.id, price, pnl, "closed deal");
        Ok(deal)
    }

    /// Cancels an active deal without a pnl.
    ///
    /// Fails with [`BotError::Conflict`] when the deal is closed or cancelled.
    pub fn cancel_deal(&self, id: &str) -> BotResult<Deal> {
        let key = deal_key(id)?;
        let connection = self.lock_bots();
        active_deal(&connection, id, key, "cancelled")?;
        let deal = connection.query_row(
            "UPDATE deals SET status = ?, closed_at = ? WHERE id = ? RETURNING *",
            params![DealStatus::Cancelled, timestamp(Utc::now()), key],
            deal_from_row,
        )?;
        info!(deal_id = %deal.id, "cancelled deal");
        Ok(deal)
    }

    /// Adds `quantity` at `price` to an active deal. The entry price becomes the
    /// quantity-weighted mean of the old entry price and `price`.
    ///
    /// Fails with [`BotError::Conflict`] when the deal is closed or cancelled, and with
    /// [`Error::InvalidValue`] when the total quantity or cost overflows to infinity.
    pub fn average_deal(&self, id: &str, quantity: f64, price: f64) -> BotResult<Deal> {
        let key = deal_key(id)?;
        let connection = self.lock_bots();
        let deal = active_deal(&connection, id, key, "averaged")?;
        let total_quantity = deal.quantity + quantity;
        let total_cost = deal.entry_price * deal.quantity + price * quantity;
        let entry_price = total_cost / total_quantity;
        if !(total_quantity.is_finite() && total_cost.is_finite() && entry_price.is_finite()) {
            return Err(Error::InvalidValue {
                field: "quantity",
                value: quantity.to_string(),
                expected: format!(
                    "a quantity whose cost at price {price:e}, added to the cost of deal {id} \
                     (entry price {:e} x quantity {:e}), is at most {:e}",
                    deal.entry_price,
                    deal.quantity,
                    f64::MAX
                ),
            }
            .into());
        }
        let deal = connection.query_row(
            "UPDATE deals SET entry_price = ?, quantity = ? WHERE id = ? RETURNING *",
            params![entry_price, total_quantity, key],
            deal_from_row,
        )?;
        info!(
            deal_id = %deal.id,
            entry_price = deal.entry_price,
            quantity = deal.quantity,
            "averaged deal"
        );
        Ok(deal)
    }
}

/// Returns the deal when it is active, and otherwise a conflict that names its status.
fn active_deal(connection: &Connection, id: &str, key: i64, action: &str) -> BotResult<Deal> {
    let deal = find_deal(connection, key)?.ok_or_else(|| deal_not_found(id))?;
    if deal.status != DealStatus::Active {
        return Err(BotError::Conflict {
            message: format!(
                "deal {id} is {}, so it cannot be {action}; only active deals can",
                deal.status
            ),
        });
    }
    Ok(deal)
}

fn find_bot(connection: &Connection, key: i64) -> BotResult<Option<Bot>> {
    Ok(connection
        .query_row("SELECT * FROM bots WHERE id = ?", [key], bot_from_row)
        .optional()?)
}

fn find_deal(connection: &Connection, key: i64) -> BotResult<Option<Deal>> {
    Ok(connection
        .query_row("SELECT * FROM deals WHERE id = ?", [key], deal_from_row)
        .optional()?)
}

fn bot_from_row(row: &Row<'_>) -> duckdb::Result<Bot> {
    let key: i64 = row.get("id")?;
    let symbols: String = row.get("symbols")?;
    let symbols = serde_json::from_str(&symbols).map_err(|error| {
        duckdb::Error::FromSqlConversionFailure(0, duckdb::types::Type::Text, Box::new(error))
    })?;
    Ok(Bot {
        id: format!("{BOT_ID_PREFIX}{key}"),
        name: row.get("name")?,
        strategy: row.get("strategy")?,
        symbols,
        capital_allocated: row.get("capital_allocated")?,
        status: row.get("status")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

fn deal_from_row(row: &Row<'_>) -> duckdb::Result<Deal> {
    let key: i64 = row.get("id")?;
    let bot_key: i64 = row.get("bot_id")?;
    Ok(Deal {
        id: format!("{DEAL_ID_PREFIX}{key}"),
        bot_id: format!("{BOT_ID_PREFIX}{bot_key}"),
        symbol: row.get("symbol")?,
        entry_price: row.get("entry_price")?,
        quantity: row.get("quantity")?,
        status: row.get("status")?,
        opened_at: row.get("opened_at")?,
        closed_at: row.get("closed_at")?,
        exit_price: row.get("exit_price")?,
        realized_pnl: row.get("realized_pnl")?,
    })
}

/// Joins names as `a, b or c` for error messages.
fn join_names<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.into_iter().collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_bot(symbols: &[&str]) -> NewBot {
        NewBot {
            name: "BTC Scalper".to_string(),
            strategy: "scalper_v1".to_string(),
            symbols: symbols.iter().map(|symbol| (*symbol).to_string()).collect(),
            capital_allocated: 1_000.0,
        }
    }

    #[test]
    fn id_number_accepts_only_prefixed_positive_numbers() {
        assert_eq!(id_number("bot_12", BOT_ID_PREFIX), Some(12));
        assert_eq!(id_number("bot_0", BOT_ID_PREFIX), None);
        assert_eq!(id_number("bot_", BOT_ID_PREFIX), None);
        assert_eq!(id_number("bot_+1", BOT_ID_PREFIX), None);
        assert_eq!(id_number("deal_1", BOT_ID_PREFIX), None);
        assert_eq!(id_number("bot_99999999999999999999", BOT_ID_PREFIX), None);
    }

    #[test]
    fn bot_walks_through_its_statuses() {
        let store = Store::open_in_memory().unwrap();
        let bot = store.create_bot(&new_bot(&["BTCUSDT"])).unwrap();
        assert_eq!(bot.id, "bot_1");
        assert_eq!(bot.status, BotStatus::Stopped);
        assert_eq!(bot.symbols, vec!["BTCUSDT".to_string()]);

        assert!(matches!(
            store.request_bot_stop(&bot.id),
            Err(BotError::Conflict { .. })
        ));
        let bot = store.request_bot_start(&bot.id).unwrap();
        assert_eq!(bot.status, BotStatus::AwaitingStart);
        let transitions = store.advance_bots().unwrap();
        assert_eq!(
            transitions,
            vec![BotTransition {
                bot_id: "bot_1".to_string(),
                from: BotStatus::AwaitingStart,
                to: BotStatus::Running,
            }]
        );
        assert!(matches!(
            store.delete_bot(&bot.id),
            Err(BotError::Conflict { .. })
        ));
        store.request_bot_stop(&bot.id).unwrap();
        store.advance_bots().unwrap();
        assert_eq!(store.get_bot(&bot.id).unwrap().status, BotStatus::Stopped);
        store.delete_bot(&bot.id).unwrap();
        assert!(matches!(
            store.get_bot(&bot.id),
            Err(BotError::NotFound { .. })
        ));
    }

    #[test]
    fn deal_is_averaged_and_closed() {
        let store = Store::open_in_memory().unwrap();
        let bot = store.create_bot(&new_bot(&["BTCUSDT"])).unwrap();
        let new = NewDeal {
            bot_id: bot.id.clone(),
            symbol: "BTCUSDT".to_string(),
            entry_price: 60_000.0,
            quantity: 0.02,
        };
        let deal = store.create_deal(&new).unwrap();
        assert_eq!(deal.id, "deal_1");
        let deal = store.average_deal(&deal.id, 0.02, 58_000.0).unwrap();
        assert_eq!(deal.quantity, 0.04);
        assert_eq!(deal.entry_price, 59_000.0);
        let deal = store.close_deal(&deal.id, 60_000.0).unwrap();
        assert_eq!(deal.status, DealStatus::Closed);
        assert!((deal.realized_pnl.unwrap() - 40.0).abs() < 1e-9);
        assert!(matches!(
            store.cancel_deal(&deal.id),
            Err(BotError::Conflict { .. })
        ));
        assert_eq!(store.list_active_deals(None, 50, 0).unwrap().total, 0);
    }

    #[test]
    fn deal_symbol_must_belong_to_bot() {
        let store = Store::open_in_memory().unwrap();
        let bot = store.create_bot(&new_bot(&["BTCUSDT"])).unwrap();
        let new = NewDeal {
            bot_id: bot.id,
            symbol: "ETHUSDT".to_string(),
            entry_price: 3_000.0,
            quantity: 1.0,
        };
        assert!(matches!(
            store.create_deal(&new),
            Err(BotError::Store(Error::InvalidValue { .. }))
        ));
    }
}
