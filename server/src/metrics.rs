//! Prometheus metrics (`flywheel_*`), served as text at `/metrics`.
//!
//! Labels stay bounded: `route` is the matched route template (never the raw path), `status` the
//! HTTP status code, `adapter` the policy version that served the request. `annotator` is bounded
//! by the people and judges posting judgments; the annotator and arena gauges are refreshed at
//! each scrape (`version` and `candidate` are adapter versions that met another in a judgment).

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Instant;

use crate::arena::standings::ArenaReport;

/// The adapter version a response was produced by; handlers attach it as a response extension
/// so the metrics middleware can label the request with it.
#[derive(Clone, Copy, Debug)]
pub struct ServedBy(pub i64);

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    tokens: IntCounterVec,
    time_to_first_token: HistogramVec,
    pub queue_depth: IntGauge,
    pub decoding: IntGauge,
    /// Failed attempts to load the store's active version on this server.
    pub adapter_load_failures: IntCounter,
    annotator_judgments: IntGaugeVec,
    annotator_majority_agreement: GaugeVec,
    annotator_kappa: GaugeVec,
    arena_strength: GaugeVec,
    arena_candidate: GaugeVec,
    arena_candidate_judgments: IntGaugeVec,
    arena_incumbent: IntGauge,
    consistency: GaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "flywheel_requests_total",
                "HTTP requests by route, status and adapter",
            ),
            &["route", "status", "adapter"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("flywheel_request_duration_seconds", "Request latency").buckets(
                vec![
                    0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
                ],
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let tokens = IntCounterVec::new(
            Opts::new(
                "flywheel_tokens_total",
                "Prompt (in) and generated (out) tokens",
            ),
            &["direction", "adapter"],
        )
        .expect("valid metric");
        let time_to_first_token = HistogramVec::new(
            HistogramOpts::new(
                "flywheel_time_to_first_token_seconds",
                "Time to first token",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["adapter"],
        )
        .expect("valid metric");
        let queue_depth = IntGauge::new(
            "flywheel_queue_depth",
            "Generation requests admitted and not finished",
        )
        .expect("valid metric");
        let decoding = IntGauge::new("flywheel_decoding", "Samples being decoded right now")
            .expect("valid metric");
        let adapter_load_failures = IntCounter::new(
            "flywheel_adapter_load_failures_total",
            "Failed attempts to load the store's active adapter version on this server",
        )
        .expect("valid metric");
        let annotator_judgments = IntGaugeVec::new(
            Opts::new("flywheel_annotator_judgments", "Judgments per annotator"),
            &["annotator"],
        )
        .expect("valid metric");
        let annotator_majority_agreement = GaugeVec::new(
            Opts::new(
                "flywheel_annotator_majority_agreement",
                "Share of shared pairs where the annotator gave the others' majority verdict",
            ),
            &["annotator"],
        )
        .expect("valid metric");
        let annotator_kappa = GaugeVec::new(
            Opts::new(
                "flywheel_annotator_kappa",
                "Cohen's kappa of two annotators on the pairs they both judged",
            ),
            &["annotator", "other"],
        )
        .expect("valid metric");
        let arena_strength = GaugeVec::new(
            Opts::new(
                "flywheel_arena_strength",
                "Bradley-Terry log-strength of each version against the incumbent, with the \
                 bounds of its interval (bound = estimate | lower | upper)",
            ),
            &["version", "bound"],
        )
        .expect("valid metric");
        let arena_candidate = GaugeVec::new(
            Opts::new(
                "flywheel_arena_candidate_probability",
                "P(candidate beats the incumbent) from duels, with the bounds of its interval \
                 (bound = estimate | lower | upper), and its win-rate (bound = win_rate)",
            ),
            &["candidate", "bound"],
        )
        .expect("valid metric");
        let arena_candidate_judgments = IntGaugeVec::new(
            Opts::new(
                "flywheel_arena_candidate_judgments",
                "Judgments of each candidate's duels with the incumbent",
            ),
            &["candidate"],
        )
        .expect("valid metric");
        let arena_incumbent = IntGauge::new(
            "flywheel_arena_incumbent_version",
            "The active adapter version, which candidates duel",
        )
        .expect("valid metric");
        let consistency = GaugeVec::new(
            Opts::new(
                "flywheel_consistency",
                "The active version's consistency over held-out variant groups (measure = \
                 entropy | helpfulness | stability | top_unit_share | answers_with_units | units | \
                 answer_tokens | groups), with the server's unit extractor",
            ),
            &["version", "measure"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(consistency.clone()),
            Box::new(latency.clone()),
            Box::new(tokens.clone()),
            Box::new(time_to_first_token.clone()),
            Box::new(queue_depth.clone()),
            Box::new(decoding.clone()),
            Box::new(adapter_load_failures.clone()),
            Box::new(annotator_judgments.clone()),
            Box::new(annotator_majority_agreement.clone()),
            Box::new(annotator_kappa.clone()),
            Box::new(arena_strength.clone()),
            Box::new(arena_candidate.clone()),
            Box::new(arena_candidate_judgments.clone()),
            Box::new(arena_incumbent.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            latency,
            tokens,
            time_to_first_token,
            queue_depth,
            decoding,
            adapter_load_failures,
            annotator_judgments,
            annotator_majority_agreement,
            annotator_kappa,
            arena_strength,
            arena_candidate,
            arena_candidate_judgments,
            arena_incumbent,
            consistency,
        }
    }

    /// Replaces the consistency gauges with `report`'s means (measures without groups are left
    /// out).
    pub fn set_consistency(&self, report: &flywheel_trainer::ConsistencyReport) {
        self.consistency.reset();
        let version = report.adapter_version.to_string();
        let measures = [
            ("entropy", report.mean_entropy),
            ("helpfulness", report.mean_helpfulness),
            ("stability", report.mean_stability),
            ("top_unit_share", report.mean_top_unit_share),
            ("answers_with_units", report.answers_with_units),
            ("units", report.mean_units),
            ("answer_tokens", report.mean_answer_tokens),
            ("groups", Some(report.groups as f64)),
        ];
        for (measure, value) in measures {
            if let Some(value) = value {
                self.consistency
                    .with_label_values(&[version.as_str(), measure])
                    .set(value);
            }
        }
    }

    /// Replaces the arena gauges with `report`'s standings.
    pub fn set_arena(&self, report: &ArenaReport) {
        self.arena_incumbent.set(report.incumbent);
        self.arena_strength.reset();
        for entry in &report.leaderboard {
            let version = entry.version.to_string();
            for (bound, value) in [
                ("estimate", entry.strength),
                ("lower", entry.lower),
                ("upper", entry.upper),
            ] {
                self.arena_strength
                    .with_label_values(&[version.as_str(), bound])
                    .set(value);
            }
        }
        self.arena_candidate.reset();
        self.arena_candidate_judgments.reset();
        for c in &report.candidates {
            let version = c.version.to_string();
            self.arena_candidate_judgments
                .with_label_values(&[version.as_str()])
                .set(c.judgments as i64);
            let bounds = [
                ("estimate", Some(c.probability)),
                ("lower", Some(c.lower)),
                ("upper", Some(c.upper)),
                ("win_rate", c.win_rate),
            ];
            for (bound, value) in bounds {
                if let Some(value) = value {
                    self.arena_candidate
                        .with_label_values(&[version.as_str(), bound])
                        .set(value);
                }
            }
        }
    }

    /// Replaces the annotator gauges: `(annotator, judgments, majority agreement)` for each
    /// annotator, `(annotator, other, kappa)` for each pair with enough shared items.
    pub fn record_annotators<'a>(
        &self,
        annotators: impl Iterator<Item = (&'a str, i64, Option<f64>)>,
        kappas: impl Iterator<Item = (&'a str, &'a str, f64)>,
    ) {
        self.annotator_judgments.reset();
        self.annotator_majority_agreement.reset();
        self.annotator_kappa.reset();
        for (annotator, judgments, majority) in annotators {
            self.annotator_judgments
                .with_label_values(&[annotator])
                .set(judgments);
            if let Some(rate) = majority {
                self.annotator_majority_agreement
                    .with_label_values(&[annotator])
                    .set(rate);
            }
        }
        for (annotator, other, kappa) in kappas {
            self.annotator_kappa
                .with_label_values(&[annotator, other])
                .set(kappa);
        }
    }

    pub fn record_tokens(&self, adapter: i64, prompt: u64, completion: u64) {
        let adapter = adapter.to_string();
        self.tokens
            .with_label_values(&["in", &adapter])
            .inc_by(prompt);
        self.tokens
            .with_label_values(&["out", &adapter])
            .inc_by(completion);
    }

    pub fn record_time_to_first_token(&self, adapter: i64, seconds: f64) {
        self.time_to_first_token
            .with_label_values(&[&adapter.to_string()])
            .observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: counts every request and observes its latency.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let adapter = response
        .extensions()
        .get::<ServedBy>()
        .map(|v| v.0.to_string())
        .unwrap_or_else(|| "none".to_string());
    metrics
        .requests
        .with_label_values(&[&route, &status, &adapter])
        .inc();
    metrics
        .latency
        .with_label_values(&[&route, &status])
        .observe(started.elapsed().as_secs_f64());
    response
}
