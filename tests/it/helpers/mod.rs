//! Helpers shared by the integration tests: a test daemon that owns its temp
//! root and is killed on drop, the wait-until with a deadline, the HTTP
//! origin on 127.0.0.1, and fizeau's Go package built into a driver.

#![allow(dead_code)]

pub mod daemon;
pub mod env;
pub mod fizeau;
pub mod http;
pub mod redis;
