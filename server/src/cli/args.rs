//! The flag groups several subcommands share: where the store is (every command), a training
//! job's settings (`train`, `worker`, `serve`) and when the worker trains (`worker`, `serve`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use flywheel_judge::GateConfig;
use flywheel_store::QualityGate;
use flywheel_trainer::{
    AdvantageConfig, Aggregation, Algorithm, Baseline, Compute, ConsistencyConfig, Grpo,
    GrpoRewards, GrpoSettings, JobConfig, LoraTargets, RolloutCheck, ScaleRewards,
    StabilityMeasure, TrainDevice, TrainDtype, WorkerConfig,
};

use crate::arena::duels::DuelConfig;
use crate::arena::{ArenaConfig, Promotion};

/// Where the store lives; shared by every subcommand that needs it.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// `postgres://user@host/db`, or `sqlite://path/to/file.db`. Default: an embedded SQLite file.
    #[arg(long, env = "DATABASE_URL", default_value = flywheel_store::DEFAULT_SQLITE_URL)]
    pub database_url: String,
    /// Most database connections open at once. Raise it towards the number of concurrent writers
    /// (for example judgment ingestion at high concurrency on Postgres).
    #[arg(long, env = "FLYWHEEL_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
}

impl StoreArgs {
    pub async fn open(&self) -> anyhow::Result<flywheel_store::Store> {
        use anyhow::Context;
        let pool = flywheel_store::PoolConfig {
            max_connections: self.db_max_connections,
        };
        let store = flywheel_store::Store::connect_with(&self.database_url, &pool)
            .await
            .with_context(|| format!("cannot open the store at {}", redact(&self.database_url)))?;
        store.migrate().await.context("cannot apply migrations")?;
        Ok(store)
    }
}

/// A flag's value in [0, 1].
pub(crate) fn share(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("must be a number from 0 to 1. Given: {value}")),
    }
}

/// A reward weight: finite and not negative.
fn weight(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "must be a finite number, 0 or more. Given: {value}"
        )),
    }
}

/// The k3 KL's cap: above 0, `inf` for none.
fn kl_cap(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if v > 0.0 => Ok(v),
        _ => Err(format!(
            "must be a number above 0, or inf for the exact k3. Given: {value}"
        )),
    }
}

/// Above 0 and finite.
fn positive_finite(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("must be a finite number above 0. Given: {value}")),
    }
}

/// A database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The settings of a training job shared by `train` and `worker`.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Optimiser steps. The defaults (24 steps of 4 pairs at a peak learning rate of 2e-4) are
    /// the learning benchmark's (bench/learning/results.md): on SmolLM2-135M they move a round's
    /// held-out win-rate in a few minutes on 2 CPU cores, at a per-token KL to the base of about
    /// 0.1 after one round.
    #[arg(long, env = "FLYWHEEL_TRAIN_STEPS", default_value_t = 24)]
    pub steps: usize,
    /// Peak learning rate (10% linear warmup, then linear decay to 0).
    #[arg(long, env = "FLYWHEEL_TRAIN_LR", default_value_t = 2e-4)]
    pub lr: f64,
    /// LoRA rank of a new adapter (α = 2·rank; default 16). A child of an
    /// adapter keeps its parent's LoRA shape; a different rank is an error.
    #[arg(long, env = "FLYWHEEL_TRAIN_RANK")]
    pub rank: Option<usize>,
    /// Which projections a new adapter adapts: attention (q/k/v/o, the default) or all-linear
    /// (also the MLP's gate/up/down, PEFT's "all-linear"). A child keeps its parent's targets;
    /// different ones are an error.
    #[arg(long, env = "FLYWHEEL_TRAIN_LORA_TARGETS")]
    pub lora_targets: Option<LoraTargets>,
    /// Pairs per step (the GRPO family: groups per step).
    #[arg(long, env = "FLYWHEEL_TRAIN_BATCH", default_value_t = 4)]
    pub batch: usize,
    /// Where adapter directories go: `<adapter-dir>/<version>/`.
    #[arg(
        long = "adapter-dir",
        alias = "out-dir",
        env = "FLYWHEEL_ADAPTER_DIR",
        default_value = "adapters"
    )]
    pub out_dir: PathBuf,
    /// Learn from responses of every adapter version, not only the parent's (off-policy).
    #[arg(long, env = "FLYWHEEL_TRAIN_ALL_VERSIONS")]
    pub all_versions: bool,
    /// Seeds LoRA initialisation and dropout.
    #[arg(long, env = "FLYWHEEL_TRAIN_SEED", default_value_t = 0)]
    pub seed: u64,
    /// The device training runs on: cpu, cuda or cuda:N (default: cuda in a `--features cuda`
    /// build, cpu otherwise). Serving picks its device itself.
    #[arg(long = "device", visible_alias = "train-device", env = "FLYWHEEL_TRAIN_DEVICE",
          default_value_t = TrainDevice::default_for_build())]
    pub device: TrainDevice,
    /// The frozen base's dtype while training: f32, or bf16 (half the memory; the LoRA weights,
    /// norms and log-probs stay f32).
    #[arg(long = "dtype", visible_alias = "train-dtype", env = "FLYWHEEL_TRAIN_DTYPE",
          default_value_t = TrainDtype::F32)]
    pub dtype: TrainDtype,
    #[command(flatten)]
    pub grpo: GrpoArgs,
}

