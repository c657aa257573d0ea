//! nix2gpu-init: PID 1 for Nix-built GPU container images.
//!
//! The binary (`main.rs`) is a thin shell over these modules; they live in a library so that
//! the integration tests, benchmarks and fuzz targets can reach the same code.

pub mod access;
pub mod accounts;
pub mod boot;
pub mod cli;
pub mod config;
pub mod control;
pub mod exit_code;
pub mod fswatch;
pub mod gpu;
pub mod graph;
pub mod logs;
pub mod notify;
pub mod pid1;
pub mod probe;
pub mod runtime;
pub mod spawn;
pub mod supervisor;
#[cfg(test)]
mod testing;
