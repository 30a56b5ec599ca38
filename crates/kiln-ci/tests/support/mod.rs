pub mod replay;
pub mod server;