/// The GRPO family's settings (`--algo grpo`, `--algo consistency-grpo`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "GRPO")]
pub struct GrpoArgs {
    /// `grpo`'s rewards: `posted` (POST /v1/rewards) or `win-rate` (each response's win-rate in
    /// its group from pairwise judgments, SPO).
    #[arg(
        long = "grpo-rewards",
        env = "FLYWHEEL_GRPO_REWARDS",
        default_value = "posted"
    )]
    pub rewards: GrpoRewards,
    /// The loss aggregation.
    #[arg(long = "grpo-loss", env = "FLYWHEEL_GRPO_LOSS", value_enum, default_value_t = LossFlag::Dapo)]
    pub loss: LossFlag,
    /// How centred rewards are scaled: group (its std), batch (one std) or none (Dr. GRPO).
    #[arg(long, env = "FLYWHEEL_GRPO_SCALE_REWARDS", value_enum, default_value_t = ScaleFlag::Group)]
    pub scale_rewards: ScaleFlag,
    /// The baseline: the group mean, or leave-one-out (RLOO).
    #[arg(long = "grpo-baseline", env = "FLYWHEEL_GRPO_BASELINE", value_enum, default_value_t = BaselineFlag::Mean)]
    pub baseline: BaselineFlag,
    /// k3 KL coefficient to the base model (0 turns the term off).
    #[arg(long = "kl-beta", env = "FLYWHEEL_GRPO_BETA", default_value_t = 0.04)]
    pub beta: f64,
    /// Above this log-ratio log π_ref − log π_θ the k3 KL term continues as its tangent, so one
    /// token the policy has all but ruled out cannot own a step (`inf`: the exact k3).
    #[arg(long, env = "FLYWHEEL_GRPO_KL_LINEAR_ABOVE", default_value_t = 2.5, value_parser = kl_cap)]
    pub kl_linear_above: f64,
    /// Lower clip ε_low of the ratio.
    #[arg(long, env = "FLYWHEEL_GRPO_EPSILON_LOW", default_value_t = 0.2)]
    pub epsilon_low: f64,
    /// Upper clip ε_high of the ratio (above ε_low: DAPO's clip-higher).
    #[arg(long, env = "FLYWHEEL_GRPO_EPSILON_HIGH", default_value_t = 0.28)]
    pub epsilon_high: f64,
    /// consistency-grpo's unit extractor: a JSON file of items with aliases and regular
    /// expressions (see README, "Consistency-GRPO").
    #[arg(long, env = "FLYWHEEL_UNITS")]
    pub units: Option<PathBuf>,
    /// Weight of helpfulness in the consistency reward.
    #[arg(long, env = "FLYWHEEL_W_HELP", default_value_t = 0.3, value_parser = weight)]
    pub w_help: f64,
    /// Weight of stability in the consistency reward.
    #[arg(long, env = "FLYWHEEL_W_STAB", default_value_t = 0.7, value_parser = weight)]
    pub w_stab: f64,
    /// N_max of the helpfulness `min(1, log2(1+|U|)/log2(1+N_max))`: how many units earn full
    /// helpfulness in the training reward (`GET /v1/consistency` always reports with §5.2's 7).
    #[arg(long = "n-max", env = "FLYWHEEL_N_MAX", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub n_max: u64,
    /// The per-response stability: mean pairwise Jaccard, leave-one-out agreement (`loo`), or the
    /// answer's leave-one-out share of the group's consistency entropy (`entropy`, ours).
    #[arg(long, env = "FLYWHEEL_STABILITY", value_enum, default_value_t = StabilityFlag::Jaccard)]
    pub stability: StabilityFlag,
    /// What two answers with no units score as agreeing, in [0, 1]: 1 (research §5.2) or 0, so
    /// that only shared items count as agreement; with `--stability entropy`, the factor on the
    /// positive share of an answer that names nothing.
    #[arg(long, env = "FLYWHEEL_EMPTY_AGREEMENT", default_value_t = 1.0, value_parser = share)]
    pub empty_agreement: f64,
    /// consistency-grpo's quality gate, multiplying each consistency reward so that consistent but
    /// wrong answers earn nothing: `posted` (the response's mean posted reward, in [0, 1]) or
    /// `judgments` (its mean score in the pairwise judgments naming it, 0 when both were bad).
    /// Responses without a gate are left out of training. Off unless given.
    #[arg(long = "quality-gate", env = "FLYWHEEL_QUALITY_GATE")]
    pub quality_gate: Option<QualityGate>,
    /// The largest mean per-token gap (nats) between a response's stored log-probs and the
    /// policy's before the response is refused as not the policy's own.
    #[arg(long, env = "FLYWHEEL_MAX_LOGPROB_GAP", default_value_t = 0.05)]
    pub max_logprob_gap: f64,
    /// Drift stop: end a run at the first batch whose mean k3 KL to the policy that sampled it
    /// exceeds this, rolling the adapter back to before its last update (PPO's early stopping on
    /// the approximate KL). Off unless given.
    #[arg(long = "grpo-stop-kl", env = "FLYWHEEL_GRPO_STOP_KL", value_parser = positive_finite)]
    pub stop_kl: Option<f64>,
}

