//! Deny-by-default API keys. Every route outside [`OPEN_ROUTES`] sits behind a [`Gate`] that names
//! the one scope it needs; a request without `Authorization: Bearer <key>` is 401, a key that is
//! unknown or revoked is 401, a key without the scope is 403 (all in OpenAI's error shape).
//!
//! Scopes: `inference` (completions, models), `annotate` (judgments, the annotation queue, reading
//! groups, responses and preferences), `admin` (annotators, metrics, everything). A key with
//! `admin` passes every gate, so one operator key is enough; the other two are separate.
//!
//! Open without a key: `/health` and `/ready` (probes), `/openapi.json` and `/docs` (the API's own
//! description), `/annotate` (a static page that asks for a key); none of them holds data. `/metrics` needs `admin`: it names annotators and adapters,
//! and Prometheus sends a bearer token with `authorization: {credentials: …}`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use flywheel_store::{hash_api_key, ApiKey, Scope, Store};
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::ApiError;

/// The routes every caller may use without a key.
pub const OPEN_ROUTES: [&str; 5] = ["/health", "/ready", "/openapi.json", "/docs", "/annotate"];

/// The shortest secret accepted from `FLYWHEEL_ADMIN_KEY`.
pub const MIN_SECRET_CHARS: usize = 16;

/// Whether the API checks keys at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Every gated route needs a key with its scope.
    #[default]
    Required,
    /// `--no-auth`: every route is open. For local experiments only.
    Disabled,
}

/// The check in front of one group of routes: the scope they need, and where keys live.
#[derive(Clone)]
pub struct Gate {
    mode: AuthMode,
    store: Store,
    scope: Scope,
    cache: KeyCache,
}

impl Gate {
    pub fn new(mode: AuthMode, store: Store, scope: Scope, cache: KeyCache) -> Self {
        Gate {
            mode,
            store,
            scope,
            cache,
        }
    }
}

/// Keys this process verified recently, by the hash of their secret, so that most requests cost
/// no store lookup (judgment ingestion is one insert per request then). A key revoked in the
/// store keeps working here for at most `ttl`; a zero `ttl` looks up every request. Unknown keys
/// are never cached.
#[derive(Clone)]
pub struct KeyCache {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<String, (ApiKey, Instant)>>>,
}

/// Beyond this many live keys the cache starts over, so a flood of keys cannot grow it.
const MAX_CACHED_KEYS: usize = 10_000;

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        KeyCache {
            ttl,
            entries: Arc::default(),
        }
    }

    fn get(&self, hash: &str, now: Instant) -> Option<ApiKey> {
        let entries = self.entries.lock().expect("key cache lock poisoned");
        let (key, checked) = entries.get(hash)?;
        (now.saturating_duration_since(*checked) < self.ttl).then(|| key.clone())
    }

    fn put(&self, hash: String, key: ApiKey, checked: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().expect("key cache lock poisoned");
        if entries.len() >= MAX_CACHED_KEYS && !entries.contains_key(&hash) {
            entries.clear();
        }
        entries.insert(hash, (key, checked));
    }

    /// Keeps `key`'s cached copy (if any) in step with a use just recorded, without extending it.
    fn touched(&self, hash: &str, key: &ApiKey) {
        let mut entries = self.entries.lock().expect("key cache lock poisoned");
        if let Some((cached, _)) = entries.get_mut(hash) {
            cached.last_used_at = key.last_used_at;
        }
    }
}

/// The key a request was authenticated with (absent under `--no-auth`), as a request extension.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiKey);

/// Whether `key` may call a route that needs `scope`: it has the scope, or it has `admin`.
pub fn grants(key: &ApiKey, scope: Scope) -> bool {
    key.has_scope(scope) || key.has_scope(Scope::Admin)
}

/// Middleware: lets the request through only with a live key that [`grants`] the gate's scope.
pub async fn require(
    State(gate): State<Gate>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if gate.mode == AuthMode::Disabled {
        return Ok(next.run(request).await);
    }
    let secret = bearer(request.headers()).ok_or(ApiError::Unauthorized)?;
    let hash = hash_api_key(secret);
    let now = Instant::now();
    let mut key = match gate.cache.get(&hash, now) {
        Some(key) => key,
        None => {
            let key = gate
                .store
                .find_api_key_by_hash(&hash)
                .await?
                .ok_or(ApiError::InvalidApiKey)?;
            gate.cache.put(hash.clone(), key.clone(), now);
            key
        }
    };
    if !grants(&key, gate.scope) {
        return Err(ApiError::Forbidden(gate.scope.as_str()));
    }
    if record_use(&gate.store, &key) {
        key.last_used_at = Some(Utc::now());
        gate.cache.touched(&hash, &key);
    }
    request.extensions_mut().insert(Caller(key));
    Ok(next.run(request).await)
}

