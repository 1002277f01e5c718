//! The store's judgments in the terms of `flywheel_judge`, the crate that holds the statistics:
//! the one place the server maps them, for preferences, exports and annotator agreement.

use flywheel_judge::{Agreement, Comparison, Judged, Verdict};
use flywheel_store::{Judgment, Outcome, Response, SharedJudgment};

/// A group's judgments as comparisons by index into `responses` (its responses in choice order).
/// The store checks that both responses of a judgment belong to its group, so none is left out.
pub fn comparisons(responses: &[Response], judgments: &[Judgment]) -> Vec<Comparison> {
    let ids: Vec<_> = responses.iter().map(|r| r.id).collect();
    let judged = judgments.iter().map(|j| Judged {
        a: j.response_a,
        b: j.response_b,
        outcome: outcome(j.outcome),
        strength: j.strength,
    });
    flywheel_judge::comparisons(&ids, judged)
}

/// Agreement of the annotators on the pairs several judged (`Store::judgments_on_shared_pairs`,
/// each verdict in canonical pair order); kappa only for annotator pairs sharing `min_shared`.
pub fn agreement(shared: &[SharedJudgment], min_shared: usize) -> Agreement {
    let verdicts = shared.iter().map(|s| Verdict {
        item: (s.response_lo, s.response_hi),
        annotator: s.annotator.as_str(),
        outcome: outcome(s.outcome),
    });
    flywheel_judge::agreement(verdicts, min_shared)
}

/// The same verdict in the judge crate's type. The store cannot depend on that crate's types yet,
/// so this match is written here and once in the trainer (`stored.rs`).
fn outcome(outcome: Outcome) -> flywheel_judge::Outcome {
    match outcome {
        Outcome::A => flywheel_judge::Outcome::A,
        Outcome::B => flywheel_judge::Outcome::B,
        Outcome::Tie => flywheel_judge::Outcome::Tie,
        Outcome::BothBad => flywheel_judge::Outcome::BothBad,
    }
}
