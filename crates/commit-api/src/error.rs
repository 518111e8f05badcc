//! Docker's error responses: `{"message": "…"}` with the status code Docker
//! gives the same failure. [`ApiError`] names every failure a route can
//! answer with; [`ApiError::status`] maps each — engine errors included —
//! to a status in one exhaustive `match` (no `_` arm), so a new variant
//! forces a decision here (bottlerocket's apiserver does the same).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use commit_engine::{
    Error as EngineError, ImportError, Kind, LoadError, OptionError, RegistryError, WalkError,
};
use docker_format::{body, changes, filters, ports, reference, registry, time};
use tracing::error;

use crate::views;
use crate::{API_VERSION, MIN_API_VERSION};

/// An error answered to the client; `Display` is the message it reads.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong in a way no format error below covers.
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Body(#[from] body::BodyError),
    #[error(transparent)]
    Changes(#[from] changes::ChangeError),
    #[error(transparent)]
    Filter(#[from] filters::FilterError),
    #[error(transparent)]
    Port(#[from] ports::PortError),
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    #[error(transparent)]
    RegistryAuth(#[from] registry::AuthError),
    #[error(transparent)]
    Timestamp(#[from] time::TimestampError),
    #[error(
        "client version {0} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
    )]
    VersionTooOld(String),
    #[error("client version {0} is too new. Maximum supported API version is {API_VERSION}")]
    VersionTooNew(String),
    /// The request body did not arrive in time.
    #[error("request body not received in time: {0}")]
    BodyTimeout(String),
    #[error("request body too large (limit {0} bytes)")]
    BodyTooLarge(usize),
    /// The body could not be read; the status is the extractor's.
    #[error("request body unreadable: {message}")]
    BodyUnreadable { status: StatusCode, message: String },
    /// No route answers to the path or method.
    #[error("page not found")]
    PageNotFound,
    /// No image answers to what the user typed (their words, not ours).
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// `docker push` of a repository with no tag here.
    #[error("An image does not exist locally with the tag: {0}")]
    NoTaggedImage(String),
    /// `docker rmi` refused: the image is used or has other names.
    #[error("conflict: unable to delete {short} ({}) - {reason}", if *.forcible { "must be forced" } else { "cannot be forced" })]
    DeleteConflict {
        short: String,
        forcible: bool,
        reason: String,
    },
    /// Content an image refers to is not in the local store.
    #[error("{0}")]
    MissingContent(String),
    #[error("{}", engine_message(.0))]
    Engine(#[from] EngineError),
    /// The daemon failed (a task died, a client could not be set up).
    #[error("{0}")]
    Internal(String),
}

/// An engine error in Docker's words where Docker has some.
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::ContainerNotFound(id) => format!("No such container: {id}"),
        EngineError::ImageNotFound(name) => format!("No such image: {name}"),
        EngineError::AmbiguousContainer { prefix, .. } => {
            format!("multiple IDs found with provided prefix: {prefix}")
        }
        other => other.to_string(),
    }
}

impl ApiError {
    /// The status Docker answers the failure with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::Body(_)
            | ApiError::Changes(_)
            | ApiError::Filter(_)
            | ApiError::Port(_)
            | ApiError::Reference(_)
            | ApiError::RegistryAuth(_)
            | ApiError::Timestamp(_)
            | ApiError::VersionTooOld(_)
            | ApiError::VersionTooNew(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyUnreadable { status, .. } => *status,
            ApiError::PageNotFound
            | ApiError::NoSuchImage(_)
            | ApiError::NoSuchContainer(_)
            | ApiError::NoTaggedImage(_) => StatusCode::NOT_FOUND,
            ApiError::DeleteConflict { .. } => StatusCode::CONFLICT,
            ApiError::MissingContent(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Engine(e) => engine_status(e),
        }
    }
}

fn engine_status(e: &EngineError) -> StatusCode {
    match e {
        EngineError::ContainerNotFound(_) | EngineError::ImageNotFound(_) => StatusCode::NOT_FOUND,
        EngineError::AmbiguousContainer { .. }
        | EngineError::InvalidArgument(_)
        | EngineError::Load(
            LoadError::Reference { .. }
            | LoadError::NoImage
            | LoadError::TooLarge { .. }
            | LoadError::File { .. }
            | LoadError::Digest { .. }
            | LoadError::Unreadable(_)
            | LoadError::OciLayout(_)
            | LoadError::OciVersion(_)
            | LoadError::MissingIndex
            | LoadError::Index(_)
            | LoadError::UnrecognizedFormat
            | LoadError::ManifestJson(_)
            | LoadError::ConfigNotFound(_)
            | LoadError::LayerNotFound(_)
            | LoadError::DiffIds { .. }
            | LoadError::NotJson { .. }
            | LoadError::BadIndex { .. }
            | LoadError::BadManifest { .. }
            | LoadError::MissingContent(_),
        )
        | EngineError::Import(ImportError::Tarball(_))
        | EngineError::Option(
            OptionError::Compression(_)
            | OptionError::Squash(_)
            | OptionError::Exclude { .. }
            | OptionError::Timestamp(_),
        )
        | EngineError::Changes(_)
        | EngineError::Walk(WalkError::Unrepresentable { .. }) => StatusCode::BAD_REQUEST,
        EngineError::Conflict(_) => StatusCode::CONFLICT,
        // Once a push has begun its failures are progress messages (after
        // `200`, as Docker's); these are the ones that can come before.
        EngineError::Registry(RegistryError::Unauthorized { .. }) => StatusCode::UNAUTHORIZED,
        EngineError::Registry(RegistryError::Denied { .. }) => StatusCode::FORBIDDEN,
        EngineError::Unavailable { .. } | EngineError::Cancelled(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        EngineError::Containerd { kind, .. } => match kind {
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::InvalidArgument => StatusCode::BAD_REQUEST,
            Kind::AlreadyExists | Kind::FailedPrecondition | Kind::Aborted => StatusCode::CONFLICT,
            Kind::PermissionDenied => StatusCode::FORBIDDEN,
            Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
            Kind::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        },
        EngineError::Io { .. }
        | EngineError::Walk(WalkError::Io { .. } | WalkError::Unsupported(_))
        | EngineError::Malformed(_)
        | EngineError::Import(ImportError::NoLayer | ImportError::Json(_))
        | EngineError::Registry(
            RegistryError::Client(_)
            | RegistryError::Credentials { .. }
            | RegistryError::Call { .. }
            | RegistryError::Nowhere { .. }
            | RegistryError::Source { .. }
            | RegistryError::Local { .. }
            | RegistryError::ImageGone
            | RegistryError::NotLoggedIn
            | RegistryError::ClientGone,
        )
        | EngineError::Task { .. }
        | EngineError::Incremental(_)
        | EngineError::Failpoint(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        // Client errors are the client's: only the daemon's own are logged.
        if status.is_server_error() {
            error!(status = status.as_u16(), %message, "request failed");
        }
        views::json(status, &views::system::ErrorBody { message })
    }
}
