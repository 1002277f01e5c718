//! The program judge: `--judge-command CMD` runs once per pair (through `sh -c`), reads the pair as
//! JSON on stdin and writes its verdict as JSON on stdout. Users plug verifiers and rules in any
//! language this way; the judgment's `source` is `rule`.
//!
//! Input: `{"assignment_id", "group_id", "annotator", "prompt", "response_a": {"id", "text",
//! "prompt"}, "response_b": {...}}`, `response_a` being the response the queue showed on the left.
//! Output: one JSON object `{"outcome": "a" | "b" | "tie" | "both_bad", "strength"?: 0–1,
//! "rationale"?: string, "criteria"?: any JSON}`; other fields are ignored.
//!
//! A program that runs past the timeout is killed with everything it started (it runs in a
//! process group of its own); one that exits nonzero has crashed; stdout that breaks the contract
//! is bad output. Each is logged and counted, and nothing is posted.

use std::process::Stdio;
use std::time::Duration;

use flywheel_store::{JudgmentSource, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::verdict::{clip, Abstention, Reason, Verdict};
use super::Pair;

pub struct ProgramJudge {
    command: String,
    timeout: Duration,
}

/// What the program reads on stdin.
#[derive(Debug, Serialize)]
pub struct ProgramInput<'a> {
    pub assignment_id: Uuid,
    pub group_id: Uuid,
    pub annotator: &'a str,
    pub prompt: &'a Value,
    pub response_a: ProgramResponse<'a>,
    pub response_b: ProgramResponse<'a>,
}

#[derive(Debug, Serialize)]
pub struct ProgramResponse<'a> {
    pub id: Uuid,
    pub text: &'a str,
    /// A variant's own prompt (groups of kind `variants`), else `null`.
    pub prompt: Option<&'a Value>,
}

/// What the program writes on stdout.
#[derive(Debug, Deserialize)]
struct ProgramOutput {
    outcome: Outcome,
    #[serde(default)]
    strength: Option<f64>,
    #[serde(default)]
    rationale: Option<String>,
    #[serde(default)]
    criteria: Option<Value>,
}

impl ProgramJudge {
    /// Runs `command` with `sh -c` for every pair, for at most `timeout` each.
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        ProgramJudge {
            command: command.into(),
            timeout,
        }
    }

    pub async fn judge(&self, pair: &Pair) -> Result<Verdict, Abstention> {
        let input = serde_json::to_vec(&ProgramInput::of(pair)).expect("a pair serializes");
        let stdout = self.run(input).await?;
        parse_output(&stdout)
    }

    /// Runs the program once with `input` on stdin; its stdout if it exits 0 in time.
    async fn run(&self, input: Vec<u8>) -> Result<Vec<u8>, Abstention> {
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn().map_err(|e| {
            Abstention::new(
                Reason::Crash,
                format!("cannot start `{}`: {e}", self.command),
            )
        })?;
        let pid = child.id();
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let feed = async move {
            // A program may exit without reading its input; its exit status tells what happened.
            let _ = stdin.write_all(&input).await;
        };
        let finished = async {
            let ((), output) = tokio::join!(feed, child.wait_with_output());
            output
        };
        let output = match tokio::time::timeout(self.timeout, finished).await {
            Ok(output) => output,
            Err(_) => {
                // Dropping the child killed the shell; its process group goes with it.
                kill_process_group(pid);
                return Err(Abstention::new(
                    Reason::Timeout,
                    format!(
                        "`{}` ran past {:?} and was killed",
                        self.command, self.timeout
                    ),
                ));
            }
        };
        let output = output.map_err(|e| {
            Abstention::new(Reason::Crash, format!("`{}` failed: {e}", self.command))
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Abstention::new(
                Reason::Crash,
                format!(
                    "`{}` exited with {}; stderr: {:?}",
                    self.command,
                    output.status,
                    tail(stderr.trim(), 300)
                ),
            ));
        }
        Ok(output.stdout)
    }
}

impl<'a> ProgramInput<'a> {
    pub fn of(pair: &'a Pair) -> Self {
        let response = |shown: &'a super::Shown| ProgramResponse {
            id: shown.response_id,
            text: &shown.text,
            prompt: shown.prompt.as_ref(),
        };
        ProgramInput {
            assignment_id: pair.assignment_id,
            group_id: pair.group_id,
            annotator: &pair.annotator,
            prompt: &pair.prompt,
            response_a: response(&pair.left),
            response_b: response(&pair.right),
        }
    }
}

/// The verdict in a program's stdout, or why it is bad output.
fn parse_output(stdout: &[u8]) -> Result<Verdict, Abstention> {
    let bad = |why: String| {
        let shown = clip(String::from_utf8_lossy(stdout).trim(), 200);
        Abstention::new(Reason::BadOutput, format!("{why}; stdout: {shown:?}"))
    };
    let output: ProgramOutput =
        serde_json::from_slice(stdout).map_err(|e| bad(format!("not the JSON contract: {e}")))?;
    if let Some(strength) = output.strength {
        if !(0.0..=1.0).contains(&strength) {
            return Err(bad(format!(
                "`strength` must be within 0–1. Given: {strength}"
            )));
        }
    }
    // Text fields cannot hold NUL; serialized JSON shows one as `\u0000`.
    let criteria_has_nul = output
        .criteria
        .as_ref()
        .is_some_and(|c| c.to_string().contains("\\u0000"));
    if output
        .rationale
        .as_deref()
        .is_some_and(|r| r.contains('\0'))
        || criteria_has_nul
    {
        return Err(bad("text holds a NUL character".into()));
    }
    Ok(Verdict {
        outcome: output.outcome,
        strength: output.strength,
        rationale: output.rationale,
        criteria: output.criteria,
        source: JudgmentSource::Rule,
    })
}

/// The last `max` characters of `text`.
fn tail(text: &str, max: usize) -> &str {
    let count = text.chars().count();
    match text.char_indices().nth(count.saturating_sub(max)) {
        Some((start, _)) if count > max => &text[start..],
        _ => text,
    }
}

/// Kills what the program left running. It runs as the leader of its own process group, whose id
/// is its pid; the group outlives the killed shell while any member lives, so the id is not reused.
#[cfg(unix)]
fn kill_process_group(pid: Option<u32>) {
    let Some(pgid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
        return;
    };
    // SAFETY: `kill` takes plain integers and touches no memory of ours; a negative id names the
    // process group the program was started in, which holds only what it started.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

#[cfg(not(unix))]
fn kill_process_group(_pid: Option<u32>) {}
