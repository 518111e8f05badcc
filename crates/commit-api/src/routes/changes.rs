//! `GET /containers/{name}/changes` (`docker diff`): what the container
//! changed, as the engine reads it for a commit (see
//! `commit_engine::Engine::changes`), in Docker's shape: an array of
//! `{"Path","Kind"}`, or `null` when nothing changed, as Docker answers.

use axum::http::StatusCode;
use axum::response::Response;

use crate::Api;
use crate::error::ApiError;
use crate::views;
use crate::views::changes::FilesystemChange;

/// `GET /containers/{name}/changes`.
pub(crate) async fn changes(api: &Api, name: &str) -> Result<Response, ApiError> {
    let changes = api.engine().changes(name).await?;
    let body: Option<Vec<FilesystemChange>> = (!changes.is_empty()).then(|| {
        changes
            .into_iter()
            .map(|c| FilesystemChange {
                path: c.path,
                kind: c.kind.code(),
            })
            .collect()
    });
    Ok(views::json(StatusCode::OK, &body))
}
