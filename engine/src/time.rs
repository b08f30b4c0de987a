//! Parsing of ISO 8601 datetimes given by users; a value without an offset is UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Accepted forms, for error messages.
pub const DATETIME_FORMS: &str = "ISO 8601 such as 2025-06-01T00:00:00Z, 2025-06-01T02:00:00+02:00, 2025-06-01T00:00:00 \
     (read as UTC) or 2025-06-01";

/// Parses an RFC 3339 datetime with `Z` or an offset, a datetime without offset (read as
/// UTC, with `T` or a space), or a date (midnight UTC).
pub fn parse_utc(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(datetime) = DateTime::parse_from_rfc3339(text) {
        return Some(datetime.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|naive| naive.and_utc())
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
            assert_eq!(parse_utc(text), None, "{text}");
        }
    }
}
