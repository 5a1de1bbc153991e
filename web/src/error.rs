//! What a failure shows: a status code and a message that says what to do,
//! as a page or as JSON. A database error's text is logged, never shown.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    NoSuchSession(String),
    #[error("no session has run under profile \"{0}\"")]
    NoSuchProfile(String),
    #[error("session {0} is not running ({1})")]
    NotLive(String, store::Status),
    #[error("refused: {0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("session {0} is still running; stop it first")]
    Live(String),
    #[error(
        "this server's session store is SQLite: sessions asked for over the API need a Postgres \
         store and a worker (`agentctl worker`); see docs/SCALING.md"
    )]
    NoQueue,
    #[error("the session store failed; see the server's log")]
    Store(#[source] store::StoreError),
}

impl From<store::StoreError> for WebError {
    fn from(e: store::StoreError) -> WebError {
        match e {
            store::StoreError::NotFound { .. } | store::StoreError::Ambiguous { .. } => {
                WebError::NoSuchSession(e.to_string())
            }
            // A malformed id in a path names no session.
            store::StoreError::Invalid { what, value, .. } if what.contains("session id") => {
                WebError::NoSuchSession(format!(
                    "no session \"{}\"; check the id against the list of sessions",
                    value.chars().take(64).collect::<String>()
                ))
            }
            store::StoreError::Invalid { .. } => WebError::BadRequest(e.to_string()),
            store::StoreError::NoSuchRequest { .. } => WebError::NoSuchSession(e.to_string()),
            store::StoreError::NeedsPostgres { .. } => WebError::NoQueue,
            e => WebError::Store(e),
        }
    }
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::NoSuchSession(_) | WebError::NoSuchProfile(_) => StatusCode::NOT_FOUND,
            WebError::NotLive(..) | WebError::Live(_) => StatusCode::CONFLICT,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NoQueue => StatusCode::NOT_IMPLEMENTED,
            WebError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn log(&self) {
        if let WebError::Store(e) = self {
            tracing::error!("session store: {e}");
        }
    }

    /// The same failure for the JSON API.
    pub fn json(self) -> Response {
        self.log();
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub nav: crate::view::Nav,
    pub status: u16,
    pub message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status();
        let page = ErrorPage {
            nav: crate::view::Nav::default(),
            status: status.as_u16(),
            message: self.to_string(),
        };
        (status, page).into_response()
    }
}
