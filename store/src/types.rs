//! The group and response values: what a caller hands to [`Store::insert_group`](crate::Store) and
//! what it reads back, shared with the API as its JSON shapes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::text_enum::text_enum;

/// The most groups one [`list_groups`](crate::Store::list_groups) call returns.
pub const MAX_LIST_LIMIT: u32 = 500;

text_enum! {
    /// What the responses of a group are to each other.
    pub enum GroupKind {
        /// `n` responses sampled for one prompt.
        Samples => "samples",
        /// One canonical prompt and its paraphrased variants, each with its own prompt and response.
        Variants => "variants",
        /// A candidate adapter and the incumbent answering one held-out evaluation prompt with the
        /// same parameters and seed: the candidate's response first, then the incumbent's.
        Duel => "duel",
    }
}

text_enum! {
    /// The OpenAI endpoint that created a group.
    pub enum Endpoint {
        /// `/v1/chat/completions`.
        Chat => "chat",
        /// `/v1/completions`.
        Completion => "completion",
    }
}

/// A group to store, with all its responses, in one transaction.
///
/// Times are stored with microsecond precision; finer digits are dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGroup {
    /// A UUID v7, made by the caller, so that id order is creation order.
    pub id: Uuid,
    pub kind: GroupKind,
    pub endpoint: Endpoint,
    pub model: String,
    pub adapter_version: i64,
    /// The request's prompt: chat messages or completion text, as JSON.
    pub prompt: Value,
    /// The sampling parameters of the request, as JSON.
    pub params: Value,
    pub seed: Option<i64>,
    /// The OpenAI `user` field.
    pub user: Option<String>,
    pub prompt_tokens: i64,
    /// The token ids the model was fed (chat template applied), so training scores exactly what
    /// was served; `None` when unknown.
    pub prompt_token_ids: Option<Vec<u32>>,
    pub latency_ms: i64,
    pub created_at: DateTime<Utc>,
    pub responses: Vec<NewResponse>,
}

/// One response of a [`NewGroup`]; it takes its creation time from the group, and its adapter
/// version too unless it names its own (a duel's two sides do).
#[derive(Debug, Clone, PartialEq)]
pub struct NewResponse {
    pub id: Uuid,
    /// The choice index, unique within the group.
    pub index: i32,
    /// A variant's own prompt (kind `variants`); `None` for samples.
    pub prompt: Option<Value>,
    pub text: String,
    pub token_ids: Vec<u32>,
    /// The behaviour log-prob (natural log) of each token; must be finite.
    pub logprobs: Vec<f32>,
    pub finish_reason: String,
    pub completion_tokens: i64,
    pub latency_ms: i64,
    /// The adapter version that wrote it, when not the group's.
    pub adapter_version: Option<i64>,
    /// The variant index in a `variants` group: 0 is the canonical prompt, 1.. its paraphrases;
    /// `None` for samples.
    pub variant: Option<i32>,
    /// The token ids this variant's own prompt was fed as; only in `variants` groups.
    pub prompt_token_ids: Option<Vec<u32>>,
}

/// The OpenAPI shape of a stored prompt (`Group.prompt`, `Response.prompt`): the chat messages of a
/// chat request, or the text of a completion request. The store keeps it as JSON; this type only
/// describes it.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StoredPrompt {
    Chat(Vec<StoredMessage>),
    Text(String),
}

/// One message of a stored chat prompt, with its content flattened to text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
}

/// A stored group, without its responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Group {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub kind: GroupKind,
    pub endpoint: Endpoint,
    pub model: String,
    pub adapter_version: i64,
    #[schema(value_type = StoredPrompt)]
    pub prompt: Value,
    /// The request's sampling parameters, as the server resolved them.
    #[schema(value_type = Object)]
    pub params: Value,
    pub seed: Option<i64>,
    pub user: Option<String>,
    pub prompt_tokens: i64,
    /// The sum of the responses' completion tokens.
    pub completion_tokens: i64,
    pub latency_ms: i64,
    pub created_at: DateTime<Utc>,
    pub response_count: i64,
}

/// A stored group and its responses, ordered by choice index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupWithResponses {
    #[serde(flatten)]
    pub group: Group,
    pub responses: Vec<Response>,
}

/// A stored response. Immutable once written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Response {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    pub index: i32,
    /// A variant's own prompt (groups of kind `variants`); `null` for samples.
    #[schema(value_type = Option<StoredPrompt>)]
    pub prompt: Option<Value>,
    pub text: String,
    pub token_ids: Vec<u32>,
    /// Behaviour log-probs (natural log), one per token.
    pub logprobs: Vec<f32>,
    pub finish_reason: String,
    pub completion_tokens: i64,
    pub adapter_version: i64,
    pub latency_ms: i64,
    pub created_at: DateTime<Utc>,
    /// The variant index in a `variants` group: 0 is the canonical prompt, 1.. its paraphrases;
    /// null for samples.
    pub variant: Option<i32>,
    /// The token ids this variant's own prompt was fed as; only in `variants` groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
}

/// Which groups [`list_groups`](crate::Store::list_groups) returns: newest first, filtered, one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupFilter {
    pub adapter_version: Option<i64>,
    /// Inclusive lower bound on `created_at`.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `created_at`.
    pub until: Option<DateTime<Utc>>,
    /// Keyset cursor: only groups whose id is below this one (the last id of the previous page).
    pub before: Option<Uuid>,
    /// Page size, clamped to `1..=MAX_LIST_LIMIT`.
    pub limit: u32,
}

impl Default for GroupFilter {
    fn default() -> Self {
        GroupFilter {
            adapter_version: None,
            since: None,
            until: None,
            before: None,
            limit: 100,
        }
    }
}
