//! What the rules decide: the request the daemon will see, or a denial.
//! A leaf: every other part of the rules uses it.

use crate::body::BodyError;
use crate::config::Config;
use crate::session::SessionScope;
use crate::upstream::UpstreamError;

/// The request the daemon will see.
#[derive(Debug)]
pub struct Forward {
    pub method: String,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub registry_auth: Option<String>,
    pub upgrade: bool,
    pub filter: ResponseFilter,
}

/// What must be taken out of the daemon's answer before the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFilter {
    None,
    ContainersList,
    NetworksList,
    VolumesList,
    Events,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub reason: String,
}

impl Denial {
    pub fn forbidden(reason: String) -> Denial {
        Denial {
            status: 403,
            reason,
        }
    }
}

pub enum Decision {
    Forward(Forward),
    Deny(Denial),
    Fail(UpstreamError),
}

pub(super) enum Why {
    Deny(Denial),
    Fail(UpstreamError),
}

impl From<UpstreamError> for Why {
    fn from(e: UpstreamError) -> Why {
        Why::Fail(e)
    }
}

pub(super) fn deny<T>(reason: impl Into<String>) -> Result<T, Why> {
    Err(Why::Deny(Denial::forbidden(reason.into())))
}

pub(super) fn bad_body<T>(e: BodyError) -> Result<T, Why> {
    Err(Why::Deny(Denial {
        status: 400,
        reason: e.to_string(),
    }))
}

pub(super) fn not_found<T>(what: &str, name: &str) -> Result<T, Why> {
    Err(Why::Deny(Denial {
        status: 404,
        reason: format!("no such {what}: {name}"),
    }))
}

pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a Config,
    pub(super) role: &'a str,
    pub(super) session: Option<&'a SessionScope>,
}
