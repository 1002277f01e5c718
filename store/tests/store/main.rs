//! Store tests: one binary, each test body run once on SQLite and once on Postgres.

mod adapters;
mod connect;
mod groups;
mod helpers;
mod list;