/// `--grpo-loss`: how per-token terms are averaged (research/algorithms.md §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LossFlag {
    Grpo,
    Bnpo,
    Dapo,
    #[value(name = "dr_grpo")]
    DrGrpo,
}

/// `--scale-rewards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaleFlag {
    Group,
    Batch,
    None,
}

/// `--grpo-baseline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineFlag {
    Mean,
    Loo,
}

/// `--stability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StabilityFlag {
    Jaccard,
    Loo,
    Entropy,
}

impl GrpoArgs {
    /// The settings; `max_completion_length` is `dr_grpo`'s normaliser (the generation cap).
    pub fn settings(&self, max_completion_length: usize) -> GrpoSettings {
        let aggregation = match self.loss {
            LossFlag::Grpo => Aggregation::Grpo,
            LossFlag::Bnpo => Aggregation::Bnpo,
            LossFlag::Dapo => Aggregation::Dapo,
            LossFlag::DrGrpo => Aggregation::DrGrpo {
                max_completion_length,
            },
        };
        let scale_rewards = match self.scale_rewards {
            ScaleFlag::Group => ScaleRewards::Group,
            ScaleFlag::Batch => ScaleRewards::Batch,
            ScaleFlag::None => ScaleRewards::None,
        };
        let baseline = match self.baseline {
            BaselineFlag::Mean => Baseline::Mean,
            BaselineFlag::Loo => Baseline::LeaveOneOut,
        };
        let defaults = GrpoSettings::default();
        GrpoSettings {
            loss: Grpo {
                advantages: AdvantageConfig {
                    baseline,
                    scale_rewards,
                    ..defaults.loss.advantages
                },
                epsilon_low: self.epsilon_low,
                epsilon_high: self.epsilon_high,
                beta: self.beta,
                kl_linear_above: self.kl_linear_above,
                aggregation,
            },
            rewards: self.rewards,
            units: self.units.clone(),
            consistency: ConsistencyConfig {
                w_help: self.w_help,
                w_stab: self.w_stab,
                stability: match self.stability {
                    StabilityFlag::Jaccard => StabilityMeasure::Jaccard,
                    StabilityFlag::Loo => StabilityMeasure::LeaveOneOutAgreement,
                    StabilityFlag::Entropy => StabilityMeasure::EntropyShare,
                },
                empty_agreement: self.empty_agreement,
                n_max: usize::try_from(self.n_max).expect("--n-max is at most 1000"),
            },
            quality_gate: self.quality_gate,
            check: RolloutCheck {
                max_gap: self.max_logprob_gap,
            },
            stop_kl: self.stop_kl,
        }
    }
}

