//! `/annotate`: the built-in annotation page. Static HTML and JavaScript that hold no data: the
//! annotator types in an `annotate`-scoped key, and the page uses only the public API with it
//! (`GET /v1/annotation/next`, `POST /v1/judgments`, `GET /v1/judgments`). Keys 1 = left better,
//! 2 = right better, 3 = tie, 4 = both bad.

use axum::response::Html;

/// The page; open like `/docs`, since it is only a client of the gated routes.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("annotate.html"))
}
