//! What happens to a connection before FTP: the client's address, the preamble (the PROXY
//! header from a balancer, implicit TLS; one time limit) and its bounds, and reads that survive
//! urgent data.

pub mod addr;
pub mod pending;
pub mod preamble;
pub mod urgent;

pub use addr::ClientAddr;
