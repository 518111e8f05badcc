//! `docker save`: `GET /images/{name}/get` and `GET /images/get?names=…`.

use axum::extract::{RawQuery, State};
use axum::response::Response;

use crate::Api;
use crate::commit::Query;
use crate::error::ApiError;

/// `GET /images/get?names=a&names=b`.
pub async fn save_many(
    State(api): State<Api>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let names = Query::parse(raw.as_deref()).all("names");
    save(&api, names).await
}

/// Streams a tar of the named images.
pub async fn save(_api: &Api, _names: Vec<String>) -> Result<Response, ApiError> {
    Err(ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "image save is not implemented yet",
    ))
}
