//! The judge's side of the public API: take the next pair (`GET /v1/annotation/next`), answer it
//! (`POST /v1/judgments` with the `assignment_id`) or hand it back
//! (`POST /v1/annotation/assignments/{id}/release`). Nothing else of the server is used.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::verdict::{clip, Verdict};
use super::Pair;

/// How long one request to the Flywheel server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to post one judgment when the server or the network fails; retries are safe because
/// every attempt carries the same idempotency key.
const POST_ATTEMPTS: u32 = 3;

/// Why a request to the Flywheel server failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The server refuses the judge itself (a bad key or scope, a bad name, a wrong URL):
    /// retrying cannot help, so the judge stops.
    #[error("{0}")]
    Fatal(String),
    /// Worth trying again later: the network, a 5xx, a pair taken concurrently.
    #[error("{0}")]
    Transient(String),
    /// The server refused this one judgment (a 400, or a 409: already answered).
    #[error("{0}")]
    Rejected(String),
}

#[derive(Clone)]
pub struct QueueClient {
    http: reqwest::Client,
    /// The server's root URL, without a trailing `/`.
    server_url: String,
    api_key: Option<String>,
    annotator: String,
}

impl QueueClient {
    /// A client of the server at `server_url` (its root, e.g. `http://127.0.0.1:8000`), judging as
    /// `annotator`. The key needs the `annotate` scope.
    pub fn new(server_url: &str, api_key: Option<String>, annotator: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(QueueClient {
            http,
            server_url: server_url.trim_end_matches('/').to_string(),
            api_key,
            annotator: annotator.to_string(),
        })
    }

    pub fn annotator(&self) -> &str {
        &self.annotator
    }

    /// Takes the next pair for this judge, or `None` when nothing is left for it now.
    ///
    /// # Errors
    /// [`QueueError::Fatal`] when the server refuses the judge (401, 403, 400, 404, or an answer
    /// that is not a pair), [`QueueError::Transient`] otherwise.
    pub async fn next_pair(&self) -> Result<Option<Pair>, QueueError> {
        let name: String = form_urlencoded::byte_serialize(self.annotator.as_bytes()).collect();
        let url = format!("{}/v1/annotation/next?annotator={name}", self.server_url);
        let response = self
            .authorized(self.http.get(&url))
            .send()
            .await
            .map_err(|e| QueueError::Transient(format!("GET {url}: {e}")))?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            let message = format!("GET {url}: {status}: {}", error_text(response).await);
            return Err(match refuses_the_judge(status) {
                true => QueueError::Fatal(message),
                false => QueueError::Transient(message),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| QueueError::Transient(format!("GET {url}: {e}")))?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| QueueError::Fatal(format!("GET {url} answered no pair: {e}")))
    }

    /// Posts `verdict` as this judge's answer to `pair`, retrying failures of the network or the
    /// server under the same idempotency key.
    ///
    /// # Errors
    /// [`QueueError::Fatal`] for a 401 or 403, [`QueueError::Rejected`] for another 4xx, and
    /// [`QueueError::Transient`] when every attempt failed.
    pub async fn post_judgment(&self, pair: &Pair, verdict: &Verdict) -> Result<(), QueueError> {
        let url = format!("{}/v1/judgments", self.server_url);
        let body = judgment_body(pair, verdict, &self.annotator);
        let mut last = String::new();
        for attempt in 1..=POST_ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            let response = match self
                .authorized(self.http.post(&url))
                .json(&body)
                .send()
                .await
            {
                Ok(response) => response,
                Err(e) => {
                    last = format!("POST {url}: {e}");
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let message = format!("POST {url}: {status}: {}", error_text(response).await);
            if refuses_the_judge(status) && status != StatusCode::BAD_REQUEST {
                return Err(QueueError::Fatal(message));
            }
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                return Err(QueueError::Rejected(message));
            }
            last = message;
        }
        Err(QueueError::Transient(last))
    }

    /// Hands `pair` back unanswered, so that another annotator may take it now rather than when
    /// its assignment expires.
    ///
    /// # Errors
    /// [`QueueError::Transient`] for the network or a 5xx, [`QueueError::Rejected`] for a 4xx.
    pub async fn release(&self, pair: &Pair) -> Result<(), QueueError> {
        let url = format!(
            "{}/v1/annotation/assignments/{}/release",
            self.server_url, pair.assignment_id
        );
        let response = self
            .authorized(self.http.post(&url))
            .send()
            .await
            .map_err(|e| QueueError::Transient(format!("POST {url}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let message = format!("POST {url}: {status}: {}", error_text(response).await);
        Err(match status.is_client_error() {
            true => QueueError::Rejected(message),
            false => QueueError::Transient(message),
        })
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }
}

/// The judgment answering `pair`: `response_a` is the left response, as the queue asks.
fn judgment_body(pair: &Pair, verdict: &Verdict, annotator: &str) -> Value {
    let mut body = json!({
        "group_id": pair.group_id,
        "response_a": pair.left.response_id,
        "response_b": pair.right.response_id,
        "outcome": verdict.outcome,
        "annotator": annotator,
        "source": verdict.source,
        "assignment_id": pair.assignment_id,
        // One key per assignment: a retried post replays instead of judging twice.
        "client_id": format!("judge:{}", pair.assignment_id),
    });
    if let Some(strength) = verdict.strength {
        body["strength"] = json!(strength);
    }
    if let Some(rationale) = &verdict.rationale {
        // Text fields cannot hold NUL; a model may still emit one.
        body["rationale"] = json!(rationale.replace('\0', ""));
    }
    if let Some(criteria) = &verdict.criteria {
        body["criteria"] = criteria.clone();
    }
    body
}

/// Statuses that say the judge's own setup is wrong, not this request.
fn refuses_the_judge(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND
            | StatusCode::BAD_REQUEST
    )
}

/// The OpenAI-shaped error message of a failed response, or the start of its body.
async fn error_text(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| clip(&text, 200))
}
