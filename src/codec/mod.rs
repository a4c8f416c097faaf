//! Bytes <-> protocol values for the control channel. Pure: no sockets, no actors, no clocks.
pub mod command;
pub mod entry;
pub mod ftp_codec;
pub mod glob;
pub mod listing;
pub mod password;
pub mod reply;
pub mod reply_parser;

pub use command::{Command, CommandError};
pub use ftp_codec::{FtpCodec, Inbound};
pub use password::Password;
pub use reply::{Reply, ReplyCode};
