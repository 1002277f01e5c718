use serde_json::{json, Value};

use crate::helpers::{greedy, spawn_app, MODEL};

#[tokio::test]
async fn a_chat_completion_has_the_openai_shape_and_our_extensions() {
    let app = spawn_app().await;

    let body = app.chat(greedy("Hello there", 12)).await;

    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["adapter"], 0);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string());
    assert!(matches!(
        choice["finish_reason"].as_str(),
        Some("stop" | "length")
    ));
    assert!(choice["response_id"].is_string() && body["group_id"].is_string());
    assert!(choice["logprobs"].is_null());
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn every_sample_is_stored_with_its_provenance_before_the_response_returns() {
    let app = spawn_app().await;

    let body = app
        .chat(json!({
            "model": MODEL, "messages": [{"role": "user", "content": "Tell me a story"}],
            "n": 3, "temperature": 0.9, "max_tokens": 10, "seed": 42, "user": "u-1",
        }))
        .await;

    let group = app
        .get_json(&format!(
            "/v1/groups/{}",
            body["group_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(group["kind"], "samples");
    assert_eq!(group["endpoint"], "chat");
    assert_eq!(group["adapter_version"], 0);
    assert_eq!(group["seed"], 42);
    assert_eq!(group["user"], "u-1");
    assert_eq!(
        group["prompt"],
        json!([{"role": "user", "content": "Tell me a story"}])
    );
    assert_eq!(group["params"]["sampling"]["temperature"], 0.9);
    assert_eq!(group["prompt_tokens"], body["usage"]["prompt_tokens"]);
    let responses = group["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 3);
    for (choice, stored) in body["choices"].as_array().unwrap().iter().zip(responses) {
        assert_eq!(stored["id"], choice["response_id"]);
        assert_eq!(stored["text"], choice["message"]["content"]);
        assert_eq!(stored["finish_reason"], choice["finish_reason"]);
        let ids = stored["token_ids"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.len() <= 10);
        assert_eq!(stored["logprobs"].as_array().unwrap().len(), ids.len());
        assert!(stored["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|lp| lp.as_f64().unwrap() <= 0.0));
    }
    let one = app
        .get_json(&format!(
            "/v1/responses/{}",
            responses[1]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(one["group_id"], group["id"]);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_samples_and_another_seed_does_not() {
    let app = spawn_app().await;
    let request = |seed: i64| {
        json!({
            "model": MODEL, "messages": [{"role": "user", "content": "Pick words"}],
            "n": 2, "temperature": 1.0, "max_tokens": 16, "seed": seed,
        })
    };
    let texts = |body: &Value| {
        body["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["message"]["content"].clone())
            .collect::<Vec<_>>()
    };

    let a = texts(&app.chat(request(7)).await);
    let b = texts(&app.chat(request(7)).await);
    let c = texts(&app.chat(request(8)).await);

    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(
        a[0], a[1],
        "the n samples of one request draw from different streams"
    );
}

#[tokio::test]
async fn logprobs_are_natural_logs_with_top_alternatives() {
    let app = spawn_app().await;
    let mut request = greedy("Numbers please", 8);
    request["logprobs"] = json!(true);
    request["top_logprobs"] = json!(20);

    let body = app.chat(request).await;

    let content = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert!(!content.is_empty());
    let group = app
        .get_json(&format!(
            "/v1/groups/{}",
            body["group_id"].as_str().unwrap()
        ))
        .await;
    let stored = group["responses"][0]["logprobs"].as_array().unwrap();
    let mut mass = 0.0;
    for (i, entry) in content.iter().enumerate() {
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 20);
        // Greedy: the chosen token is the most likely one.
        assert!(
            (entry["logprob"].as_f64().unwrap() - top[0]["logprob"].as_f64().unwrap()).abs() < 1e-6
        );
        assert!((entry["logprob"].as_f64().unwrap() - stored[i].as_f64().unwrap()).abs() < 1e-6);
        assert!(entry["bytes"].is_array());
        // Natural logs: the 20 most likely of ~300 tokens hold at most all the mass. Base-10
        // values (what mistral.rs reports) would sum to well over 1 here.
        mass = top
            .iter()
            .map(|t| t["logprob"].as_f64().unwrap().exp())
            .sum::<f64>();
        assert!(mass <= 1.0 + 1e-5, "{mass}");
    }
    assert!(mass > 0.0);
    // The bytes of the tokens spell the text exactly, even where a token holds part of a character.
    let bytes: Vec<u8> = content
        .iter()
        .flat_map(|e| {
            e["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
        })
        .collect();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(String::from_utf8_lossy(&bytes), text);
}

#[tokio::test]
async fn max_tokens_ends_the_sample_with_finish_reason_length() {
    let app = spawn_app().await;
    // A random tiny model rarely emits its end token, so 5 tokens end by length.
    let mut request = greedy("Go on", 5);
    request.as_object_mut().unwrap().remove("max_tokens");
    request["max_completion_tokens"] = json!(5);

    let body = app.chat(request).await;

    if body["choices"][0]["finish_reason"] == "length" {
        assert_eq!(body["usage"]["completion_tokens"], 5);
    } else {
        assert!(body["usage"]["completion_tokens"].as_u64().unwrap() <= 5);
    }
}

#[tokio::test]
async fn a_stop_sequence_cuts_the_text_before_it() {
    let app = spawn_app().await;
    let free = app.chat(greedy("Say something long", 40)).await;
    let text = free["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 6, "need some text to cut: {text:?}");
    let stop: String = chars[3..5].iter().collect();
    let expected = &text[..text.find(&stop).unwrap()];

    let mut request = greedy("Say something long", 40);
    request["stop"] = json!([stop]);
    let cut = app.chat(request).await;

    assert_eq!(cut["choices"][0]["message"]["content"], expected);
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn stop_sequences_with_multi_byte_characters_never_break_the_engine() {
    // mistral.rs 0.8.1 panics its engine on stop strings after invalid UTF-8; we match stops
    // ourselves, so such requests end cleanly and the next one is served.
    let app = spawn_app().await;
    for stop in [
        json!(["é", "日本"]),
        json!("\u{FFFD}"),
        json!(["\u{1F600}x", "ß"]),
    ] {
        let mut request = greedy("héllo 日本語 😀", 24);
        request["stop"] = stop;
        request["temperature"] = json!(1.0);
        app.chat(request).await;
    }
    app.chat(greedy("still alive?", 4)).await;
}

#[tokio::test]
async fn concurrent_requests_give_each_sample_the_text_it_gets_alone() {
    let app = spawn_app().await;
    let prompts = [
        "alpha",
        "beta gamma",
        "delta",
        "epsilon zeta eta",
        "theta",
        "iota",
        "kappa lambda",
        "mu",
    ];
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(app.chat(greedy(p, 16)).await["choices"][0]["message"]["content"].clone());
    }

    let mut handles = Vec::new();
    for p in prompts {
        let client = app.client.clone();
        let url = format!("{}/v1/chat/completions", app.address);
        let mut body = greedy(p, 16);
        body["n"] = json!(3);
        handles.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }));
    }
    for (handle, expected) in handles.into_iter().zip(alone) {
        let body = handle.await.unwrap();
        for choice in body["choices"].as_array().unwrap() {
            assert_eq!(choice["message"]["content"], expected);
        }
    }
}

#[tokio::test]
async fn content_parts_and_system_messages_are_accepted() {
    let app = spawn_app().await;
    let body = app.chat(json!({
        "model": MODEL, "temperature": 0, "max_tokens": 4,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]},
        ],
    })).await;
    let group = app
        .get_json(&format!(
            "/v1/groups/{}",
            body["group_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(group["prompt"][1]["content"], "Hi there");
}

#[tokio::test]
async fn the_model_can_be_named_with_its_version() {
    let app = spawn_app().await;
    let mut request = greedy("hi", 2);
    request["model"] = json!(format!("{MODEL}@0"));
    app.chat(request).await;
}

/// Every group the store holds, as `GET /v1/groups` lists them.
async fn stored_groups(app: &crate::helpers::TestApp) -> usize {
    app.get_json("/v1/groups?limit=100").await["data"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn store_false_serves_the_same_answer_without_logging_it() {
    // Arrange: one logged call, so the store is not empty and the answers can be compared.
    let app = spawn_app().await;
    let logged = app.chat(greedy("Keep this to yourself", 12)).await;
    assert_eq!(stored_groups(&app).await, 1);
    let mut request = greedy("Keep this to yourself", 12);
    request["store"] = json!(false);

    // Act
    let unlogged = app.chat(request).await;

    // Assert: the same greedy answer and usage, no ids, and nothing new in the store.
    assert_eq!(
        unlogged["choices"][0]["message"],
        logged["choices"][0]["message"]
    );
    assert_eq!(unlogged["usage"], logged["usage"]);
    assert!(unlogged.get("group_id").is_none(), "{unlogged}");
    assert!(unlogged["choices"][0].get("response_id").is_none());
    assert_eq!(stored_groups(&app).await, 1);
}

#[tokio::test]
async fn store_false_streams_without_ids_and_without_logging() {
    let app = spawn_app().await;
    let mut request = greedy("Stream but forget", 8);
    request["stream"] = json!(true);
    request["store"] = json!(false);
    request["stream_options"] = json!({"include_usage": true});

    let (chunks, done) = app.stream("/v1/chat/completions", &request).await;

    assert!(done);
    assert!(chunks.len() >= 2);
    for chunk in &chunks {
        assert!(chunk.get("group_id").is_none(), "{chunk}");
        for choice in chunk["choices"].as_array().unwrap() {
            assert!(choice.get("response_id").is_none(), "{chunk}");
        }
    }
    assert!(
        chunks.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(stored_groups(&app).await, 0);
}

#[tokio::test]
async fn store_must_be_a_boolean() {
    let app = spawn_app().await;
    let mut request = greedy("Hi", 4);
    request["store"] = json!("no");

    let response = app.post("/v1/chat/completions", &request).await;

    crate::helpers::assert_error(response, 400, None).await;
    assert_eq!(stored_groups(&app).await, 0);
}
