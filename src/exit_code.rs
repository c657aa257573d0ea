//! The exit codes the init itself chooses (contract: DESIGN.md "Exit codes").
//!
//! A main process's own code is passed through untouched; these are the codes for the cases
//! where the init has to speak for itself. The values follow BSD's sysexits.h and the shell's
//! conventions for 126/127, which is what tooling around containers already understands.

/// A command line the init cannot make sense of (sysexits `EX_USAGE`).
pub const USAGE: i32 = 64;
/// An internal failure of the init (sysexits `EX_SOFTWARE`).
pub const INTERNAL: i32 = 70;
/// The configuration is invalid (sysexits `EX_CONFIG`).
pub const CONFIG: i32 = 78;
/// The main command exists but cannot be executed (shell convention).
pub const NOT_EXECUTABLE: i32 = 126;
/// The main command cannot be found (shell convention).
pub const NOT_FOUND: i32 = 127;

/// The code a process that died from signal `signo` is reported with, as shells do.
pub fn for_signal(signo: i32) -> i32 {
    128 + signo
}
