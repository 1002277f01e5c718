use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, TestApp};
use crate::judgments::{judgment, sampled_group};

/// Four responses make six pairs; `x` and `y` judge all six and disagree on the last.
async fn two_annotators_on_six_pairs(app: &TestApp) {
    let (group, r) = sampled_group(app, 4).await;
    let pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
    let x = ["a", "a", "b", "b", "tie", "a"];
    let y = ["a", "a", "b", "b", "tie", "b"];
    for (annotator, outcomes) in [("x", x), ("y", y)] {
        let batch: Vec<Value> = pairs
            .iter()
            .zip(outcomes)
            .map(|(&(a, b), outcome)| {
                let mut j = judgment(&group, &r[a], &r[b], outcome);
                j["annotator"] = json!(annotator);
                j
            })
            .collect();
        let stored = app
            .post("/v1/judgments", &json!({ "judgments": batch }))
            .await;
        assert_eq!(stored.status(), 201);
    }
}

#[tokio::test]
async fn annotators_are_listed_with_counts_rates_and_majority_agreement() {
    let app = spawn_app().await;
    two_annotators_on_six_pairs(&app).await;

    let list = app.get_json("/v1/annotators").await;

    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let x = &data[0];
    assert_eq!(x["annotator"], "x");
    assert_eq!(x["judgments"], 6);
    assert_eq!(x["ties"], 1);
    assert!((x["tie_rate"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-12);
    assert_eq!(x["both_bad_rate"], 0.0);
    assert_eq!(x["shared_items"], 6);
    assert!((x["majority_agreement"].as_f64().unwrap() - 5.0 / 6.0).abs() < 1e-12);
}

#[tokio::test]
async fn one_annotator_shows_cohens_kappa_with_each_annotator_sharing_enough_pairs() {
    let app = spawn_app().await;
    two_annotators_on_six_pairs(&app).await;

    let x = app.get_json("/v1/annotators/x").await;
    let strict = app.get_json("/v1/annotators/x?min_shared=7").await;

    // p_o = 5/6; x: a 3, b 2, tie 1; y: a 2, b 3, tie 1 → p_e = 13/36; κ = (30 − 13)/(36 − 13).
    assert_eq!(x["kappa"][0]["annotator"], "y");
    assert_eq!(x["kappa"][0]["shared_items"], 6);
    let kappa = x["kappa"][0]["kappa"].as_f64().unwrap();
    assert!((kappa - 17.0 / 23.0).abs() < 1e-12, "{kappa}");
    assert_eq!(strict["kappa"], json!([]));
    assert_error(app.get("/v1/annotators/nobody").await, 404, None).await;
    assert_error(
        app.get("/v1/annotators/x?min_shared=0").await,
        400,
        Some("min_shared"),
    )
    .await;
}

#[tokio::test]
async fn agreement_is_exported_as_prometheus_gauges() {
    let app = spawn_app().await;
    two_annotators_on_six_pairs(&app).await;

    let text = app.get("/metrics").await.text().await.unwrap();

    assert!(
        text.contains(r#"flywheel_annotator_judgments{annotator="x"} 6"#),
        "{text}"
    );
    assert!(
        text.contains(r#"flywheel_annotator_majority_agreement{annotator="y"} 0.8333"#),
        "{text}"
    );
    assert!(
        text.contains(r#"flywheel_annotator_kappa{annotator="x",other="y"} 0.739"#),
        "{text}"
    );
}
