//! ferryd: the server entry point (a placeholder until the lead writes it).
fn main() {}
