//! `set-interpreter` and `print-interpreter`: the ELF rewrite of `gpu::elf` from the command
//! line, so images and users can fix a foreign binary the same way the init does.

use std::path::Path;

use crate::gpu::elf::{self, Outcome};

/// Sets the interpreter (and runpath); 0 on success, 1 with the reason on stderr otherwise.
pub fn set_interpreter(file: &Path, interpreter: &str, runpath: Option<&str>, output: Option<&Path>) -> i32 {
    match elf::set_interpreter(file, interpreter, runpath, output) {
        Ok(outcome) => {
            let target = output.unwrap_or(file).display();
            let runpath = runpath.map(|dirs| format!(", runpath {dirs}")).unwrap_or_default();
            match outcome {
                Outcome::Written => println!("{target}: interpreter {interpreter}{runpath}"),
                Outcome::AlreadySet => {
                    println!("{target}: already has interpreter {interpreter}{runpath}; not written")
                }
            }
            0
        }
        Err(message) => {
            eprintln!("nix2gpu-init set-interpreter: {message}");
            1
        }
    }
}

/// Prints the interpreter; 1 with the reason on stderr for a static or unreadable file.
pub fn print_interpreter(file: &Path) -> i32 {
    match elf::file_interpreter(file) {
        Ok(Some(path)) => {
            println!("{path}");
            0
        }
        Ok(None) => {
            eprintln!(
                "nix2gpu-init print-interpreter: {}: statically linked, no interpreter",
                file.display()
            );
            1
        }
        Err(message) => {
            eprintln!("nix2gpu-init print-interpreter: {message}");
            1
        }
    }
}
