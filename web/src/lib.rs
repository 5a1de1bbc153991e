//! The web dashboard (axum + askama). Empty until the session store exists; it will depend on the store and never on a backend.
