//! Labels: agentctl's own keys, which no client may set, and the
//! session's, which the proxy adds to what a session creates.

use std::collections::BTreeMap;

use crate::body::{self};
use crate::session::{LABEL_CHILD, LABEL_PREFIX, LABEL_SESSION, SessionScope};

use super::decision::*;

/// Whether a label key is agentctl's, or one Go's decoder would take for
/// agentctl's (`io.agentctL.child`): the proxy adds its own labels beside
/// the client's, and the body it forwards must never hold two keys that
/// fold to one.
pub(super) fn reserved_label(key: &str) -> bool {
    body::fold::go_fold(key).starts_with(LABEL_PREFIX)
}

pub(super) fn check_labels(
    cx: &Ctx<'_>,
    labels: &Option<BTreeMap<String, String>>,
    what: &str,
) -> Result<(), Why> {
    let role = cx.role;
    // agentctl's own launcher marks its sandboxes (a global role only:
    // nothing is added to or judged by what it sets).
    if cx.cfg.role.agentctl_sandboxes && cx.session.is_none() {
        return Ok(());
    }
    if let Some(l) = labels
        && let Some(k) = l.keys().find(|k| reserved_label(k))
    {
        return deny(format!(
            "{what}.Labels: {k:?} is set by agentctl, not by clients (role {role})"
        ));
    }
    Ok(())
}

pub(super) fn inject_labels(labels: &mut Option<BTreeMap<String, String>>, s: &SessionScope) {
    let l = labels.get_or_insert_with(BTreeMap::new);
    l.insert(LABEL_SESSION.into(), s.id.clone());
    l.insert(LABEL_CHILD.into(), "true".into());
}
