//! GPU bring-up: making NVIDIA's injected user space usable from any image (the ELF
//! interpreter rewrite, the loader cache), and what the driver reports (NVML, or `nvidia-smi`
//! as a fallback), probed in a child process under a deadline so that a crashing or hanging
//! driver library never takes the init down.

mod bounded;
pub mod driver;
pub mod elf;
pub mod ldcache;
pub mod node;
pub mod nvml;
pub mod probe;
mod smi;
pub mod wait;
