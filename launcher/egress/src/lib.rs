//! The `allowlist` network mode's way out (issue 15). Every path out of a
//! sandbox in this mode leads here, and every connection is decided by
//! `policy::egress`, before any DNS lookup and again on each address.
//!
//! Layers, bottom to top:
//! - `sni`: the server name of a TLS ClientHello, read across records
//!   and segments, without terminating TLS.
//! - `proxy`: the HTTP proxy (CONNECT and absolute-form `http://`),
//!   SOCKS5 (CONNECT only), and the transparent listeners (a connection to a fake address of the DNS
//!   stub names its host), each decided before any lookup, its addresses
//!   after, the ClientHello of a TLS tunnel checked against the allowed
//!   name.
//! - `dns`: the stub inside the sandbox: allowed names get a fake address
//!   that leads to the transparent listeners, every other name REFUSED,
//!   nothing forwarded.
//! - `session`: one sandbox's planted listeners served together.

pub mod dns;
pub mod proxy;
pub mod relay;
pub mod session;
pub mod sni;
