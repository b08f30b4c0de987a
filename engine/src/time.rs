//! Parsing of ISO 8601 datetimes given by users; a value without an offset is UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Accepted forms, for error messages.
pub const DATETIME_FORMS: &str = "ISO 8601 such as 2025-06-01T00:00:00Z, 2025-06-01T02:00:00+02:00, 2025-06-01T00:00:00 \
     (read as UTC) or 2025-06-01";

/// Formats of a datetime without offset, read as UTC.
const NAIVE_FORMATS: [&str; 3] = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
];

/// Reason why a datetime text did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DateTimeError {
    /// A space in place of a positive UTC offset's `+`, as when a URL query string carried an
    /// unencoded `+`, which form decoding turns into a space.
    #[error(
        "a space is in place of the + of a UTC offset; in a URL query string a + \
         decodes as a space, so encode it as %2B (2025-06-01T02:00:00%2B02:00) or use Z"
    )]
    SpaceForPlus,
    /// The text is no accepted form.
    #[error("expected {DATETIME_FORMS}")]
    Invalid,
}

/// Parses an RFC 3339 datetime with `Z` or an offset, a datetime without offset (read as
/// UTC, with `T` or a space), or a date (midnight UTC).
pub fn parse_utc(text: &str) -> Option<DateTime<Utc>> {
    parse_utc_checked(text).ok()
}

/// Parses a datetime like [`parse_utc`], and returns why a text does not parse.
///
/// # Errors
///
/// [`DateTimeError::SpaceForPlus`] when a datetime is followed by a space and an offset
/// such as `02:00` (so the value is not read as UTC), and [`DateTimeError::Invalid`] for
/// any other text that is not an accepted form.
pub fn parse_utc_checked(text: &str) -> Result<DateTime<Utc>, DateTimeError> {
    let text = text.trim();
    if let Ok(datetime) = DateTime::parse_from_rfc3339(text) {
        return Ok(datetime.with_timezone(&Utc));
    }
    if let Some(naive) = parse_naive(text) {
        return Ok(naive.and_utc());
    }
    if let Some(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
    {
        return Ok(date.and_utc());
    }
    if lost_plus_sign(text) {
        return Err(DateTimeError::SpaceForPlus);
    }
    Err(DateTimeError::Invalid)
}

fn parse_naive(text: &str) -> Option<NaiveDateTime> {
    NAIVE_FORMATS
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
}

/// Returns true for a datetime, a space and an offset of the form `HH:MM`, `HHMM` or `HH`,
/// which is what `+HH:MM` becomes after form decoding.
fn lost_plus_sign(text: &str) -> bool {
    let Some((datetime, offset)) = text.rsplit_once(' ') else {
        return false;
    };
    let digits: String = offset.chars().filter(|c| *c != ':').collect();
    let offset_shaped = matches!(offset.len(), 2 | 4 | 5)
        && digits.len() >= 2
        && digits.chars().all(|c| c.is_ascii_digit())
        && (offset.len() != 5 || offset.as_bytes()[2] == b':');
    offset_shaped && parse_naive(datetime.trim_end()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_to_the_same_instant() {
        let expected = DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for text in [
            "2025-06-01T00:00:00Z",
            "2025-06-01T02:00:00+02:00",
            "2025-05-31T20:00:00-04:00",
            "2025-06-01T00:00:00",
            "2025-06-01 00:00:00",
            "2025-06-01T00:00",
            "2025-06-01",
        ] {
            assert_eq!(parse_utc(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        for text in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-06-01T25:00:00Z",
            "1717200000",
        ] {
            assert_eq!(
                parse_utc_checked(text),
                Err(DateTimeError::Invalid),
                "{text}"
            );
        }
    }

    #[test]
    fn space_for_plus_is_reported() {
        for text in [
            "2025-05-01T00:00:00 02:00",
            "2025-05-01T00:00:00.250 0200",
            "2025-05-01 00:00:00 02:00",
            "2025-05-01T00:00:00 02",
        ] {
            assert_eq!(
                parse_utc_checked(text),
                Err(DateTimeError::SpaceForPlus),
                "{text}"
            );
        }
        assert!(
            DateTimeError::SpaceForPlus.to_string().contains("%2B"),
            "the message names the encoding"
        );
    }
}
