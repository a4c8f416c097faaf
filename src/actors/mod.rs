//! The actor graph.
pub mod file_store;
pub mod vpath;
