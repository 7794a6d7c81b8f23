//! Helpers shared by the integration tests: a test daemon that owns its temp
//! root and is killed on drop, the wait-until with a deadline, and the HTTP
//! origin on 127.0.0.1.

#![allow(dead_code)]

pub mod daemon;
pub mod http;
