//! `POST /images/create?fromSrc=-` (`docker import`): the request body is
//! a root filesystem tarball (plain, gzip or zstd) that the engine makes a
//! one-layer image of (`commit_engine::Engine::import`), named by
//! `repo`/`tag` as a commit's image, its config made by `changes` (the
//! commit's parser) and its history entry commented with `message`
//! (Docker's default: `Imported from -`).
//!
//! As Docker's, the answer is `200` with one JSON status line holding the
//! new image's ID; a failure before it is an ordinary error answer with
//! Docker's status (nothing is written until the image exists). Importing
//! from a URL and pulling (`fromImage`) are not served: 400, saying so.

use axum::body::Body;
use axum::response::Response;
use docker_format::reference::{self, Named, familiar_name};

use super::load::{body_reader, json_stream};
use crate::Api;
use crate::error::ApiError;
use crate::extract::Query;
use crate::views::push::Message;

/// `POST /images/create?fromSrc=-&repo=&tag=&changes=&message=`.
pub(crate) async fn create(api: &Api, q: &Query, body: Body) -> Result<Response, ApiError> {
    match q.get("fromSrc") {
        "-" => {}
        "" if !q.get("fromImage").is_empty() => {
            return Err(ApiError::InvalidRequest(
                "pulling images is not supported by this daemon: docker load an archive, or docker import a tarball".into(),
            ));
        }
        "" => {
            return Err(ApiError::InvalidRequest(
                "fromSrc is required: - to import the tarball sent as the request body".into(),
            ));
        }
        src => {
            return Err(ApiError::InvalidRequest(format!(
                "importing from {src:?} is not supported: send the tarball as the request body (fromSrc=-)"
            )));
        }
    }
    let name = reference::repo_tag_reference(q.get("repo"), q.get("tag"))?;
    let changes = super::changes(api, q)?;
    let message = match q.get("message") {
        "" => "Imported from -".to_string(),
        m => m.to_string(),
    };
    let req = commit_engine::ImportRequest {
        image_name: name.as_ref().map(Named::full),
        message,
        changes,
    };
    let imported = api.engine().import(body_reader(body), req).await?;
    let shown = name
        .as_ref()
        .map(|n| familiar_name(&n.full()).to_string())
        .unwrap_or_else(|| imported.image_id.clone());
    api.events().image("import", &imported.image_id, &shown);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.try_send(Message::status(imported.image_id).line());
    Ok(json_stream(rx))
}
