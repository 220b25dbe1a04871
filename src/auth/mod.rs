//! Access control (DESIGN §6): API keys, the role each tool needs, and the
//! verification of a presented key (cached briefly, last use recorded off
//! the request path). No HTTP here: `mcp::http` turns these into responses.

pub mod keys;
pub mod roles;

pub use keys::{generate_key, hash_key, parse_key, KeyError, KeyVerifier, ParsedKey, PresentedKey};
pub use roles::required_role;
