//! The store's judgments in the terms of `flywheel_judge`, the crate that holds the statistics:
//! the one place the server maps them, for preferences, exports and annotator agreement.

use flywheel_judge::{Agreement, Comparison, Verdict};
use flywheel_store::{Judgment, Response, SharedJudgment};

/// A group's judgments as comparisons by index into `responses` (its responses in choice order).
/// The store checks that both responses of a judgment belong to its group, so none is left out.
pub fn comparisons(responses: &[Response], judgments: &[Judgment]) -> Vec<Comparison> {
    let ids: Vec<_> = responses.iter().map(|r| r.id).collect();
    flywheel_judge::comparisons(&ids, judgments.iter().map(Judgment::judged))
}

/// Agreement of the annotators on the pairs several judged (`Store::judgments_on_shared_pairs`,
/// each verdict in canonical pair order); kappa only for annotator pairs sharing `min_shared`.
pub fn agreement(shared: &[SharedJudgment], min_shared: usize) -> Agreement {
    let verdicts = shared.iter().map(|s| Verdict {
        item: (s.response_lo, s.response_hi),
        annotator: s.annotator.as_str(),
        outcome: s.outcome.into(),
    });
    flywheel_judge::agreement(verdicts, min_shared)
}
