use serde_json::{json, Value};

use crate::helpers::{assert_error, greedy, spawn_app, spawn_app_with, AppOptions, TestApp};

/// A logged group of `n` samples: `(group_id, response ids in choice order)`.
pub async fn sampled_group(app: &TestApp, n: usize) -> (String, Vec<String>) {
    let mut request = greedy("judge us", 3);
    request["n"] = json!(n);
    request["temperature"] = json!(1.0);
    let body = app.chat(request).await;
    let responses = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["response_id"].as_str().unwrap().to_string())
        .collect();
    (body["group_id"].as_str().unwrap().to_string(), responses)
}

pub fn judgment(group: &str, a: &str, b: &str, outcome: &str) -> Value {
    json!({
        "group_id": group, "response_a": a, "response_b": b,
        "outcome": outcome, "annotator": "ann-1",
    })
}

#[tokio::test]
async fn a_posted_judgment_is_committed_before_the_201() {
    let app = spawn_app().await;
    let (group, r) = sampled_group(&app, 2).await;
    let mut body = judgment(&group, &r[0], &r[1], "a");
    body["strength"] = json!(0.8);
    body["rationale"] = json!("more precise");
    body["criteria"] = json!(["helpful"]);

    let response = app.post("/v1/judgments", &body).await;

    assert_eq!(response.status(), 201);
    let stored: Value = response.json().await.unwrap();
    let id = stored["id"].as_str().unwrap().parse().unwrap();
    let read_back = app.store.get_judgment(id).await.unwrap();
    assert_eq!(read_back.outcome, flywheel_store::Outcome::A);
    assert_eq!(read_back.strength, Some(0.8));
    assert_eq!(read_back.source, flywheel_store::JudgmentSource::Human);
    assert_eq!(stored["rationale"], "more precise");
}

