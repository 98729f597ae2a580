//! One request through an axum app, as the HTTP layer's tests read it.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// Status, `X-Cache` and body of one request.
pub(crate) async fn call(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, Option<String>, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let x_cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, x_cache, String::from_utf8_lossy(&body).into_owned())
}
