//! Account values shared by the server and the client: the name rule ([`UserName`]) and
//! [`AuthError`]. Pure; imports no actor, so the client can use the rule without the registry.

mod error;
mod name;

pub use error::AuthError;
pub use name::{NAME_RULE, RESERVED_NAMES, UserName};
