//! How a point in time is stored: `timestamptz` in Postgres, fixed-width RFC 3339 text in SQLite.
//!
//! SQLite has no time type, and sqlx's own chrono encoding drops trailing zero digits, so two of its
//! strings for the same second can compare in the wrong order. Every SQLite timestamp is written as
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, always six fraction digits), which makes string order time
//! order for `ORDER BY` and range filters. Both backends keep microseconds; finer digits are dropped.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

/// A UTC timestamp as a bind parameter or a column, on either backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp(pub DateTime<Utc>);

impl From<Timestamp> for DateTime<Utc> {
    fn from(t: Timestamp) -> Self {
        t.0
    }
}

impl Timestamp {
    fn to_sqlite_text(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Decode<'_, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<Postgres>>::decode(value).map(Timestamp)
    }
}

impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <str as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <str as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.to_sqlite_text(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Timestamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        let time = DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("stored timestamp `{text}` is not RFC 3339: {e}"))?;
        Ok(Timestamp(time.with_timezone(&Utc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sqlite_text_always_has_six_fraction_digits_so_it_sorts_as_time() {
        let whole = Timestamp(Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap());
        let later = Timestamp(whole.0 + chrono::Duration::microseconds(1));
        assert_eq!(whole.to_sqlite_text(), "2025-01-02T03:04:05.000000Z");
        assert_eq!(later.to_sqlite_text(), "2025-01-02T03:04:05.000001Z");
        assert!(whole.to_sqlite_text() < later.to_sqlite_text());
    }
}
