//! `docker save`: `GET /images/{name}/get` and `GET /images/get?names=…`.
//! Which images, under which names, and whether all their blobs are here
//! are read and checked here; the archive is the engine's
//! ([`commit_engine::Engine::export`]), streamed as it is made.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use commit_engine::Exported;
use docker_format::reference::{ImageRef, familiar_name};

use super::find_image;
use crate::Api;
use crate::error::ApiError;
use crate::extract::Query;

/// `GET /images/get?names=a&names=b`.
pub(crate) async fn save_many(State(api): State<Api>, q: Query) -> Result<Response, ApiError> {
    let names = q.all("names");
    save(&api, names).await
}

/// Streams a tar of the named images.
pub(crate) async fn save(api: &Api, names: Vec<String>) -> Result<Response, ApiError> {
    if names.is_empty() {
        return Err(ApiError::InvalidRequest("no image names given".into()));
    }
    let mut exported = Vec::new();
    for n in &names {
        let image = find_image(api, n).await?;
        let name = match ImageRef::parse(n)? {
            ImageRef::Name { name: full, .. } if image.records.iter().any(|r| r.name == full) => {
                Some(full)
            }
            _ => None,
        };
        exported.push(Exported { image, name });
    }
    // Every blob must be here or known elsewhere before a byte goes out.
    for e in &exported {
        let nowhere = super::push::unfetchable(api, &e.image).await?;
        if !nowhere.is_empty() {
            let owner = e.name.clone().unwrap_or_else(|| e.image.id.clone());
            return Err(ApiError::MissingContent(format!(
                "cannot save {}: {nowhere}",
                familiar_name(&owner)
            )));
        }
    }
    let tar = api
        .engine()
        .export(&exported, &api.options().insecure_registries)
        .await?;
    let mut resp = (StatusCode::OK, Body::from_stream(tar)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}
