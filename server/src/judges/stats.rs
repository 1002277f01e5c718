//! The judge's counters: judgments posted, abstentions by reason, failed queue requests. Shared by
//! every concurrent pair (atomics, no lock), read as a [`Counts`] snapshot for the summary line
//! and, with `--metrics-addr`, served in Prometheus' text format.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::verdict::Reason;

#[derive(Debug, Default)]
pub struct Stats {
    posted: AtomicU64,
    /// One counter per [`Reason`], in [`Reason::ALL`] order.
    abstentions: [AtomicU64; Reason::ALL.len()],
    queue_errors: AtomicU64,
}

impl Stats {
    pub fn posted(&self) {
        self.posted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn abstained(&self, reason: Reason) {
        self.abstentions[index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// A request for the next pair failed (no pair was taken, so nothing was abstained on).
    pub fn queue_error(&self) {
        self.queue_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> Counts {
        let abstained = |reason| self.abstentions[index(reason)].load(Ordering::Relaxed);
        Counts {
            posted: self.posted.load(Ordering::Relaxed),
            abstentions: Abstentions {
                disagreement: abstained(Reason::Disagreement),
                parse_failure: abstained(Reason::ParseFailure),
                timeout: abstained(Reason::Timeout),
                crash: abstained(Reason::Crash),
                bad_output: abstained(Reason::BadOutput),
                http_error: abstained(Reason::HttpError),
            },
            queue_errors: self.queue_errors.load(Ordering::Relaxed),
        }
    }
}

fn index(reason: Reason) -> usize {
    Reason::ALL
        .iter()
        .position(|r| *r == reason)
        .expect("every reason is in ALL")
}

/// What a judge has done so far; printed as JSON when `flywheel judge` exits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub posted: u64,
    pub abstentions: Abstentions,
    pub queue_errors: u64,
}

/// Pairs taken and not judged, by [`Reason`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Abstentions {
    pub disagreement: u64,
    pub parse_failure: u64,
    pub timeout: u64,
    pub crash: u64,
    pub bad_output: u64,
    pub http_error: u64,
}

impl Abstentions {
    pub fn total(&self) -> u64 {
        self.disagreement
            + self.parse_failure
            + self.timeout
            + self.crash
            + self.bad_output
            + self.http_error
    }
}

impl Counts {
    /// Pairs taken from the queue: posted or abstained.
    pub fn pairs(&self) -> u64 {
        self.posted + self.abstentions.total()
    }

    /// The counts in Prometheus' text format, labelled with the judge's name (what
    /// `flywheel judge --metrics-addr` serves at `/metrics`).
    pub fn prometheus(&self, judge: &str) -> String {
        let judge = escape_label(judge);
        let a = &self.abstentions;
        let mut text = String::new();
        let mut family = |name: &str, help: &str, samples: &[(Option<&str>, u64)]| {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (reason, value) in samples {
                match reason {
                    Some(reason) => text.push_str(&format!(
                        "{name}{{judge=\"{judge}\",reason=\"{reason}\"}} {value}\n"
                    )),
                    None => text.push_str(&format!("{name}{{judge=\"{judge}\"}} {value}\n")),
                }
            }
        };
        family(
            "flywheel_judge_judgments_total",
            "Judgments this judge posted",
            &[(None, self.posted)],
        );
        family(
            "flywheel_judge_abstentions_total",
            "Pairs this judge took and did not judge, by reason",
            &[
                (Some("disagreement"), a.disagreement),
                (Some("parse_failure"), a.parse_failure),
                (Some("timeout"), a.timeout),
                (Some("crash"), a.crash),
                (Some("bad_output"), a.bad_output),
                (Some("http_error"), a.http_error),
            ],
        );
        family(
            "flywheel_judge_queue_errors_total",
            "Requests for the next pair that failed",
            &[(None, self.queue_errors)],
        );
        text
    }
}

/// A label value as the text format writes it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = &self.abstentions;
        write!(
            f,
            "posted={} abstained={} (disagreement={} parse_failure={} timeout={} crash={} \
             bad_output={} http_error={}) queue_errors={}",
            self.posted,
            a.total(),
            a.disagreement,
            a.parse_failure,
            a.timeout,
            a.crash,
            a.bad_output,
            a.http_error,
            self.queue_errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counts_render_as_prometheus_counters_labelled_with_the_judge() {
        let stats = Stats::default();
        stats.posted();
        stats.posted();
        stats.abstained(Reason::Disagreement);
        stats.queue_error();

        let text = stats.counts().prometheus("gpt \"judge\"");

        assert!(text.contains("# TYPE flywheel_judge_judgments_total counter\n"));
        assert!(text.contains("flywheel_judge_judgments_total{judge=\"gpt \\\"judge\\\"\"} 2\n"));
        assert!(text.contains(
            "flywheel_judge_abstentions_total{judge=\"gpt \\\"judge\\\"\",reason=\"disagreement\"} 1\n"
        ));
        assert!(text.contains(
            "flywheel_judge_abstentions_total{judge=\"gpt \\\"judge\\\"\",reason=\"timeout\"} 0\n"
        ));
        assert!(text.contains("flywheel_judge_queue_errors_total{judge=\"gpt \\\"judge\\\"\"} 1\n"));
    }
}
