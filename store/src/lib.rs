//! # Layout
//!
//! The data model of Flywheel and every SQL statement in the workspace: nothing outside this crate
//! talks SQL. Each query is written once, with `$N` placeholders that both Postgres and SQLite accept,
//! and runs on either backend through [`Store`].
//!
//! - `connect`: [`Store`] (a pool for one of the two backends), [`Store::connect`] from a URL,
//!   migrations, health ping.
//! - `groups`: insert and read groups and their responses, list groups newest first.
//! - `adapters`: the adapter versions (version 0 is the base model) and which one is active.
//! - `types`: the group and response values callers build and read back.
//! - `text_enum`: the small string-backed enums (`kind`, `endpoint`, `status` columns).
//! - `timestamp`: how a point in time is stored, so SQLite text timestamps sort as time.
//! - `error`: [`Error`], the causes a caller can match on.

mod adapters;
mod connect;
mod error;
mod groups;
mod text_enum;
mod timestamp;
mod types;

pub use adapters::{Adapter, AdapterStatus};
pub use connect::{Backend, Store, DEFAULT_SQLITE_URL};
pub use error::{Error, Result};
pub use types::{
    Endpoint, Group, GroupFilter, GroupKind, GroupWithResponses, NewGroup, NewResponse, Response,
    MAX_LIST_LIMIT,
};
