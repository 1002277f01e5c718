//! Load generator for `bench/ingest_bench.py`: posts single judgments to a running server from
//! `--concurrency` keep-alive connections and prints the rate and latency percentiles as JSON.
//! Compiled, so that the client takes as little of the shared CPU as it can.
//!
//!     ingest_load URL KEY GROUPS_JSON TOTAL CONCURRENCY
//!
//! GROUPS_JSON holds `[[group_id, [response_id, …]], …]`, each group with at least 4 responses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type Groups = Vec<(String, Vec<String>)>;

fn body(groups: &Groups, i: usize, run: &str) -> Value {
    let (group, responses) = &groups[i % groups.len()];
    json!({
        "group_id": group,
        "response_a": responses[i % 4],
        "response_b": responses[(i + 1) % 4],
        "outcome": if i.is_multiple_of(2) { "a" } else { "b" },
        "annotator": format!("bench-{}", i % 7),
        "client_id": format!("ingest-{run}-{i}"),
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key, groups, total, concurrency] = args.as_slice() else {
        eprintln!("usage: ingest_load URL KEY GROUPS_JSON TOTAL CONCURRENCY");
        std::process::exit(2);
    };
    let groups: Arc<Groups> = Arc::new(
        serde_json::from_slice(&std::fs::read(groups).expect("groups file")).expect("groups JSON"),
    );
    let total: usize = total.parse().expect("TOTAL");
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY");
    let run = format!("{}", std::process::id());
    let endpoint = format!("{url}/v1/judgments");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");
        let (groups, next, endpoint, key, run) = (
            groups.clone(),
            next.clone(),
            endpoint.clone(),
            key.clone(),
            run.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let sent = Instant::now();
                let response = client
                    .post(&endpoint)
                    .bearer_auth(&key)
                    .json(&body(&groups, i, &run))
                    .send()
                    .await
                    .expect("request");
                let status = response.status();
                let text = response.text().await.expect("body");
                latencies.push(sent.elapsed());
                assert_eq!(status, 201, "{text}");
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "{}",
        json!({"rate": total as f64 / elapsed, "p50_ms": at(0.5), "p99_ms": at(0.99)})
    );
}
