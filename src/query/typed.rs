//! Typed fields (PROTOCOL.md, `define`'s `types`): fields whose values compare by what they
//! mean rather than in Erlang term order — dates, times, datetimes and decimals as the Elixir
//! structs Ash stores, and case-insensitive strings.
//!
//! A value of a typed field has a [`Key`] when it has the type's shape; keys compare by
//! meaning (`1.0 == 1.00`, `"A" == "a"`, the same instant in two zones). Values without a key
//! (`nil`, other shapes) keep term order among themselves and sort before keyed ones.

use crate::term::{Atom, Value, cmp_term};
use num_bigint::BigInt;
use num_traits::{Signed, Zero};
use rustc_hash::FxHashMap;
use std::cmp::Ordering;

/// How a field's values compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// `Elixir.Date`.
    Date,
    /// `Elixir.Time`.
    Time,
    /// `Elixir.NaiveDateTime`.
    NaiveDateTime,
    /// `Elixir.DateTime` (compared as instants).
    DateTime,
    /// `Elixir.Decimal`.
    Decimal,
    /// A binary compared by its lowercase form.
    CiString,
}

impl FieldType {
    /// Parses `date`, `time`, `naive_datetime`, `datetime`, `decimal` or `ci_string`.
    pub fn parse(v: &Value) -> Result<FieldType, String> {
        Ok(match v.as_atom().map(|a| a.as_str()) {
            Some("date") => FieldType::Date,
            Some("time") => FieldType::Time,
            Some("naive_datetime") => FieldType::NaiveDateTime,
            Some("datetime") => FieldType::DateTime,
            Some("decimal") => FieldType::Decimal,
            Some("ci_string") => FieldType::CiString,
            _ => {
                return Err(format!(
                    "unknown field type {v:?} (expected date, time, naive_datetime, datetime, \
                     decimal or ci_string)"
                ));
            }
        })
    }

    /// The type's name in `define`.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Date => "date",
            FieldType::Time => "time",
            FieldType::NaiveDateTime => "naive_datetime",
            FieldType::DateTime => "datetime",
            FieldType::Decimal => "decimal",
            FieldType::CiString => "ci_string",
        }
    }

    /// The comparison key of `v`, if it has this type's shape.
    pub fn key(self, v: &Value) -> Option<Key> {
        match self {
            FieldType::Date => struct_of(v, *names::DATE).and_then(|m| days(m).map(Key::Int)),
            FieldType::Time => struct_of(v, *names::TIME).and_then(|m| micros(m).map(Key::Int)),
            FieldType::NaiveDateTime => {
                struct_of(v, *names::NAIVE).and_then(|m| naive(m).map(Key::Int))
            }
            FieldType::DateTime => struct_of(v, *names::DATETIME).and_then(|m| {
                let offset = int(m, *names::UTC_OFFSET)? + int(m, *names::STD_OFFSET)?;
                Some(Key::Int(naive(m)? - i128::from(offset) * 1_000_000))
            }),
            FieldType::Decimal => struct_of(v, *names::DECIMAL).and_then(decimal),
            FieldType::CiString => {
                let bytes = v.as_bytes()?;
                Some(match std::str::from_utf8(bytes) {
                    Ok(s) => Key::Str(s.to_lowercase().into_bytes()),
                    Err(_) => Key::Str(bytes.to_vec()),
                })
            }
        }
    }
}

/// A typed value's comparison key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// Days, microseconds of the day, or microseconds since 0000-01-01 (UTC for datetimes).
    Int(i128),
    /// A decimal.
    Decimal(DecimalKey),
    /// A lowercase string.
    Str(Vec<u8>),
}

/// A decimal, normalised so that equal numbers have equal keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DecimalKey {
    /// `-inf`.
    NegInf,
    /// A finite number: `coef × 10^exp`, `coef` with no trailing zeros (zero is `0 × 10^0`).
    Finite {
        /// Signed coefficient.
        coef: BigInt,
        /// Exponent.
        exp: i64,
    },
    /// `inf`.
    PosInf,
    /// `NaN`, after everything.
    NaN,
}

impl DecimalKey {
    fn rank(&self) -> u8 {
        match self {
            DecimalKey::NegInf => 0,
            DecimalKey::Finite { .. } => 1,
            DecimalKey::PosInf => 2,
            DecimalKey::NaN => 3,
        }
    }
}

