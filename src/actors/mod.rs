//! The actor graph.