impl JobArgs {
    pub fn config(&self, algorithm: Algorithm, model: PathBuf) -> JobConfig {
        JobConfig {
            algorithm,
            model,
            parent: None,
            since: None,
            steps: self.steps,
            lr: self.lr,
            rank: self.rank,
            lora_targets: self.lora_targets,
            batch: self.batch,
            out_dir: self.out_dir.clone(),
            all_versions: self.all_versions,
            seed: self.seed,
            // dr_grpo divides by the generation cap; the server's default `max_tokens` is 512.
            grpo: self.grpo.settings(512),
            compute: Compute {
                device: self.device,
                dtype: self.dtype,
            },
        }
    }
}

/// When the worker trains, shared by `worker` and `serve`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Trainer worker")]
pub struct WorkerSettings {
    /// The objective each run optimises: sppo, inpo, dpo, ipo, rpo, grpo or consistency-grpo.
    #[arg(
        long = "worker-algo",
        env = "FLYWHEEL_WORKER_ALGO",
        default_value = "dpo"
    )]
    pub algo: Algorithm,
    /// New judgments of the active adapter's samples needed to start a run (for grpo and
    /// consistency-grpo: new rewarded, or variant, groups).
    #[arg(long, env = "FLYWHEEL_WORKER_MIN_JUDGMENTS", default_value_t = 64, value_parser = clap::value_parser!(i64).range(1..))]
    pub min_new_judgments: i64,
    /// Seconds between checks for new judgments.
    #[arg(long, env = "FLYWHEEL_WORKER_INTERVAL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub worker_interval_secs: u64,
    /// What happens to a new adapter: `gate` (a candidate until blind duels against the
    /// incumbent promote or retire it), `manual` (a candidate until an admin decides), `always`
    /// (activated at once, unchecked).
    #[arg(long, env = "FLYWHEEL_PROMOTION", value_enum, default_value_t = Promotion::Gate)]
    pub promotion: Promotion,
    #[command(flatten)]
    pub job: JobArgs,
}

impl WorkerSettings {
    pub fn config(&self, model: PathBuf) -> WorkerConfig {
        WorkerConfig {
            job: self.job.config(self.algo, model),
            min_new_judgments: self.min_new_judgments,
            activate: self.promotion == Promotion::Always,
            interval: Duration::from_secs(self.worker_interval_secs),
        }
    }
}

/// How the arena judges candidates (`serve`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Arena")]
pub struct ArenaArgs {
    /// Duel judgments needed before the gate promotes or retires a candidate.
    #[arg(long, env = "FLYWHEEL_GATE_MIN_JUDGMENTS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub gate_min_judgments: u64,
    /// Duel judgments after which a candidate still undecided is retired.
    #[arg(long, env = "FLYWHEEL_GATE_MAX_JUDGMENTS", default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..))]
    pub gate_max_judgments: u64,
    /// Seconds between the arena's looks at its candidates (duels to sample, the gate).
    #[arg(long, env = "FLYWHEEL_ARENA_INTERVAL_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub arena_interval_secs: u64,
    /// Tokens each side of a duel may generate.
    #[arg(long, env = "FLYWHEEL_DUEL_MAX_TOKENS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub duel_max_tokens: u32,
    /// Sampling temperature of duels (both sides use it, with the same seed).
    #[arg(long, env = "FLYWHEEL_DUEL_TEMPERATURE", default_value_t = 0.7)]
    pub duel_temperature: f64,
    /// Do not run the arena in this process: no duels are sampled and the gate does not decide
    /// here (another replica may).
    #[arg(long, env = "FLYWHEEL_NO_ARENA")]
    pub no_arena: bool,
}