#[tokio::test]
async fn the_same_key_replays_and_a_different_body_under_it_is_a_409() {
    let app = spawn_app().await;
    let (group, r) = sampled_group(&app, 2).await;
    let body = judgment(&group, &r[0], &r[1], "tie");
    let post_with_key = |body: Value| {
        app.client
            .post(app.url("/v1/judgments"))
            .header("Idempotency-Key", "judgment-7")
            .json(&body)
            .send()
    };

    let first = post_with_key(body.clone()).await.unwrap();
    let again = post_with_key(body.clone()).await.unwrap();
    let mut changed = body.clone();
    changed["outcome"] = json!("b");
    let conflicting = post_with_key(changed).await.unwrap();
    let mut by_field = body.clone();
    by_field["client_id"] = json!("judgment-7");
    let same_key_in_body = app.post("/v1/judgments", &by_field).await;

    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    assert_error(conflicting, 409, None).await;
    assert_eq!(same_key_in_body.status(), 200);
    let listed = app.get_json(&format!("/v1/judgments?group={group}")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn each_invalid_judgment_is_a_400_naming_its_field() {
    let app = spawn_app().await;
    let (group, r) = sampled_group(&app, 2).await;
    let (other_group, other) = sampled_group(&app, 2).await;
    let absent = uuid::Uuid::now_v7().to_string();
    let base = judgment(&group, &r[0], &r[1], "a");
    let cases = [
        (json!({"outcome": "left"}), "outcome"),
        (json!({"source": "crowd"}), "source"),
        (json!({"strength": 1.5}), "strength"),
        (json!({"response_b": r[0]}), "response_b"),
        (json!({"response_b": other[0]}), "response_b"),
        (json!({"response_a": absent}), "response_a"),
        (json!({"group_id": absent}), "group_id"),
        (json!({"group_id": other_group}), "response_a"),
        (json!({"annotator": ""}), "annotator"),
        (json!({"group_id": "nope"}), "group_id"),
        (json!({"winner": "a"}), "winner"),
        (json!({"client_id": ""}), "client_id"),
    ];
    for (patch, param) in cases {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        assert_error(app.post("/v1/judgments", &body).await, 400, Some(param)).await;
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("outcome");
    assert_error(
        app.post("/v1/judgments", &missing).await,
        400,
        Some("outcome"),
    )
    .await;
    let listed = app.get_json("/v1/judgments").await;
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn a_batch_is_stored_all_or_nothing() {
    let app = spawn_app().await;
    let (group, r) = sampled_group(&app, 3).await;
    let good = [
        judgment(&group, &r[0], &r[1], "a"),
        judgment(&group, &r[1], &r[2], "b"),
    ];
    let mut bad = judgment(&group, &r[0], &r[2], "tie");
    bad["strength"] = json!(-1);

    let refused = app
        .post(
            "/v1/judgments",
            &json!({"judgments": [good[0], good[1], bad]}),
        )
        .await;
    let nothing = app.get_json("/v1/judgments").await;
    let stored = app.post("/v1/judgments", &json!({"judgments": good})).await;

    let body = assert_error(refused, 400, Some("strength")).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("judgment 3 of 3"),
        "{body}"
    );
    assert_eq!(nothing["data"], json!([]));
    assert_eq!(stored.status(), 201);
    let stored: Value = stored.json().await.unwrap();
    assert_eq!(stored["created"], 2);
    assert_eq!(stored["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_malformed_batch_item_is_named_by_its_position() {
    let app = spawn_app().await;
    let (group, r) = sampled_group(&app, 2).await;
    let mut second = judgment(&group, &r[0], &r[1], "a");
    second["outcome"] = json!("maybe");
    let batch = json!({"judgments": [judgment(&group, &r[0], &r[1], "a"), second]});

    let response = app.post("/v1/judgments", &batch).await;

    assert_error(response, 400, Some("judgments[1].outcome")).await;
    let too_many = json!({"judgments": vec![judgment(&group, &r[0], &r[1], "a"); 1001]});
    assert_error(
        app.post("/v1/judgments", &too_many).await,
        400,
        Some("judgments"),
    )
    .await;
}

#[tokio::test]
async fn judgments_are_listed_newest_first_with_filters_and_a_cursor() {
    let app = spawn_app().await;
    let (group, r) = sampled_group(&app, 2).await;
    let (other_group, o) = sampled_group(&app, 2).await;
    let mut ids = Vec::new();
    for (g, resp, source) in [
        (&group, &r, "human"),
        (&other_group, &o, "model"),
        (&group, &r, "rule"),
    ] {
        let mut body = judgment(g, &resp[0], &resp[1], "a");
        body["source"] = json!(source);
        body["annotator"] = json!(format!("{source}-judge"));
        let stored: Value = app.post("/v1/judgments", &body).await.json().await.unwrap();
        ids.push(stored["id"].clone());
    }
    ids.reverse();

    let page1 = app.get_json("/v1/judgments?limit=2").await;
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = app
        .get_json(&format!("/v1/judgments?limit=2&cursor={cursor}"))
        .await;
    let of_group = app.get_json(&format!("/v1/judgments?group={group}")).await;
    let models = app.get_json("/v1/judgments?source=model").await;
    let by_rule = app.get_json("/v1/judgments?annotator=rule-judge").await;
    let base = app.get_json("/v1/judgments?adapter=0").await;
    let future = app
        .get_json("/v1/judgments?since=2999-01-01T00:00:00Z")
        .await;

    let ids_of = |page: &Value| -> Vec<Value> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].clone())
            .collect()
    };
    assert_eq!([ids_of(&page1), ids_of(&page2)].concat(), ids);
    assert!(page2["next_cursor"].is_null());
    assert_eq!(ids_of(&of_group), vec![ids[0].clone(), ids[2].clone()]);
    assert_eq!(ids_of(&models), vec![ids[1].clone()]);
    assert_eq!(ids_of(&by_rule), vec![ids[0].clone()]);
    assert_eq!(ids_of(&base).len(), 3);
    assert_eq!(future["data"], json!([]));
    for (query, param) in [
        ("source=crowd", "source"),
        ("limit=0", "limit"),
        ("group=x", "group"),
        ("adapter=x", "adapter"),
    ] {
        assert_error(
            app.get(&format!("/v1/judgments?{query}")).await,
            400,
            Some(param),
        )
        .await;
    }
}

#[tokio::test]
async fn preferences_count_ties_half_and_fall_back_to_bradley_terry_when_sparse() {
    let app = spawn_app().await;
    let (group, r) = sampled_group(&app, 3).await;
    // Every pair judged: counting. r0 beats r1, r0 ties r2, r1 beats r2 (outcome `b` of (r2, r1)).
    for (a, b, outcome) in [(0, 1, "a"), (0, 2, "tie"), (2, 1, "b")] {
        app.post("/v1/judgments", &judgment(&group, &r[a], &r[b], outcome))
            .await;
    }
    let (sparse, s) = sampled_group(&app, 3).await;
    app.post("/v1/judgments", &judgment(&sparse, &s[0], &s[1], "a"))
        .await;

    let complete = app
        .get_json(&format!("/v1/groups/{group}/preferences"))
        .await;
    let partial = app
        .get_json(&format!("/v1/groups/{sparse}/preferences"))
        .await;

    assert_eq!(complete["estimator"], "counting");
    assert_eq!(complete["judgments"], 3);
    let rates: Vec<f64> = complete["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["win_rate"].as_f64().unwrap())
        .collect();
    // (½ + wins) / (1 + games): r0 = (½ + 1.5)/3, r1 = (½ + 1)/3, r2 = (½ + 0.5)/3.
    let expected = [2.0 / 3.0, 1.5 / 3.0, 1.0 / 3.0];
    for (got, want) in rates.iter().zip(expected) {
        assert!((got - want).abs() < 1e-12, "{rates:?}");
    }
    assert_eq!(partial["estimator"], "bradley_terry");
    let p = &partial["responses"];
    assert!(
        p[0]["win_rate"].as_f64().unwrap() > p[1]["win_rate"].as_f64().unwrap(),
        "{partial}"
    );
    assert_eq!(p[2]["judgments"], 0);
    assert_error(
        app.get(&format!("/v1/groups/{}/preferences", uuid::Uuid::now_v7()))
            .await,
        404,
        None,
    )
    .await;
}

#[tokio::test]
async fn judgments_are_stored_in_postgres_too() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let app = spawn_app_with(AppOptions {
        postgres: true,
        ..Default::default()
    })
    .await;
    let (group, r) = sampled_group(&app, 2).await;

    let batch = json!({"judgments": [judgment(&group, &r[0], &r[1], "both_bad")]});
    let stored = app.post("/v1/judgments", &batch).await;

    assert_eq!(stored.status(), 201);
    let listed = app.get_json("/v1/judgments").await;
    assert_eq!(listed["data"][0]["outcome"], "both_bad");
    let prefs = app
        .get_json(&format!("/v1/groups/{group}/preferences"))
        .await;
    assert_eq!(prefs["responses"][0]["win_rate"], 0.5);
}
