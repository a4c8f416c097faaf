//! Accounts below the actors: the name rule ([`UserName`]) and [`AuthError`], which the client
//! shares; the [`AccountStore`] backend trait with its JSON-file store; password hashing; and
//! invitations ([`InviteStore`](invites::InviteStore)). Imports no actor: the
//! [`AccountRegistry`](crate::actors::account_registry::AccountRegistry) actor runs on these.
//!
//! - `name.rs`: the name rule. `error.rs`: why an account operation failed.
//! - `store.rs`: records, the store trait, the JSON store.
//! - `password.rs`: PBKDF2.
//! - [`invites`]: invitation codes, the [`InviteStore`](invites::InviteStore) trait and its
//!   JSON store.
//! - `postgres.rs`: accounts and codes in the cluster's database, and the watch for changes.

mod error;
pub mod invites;
mod name;
mod password;
mod postgres;
mod store;

pub use error::AuthError;
pub use name::{NAME_RULE, RESERVED_NAMES, UserName};
pub use password::{check_password, hash_password, hash_rounds, verify_password};
pub use postgres::{AccountChange, AccountWatch, Noticed, PgAccountStore, PgInviteStore};
pub use store::{
    AccountLimits, AccountRecord, AccountStore, Changed, HomeElsewhere, JsonAccountStore, Remains,
    is_changed, modify,
};
