//! Money: ISO 4217 currencies with their minor units, decimal amounts (never floats), half-even
//! rounding of computed values, and validation of input amounts (never rounded).

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ISO 4217 currency that has a minor unit (USD 2, JPY 0, KWD 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    minor_units: u32,
}

/// Why an amount or currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code '{0}' (expected an ISO 4217 code such as USD)")]
    UnknownCurrency(String),
    #[error("amount {amount} is negative")]
    Negative { amount: Decimal },
    #[error("amount {amount} has more decimals than {currency} allows ({minor_units})")]
    TooPrecise {
        amount: Decimal,
        currency: String,
        minor_units: u32,
    },
}

impl Currency {
    /// Looks up an upper-case ISO 4217 code.
    ///
    /// # Errors
    /// [`MoneyError::UnknownCurrency`] for anything that is not an ISO 4217 code with a minor
    /// unit (funds and metals such as XAU have none and are refused).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        let unknown = || MoneyError::UnknownCurrency(code.to_string());
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(unknown());
        }
        let iso = iso_currency::Currency::from_code(code).ok_or_else(unknown)?;
        let minor_units = iso.exponent().ok_or_else(unknown)?;
        let b = code.as_bytes();
        Ok(Currency {
            code: [b[0], b[1], b[2]],
            minor_units: u32::from(minor_units),
        })
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// Digits after the decimal point (2 for USD).
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }

    /// Rounds a computed value half-even to the minor unit and fixes its scale ("33" → "33.00").
    pub fn round(&self, amount: Decimal) -> Decimal {
        let mut r =
            amount.round_dp_with_strategy(self.minor_units, RoundingStrategy::MidpointNearestEven);
        r.rescale(self.minor_units);
        r
    }

    /// Zero with this currency's scale ("0.00").
    pub fn zero(&self) -> Decimal {
        self.round(Decimal::ZERO)
    }

    /// Validates an input amount: not negative and no more decimals than the currency allows
    /// (trailing zeros do not count). Input is never rounded; the result only gains the scale.
    ///
    /// # Errors
    /// [`MoneyError::Negative`] or [`MoneyError::TooPrecise`].
    pub fn check_amount(&self, amount: Decimal) -> Result<Decimal, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative { amount });
        }
        if amount.normalize().scale() > self.minor_units {
            return Err(MoneyError::TooPrecise {
                amount,
                currency: self.code().to_string(),
                minor_units: self.minor_units,
            });
        }
        let mut a = amount.abs();
        a.rescale(self.minor_units);
        Ok(a)
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn minor_units_follow_iso_4217() {
        assert_eq!(Currency::parse("USD").unwrap().minor_units(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().minor_units(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().minor_units(), 3);
        assert_eq!(Currency::parse("EUR").unwrap().minor_units(), 2);
    }

    #[test]
    fn unknown_or_unitless_currencies_are_refused() {
        for code in ["usd", "ZZZ", "US", "USDX", "XAU", ""] {
            assert!(Currency::parse(code).is_err(), "{code}");
        }
    }

    #[test]
    fn rounding_is_half_even_and_fixes_the_scale() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(usd.round(d("2.345")).to_string(), "2.34");
        assert_eq!(usd.round(d("2.355")).to_string(), "2.36");
        assert_eq!(usd.round(d("33")).to_string(), "33.00");
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(jpy.round(d("2.5")).to_string(), "2");
        assert_eq!(jpy.round(d("3.5")).to_string(), "4");
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(kwd.round(d("1.0005")).to_string(), "1.000");
    }

    #[test]
    fn input_amounts_are_checked_never_rounded() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(usd.check_amount(d("5")).unwrap().to_string(), "5.00");
        assert_eq!(usd.check_amount(d("5.100")).unwrap().to_string(), "5.10");
        assert!(matches!(
            usd.check_amount(d("5.001")),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            usd.check_amount(d("-1")),
            Err(MoneyError::Negative { .. })
        ));
        let jpy = Currency::parse("JPY").unwrap();
        assert!(jpy.check_amount(d("1.5")).is_err());
        assert_eq!(jpy.check_amount(d("1500")).unwrap().to_string(), "1500");
    }
}
