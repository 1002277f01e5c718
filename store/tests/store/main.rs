//! Store tests: one binary, each test body run once on SQLite and once on Postgres.

mod adapters;
mod agreement;
mod api_keys;
mod arena;
mod connect;
mod eval_prompts;
mod groups;
mod helpers;
mod imports;
mod judgment_list;
mod judgments;
mod list;
mod queue;
mod rewards;
mod text;
mod train_runs;
mod variants;
