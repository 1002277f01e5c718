//! The API test suite: one binary (so mistral.rs is linked once), one module per resource.

mod adapters;
mod annotation;
mod annotators;
mod arena;
mod auth;
mod chat;
mod completions;
mod contract;
mod errors;
mod eval_prompts;
mod exports;
mod groups;
mod grpo;
mod helpers;
mod hot_swap;
mod imports;
mod judges;
mod judgments;
mod ops;
mod quantize;
mod replicas;
mod smollm2;
mod streaming;
mod training;
mod variants;
mod worker;