impl ArenaArgs {
    /// The arena's settings under `promotion`.
    ///
    /// # Errors
    /// A minimum above the maximum, or a temperature outside `[0, 2]`.
    pub fn config(&self, promotion: Promotion) -> anyhow::Result<ArenaConfig> {
        if self.gate_min_judgments > self.gate_max_judgments {
            anyhow::bail!(
                "--gate-min-judgments ({}) must not exceed --gate-max-judgments ({})",
                self.gate_min_judgments,
                self.gate_max_judgments
            );
        }
        if !(0.0..=2.0).contains(&self.duel_temperature) {
            anyhow::bail!(
                "--duel-temperature must be from 0 to 2. Given: {}",
                self.duel_temperature
            );
        }
        Ok(ArenaConfig {
            promotion,
            gate: GateConfig {
                min_judgments: self.gate_min_judgments as usize,
                max_judgments: self.gate_max_judgments as usize,
                ..GateConfig::default()
            },
            duels: DuelConfig {
                temperature: self.duel_temperature,
                max_tokens: self.duel_max_tokens,
                ..DuelConfig::default()
            },
            interval: Duration::from_secs(self.arena_interval_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_pool_size_flag_reaches_the_store_and_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let args = |n| super::StoreArgs {
            database_url: format!("sqlite://{}", dir.path().join("f.db").display()),
            db_max_connections: n,
        };
        assert!(args(0).open().await.is_err());
        assert!(args(4).open().await.is_ok());
    }

    #[test]
    fn the_consistency_flags_reach_the_grpo_settings() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            grpo: super::GrpoArgs,
        }
        let parse = |args: &[&str]| {
            Flags::try_parse_from(std::iter::once("flywheel").chain(args.iter().copied()))
                .map(|f| f.grpo.settings(64).consistency)
        };
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults, flywheel_trainer::ConsistencyConfig::default());
        let strict = parse(&["--stability", "loo", "--empty-agreement", "0"]).unwrap();
        assert_eq!(
            strict.stability,
            flywheel_trainer::StabilityMeasure::LeaveOneOutAgreement
        );
        assert_eq!(strict.empty_agreement, 0.0);
        assert_eq!(
            parse(&["--stability", "entropy"]).unwrap().stability,
            flywheel_trainer::StabilityMeasure::EntropyShare
        );
        assert!(parse(&["--stability", "cosine"]).is_err());
        assert_eq!(parse(&["--n-max", "1"]).unwrap().n_max, 1);
        // Out-of-range settings are refused when the command starts, not at the first run.
        for bad in [
            &["--empty-agreement", "2"][..],
            &["--n-max", "0"],
            &["--n-max", "-1"],
            &["--w-help", "-0.1"],
            &["--w-stab", "NaN"],
            &["--w-stab", "inf"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn every_grpo_flag_value_reaches_its_own_setting() {
        use clap::Parser;
        use flywheel_trainer::{Aggregation, Baseline, ScaleRewards};
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            grpo: super::GrpoArgs,
        }
        let loss = |s: &str| {
            Flags::try_parse_from(["flywheel", "--grpo-loss", s]).map(|f| f.grpo.settings(64).loss)
        };
        assert_eq!(loss("grpo").unwrap().aggregation, Aggregation::Grpo);
        assert_eq!(loss("bnpo").unwrap().aggregation, Aggregation::Bnpo);
        assert_eq!(loss("dapo").unwrap().aggregation, Aggregation::Dapo);
        assert_eq!(
            loss("dr_grpo").unwrap().aggregation,
            Aggregation::DrGrpo {
                max_completion_length: 64
            }
        );
        assert!(loss("ppo").is_err());
        let parse = |args: &[&str]| {
            Flags::try_parse_from(std::iter::once("flywheel").chain(args.iter().copied()))
                .map(|f| f.grpo.settings(64).loss.advantages)
        };
        let rloo = parse(&["--scale-rewards", "none", "--grpo-baseline", "loo"]).unwrap();
        assert_eq!(rloo.scale_rewards, ScaleRewards::None);
        assert_eq!(rloo.baseline, Baseline::LeaveOneOut);
        let batch = parse(&["--scale-rewards", "batch"]).unwrap();
        assert_eq!(batch.scale_rewards, ScaleRewards::Batch);
        assert_eq!(batch.baseline, Baseline::Mean);
        assert!(parse(&["--scale-rewards", "token"]).is_err());
        let kl = |args: &[&str]| {
            Flags::try_parse_from(std::iter::once("flywheel").chain(args.iter().copied()))
                .map(|f| f.grpo.settings(64).loss.kl_linear_above)
        };
        assert_eq!(
            kl(&[]).unwrap(),
            flywheel_trainer::GrpoSettings::default()
                .loss
                .kl_linear_above
        );
        assert_eq!(kl(&["--kl-linear-above", "1.5"]).unwrap(), 1.5);
        assert_eq!(kl(&["--kl-linear-above", "inf"]).unwrap(), f64::INFINITY);
        for bad in ["0", "-1", "NaN", "x"] {
            assert!(
                kl(&["--kl-linear-above", bad]).is_err(),
                "{bad} was accepted"
            );
        }
        let stop = |args: &[&str]| {
            Flags::try_parse_from(std::iter::once("flywheel").chain(args.iter().copied()))
                .map(|f| f.grpo.settings(64).stop_kl)
        };
        assert_eq!(stop(&[]).unwrap(), None);
        assert_eq!(stop(&["--grpo-stop-kl", "0.05"]).unwrap(), Some(0.05));
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(
                stop(&["--grpo-stop-kl", bad]).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
