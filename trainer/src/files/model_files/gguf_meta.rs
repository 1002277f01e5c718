//! Typed reads of GGUF metadata values, lenient about integer and float widths.
//!
//! Writers disagree on widths (llama.cpp writes `u32` counts, other tools `u64` or `i32`), so any
//! integer type is accepted where a count is expected, and either float width where a float is.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use super::{ModelFileError, Result};

pub(crate) type Metadata = HashMap<String, Value>;

fn integer(key: &str, value: &Value) -> Result<i128> {
    Ok(match value {
        Value::U8(v) => (*v).into(),
        Value::I8(v) => (*v).into(),
        Value::U16(v) => (*v).into(),
        Value::I16(v) => (*v).into(),
        Value::U32(v) => (*v).into(),
        Value::I32(v) => (*v).into(),
        Value::U64(v) => (*v).into(),
        Value::I64(v) => (*v).into(),
        other => {
            return Err(ModelFileError::bad(
                key,
                format!("expected an integer, found {other:?}"),
            ))
        }
    })
}

pub(crate) fn opt_usize(md: &Metadata, key: &str) -> Result<Option<usize>> {
    md.get(key)
        .map(|v| {
            let n = integer(key, v)?;
            usize::try_from(n).map_err(|_| ModelFileError::bad(key, format!("{n} is out of range")))
        })
        .transpose()
}

pub(crate) fn usize(md: &Metadata, key: &str) -> Result<usize> {
    opt_usize(md, key)?.ok_or_else(|| ModelFileError::MissingMetadata(key.to_owned()))
}

/// A token id: a non-negative integer that fits `u32`.
pub(crate) fn opt_u32(md: &Metadata, key: &str) -> Result<Option<u32>> {
    opt_usize(md, key)?
        .map(|n| {
            u32::try_from(n).map_err(|_| ModelFileError::bad(key, format!("{n} is out of range")))
        })
        .transpose()
}

/// A float, rounded to the shortest decimal that reads back as the stored `f32` (`1e-5`, not
/// `9.999999747378752e-6`), so the JSON we write looks like the original `config.json`.
pub(crate) fn opt_f64(md: &Metadata, key: &str) -> Result<Option<f64>> {
    let Some(value) = md.get(key) else {
        return Ok(None);
    };
    Ok(Some(match value {
        Value::F32(v) => v.to_string().parse().expect("an f32 prints as a valid f64"),
        Value::F64(v) => *v,
        other => {
            return Err(ModelFileError::bad(
                key,
                format!("expected a float, found {other:?}"),
            ))
        }
    }))
}

pub(crate) fn opt_bool(md: &Metadata, key: &str) -> Result<Option<bool>> {
    md.get(key)
        .map(|v| match v {
            Value::Bool(b) => Ok(*b),
            other => Err(ModelFileError::bad(
                key,
                format!("expected a bool, found {other:?}"),
            )),
        })
        .transpose()
}

pub(crate) fn opt_string<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a str>> {
    md.get(key)
        .map(|v| match v {
            Value::String(s) => Ok(s.as_str()),
            other => Err(ModelFileError::bad(
                key,
                format!("expected a string, found {other:?}"),
            )),
        })
        .transpose()
}

pub(crate) fn string<'a>(md: &'a Metadata, key: &str) -> Result<&'a str> {
    opt_string(md, key)?.ok_or_else(|| ModelFileError::MissingMetadata(key.to_owned()))
}

fn array<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a [Value]>> {
    md.get(key)
        .map(|v| match v {
            Value::Array(items) => Ok(items.as_slice()),
            other => Err(ModelFileError::bad(
                key,
                format!("expected an array, found {other:?}"),
            )),
        })
        .transpose()
}

pub(crate) fn opt_string_array(md: &Metadata, key: &str) -> Result<Option<Vec<String>>> {
    let Some(items) = array(md, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(ModelFileError::bad(
                key,
                format!("item {i} is {other:?}, not a string"),
            )),
        })
        .collect::<Result<_>>()
        .map(Some)
}

pub(crate) fn string_array(md: &Metadata, key: &str) -> Result<Vec<String>> {
    opt_string_array(md, key)?.ok_or_else(|| ModelFileError::MissingMetadata(key.to_owned()))
}

pub(crate) fn opt_int_array(md: &Metadata, key: &str) -> Result<Option<Vec<i64>>> {
    let Some(items) = array(md, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| {
            let n = integer(key, v)?;
            i64::try_from(n).map_err(|_| ModelFileError::bad(key, format!("{n} is out of range")))
        })
        .collect::<Result<_>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_any_integer_width_are_read_and_floats_are_shortened() {
        let md: Metadata = [
            ("a".to_owned(), Value::U64(30)),
            ("b".to_owned(), Value::I32(9)),
            ("eps".to_owned(), Value::F32(1e-5)),
            ("neg".to_owned(), Value::I32(-1)),
        ]
        .into();
        assert_eq!(usize(&md, "a").unwrap(), 30);
        assert_eq!(usize(&md, "b").unwrap(), 9);
        assert_eq!(opt_f64(&md, "eps").unwrap(), Some(1e-5));
        assert!(matches!(
            usize(&md, "neg"),
            Err(ModelFileError::BadMetadata { .. })
        ));
        assert!(matches!(
            usize(&md, "c"),
            Err(ModelFileError::MissingMetadata(_))
        ));
        assert!(matches!(
            string(&md, "a"),
            Err(ModelFileError::BadMetadata { .. })
        ));
    }
}
