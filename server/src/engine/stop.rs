//! Stop sequences, matched by us on the decoded text rather than by mistral.rs.
//!
//! mistral.rs 0.8.1 slices its lossy-decoded text with a byte offset when it matches a stop string,
//! and panics its engine thread when the completion holds invalid UTF-8 before the match
//! (research/mistralrs.md §4). We never hand it stop strings: the matcher below sees every text
//! delta, holds back any suffix that could still become a stop sequence, and ends the sample at the
//! first match. The text before the match is what the client receives, as OpenAI defines it.

/// What the caller may emit after a delta.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// No stop sequence yet; this text is final and may be sent.
    Continue(String),
    /// A stop sequence matched; this is the last text to send (the stop sequence itself excluded).
    Stopped(String),
}

#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted because it may be the start of a stop sequence.
    pending: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        StopMatcher {
            stops,
            pending: String::new(),
        }
    }

    pub fn push(&mut self, delta: &str) -> Scan {
        self.pending.push_str(delta);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let text = self.pending[..at].to_string();
            self.pending.clear();
            return Scan::Stopped(text);
        }
        let keep = self.held_back_len();
        let split = self.pending.len() - keep;
        let ready = self.pending[..split].to_string();
        self.pending.drain(..split);
        Scan::Continue(ready)
    }

    /// The generation ended without a stop sequence: whatever was held back is final.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of some stop sequence.
    fn held_back_len(&self) -> usize {
        self.pending
            .char_indices()
            .map(|(i, _)| &self.pending[i..])
            .find(|suffix| {
                self.stops
                    .iter()
                    .any(|s| s.len() > suffix.len() && s.starts_with(suffix))
            })
            .map_or(0, str::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for d in deltas {
            match m.push(d) {
                Scan::Continue(t) => out.push_str(&t),
                Scan::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn text_without_stop_sequences_passes_through_whole() {
        assert_eq!(
            run(&["END"], &["hel", "lo ", "world"]),
            ("hello world".into(), false)
        );
    }

    #[test]
    fn a_stop_sequence_split_across_deltas_ends_the_text_before_it() {
        assert_eq!(
            run(&["END"], &["abc E", "N", "Dxyz"]),
            ("abc ".into(), true)
        );
    }

    #[test]
    fn a_partial_stop_prefix_that_does_not_complete_is_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abc EN"), Scan::Continue("abc ".into()));
        assert_eq!(m.push("x"), Scan::Continue("ENx".into()));
    }

    #[test]
    fn the_earliest_of_several_stop_sequences_wins() {
        assert_eq!(run(&["zz", "b"], &["a", "bzz"]), ("a".into(), true));
    }

    #[test]
    fn multi_byte_characters_are_never_split() {
        // The stop starts with the same first byte as "é" would in a naive byte-wise scan.
        assert_eq!(run(&["éx"], &["caf", "é", "!"]), ("café!".into(), false));
        assert_eq!(
            run(&["日本"], &["こん", "日", "本語"]),
            ("こん".into(), true)
        );
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        assert_eq!(run(&[""], &["abc"]), ("abc".into(), false));
    }
}
