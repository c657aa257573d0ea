//! Access to the container from outside: the built-in nodes that let people in.

pub mod tailscale;