/// The secret of an `Authorization: Bearer <secret>` header, if there is a non-empty one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

/// Updates `last_used_at` off the request path, and only when the stored time is over a minute
/// old: the store's write is a no-op otherwise, but on SQLite even a no-op `UPDATE` takes the
/// single write lock that judgment ingestion needs.
/// Returns whether it did.
fn record_use(store: &Store, key: &ApiKey) -> bool {
    let stale = key
        .last_used_at
        .is_none_or(|t| Utc::now() - t > chrono::Duration::minutes(1));
    if stale {
        let (store, id) = (store.clone(), key.id);
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(id).await {
                tracing::warn!(error = ?e, "cannot record an API key's use");
            }
        });
    }
    stale
}

/// A new random secret: `fw_` and 48 hex digits (192 bits).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("fw_{hex}")
}

/// Makes `secret` a live key with `scopes` under `name`, unless a live key with that secret
/// exists already; what `FLYWHEEL_ADMIN_KEY` does at start.
///
/// # Errors
/// A secret shorter than [`MIN_SECRET_CHARS`], or one that belongs to a revoked key.
pub async fn ensure_key(
    store: &Store,
    name: &str,
    secret: &str,
    scopes: &[Scope],
) -> anyhow::Result<ApiKey> {
    let chars = secret.chars().count();
    anyhow::ensure!(
        chars >= MIN_SECRET_CHARS,
        "the key must be at least {MIN_SECRET_CHARS} characters. Given: {chars}"
    );
    let hash = hash_api_key(secret);
    if let Some(key) = store.find_api_key_by_hash(&hash).await? {
        return Ok(key);
    }
    match store.create_api_key(name, scopes, &hash).await {
        Err(flywheel_store::Error::Conflict(_)) => {
            anyhow::bail!("this key was revoked; choose a new secret")
        }
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_a_non_empty_bearer_credential_is_a_key() {
        assert_eq!(bearer(&headers("Bearer fw_abc")), Some("fw_abc"));
        assert_eq!(bearer(&headers("bearer fw_abc")), Some("fw_abc"));
        assert_eq!(bearer(&headers("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    fn key(name: &str) -> ApiKey {
        ApiKey {
            id: uuid::Uuid::now_v7(),
            name: name.into(),
            scopes: vec![Scope::Annotate],
            created_at: Utc::now(),
            revoked_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn a_cached_key_is_served_until_its_time_to_live_runs_out() {
        let cache = KeyCache::new(Duration::from_secs(5));
        let t0 = Instant::now();
        cache.put("h".into(), key("a"), t0);
        assert_eq!(
            cache.get("h", t0 + Duration::from_secs(4)).unwrap().name,
            "a"
        );
        assert!(cache.get("h", t0 + Duration::from_secs(5)).is_none());
        assert!(cache.get("other", t0).is_none());
    }

    #[test]
    fn a_zero_time_to_live_caches_nothing() {
        let cache = KeyCache::new(Duration::ZERO);
        let t0 = Instant::now();
        cache.put("h".into(), key("a"), t0);
        assert!(cache.get("h", t0).is_none());
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let cache = KeyCache::new(Duration::from_secs(5));
        let t0 = Instant::now();
        for i in 0..=MAX_CACHED_KEYS {
            cache.put(format!("h{i}"), key("k"), t0);
        }
        assert_eq!(cache.entries.lock().unwrap().len(), 1);
        assert!(cache.get(&format!("h{MAX_CACHED_KEYS}"), t0).is_some());
    }

    #[test]
    fn a_recorded_use_updates_the_cached_copy_without_extending_it() {
        let cache = KeyCache::new(Duration::from_secs(5));
        let t0 = Instant::now();
        cache.put("h".into(), key("a"), t0);
        let mut used = key("a");
        used.last_used_at = Some(Utc::now());
        cache.touched("h", &used);
        assert_eq!(cache.get("h", t0).unwrap().last_used_at, used.last_used_at);
        assert!(cache.get("h", t0 + Duration::from_secs(5)).is_none());
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let (a, b) = (generate_secret(), generate_secret());
        assert!(a.starts_with("fw_") && a.len() == 51, "{a}");
        assert_ne!(a, b);
    }
}
