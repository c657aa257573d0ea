//! GPU bring-up: making the injected NVIDIA driver usable inside the container.

pub mod ldcache;
