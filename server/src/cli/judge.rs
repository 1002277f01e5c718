//! `flywheel judge`: an automatic judge. It takes pairs from a Flywheel server's annotation queue
//! under its own annotator name and posts judgments with their rationale, through the public API
//! only: an LLM judge, a self-reference judge, or any program. See [`crate::judges`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::judges::chat::{ChatClient, ChatConfig};
use crate::judges::llm::LlmJudge;
use crate::judges::program::ProgramJudge;
use crate::judges::self_reference::SelfReferenceJudge;
use crate::judges::{self, Judge, Stats, WorkerConfig};
use crate::startup::shutdown_signal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A judge model compares the two responses by a rubric, in both orders.
    Llm,
    /// A judge model answers the prompt itself, then compares each response with its answer.
    SelfReference,
    /// `--judge-command` runs per pair: JSON on stdin, a verdict as JSON on stdout.
    Program,
}

#[derive(Debug, Clone, Args)]
pub struct JudgeArgs {
    /// The Flywheel server whose annotation queue the judge works on (its root URL).
    #[arg(long, env = "FLYWHEEL_URL", default_value = "http://127.0.0.1:8000")]
    pub server_url: String,
    /// The environment variable holding the server's API key (scope `annotate`; `inference` too
    /// when the judge model is the server's own).
    #[arg(long, default_value = "FLYWHEEL_API_KEY")]
    pub api_key_env: String,
    /// The annotator name on the judge's judgments; its agreement with people is measured under
    /// it (`GET /v1/annotators`).
    #[arg(long, env = "FLYWHEEL_JUDGE_NAME")]
    pub name: String,
    #[arg(long, env = "FLYWHEEL_JUDGE_KIND", value_enum)]
    pub kind: Kind,
    /// The judge model's OpenAI-compatible base URL (as the `openai` client's `base_url`).
    /// Default: the server's own, `<server-url>/v1`.
    #[arg(long, env = "FLYWHEEL_JUDGE_URL")]
    pub judge_url: Option<String>,
    /// The judge model. Default: the first model the endpoint lists.
    #[arg(long, env = "FLYWHEEL_JUDGE_MODEL")]
    pub judge_model: Option<String>,
    /// The environment variable holding the judge endpoint's API key. Unset, the server's key is
    /// sent when the judge model is the server's own, and no key otherwise.
    #[arg(long, default_value = "FLYWHEEL_JUDGE_API_KEY")]
    pub judge_api_key_env: String,
    /// A file holding the rubric (the judge model's system message). Default: the rubric shipped
    /// for the kind.
    #[arg(long, env = "FLYWHEEL_JUDGE_RUBRIC")]
    pub rubric: Option<PathBuf>,
    /// Most tokens per judge-model answer.
    #[arg(long, env = "FLYWHEEL_JUDGE_MAX_TOKENS", default_value_t = 512)]
    pub judge_max_tokens: u32,
    /// The program of `--kind program`, run with `sh -c` for every pair.
    #[arg(
        long,
        env = "FLYWHEEL_JUDGE_COMMAND",
        required_if_eq("kind", "program")
    )]
    pub judge_command: Option<String>,
    /// How long one program run or one judge-model request may take.
    #[arg(long, env = "FLYWHEEL_JUDGE_TIMEOUT_SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub judge_timeout_secs: u64,
    /// Pairs judged at once.
    #[arg(long, env = "FLYWHEEL_JUDGE_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub judge_concurrency: u64,
    /// Seconds to wait when the queue is empty or unreachable.
    #[arg(long, env = "FLYWHEEL_JUDGE_POLL_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_secs: u64,
    /// Seconds between summary lines in the log.
    #[arg(long, env = "FLYWHEEL_JUDGE_SUMMARY_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub summary_secs: u64,
    /// Exit when the queue has nothing left for this judge, instead of waiting for new pairs.
    #[arg(long)]
    pub until_empty: bool,
    /// Serve this judge's counters (judgments posted, abstentions by reason) in Prometheus' text
    /// format at `http://<addr>/metrics`, e.g. `127.0.0.1:9464`.
    #[arg(long, env = "FLYWHEEL_JUDGE_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

pub async fn run(args: JudgeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.name.trim().is_empty(), "--name must not be blank");
    let api_key = read_key(&args.api_key_env);
    if api_key.is_none() {
        tracing::warn!(
            var = %args.api_key_env,
            "no API key in the environment: calling the server without one"
        );
    }
    let judge = build_judge(&args, api_key.as_deref()).await?;
    let config = WorkerConfig {
        server_url: args.server_url.clone(),
        api_key,
        annotator: args.name.clone(),
        concurrency: args.judge_concurrency as usize,
        poll_interval: Duration::from_secs(args.poll_secs),
        summary_interval: Duration::from_secs(args.summary_secs),
        until_empty: args.until_empty,
    };
    let stats = Arc::new(Stats::default());
    let _metrics = match args.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, stats.clone(), args.name.clone()).await?),
        None => None,
    };
    let counts = judges::run_counting(config, judge, stats, shutdown_signal()).await?;
    // The final counts on stdout, for scripts; the log has the same line.
    println!("{}", serde_json::to_string(&counts)?);
    Ok(())
}

async fn build_judge(args: &JudgeArgs, server_key: Option<&str>) -> anyhow::Result<Judge> {
    let timeout = Duration::from_secs(args.judge_timeout_secs);
    if args.kind == Kind::Program {
        let command = args
            .judge_command
            .clone()
            .context("--kind program needs --judge-command")?;
        return Ok(Judge::Program(ProgramJudge::new(command, timeout)));
    }
    let rubric = match &args.rubric {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the rubric {}", path.display()))?;
            anyhow::ensure!(
                !text.trim().is_empty(),
                "the rubric {} is empty",
                path.display()
            );
            Some(text)
        }
        None => None,
    };
    let own_model = args.judge_url.is_none();
    let base_url = args
        .judge_url
        .clone()
        .unwrap_or_else(|| format!("{}/v1", args.server_url.trim_end_matches('/')));
    let api_key = read_key(&args.judge_api_key_env)
        .or_else(|| own_model.then(|| server_key.map(str::to_string)).flatten());
    let chat = ChatClient::connect(ChatConfig {
        base_url,
        api_key,
        model: args.judge_model.clone(),
        max_tokens: args.judge_max_tokens,
        timeout,
    })
    .await?;
    tracing::info!(model = chat.model(), "judge model");
    Ok(match args.kind {
        Kind::Llm => Judge::Llm(LlmJudge::new(chat, rubric)),
        Kind::SelfReference => Judge::SelfReference(SelfReferenceJudge::new(chat, rubric)),
        Kind::Program => unreachable!("handled above"),
    })
}

/// Aborts the metrics endpoint's task when dropped.
struct MetricsEndpoint(tokio::task::JoinHandle<()>);

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `stats` at `http://<addr>/metrics` until the returned guard is dropped.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    stats: Arc<Stats>,
    judge: String,
) -> anyhow::Result<MetricsEndpoint> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = stats.counts().prometheus(&judge);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    text,
                )
            }
        }),
    );
    tracing::info!(%addr, "judge metrics at http://{addr}/metrics");
    Ok(MetricsEndpoint(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    })))
}

/// A secret from the environment variable `var`; unset or blank is `None`.
fn read_key(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|k| !k.trim().is_empty())
}
