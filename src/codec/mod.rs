//! Bytes <-> protocol values for the control channel. Pure: no sockets, no actors, no clocks.
pub mod password;

pub use password::Password;
