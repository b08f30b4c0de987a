//! Exact decimal numbers for sums of trade sizes and notionals.
//!
//! A [`Decimal`] is a scaled integer (`mantissa / 10^scale`). Sums are computed exactly at a
//! common scale and rounded to `f64` once, through the decimal text of the exact sum, so a
//! derived bar's volume equals the exchange's decimal value parsed as `f64`.

use std::fmt;

/// Maximum number of fraction digits, so that rescaling stays far from `i128` overflow.
pub const MAX_SCALE: u32 = 18;

/// An exact decimal number, `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

impl Decimal {
    /// Parses plain decimal text such as `11668`, `0.00036053`, `-1.5` or `+2`, optionally
    /// with an exponent such as `5e-05`.
    ///
    /// # Errors
    ///
    /// Returns a message naming the text when it is not a decimal number, has more than
    /// [`MAX_SCALE`] fraction digits after applying the exponent, or overflows `i128`.
    pub fn parse(text: &str) -> Result<Decimal, String> {
        let invalid = || format!("{text:?} is not a decimal number");
        let trimmed = text.trim();
        let (negative, unsigned) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, &trimmed[1..]),
            Some(b'+') => (false, &trimmed[1..]),
            _ => (false, trimmed),
        };
        let (digits_part, exponent) = match unsigned.find(['e', 'E']) {
            Some(position) => {
                let exponent = unsigned[position + 1..]
                    .parse::<i32>()
                    .map_err(|_| invalid())?;
                (&unsigned[..position], exponent)
            }
            None => (unsigned, 0),
        };
        let (integer, fraction) = digits_part.split_once('.').unwrap_or((digits_part, ""));
        let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if integer.is_empty() && fraction.is_empty()
            || !all_digits(integer)
            || !all_digits(fraction)
        {
            return Err(invalid());
        }

        let overflow = || format!("{text:?} is out of range for an exact decimal");
        let mut mantissa: i128 = 0;
        for byte in integer.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|value| value.checked_add(i128::from(byte - b'0')))
                .ok_or_else(overflow)?;
        }
        let fraction_digits = i64::try_from(fraction.len()).map_err(|_| overflow())?;
        let mut scale = fraction_digits - i64::from(exponent);
        if scale < 0 {
            let factor = u32::try_from(-scale)
                .ok()
                .and_then(|power| 10_i128.checked_pow(power))
                .ok_or_else(overflow)?;
            mantissa = mantissa.checked_mul(factor).ok_or_else(overflow)?;
            scale = 0;
        }
        let scale = u32::try_from(scale)
            .ok()
            .filter(|scale| *scale <= MAX_SCALE)
            .ok_or_else(|| format!("{text:?} has more than {MAX_SCALE} fraction digits"))?;
        if negative {
            mantissa = -mantissa;
        }
        Ok(Decimal { mantissa, scale })
    }

    /// Returns the exact sum, at the larger of the two scales, or `None` on `i128` overflow.
    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        let left = self.rescaled(scale)?;
        let right = other.rescaled(scale)?;
        Some(Decimal {
            mantissa: left.checked_add(right)?,
            scale,
        })
    }

    /// Returns the `f64` nearest to the exact value, rounded once (Rust's float parsing is
    /// correctly rounded).
    pub fn to_f64(self) -> f64 {
        self.to_string()
            .parse::<f64>()
            .expect("the decimal text of a Decimal is a valid f64 literal")
    }

    fn rescaled(self, scale: u32) -> Option<i128> {
        let factor = 10_i128.checked_pow(scale - self.scale)?;
        self.mantissa.checked_mul(factor)
    }
}

impl fmt::Display for Decimal {
    /// Writes the exact value as plain decimal text, such as `413.43797303` or `-0.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (integer, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{integer}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    #[test]
    fn parse_and_display_round_trip() {
        let cases = [
            ("11668", "11668"),
            ("0.00036053", "0.00036053"),
            ("1.40248813", "1.40248813"),
            ("-1.5", "-1.5"),
            ("+2", "2"),
            (".5", "0.5"),
            ("5.", "5"),
            ("5e-05", "0.00005"),
            ("1.25E2", "125"),
            ("0", "0"),
        ];
        for (text, expected) in cases {
            assert_eq!(decimal(text).to_string(), expected, "{text}");
        }
    }

    #[test]
    fn parse_rejects_other_text() {
        for text in [
            "", ".", "-", "1,5", "1.2.3", "abc", "1e", "NaN", "inf", "0x10",
        ] {
            assert!(Decimal::parse(text).is_err(), "{text}");
        }
        let long_fraction = format!("0.{}", "1".repeat(19));
        assert!(Decimal::parse(&long_fraction).is_err());
    }

    #[test]
    fn sum_is_exact() {
        // 0.1 + 0.2 is 0.30000000000000004 in f64 but exactly 0.3 here.
        let sum = decimal("0.1").checked_add(decimal("0.2")).unwrap();
        assert_eq!(sum.to_string(), "0.3");
        assert_eq!(sum.to_f64(), 0.3);
        let mixed = decimal("12").checked_add(decimal("0.00036053")).unwrap();
        assert_eq!(mixed.to_string(), "12.00036053");
    }

    #[test]
    fn sum_overflow_is_none() {
        let large = Decimal {
            mantissa: i128::MAX,
            scale: 0,
        };
        assert_eq!(large.checked_add(decimal("1")), None);
        assert_eq!(large.checked_add(decimal("0.1")), None);
    }
}
