//! Text the backends disagree on: a NUL is refused by both with the same error, before anything is
//! written; every other control character is stored faithfully by both.

use flywheel_store::{Error, Store};
use serde_json::json;

use crate::helpers::{group, on_each_backend};
use crate::judgments::{judgment, stored_group};

const CONTROL: &str = "tab\tbell\u{7}esc\u{1b}unit\u{1f}del\u{7f}";

#[tokio::test]
async fn a_nul_anywhere_in_a_group_is_invalid_on_both_backends_and_nothing_is_stored() {
    on_each_backend(|store| async move {
        let mut in_prompt = group();
        in_prompt.prompt = json!([{"role": "user", "content": "a\u{0}b"}]);
        let mut in_user = group();
        in_user.user = Some("\u{0}".into());
        let mut in_text = group();
        in_text.responses[1].text = "x\u{0}".into();
        for new in [in_prompt, in_user, in_text] {
            let err = store.insert_group(&new).await.unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{err:?}");
            assert!(matches!(
                store.get_group(new.id).await,
                Err(Error::NotFound(_))
            ));
        }
    })
    .await;
}

#[tokio::test]
async fn a_nul_in_a_judgment_is_invalid_on_both_backends_and_nothing_is_stored() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let mut cases = Vec::new();
        let mut j = judgment(&g, 0, 1);
        j.annotator = "al\u{0}ice".into();
        cases.push(("annotator", j));
        let mut j = judgment(&g, 0, 1);
        j.rationale = Some("\u{0}".into());
        cases.push(("rationale", j));
        let mut j = judgment(&g, 0, 1);
        j.criteria = Some(json!({"k": ["\u{0}"]}));
        cases.push(("criteria", j));
        for (field, j) in cases {
            let err = store.insert_judgments(&[j]).await.unwrap_err();
            let Error::Invalid(message) = err else {
                panic!("{field}: {err:?}")
            };
            assert!(message.starts_with(&format!("`{field}`")), "{message}");
        }
        assert!(flywheel_store::IdempotencyKey::parse("k\u{0}").is_err());
        assert!(store.judgments_for_group(g.id).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn other_control_characters_round_trip_on_both_backends() {
    on_each_backend(|store: Store| async move {
        let mut new = group();
        new.prompt = json!([{"role": "user", "content": CONTROL}]);
        new.user = Some(CONTROL.into());
        new.responses[0].text = CONTROL.into();
        store.insert_group(&new).await.unwrap();
        let stored = store.get_group(new.id).await.unwrap();
        assert_eq!(stored.group.prompt, new.prompt);
        assert_eq!(stored.group.user.as_deref(), Some(CONTROL));
        assert_eq!(stored.responses[0].text, CONTROL);

        let mut j = judgment(&new, 0, 1);
        j.rationale = Some(CONTROL.into());
        j.criteria = Some(json!({ "note": CONTROL }));
        let (stored, _) = store.insert_judgments(&[j]).await.unwrap().remove(0);
        let read = store.get_judgment(stored.id).await.unwrap();
        assert_eq!(read.rationale.as_deref(), Some(CONTROL));
        assert_eq!(read.criteria, Some(json!({ "note": CONTROL })));
    })
    .await;
}
