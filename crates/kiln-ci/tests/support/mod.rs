pub mod layouts;
pub mod replay;
pub mod server;
