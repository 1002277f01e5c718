//! [`Store`]: a connection pool for Postgres or SQLite, opened from a URL, with its migrations.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::{Error, Result};

/// Where `flywheel` keeps its data when no database URL is given: a file beside the working directory.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://flywheel-data/flywheel.db";

/// How long a SQLite writer waits for another writer's lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many connections a [`Store`] keeps to its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The most connections open at once; callers beyond it wait for one to come back. Postgres
    /// write throughput grows with it up to about the number of concurrent writers (32 concurrent
    /// judgment posts: about 2,000/s with 10 connections, 3,300/s with 32, on 2 cores).
    pub max_connections: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 10,
        }
    }
}

/// The database behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        })
    }
}

/// The handle every other part of Flywheel uses to read and write its data.
///
/// Cloning is cheap: clones share one pool.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
}

#[derive(Clone)]
pub(crate) enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the store's concrete pool. The body is compiled once per
/// backend, so one query text and one bind list serve both.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::connect::Pool::Postgres($pool) => $body,
            $crate::connect::Pool::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

impl Store {
    /// Opens a pool for `url`: `postgres://…`/`postgresql://…`, or `sqlite://path`/`sqlite::memory:`.
    ///
    /// A SQLite file and its parent directories are created if missing; SQLite runs in WAL mode with
    /// foreign keys on and a 5 s busy timeout. Migrations are not run; call [`Store::migrate`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a URL of another scheme or a malformed one; [`Error::Db`] when the
    /// database cannot be reached or a directory cannot be created.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, &PoolConfig::default()).await
    }

    /// [`Store::connect`] with the pool sized by `config`.
    pub async fn connect_with(url: &str, config: &PoolConfig) -> Result<Store> {
        if config.max_connections == 0 {
            return Err(Error::Invalid(
                "`max_connections` must be at least 1. Given: 0".into(),
            ));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(invalid_url)?;
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .connect_with(options)
                .await?;
            Ok(Store {
                pool: Pool::Postgres(pool),
            })
        } else if url.starts_with("sqlite:") {
            connect_sqlite(url, config).await
        } else {
            let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
            Err(Error::Invalid(format!(
                "unsupported database URL scheme `{scheme}`: expected postgres://, postgresql:// \
                 or sqlite:// (for example {DEFAULT_SQLITE_URL})"
            )))
        }
    }

    /// Brings the schema up to date; applied migrations are skipped, so running it twice is harmless.
    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await?,
            Pool::Sqlite(pool) => migrate_sqlite(pool).await?,
        }
        Ok(())
    }

    /// Checks that the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop)?);
        Ok(())
    }

    /// The statement that opens a transaction which will write. SQLite takes the write lock up
    /// front (`BEGIN IMMEDIATE`): a deferred transaction that reads first cannot wait for the lock
    /// later and fails with "database is locked" when another writer got in between.
    pub(crate) fn begin_write_sql(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => "BEGIN",
            Backend::Sqlite => "BEGIN IMMEDIATE",
        }
    }

    pub fn backend(&self) -> Backend {
        match &self.pool {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Waits for checked-out connections to return, then closes them all (for a clean shutdown, or
    /// before dropping a database).
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// Creates another database on the same Postgres server (for tests and benchmarks that need a
    /// fresh one). `name` may hold only lowercase ASCII letters, digits and `_`.
    ///
    /// # Errors
    /// [`Error::Invalid`] on SQLite or for a bad name; [`Error::Db`] if Postgres refuses.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        match &self.pool {
            Pool::Postgres(pool) if valid => {
                sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                    .execute(pool)
                    .await?;
                Ok(())
            }
            Pool::Postgres(_) => Err(Error::Invalid(format!("invalid database name {name:?}"))),
            Pool::Sqlite(_) => Err(Error::Invalid("SQLite has no databases to create".into())),
        }
    }
}

async fn connect_sqlite(url: &str, config: &PoolConfig) -> Result<Store> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(invalid_url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut pool = SqlitePoolOptions::new().max_connections(config.max_connections);
    if in_memory {
        // An in-memory database lives only while a connection to it is open.
        pool = pool
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else if let Some(dir) = options.get_filename().parent() {
        if !dir.as_os_str().is_empty() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| Error::Db(sqlx::Error::Io(e)))?;
        }
    }
    let pool = pool.connect_with(options).await?;
    Ok(Store {
        pool: Pool::Sqlite(pool),
    })
}

/// Runs the SQLite migrations on one connection with foreign keys off, then turns them back on.
///
/// A migration that rebuilds a table (0006: SQLite cannot change a CHECK in place) must drop the
/// old table, and with foreign keys on that drop deletes every row first: rows that reference
/// them are deleted by `ON DELETE CASCADE` or make it fail. The pragma is a no-op inside a
/// transaction, and sqlx 0.8 runs every SQLite migration in one (sqlx-sqlite ignores
/// `-- no-transaction`), so it is switched here, outside.
async fn migrate_sqlite(pool: &SqlitePool) -> Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    let migrated = sqlx::migrate!("../migrations/sqlite")
        .run_direct(&mut *conn)
        .await;
    let restored = sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await;
    if restored.is_err() {
        // Never hand the pool a connection that does not enforce foreign keys.
        conn.close_on_drop();
    }
    migrated?;
    restored?;
    Ok(())
}

fn invalid_url(e: sqlx::Error) -> Error {
    Error::Invalid(format!("malformed database URL: {e}"))
}