impl PartialOrd for DecimalKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DecimalKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (DecimalKey::Finite { coef: a, exp: ea }, DecimalKey::Finite { coef: b, exp: eb }) => {
                cmp_decimal(a, *ea, b, *eb)
            }
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Compares `a × 10^ea` with `b × 10^eb`.
fn cmp_decimal(a: &BigInt, ea: i64, b: &BigInt, eb: i64) -> Ordering {
    let sign = |x: &BigInt| {
        if x.is_zero() {
            0
        } else if x.is_negative() {
            -1
        } else {
            1
        }
    };
    let (sa, sb) = (sign(a), sign(b));
    if sa != sb || sa == 0 {
        return sa.cmp(&sb);
    }
    // Same sign, both non-zero: compare magnitudes by their adjusted exponent (the position of
    // the leading digit) first, so no huge power of ten is ever built.
    let digits = |x: &BigInt| x.abs().to_string().len() as i64;
    let (aa, ab) = (digits(a) + ea, digits(b) + eb);
    let magnitude = if aa != ab {
        aa.cmp(&ab)
    } else {
        // Same leading position: scale the one with the larger exponent (by at most the digit
        // count difference) and compare.
        let scale = |x: &BigInt, by: i64| x.abs() * BigInt::from(10).pow(by as u32);
        match ea.cmp(&eb) {
            Ordering::Greater => scale(a, ea - eb).cmp(&b.abs()),
            Ordering::Less => a.abs().cmp(&scale(b, eb - ea)),
            Ordering::Equal => a.abs().cmp(&b.abs()),
        }
    };
    if sa < 0 {
        magnitude.reverse()
    } else {
        magnitude
    }
}

/// The typed fields of a resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Types(FxHashMap<Atom, FieldType>);

impl Types {
    /// Parses `#{Field => Type}`.
    pub fn parse(v: &Value) -> Result<Types, String> {
        let entries = v
            .as_map()
            .ok_or_else(|| format!("types must be a map of Field => Type, got {v:?}"))?;
        let mut types = FxHashMap::default();
        for (k, t) in entries {
            let field = k
                .as_atom()
                .ok_or_else(|| format!("a typed field must be an atom, got {k:?}"))?;
            types.insert(field, FieldType::parse(t)?);
        }
        Ok(Types(types))
    }

    /// The type of `field`, if it is typed.
    pub fn get(&self, field: Atom) -> Option<FieldType> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(&field).copied()
    }

    /// The typed fields and their types.
    pub fn iter(&self) -> impl Iterator<Item = (Atom, FieldType)> + '_ {
        self.0.iter().map(|(f, t)| (*f, *t))
    }

    /// Whether no field is typed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Compares a value of type `ty` with one whose key (`b_key`) is already known.
pub fn cmp_with_key(ty: FieldType, a: &Value, b: &Value, b_key: Option<&Key>) -> Ordering {
    match (ty.key(a), b_key) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => cmp_term(a, b),
    }
}

/// Compares two values of a field of type `ty` (term order when untyped).
pub fn cmp(ty: Option<FieldType>, a: &Value, b: &Value) -> Ordering {
    let Some(ty) = ty else {
        return cmp_term(a, b);
    };
    match (ty.key(a), ty.key(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => cmp_term(a, b),
    }
}

/// The atoms the struct fields are read by, interned once: finding a field compares pointers.
mod names {
    use crate::term::Atom;
    use std::sync::LazyLock;

    macro_rules! names {
        ($($name:ident = $text:literal),* $(,)?) => {
            $(pub static $name: LazyLock<Atom> = LazyLock::new(|| Atom::from_static($text));)*
        };
    }

    names! {
        STRUCT = "__struct__", DATE = "Elixir.Date", TIME = "Elixir.Time",
        NAIVE = "Elixir.NaiveDateTime", DATETIME = "Elixir.DateTime", DECIMAL = "Elixir.Decimal",
        YEAR = "year", MONTH = "month", DAY = "day", HOUR = "hour", MINUTE = "minute",
        SECOND = "second", MICROSECOND = "microsecond", UTC_OFFSET = "utc_offset",
        STD_OFFSET = "std_offset", SIGN = "sign", COEF = "coef", EXP = "exp",
    }
}

fn struct_of(v: &Value, name: Atom) -> Option<&[(Value, Value)]> {
    let entries = v.as_map()?;
    let tag = field(entries, *names::STRUCT)?;
    matches!(tag, Value::Atom(a) if *a == name).then_some(entries)
}

fn field(m: &[(Value, Value)], name: Atom) -> Option<&Value> {
    m.iter()
        .find(|(k, _)| matches!(k, Value::Atom(a) if *a == name))
        .map(|(_, v)| v)
}

fn int(m: &[(Value, Value)], name: Atom) -> Option<i64> {
    field(m, name)?.as_int()
}

/// Days since 0000-03-01 of the proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days(m: &[(Value, Value)]) -> Option<i128> {
    let (y, mo, d) = (
        int(m, *names::YEAR)?,
        int(m, *names::MONTH)?,
        int(m, *names::DAY)?,
    );
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(i128::from(era) * 146_097 + i128::from(doe))
}

