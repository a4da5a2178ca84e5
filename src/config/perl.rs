//! Values as Perl writes them into the running config: numbers as JSON
//! strings as often as not, booleans as 0/1, lists as one separated string.

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(untagged)]
enum PerlScalar {
    Num(serde_json::Number),
    Str(String),
    Bool(bool),
}

pub(crate) fn perl_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    match PerlScalar::deserialize(d)? {
        PerlScalar::Num(n) => n.as_u64().ok_or_else(|| D::Error::custom(format!("expected an unsigned integer, got {n}"))),
        PerlScalar::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| D::Error::custom(format!("expected an unsigned integer, got \"{s}\""))),
        PerlScalar::Bool(b) => Err(D::Error::custom(format!("expected an unsigned integer, got {b}"))),
    }
}

pub(crate) fn perl_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    use serde::de::Error;
    match PerlScalar::deserialize(d)? {
        PerlScalar::Bool(b) => Ok(b),
        PerlScalar::Num(n) => match n.as_u64() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(D::Error::custom(format!("expected 0 or 1, got {n}"))),
        },
        PerlScalar::Str(s) => match s.trim() {
            "0" | "" => Ok(false),
            "1" => Ok(true),
            _ => Err(D::Error::custom(format!("expected 0 or 1, got \"{s}\""))),
        },
    }
}

pub(crate) fn perl_opt_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "perl_bool")] bool);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

pub(crate) fn perl_opt_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "perl_u64")] u64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// A list as PVE writes it: one string, comma or space separated, or an array.
pub(crate) fn perl_string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    let items = match List::deserialize(d)? {
        List::One(s) => s.split([',', ' ', ';']).map(str::to_owned).collect(),
        List::Many(v) => v,
    };
    Ok(items.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
}

/// Perl's SectionConfig writes an unset optional value as an empty string or null.
pub(crate) fn perl_opt_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// An optional value Perl may write as a string or a number (`"80"`, `80`,
/// `"tcp"`), as its string; empty means absent.
pub(crate) fn perl_opt_scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    Ok(match Option::<PerlScalar>::deserialize(d)? {
        None => None,
        Some(PerlScalar::Str(s)) => Some(s).filter(|s| !s.trim().is_empty()),
        Some(PerlScalar::Num(n)) => Some(n.to_string()),
        Some(PerlScalar::Bool(b)) => return Err(D::Error::custom(format!("expected a string or a number, got {b}"))),
    })
}
