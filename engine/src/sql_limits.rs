//! A bound on how deeply nested SQL text may be, checked before DataFusion parses it.
//!
//! DataFusion plans, optimizes, evaluates and drops expression trees recursively, so one long
//! chain such as `1+1+...+1` nests as deep as it is long. Some 500 terms overflowed the 2 MiB
//! stack of a tokio worker thread and aborted the whole server. Counting operators on the
//! token stream, which the tokenizer builds without recursion, rejects such text first.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Maximum operators plus opening parentheses in one SQL text. A chain of 200 `+` planned
/// and ran on a 2 MiB stack, and `bst serve` gives its threads 8 MiB.
pub const MAX_SQL_OPERATORS: usize = 256;

/// Checks that `sql` has at most [`MAX_SQL_OPERATORS`] operators and opening parentheses.
///
/// # Errors
///
/// A message with the count and the limit, or the tokenizer's message for text that does
/// not tokenize.
pub fn check_operator_count(sql: &str) -> Result<(), String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|error| error.to_string())?;
    let count = tokens.iter().filter(|token| nests(token)).count();
    if count > MAX_SQL_OPERATORS {
        return Err(format!(
            "it has {count} operators and parentheses, more than the {MAX_SQL_OPERATORS} \
             allowed; split it into simpler conditions or queries"
        ));
    }
    Ok(())
}

/// Returns whether `token` adds a level to the expression tree: an operator, a keyword
/// operator or an opening parenthesis.
fn nests(token: &Token) -> bool {
    match token {
        Token::Word(word) => matches!(
            word.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::CASE
                | Keyword::WHEN
                | Keyword::BETWEEN
                | Keyword::LIKE
                | Keyword::IS
                | Keyword::IN
        ),
        Token::LParen
        | Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::DuckIntDiv
        | Token::Mod
        | Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Spaceship
        | Token::StringConcat
        | Token::Caret
        | Token::Ampersand
        | Token::Pipe
        | Token::ShiftLeft
        | Token::ShiftRight
        | Token::Tilde
        | Token::ExclamationMark
        | Token::DoubleColon => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(terms: usize) -> String {
        vec!["1"; terms].join("+")
    }

    #[test]
    fn long_chain_is_rejected() {
        let error = check_operator_count(&chain(MAX_SQL_OPERATORS + 2)).unwrap_err();
        assert!(error.contains("257 operators"), "{error}");
    }

    #[test]
    fn chain_at_limit_passes() {
        assert_eq!(check_operator_count(&chain(MAX_SQL_OPERATORS + 1)), Ok(()));
    }

    #[test]
    fn parentheses_count() {
        let nested = format!("{}1{}", "(".repeat(300), ")".repeat(300));
        assert!(check_operator_count(&nested).is_err());
    }

    #[test]
    fn ordinary_query_passes() {
        let sql = "SELECT count(*), min(low), max(high) FROM klines \
                   WHERE symbol = 'BTCUSDT' AND timeframe = '1'";
        assert_eq!(check_operator_count(sql), Ok(()));
    }
}
