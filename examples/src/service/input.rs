//! What the state-changing endpoints accept: a JSON body, always, so that another site's page
//! cannot trigger them. A form (`application/x-www-form-urlencoded`, `multipart/form-data`,
//! `text/plain`) is what a cross-site page can post without asking; a request with
//! `Content-Type: application/json` from another origin needs a CORS preflight, which this
//! service does not answer. Bad input is answered as JSON (`{"error": "..."}`), like every other
//! error, so the page can show why.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// A JSON body (`Content-Type: application/json`), refused with a JSON error otherwise: 415
/// for another content type or none, 400 for malformed JSON, 422 for the wrong fields.
#[derive(Debug)]
pub(super) struct JsonBody<T>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(refused(rejection.status(), rejection.body_text())),
        }
    }
}

/// A product id from the path, refused with a JSON error (400) when it is not one: the
/// answer to `/api/products/abc` is JSON like every other error.
#[derive(Debug)]
pub(super) struct ProductId(pub(super) i64);

impl<S: Send + Sync> FromRequestParts<S> for ProductId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<i64>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(ProductId(id)),
            Err(rejection) => Err(refused(rejection.status(), rejection.body_text())),
        }
    }
}

/// The body of endpoints that need nothing but must still be asked for with JSON: `{}`.
#[derive(Debug, Deserialize)]
pub(super) struct NoFields {}

/// An error answer: `status` and `{"error": why}`.
pub(super) fn refused(status: StatusCode, why: impl Into<String>) -> Response {
    (status, Json(json!({ "error": why.into() }))).into_response()
}