/// Microseconds since midnight.
fn micros(m: &[(Value, Value)]) -> Option<i128> {
    let us = match field(m, *names::MICROSECOND)? {
        Value::Tuple(items) if items.len() == 2 => items[0].as_int()?,
        other => other.as_int()?,
    };
    let seconds =
        (int(m, *names::HOUR)? * 60 + int(m, *names::MINUTE)?) * 60 + int(m, *names::SECOND)?;
    Some(i128::from(seconds) * 1_000_000 + i128::from(us))
}

fn naive(m: &[(Value, Value)]) -> Option<i128> {
    Some(days(m)? * 86_400_000_000 + micros(m)?)
}

fn decimal(m: &[(Value, Value)]) -> Option<Key> {
    let sign = int(m, *names::SIGN)?;
    let coef = field(m, *names::COEF)?;
    let key = match coef {
        Value::Atom(a) if a.as_str() == "inf" => {
            if sign < 0 {
                DecimalKey::NegInf
            } else {
                DecimalKey::PosInf
            }
        }
        Value::Atom(a) if a.as_str() == "NaN" => DecimalKey::NaN,
        _ => {
            let mut coef = match coef {
                Value::Int(i) => BigInt::from(*i),
                Value::BigInt(b) => (**b).clone(),
                _ => return None,
            };
            let mut exp = int(m, *names::EXP)?;
            if coef.is_zero() {
                exp = 0;
            } else {
                let ten = BigInt::from(10);
                while (&coef % &ten).is_zero() {
                    coef /= &ten;
                    exp += 1;
                }
                if sign < 0 {
                    coef = -coef;
                }
            }
            DecimalKey::Finite { coef, exp }
        }
    };
    Some(Key::Decimal(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    fn t(s: &str) -> Value {
        parse_term(s).unwrap()
    }

    fn date(y: i64, m: i64, d: i64) -> Value {
        t(&format!(
            "#{{'__struct__' => 'Elixir.Date', calendar => 'Elixir.Calendar.ISO', year => {y}, month => {m}, day => {d}}}"
        ))
    }

    fn dec(sign: i64, coef: &str, exp: i64) -> Value {
        t(&format!(
            "#{{'__struct__' => 'Elixir.Decimal', sign => {sign}, coef => {coef}, exp => {exp}}}"
        ))
    }

    fn datetime(h: i64, offset: i64) -> Value {
        t(&format!(
            "#{{'__struct__' => 'Elixir.DateTime', calendar => 'Elixir.Calendar.ISO', year => 2024, month => 1, day => 1, \
             hour => {h}, minute => 0, second => 0, microsecond => {{0, 6}}, time_zone => <<\"X\">>, \
             zone_abbr => <<\"X\">>, utc_offset => {offset}, std_offset => 0}}"
        ))
    }

    #[test]
    fn dates_compare_by_day_not_by_map_order() {
        let ty = Some(FieldType::Date);
        // In term order the maps compare by day first (d < m < y as keys): 2024-01-31 > 2025-01-01.
        assert_eq!(
            cmp(None, &date(2024, 1, 31), &date(2025, 1, 1)),
            Ordering::Greater
        );
        assert_eq!(
            cmp(ty, &date(2024, 1, 31), &date(2025, 1, 1)),
            Ordering::Less
        );
        assert_eq!(
            cmp(ty, &date(2024, 2, 29), &date(2024, 3, 1)),
            Ordering::Less
        );
        assert_eq!(cmp(ty, &date(-1, 12, 31), &date(0, 1, 1)), Ordering::Less);
        assert_eq!(cmp(ty, &Value::nil(), &date(0, 1, 1)), Ordering::Less);
    }

    #[test]
    fn datetimes_compare_as_instants() {
        let ty = Some(FieldType::DateTime);
        // 10:00 at +02:00 is 08:00 UTC, before 09:00 UTC.
        assert_eq!(
            cmp(ty, &datetime(10, 7200), &datetime(9, 0)),
            Ordering::Less
        );
        assert_eq!(
            cmp(ty, &datetime(10, 3600), &datetime(9, 0)),
            Ordering::Equal
        );
    }

    fn time(h: i64, m: i64, s: i64, us: i64, precision: i64) -> Value {
        t(&format!(
            "#{{'__struct__' => 'Elixir.Time', calendar => 'Elixir.Calendar.ISO', hour => {h}, \
             minute => {m}, second => {s}, microsecond => {{{us}, {precision}}}}}"
        ))
    }

    fn naive(y: i64, mo: i64, d: i64, h: i64, mi: i64) -> Value {
        t(&format!(
            "#{{'__struct__' => 'Elixir.NaiveDateTime', calendar => 'Elixir.Calendar.ISO', \
             year => {y}, month => {mo}, day => {d}, hour => {h}, minute => {mi}, second => 0, \
             microsecond => {{0, 0}}}}"
        ))
    }

    #[test]
    fn times_compare_by_time_of_day() {
        let ty = Some(FieldType::Time);
        // In term order the maps compare key by key (calendar, hour, microsecond, minute,
        // second): 10:00:59.5 has the larger microsecond tuple, so it sorts after 10:01:00.
        assert_eq!(
            cmp(None, &time(10, 0, 59, 500_000, 6), &time(10, 1, 0, 0, 0)),
            Ordering::Greater
        );
        assert_eq!(
            cmp(ty, &time(10, 0, 59, 500_000, 6), &time(10, 1, 0, 0, 0)),
            Ordering::Less
        );
        assert_eq!(
            cmp(ty, &time(10, 0, 0, 0, 0), &time(9, 59, 59, 999_999, 6)),
            Ordering::Greater
        );
        // The precision is not part of the value.
        assert_eq!(
            cmp(ty, &time(10, 0, 0, 0, 0), &time(10, 0, 0, 0, 6)),
            Ordering::Equal
        );
        assert_eq!(
            cmp(ty, &time(10, 0, 0, 1, 6), &time(10, 0, 0, 0, 6)),
            Ordering::Greater
        );
        assert_eq!(cmp(ty, &Value::nil(), &time(0, 0, 0, 0, 0)), Ordering::Less);
    }

    #[test]
    fn naive_datetimes_compare_by_date_then_time() {
        let ty = Some(FieldType::NaiveDateTime);
        // Term order compares the day before the year: 2024-12-31 23:59 > 2025-01-01 00:00.
        assert_eq!(
            cmp(None, &naive(2024, 12, 31, 23, 59), &naive(2025, 1, 1, 0, 0)),
            Ordering::Greater
        );
        assert_eq!(
            cmp(ty, &naive(2024, 12, 31, 23, 59), &naive(2025, 1, 1, 0, 0)),
            Ordering::Less
        );
        assert_eq!(
            cmp(ty, &naive(2024, 2, 29, 12, 0), &naive(2024, 2, 29, 11, 59)),
            Ordering::Greater
        );
        assert_eq!(
            cmp(ty, &naive(2024, 2, 29, 12, 0), &naive(2024, 2, 29, 12, 0)),
            Ordering::Equal
        );
    }

    #[test]
    fn decimals_compare_by_value() {
        let ty = Some(FieldType::Decimal);
        assert_eq!(
            cmp(ty, &dec(1, "10", -1), &dec(1, "100", -2)),
            Ordering::Equal
        );
        assert_eq!(
            cmp(ty, &dec(1, "2", 0), &dec(1, "19", -1)),
            Ordering::Greater
        );
        assert_eq!(
            cmp(ty, &dec(-1, "2", 0), &dec(-1, "19", -1)),
            Ordering::Less
        );
        assert_eq!(cmp(ty, &dec(-1, "1", 0), &dec(1, "0", 5)), Ordering::Less);
        assert_eq!(cmp(ty, &dec(1, "0", 3), &dec(-1, "0", -2)), Ordering::Equal);
        assert_eq!(
            cmp(ty, &dec(1, "inf", 0), &dec(1, "1", 1000)),
            Ordering::Greater
        );
        assert_eq!(
            cmp(ty, &dec(1, "1", 1000000), &dec(1, "9", 999999)),
            Ordering::Greater
        );
        assert_eq!(
            FieldType::Decimal.key(&dec(1, "1500", -3)),
            FieldType::Decimal.key(&dec(1, "15", -1))
        );
    }

    #[test]
    fn ci_strings_ignore_case() {
        let ty = Some(FieldType::CiString);
        assert_eq!(
            cmp(ty, &t("<<\"Ann\">>"), &t("<<\"aNN\">>")),
            Ordering::Equal
        );
        assert_eq!(cmp(ty, &t("<<\"b\">>"), &t("<<\"A\">>")), Ordering::Greater);
        assert_eq!(
            cmp(None, &t("<<\"b\">>"), &t("<<\"A\">>")),
            Ordering::Greater
        );
        assert_eq!(
            cmp(None, &t("<<\"a\">>"), &t("<<\"B\">>")),
            Ordering::Greater
        );
        assert_eq!(cmp(ty, &t("<<\"a\">>"), &t("<<\"B\">>")), Ordering::Less);
    }

    #[test]
    fn types_parse() {
        let types = Types::parse(&t("#{at => datetime, price => decimal}")).unwrap();
        assert_eq!(
            types.get(Atom::new("at").unwrap()),
            Some(FieldType::DateTime)
        );
        assert_eq!(types.get(Atom::new("other").unwrap()), None);
        assert!(Types::parse(&t("#{at => weird}")).is_err());
    }
}
