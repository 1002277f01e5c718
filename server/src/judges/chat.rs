//! A client of any OpenAI-compatible chat endpoint (Flywheel itself, vLLM, OpenAI, …): one
//! deterministic completion per call, every failure turned into the [`Abstention`] it causes.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use super::verdict::{clip, Abstention, Reason};

/// Where the judge model is and how it is asked.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// The OpenAI base URL, as the `openai` client takes it (e.g. `http://127.0.0.1:8000/v1`).
    pub base_url: String,
    pub api_key: Option<String>,
    /// The model to ask; `None`: the first one `GET {base_url}/models` lists.
    pub model: Option<String>,
    pub max_tokens: u32,
    /// How long one completion may take.
    pub timeout: Duration,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            base_url: "http://127.0.0.1:8000/v1".into(),
            api_key: None,
            model: None,
            max_tokens: 512,
            timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    model: String,
    max_tokens: u32,
}

impl ChatClient {
    /// A client of `config.base_url`; asks the endpoint for its model when none is named.
    ///
    /// # Errors
    /// The endpoint cannot be reached, or lists no model.
    pub async fn connect(config: ChatConfig) -> anyhow::Result<ChatClient> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let model = match config.model {
            Some(model) => model,
            None => first_model(&http, &base_url, config.api_key.as_deref()).await?,
        };
        Ok(ChatClient {
            http,
            base_url,
            api_key: config.api_key,
            model,
            max_tokens: config.max_tokens,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The model's answer to `messages`, at temperature 0. Asked with `store: false`, so that a
    /// Flywheel server does not log the judge's own questions as prompt groups.
    ///
    /// # Errors
    /// [`Reason::Timeout`], [`Reason::HttpError`] for a failed request or a non-2xx status, and
    /// [`Reason::BadOutput`] for a body that is no chat completion.
    pub async fn reply(&self, messages: Vec<Value>) -> Result<String, Abstention> {
        let url = format!("{}/chat/completions", self.base_url);
        let body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "store": false,
        });
        let mut request = self.http.post(&url).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let failed = |e: reqwest::Error| match e.is_timeout() {
            true => Abstention::new(Reason::Timeout, format!("POST {url}: timed out")),
            false => Abstention::new(Reason::HttpError, format!("POST {url}: {e}")),
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let text = response.text().await.map_err(failed)?;
        if !status.is_success() {
            return Err(Abstention::new(
                Reason::HttpError,
                format!("POST {url}: {status}: {}", clip(&text, 300)),
            ));
        }
        let body: Value = serde_json::from_str(&text).map_err(|e| {
            Abstention::new(Reason::BadOutput, format!("POST {url}: not JSON: {e}"))
        })?;
        body["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                Abstention::new(
                    Reason::BadOutput,
                    format!("POST {url}: no choices[0].message.content in the reply"),
                )
            })
    }
}

/// The id of the first model `GET {base_url}/models` lists.
async fn first_model(
    http: &reqwest::Client,
    base_url: &str,
    api_key: Option<&str>,
) -> anyhow::Result<String> {
    let url = format!("{base_url}/models");
    let mut request = http.get(&url);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the judge endpoint at {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))?;
    body["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("GET {url} lists no model; name one with --judge-model"))
}
