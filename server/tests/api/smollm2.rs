//! The real model: SmolLM2-135M-Instruct, imported from its GGUF into full precision (what
//! `flywheel serve` runs by default), and the GGUF served directly. `scripts/test.sh` fetches it
//! and sets FLYWHEEL_SMOLLM2_GGUF / FLYWHEEL_SMOLLM2_DIR; without them these tests are skipped,
//! unless CI is set.

use flywheel_server::engine::{
    ChatMessage, Engine, EngineConfig, Event, Generation, Prompt, Route, Sampling,
};
use flywheel_server::metrics::Metrics;
use flywheel_server::model_source::ModelSource;
use std::path::PathBuf;
use std::sync::Arc;

fn fixture(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => panic!("CI is set but {var} is not"),
        None => {
            eprintln!("WARNING: {var} not set; skipping a SmolLM2 test (scripts/test.sh sets it)");
            None
        }
    }
}

async fn greedy_answer(engine: &Engine, question: &str) -> String {
    let prompt = Prompt::Chat(vec![ChatMessage {
        role: "user".into(),
        content: question.into(),
    }]);
    let sampling = Sampling {
        n: 1,
        temperature: 0.0,
        top_p: 1.0,
        max_tokens: Some(32),
        stop: vec![],
        seed: Some(0),
        logprobs: false,
        top_logprobs: 0,
        presence_penalty: None,
        frequency_penalty: None,
    };
    let admitted = Arc::new(
        engine
            .admit(&prompt, sampling, Route::Default)
            .await
            .unwrap(),
    );
    let mut events = engine.start(admitted);
    while let Some(event) = events.recv().await {
        match event {
            Event::Finished(sample) => return sample.text,
            Event::Failed(e) => panic!("{e}"),
            Event::Delta { .. } => {}
        }
    }
    panic!("no sample")
}

async fn engine_for(source: ModelSource) -> Engine {
    let generation = Generation::load(&source, None, "smollm2".into(), 0, None)
        .await
        .unwrap();
    Engine::new(generation, EngineConfig::default(), Metrics::new())
}

const QUESTIONS: &[&str] = &[
    "What is the capital of France?",
    "What color is the sky on a clear day?",
    "How many legs does a spider have?",
    "Name a planet in our solar system.",
    "What do bees make?",
];

#[tokio::test]
async fn the_imported_smollm2_answers_a_simple_question_coherently_and_agrees_with_its_gguf() {
    let (Some(dir), Some(gguf)) = (
        fixture("FLYWHEEL_SMOLLM2_DIR"),
        fixture("FLYWHEEL_SMOLLM2_GGUF"),
    ) else {
        return;
    };
    let imported = engine_for(ModelSource::HfDir(dir)).await;
    let quantized = engine_for(ModelSource::Gguf(gguf)).await;

    let mut same = 0;
    let mut shared_prefix_chars = 0usize;
    let mut total_chars = 0usize;
    for (i, q) in QUESTIONS.iter().enumerate() {
        let a = greedy_answer(&imported, q).await;
        let b = greedy_answer(&quantized, q).await;
        if i == 0 {
            assert!(a.contains("Paris"), "imported: {a:?}");
        }
        same += usize::from(a == b);
        shared_prefix_chars += a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        total_chars += a.chars().count().max(b.chars().count());
        println!("Q: {q}\n  imported: {a:?}\n  gguf:     {b:?}");
    }
    println!(
        "greedy agreement, imported F32 vs GGUF Q4_1: {same}/{} identical answers, {:.0}% shared prefix",
        QUESTIONS.len(),
        100.0 * shared_prefix_chars as f64 / total_chars.max(1) as f64
    );
}
