use serde_json::json;

use crate::helpers::{greedy, spawn_app, MODEL};

#[tokio::test]
async fn a_streamed_chat_matches_the_stored_group_and_ends_with_usage_and_done() {
    let app = spawn_app().await;
    let mut request = greedy("Stream to me", 12);
    request["stream"] = json!(true);
    request["n"] = json!(2);
    request["stream_options"] = json!({"include_usage": true});

    let (chunks, done) = app.stream("/v1/chat/completions", &request).await;

    assert!(done);
    let group_id = chunks[0]["group_id"].as_str().unwrap().to_string();
    let mut texts = [String::new(), String::new()];
    let mut finish = [None, None];
    let mut roles = 0;
    for chunk in &chunks[..chunks.len() - 1] {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["group_id"], group_id.as_str());
        assert_eq!(chunk["adapter"], 0);
        assert!(chunk["usage"].is_null());
        let choice = &chunk["choices"][0];
        let i = choice["index"].as_u64().unwrap() as usize;
        if choice["delta"]["role"] == "assistant" {
            roles += 1;
        }
        if let Some(content) = choice["delta"]["content"].as_str() {
            texts[i].push_str(content);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish[i] = Some(reason.to_string());
        }
    }
    assert_eq!(roles, 2, "the first chunk of each choice names the role");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    let usage = &last["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);

    // Stored before [DONE]: reading it right away finds it.
    let group = app.get_json(&format!("/v1/groups/{group_id}")).await;
    for (i, response) in group["responses"].as_array().unwrap().iter().enumerate() {
        assert_eq!(response["text"], texts[i].as_str());
        assert_eq!(
            Some(response["finish_reason"].as_str().unwrap().to_string()),
            finish[i]
        );
    }
    assert_eq!(group["prompt_tokens"], usage["prompt_tokens"]);
}

#[tokio::test]
async fn a_streamed_answer_equals_the_unstreamed_one() {
    let app = spawn_app().await;
    let whole = app.chat(greedy("Same either way", 16)).await;
    let mut request = greedy("Same either way", 16);
    request["stream"] = json!(true);

    let (chunks, _) = app.stream("/v1/chat/completions", &request).await;

    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(
        chunks.iter().all(|c| c["usage"].is_null()),
        "no usage chunk unless asked"
    );
}

#[tokio::test]
async fn streamed_completions_carry_text_and_logprobs() {
    let app = spawn_app().await;
    let request = json!({
        "model": MODEL, "prompt": "Once upon", "max_tokens": 6, "temperature": 0,
        "stream": true, "logprobs": 2, "stream_options": {"include_usage": true},
    });

    let (chunks, done) = app.stream("/v1/completions", &request).await;

    assert!(done);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    let group = app
        .get_json(&format!(
            "/v1/groups/{}",
            chunks[0]["group_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(group["responses"][0]["text"], text.as_str());
    assert_eq!(group["endpoint"], "completion");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["logprobs"]["token_logprobs"]
            .as_array()
            .is_some_and(|a| !a.is_empty())));
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        group["completion_tokens"]
    );
}
