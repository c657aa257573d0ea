//! GPU bring-up: making NVIDIA's injected userspace usable from a Nix image.

pub mod elf;
