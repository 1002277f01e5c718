//! API keys: stored only as the sha256 of their secret, each with the scopes it grants.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::error::conflict_on_unique;
use crate::hash::sha256_hex;
use crate::text_enum::text_enum;
use crate::timestamp::Timestamp;
use crate::{Error, Result, Store, MAX_KEY_CHARS};

text_enum! {
    /// What a key may do. Stored as given; the server lets a key with `admin` call every route.
    pub enum Scope {
        /// Completions and the model list.
        Inference => "inference",
        /// Posting judgments and taking pairs from the annotation queue.
        Annotate => "annotate",
        /// Keys, adapters, exports, everything else.
        Admin => "admin",
    }
}

/// How long after a recorded use [`touch_api_key`](Store::touch_api_key) skips the write.
const TOUCH_INTERVAL: chrono::Duration = chrono::Duration::minutes(1);

/// A stored key, without its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub name: String,
    /// Sorted by name, without duplicates.
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The last recorded use, to within a minute.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// The hash a key is stored and looked up by: the sha256 of the secret, in lowercase hex.
pub fn hash_api_key(secret: &str) -> String {
    sha256_hex(secret.as_bytes())
}

const SELECT_API_KEY: &str =
    "SELECT id, name, scopes, created_at, revoked_at, last_used_at FROM api_keys";

impl Store {
    /// Stores a new key under `key_hash` (see [`hash_api_key`]).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty or too long name or no scope; [`Error::Conflict`] if a key
    /// with that hash exists (revoked or not).
    pub async fn create_api_key(
        &self,
        name: &str,
        scopes: &[Scope],
        key_hash: &str,
    ) -> Result<ApiKey> {
        let chars = name.chars().count();
        if name.trim().is_empty() || chars > MAX_KEY_CHARS {
            return Err(Error::Invalid(format!(
                "`name` must be 1 to {MAX_KEY_CHARS} characters. Given: {chars}"
            )));
        }
        if scopes.is_empty() {
            return Err(Error::Invalid(
                "`scopes` must name at least one of: inference annotate admin".into(),
            ));
        }
        let id = Uuid::now_v7();
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO api_keys (id, name, key_hash, scopes, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(name)
            .bind(key_hash)
            .bind(scopes_text(scopes))
            .bind(Timestamp(Utc::now()))
            .execute(pool)
            .await
            .map_err(|e| conflict_on_unique(e, || "an API key with this hash exists".into()))?;
        });
        self.get_api_key(id).await
    }

    /// The key `id`, revoked or not.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("api key")` if there is no such key.
    pub async fn get_api_key(&self, id: Uuid) -> Result<ApiKey> {
        let sql = format!("{SELECT_API_KEY} WHERE id = $1");
        let row: Option<ApiKeyRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        row.ok_or(Error::NotFound("api key"))?.try_into()
    }

    /// The unrevoked key stored under `key_hash`, if any: what authentication asks per request.
    pub async fn find_api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let sql = format!("{SELECT_API_KEY} WHERE key_hash = $1 AND revoked_at IS NULL");
        let row: Option<ApiKeyRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(key_hash).fetch_optional(pool).await?
        });
        row.map(ApiKey::try_from).transpose()
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = format!("{SELECT_API_KEY} ORDER BY id");
        let rows: Vec<ApiKeyRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    /// Revokes key `id`, so that [`find_api_key_by_hash`](Store::find_api_key_by_hash) no longer
    /// finds it. Revoking a revoked key keeps its first revocation time.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("api key")` if there is no such key.
    pub async fn revoke_api_key(&self, id: Uuid) -> Result<ApiKey> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(Timestamp(Utc::now()))
                .execute(pool)
                .await?;
        });
        self.get_api_key(id).await
    }

    /// Records that key `id` was used now. Writes at most once a minute per key, so calling it on
    /// every request costs a write only now and then; an unknown id is ignored.
    pub async fn touch_api_key(&self, id: Uuid) -> Result<()> {
        let now = Utc::now();
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(id)
            .bind(Timestamp(now))
            .bind(Timestamp(now - TOUCH_INTERVAL))
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}

/// Scopes as stored: sorted, deduplicated, space-separated names.
fn scopes_text(scopes: &[Scope]) -> String {
    let mut names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(" ")
}

/// An `api_keys` row as both backends return it.
#[derive(FromRow)]
struct ApiKeyRow {
    id: Uuid,
    name: String,
    scopes: String,
    created_at: Timestamp,
    revoked_at: Option<Timestamp>,
    last_used_at: Option<Timestamp>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = Error;

    fn try_from(row: ApiKeyRow) -> Result<Self> {
        let mut scopes = row
            .scopes
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<Scope>>>()?;
        scopes.sort_unstable_by_key(|s| s.as_str());
        scopes.dedup();
        Ok(ApiKey {
            id: row.id,
            name: row.name,
            scopes,
            created_at: row.created_at.into(),
            revoked_at: row.revoked_at.map(Into::into),
            last_used_at: row.last_used_at.map(Into::into),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_key_hash_is_the_sha256_hex_of_the_secret() {
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(hash_api_key("fw_secret"), hash_api_key("fw_secret2"));
    }

    #[test]
    fn scopes_parse_from_their_names_only() {
        assert_eq!("annotate".parse::<Scope>().unwrap(), Scope::Annotate);
        assert_eq!("admin".parse::<Scope>().unwrap(), Scope::Admin);
        assert!(matches!("root".parse::<Scope>(), Err(Error::Invalid(_))));
        assert!("Admin".parse::<Scope>().is_err());
    }

    #[test]
    fn stored_scopes_are_sorted_and_deduplicated() {
        let text = scopes_text(&[Scope::Inference, Scope::Admin, Scope::Inference]);
        assert_eq!(text, "admin inference");
    }
}
