//! Docker's container routes, read from containerd's containers and tasks:
//! `GET /containers/json` (`docker ps`) and `GET /containers/{id}/json`.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;

use crate::Api;
use crate::error::ApiError;

/// `GET /containers/json`.
pub async fn list(State(_api): State<Api>, RawQuery(_raw): RawQuery) -> Result<Response, ApiError> {
    Err(ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "container list is not implemented yet",
    ))
}

/// `GET /containers/{id}/json`.
pub async fn inspect(
    State(_api): State<Api>,
    Path(_id): Path<String>,
) -> Result<Response, ApiError> {
    Err(ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "container inspect is not implemented yet",
    ))
}
