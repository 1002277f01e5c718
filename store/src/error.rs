//! The errors of the store: what a caller can match on, and the database cause behind the rest.

use std::fmt;

/// `Result` with the store's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a store call failed.
///
/// `NotFound`, `Conflict` and `Invalid` are the caller's doing (4xx at the API); `Db` and `Migrate`
/// are ours (5xx), and keep their cause for the logs.
#[derive(thiserror::Error)]
pub enum Error {
    /// No row with that key; the payload names the noun (`"group"`, `"response"`, `"adapter"`).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The row already exists (a duplicate id or a duplicate choice index).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The input can never be stored (a bad database URL, a non-finite log-prob).
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Shows the whole `source()` chain, so `?error` in a log line names the underlying cause.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            write!(f, "\n  caused by: {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// Maps a unique-key violation to [`Error::Conflict`] with `message`; any other error stays `Db`.
pub(crate) fn conflict_on_unique(e: sqlx::Error, message: impl FnOnce() -> String) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(message()),
        _ => Error::Db(e),
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_database_error_logs_its_cause_however_it_is_wrapped() {
        let cause =
            || sqlx::Error::Protocol("invalid byte sequence for encoding UTF8: 0x00".into());
        let direct = format!("{:?}", Error::Db(cause()));
        // The server logs store errors wrapped in anyhow (`error.cause_chain = ?cause`).
        let wrapped = format!("{:?}", anyhow::Error::from(Error::Db(cause())));
        for log in [direct, wrapped] {
            assert!(log.starts_with("database error"), "{log}");
            assert!(log.contains("0x00"), "{log}");
        }
    }
}
