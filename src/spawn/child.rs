//! The child between `clone` and `exec`.
//!
//! A child is created with `CLONE_VM`: it runs on a stack of its own in the init's memory
//! until it execs, and the init does not wait for that. Both choices are about starting many
//! services quickly:
//! - a fork would copy the init's page tables and make each of its pages copy-on-write, only
//!   for the exec right after to throw the copy away;
//! - waiting for each child to exec (as `vfork` and `posix_spawn` do) puts every program load
//!   in a row, on one CPU; a shell that starts services in the background does not wait, and
//!   a thousand `sleep`s took it a quarter of the time they took an init that waited.
//!
//! While a child has not exec'd, the init's own work competes with it (for the CPUs, and for
//! the memory map they share). Binding the control socket after the main process started made
//! `INIT -- /bin/true` 190 µs slower than binding it before, so what the init sets up at boot
//! (sockets and their watches included) is done before the first start.
//!
//! The price is care: the child shares the init's memory while the init goes on, so it touches
//! nothing but what was prepared for it (the [`Storage`], which the init keeps until the
//! child's exec or exit closes its end of a pipe) and makes its system calls directly, never
//! through libc (whose wrappers set `errno`, which lives in the init's thread). It can never
//! panic: it indexes nothing and allocates nothing. Privileges are dropped the same raw way,
//! which also keeps glibc from applying the change to every thread of the process.
//!
//! Every cause of failure the init can see beforehand (a missing program, one that is not
//! executable, a directory) is checked by the caller before the clone, so that those come back
//! as errors of the start. What only the exec can find out (a bad ELF or `#!` line, a missing
//! working directory, a refused privilege drop) the child reports itself, on its stderr, and
//! exits 127 (not found) or 126 (anything else), as a shell does.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc::{self, c_int, c_void};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::{Pid, pipe2};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("spawn::child makes raw x86_64 system calls; the init targets x86_64-unknown-linux-gnu");

/// Where the child's stdout and stderr go.
pub enum ChildOutput {
    Inherit,
    Null,
    /// The write ends of the service's stdout and stderr pipes.
    Pipes(OwnedFd, OwnedFd),
}

/// Everything the child does, prepared in the init.
pub struct Job {
    /// The program, already found and checked (see the module doc).
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub working_dir: Option<CString>,
    pub stdin_null: bool,
    /// A process group of its own in the init's session (the main process) instead of a
    /// session of its own.
    pub main: bool,
    /// Hand the terminal on stdin to the child's group.
    pub foreground: bool,
    /// Supplementary groups, gid and uid.
    pub credentials: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)>,
    /// Descriptors to keep open across exec: the main process's inheritance.
    pub keep_open: &'static [RawFd],
}

/// What the child reads, at addresses that stay put (it is boxed) until the child has exec'd or
/// exited (see [`Pending`]).
struct Storage {
    job: Job,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Sources for descriptors 0, 1 and 2; -1 leaves one as it is.
    stdio: [RawFd; 3],
    stack: Stack,
}

/// The child's stack, mapped for it and unmapped after: only the few pages it touches become
/// resident, and they go back to the kernel when it is done instead of staying in the heap.
struct Stack {
    base: *mut c_void,
}

impl Stack {
    fn map() -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                GUARD_BYTES + STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base };
        // A guard page below the stack: an overflow faults instead of writing into the init.
        // SAFETY: the lowest page of the mapping just made.
        if unsafe { libc::mprotect(base, GUARD_BYTES, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// Where the stack starts: its end, as stacks grow down (page-aligned, so 16-byte aligned).
    fn top(&self) -> *mut c_void {
        self.base.wrapping_byte_add(GUARD_BYTES + STACK_BYTES)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once, after the child stopped using it.
        unsafe { libc::munmap(self.base, GUARD_BYTES + STACK_BYTES) };
    }
}

// SAFETY: the raw pointers point into `job` and `stack`, owned by the same Storage, which only
// moves (boxed) into the pending list, behind its mutex.
unsafe impl Send for Storage {}

/// The child's stack: it runs a handful of system calls.
const STACK_BYTES: usize = 64 * 1024;
/// One page, inaccessible, below the stack.
const GUARD_BYTES: usize = 4096;

/// /dev/null, opened once: the child's stdin, or its output when discarded.
fn null() -> io::Result<RawFd> {
    static NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(null) = NULL.get() {
        return Ok(null.as_raw_fd());
    }
    let opened: OwnedFd = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?.into();
    Ok(NULL.get_or_init(|| opened).as_raw_fd())
}

/// A started child that may still be using its Storage. The child's copy of `done`'s write
/// end closes when it execs or exits; by then it has left the init's memory (on both paths the
/// kernel releases the memory before the descriptors).
struct Pending {
    /// Held, not read: the child reads it.
    _storage: Box<Storage>,
    done: OwnedFd,
}

impl Pending {
    fn finished(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(nix::unistd::read(&self.done, &mut byte), Ok(0))
    }
}

/// The children still using their Storage: few at a time, since a child leaves within
/// moments of its start. Kept short by [`sweep`] at every start and, once starts stop, by the
/// [`sweeper`] task.
static PENDING: Mutex<Vec<Pending>> = Mutex::new(Vec::new());
/// Whether the sweeper task is running.
static SWEEPING: AtomicBool = AtomicBool::new(false);

fn pending() -> std::sync::MutexGuard<'static, Vec<Pending>> {
    // Poisoned only by a panic while holding it, which neither pushing nor sweeping can cause.
    PENDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Frees the Storage of every child that has exec'd or exited.
fn sweep() {
    pending().retain(|pending| !pending.finished());
}

/// Starts `job` and returns at once. `output`'s pipe ends are closed when it returns: the
/// child got its own copies with the descriptor table it was cloned with.
pub fn start(job: Job, output: ChildOutput) -> io::Result<Pid> {
    sweep();
    let null = null()?;
    let mut storage = Box::new(Storage {
        argv: null_terminated(&job.argv),
        envp: null_terminated(&job.envp),
        stdio: stdio(job.stdin_null, &output, null),
        job,
        stack: Stack::map()?,
    });
    let (done, done_write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let pid = clone(&mut storage)?;
    drop(done_write);
    pending().push(Pending { _storage: storage, done });
    start_sweeper();
    Ok(pid)
}

/// In the event loop, a task frees what the last starts left once their children are gone;
/// outside one (a test) that waits for the next start.
fn start_sweeper() {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    if !SWEEPING.swap(true, Ordering::Relaxed) {
        runtime.spawn(sweeper());
    }
}

/// Waits for the newest pending child (children leave about in the order they started), sweeps,
/// and goes on while any is left. The event loop runs on one thread, so no start can slip in
/// between seeing the list empty and clearing SWEEPING.
async fn sweeper() {
    loop {
        // Without a descriptor to spare, the next start sweeps instead.
        let newest = pending().last().map(|pending| pending.done.try_clone());
        let Some(Ok(done)) = newest else { break };
        // SAFETY: the OwnedFd stays the same open descriptor for the AsyncFd's whole life.
        match unsafe { AsyncFd::register_with_interest(done, Interest::READABLE) } {
            Ok(done) => {
                let _ = done.readable().await;
            }
            Err(failure) => wait_for_end_of_file(&failure.into_parts().0),
        }
        sweep();
    }
    SWEEPING.store(false, Ordering::Relaxed);
    // A burst of starts is over (a thousand services at boot, a restart): what they allocated
    // and freed in between long-lived allocations would otherwise stay resident.
    crate::pid1::return_free_memory();
}

/// Blocks until the pipe's last writer is gone.
fn wait_for_end_of_file(done: &OwnedFd) {
    let mut fds = [PollFd::new(done.as_fd(), PollFlags::POLLIN)];
    while matches!(poll(&mut fds, PollTimeout::NONE), Err(Errno::EINTR)) {}
}

fn stdio(stdin_null: bool, output: &ChildOutput, null: RawFd) -> [RawFd; 3] {
    let stdin = if stdin_null { null } else { -1 };
    let (out, err) = match output {
        ChildOutput::Inherit => (-1, -1),
        ChildOutput::Null => (null, null),
        ChildOutput::Pipes(out, err) => (out.as_raw_fd(), err.as_raw_fd()),
    };
    [stdin, out, err]
}

/// The argument or environment array as exec wants it: pointers, then a null pointer.
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect()
}

fn clone(storage: &mut Storage) -> io::Result<Pid> {
    let top = storage.stack.top();
    let argument = std::ptr::from_ref(storage).cast_mut().cast::<c_void>();
    let all = signal_set(true);
    let mut previous = signal_set(false);
    // No handler of the init may run in the child, which shares its memory: every signal stays
    // blocked in the child from the clone until it has reset the handlers.
    // SAFETY: valid signal sets; the mask is restored right after the clone.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous) };
    let flags = libc::CLONE_VM | libc::SIGCHLD;
    // SAFETY: `child` only reads the storage and writes its own stack, both kept alive until
    // the child has exec'd or exited (see `release_when_done`).
    let pid = unsafe { libc::clone(child, top, flags, argument) };
    let error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    if pid == -1 { Err(error) } else { Ok(Pid::from_raw(pid)) }
}

fn signal_set(full: bool) -> libc::sigset_t {
    let mut set = MaybeUninit::uninit();
    // SAFETY: sigemptyset/sigfillset initialize the whole set.
    unsafe {
        if full {
            libc::sigfillset(set.as_mut_ptr());
        } else {
            libc::sigemptyset(set.as_mut_ptr());
        }
        set.assume_init()
    }
}

/// The child. Everything below runs in the init's memory: raw system calls only.
extern "C" fn child(storage: *mut c_void) -> c_int {
    // SAFETY: the Storage that `clone` passed, alive until this child execs or exits.
    let storage = unsafe { &*storage.cast::<Storage>() };
    let (step, error) = match prepare(storage) {
        Ok(()) => ("exec", exec(storage)),
        Err(failure) => failure,
    };
    report(storage, step, error);
    let code = if matches!(error, libc::ENOENT | libc::ENOTDIR) { 127 } else { 126 };
    sys::exit_group(code)
}

/// Every step before exec; a failure names its step.
fn prepare(storage: &Storage) -> Result<(), (&'static str, c_int)> {
    let job = &storage.job;
    sys::default_signal_handlers();
    if job.main {
        sys::setpgid_self().map_err(|e| ("setpgid", e))?;
        if job.foreground {
            sys::take_terminal().map_err(|e| ("tcsetpgrp", e))?;
        }
    } else {
        sys::setsid().map_err(|e| ("setsid", e))?;
    }
    for (target, source) in (0..).zip(storage.stdio) {
        if source >= 0 {
            sys::dup2(source, target).map_err(|e| ("dup2", e))?;
        }
    }
    for fd in job.keep_open {
        sys::keep_open(*fd).map_err(|e| ("fcntl", e))?;
    }
    if let Some(dir) = &job.working_dir {
        sys::chdir(dir).map_err(|e| ("chdir to the working directory", e))?;
    }
    if let Some((groups, gid, uid)) = &job.credentials {
        sys::setgroups(groups).map_err(|e| ("setgroups", e))?;
        sys::setgid(*gid).map_err(|e| ("setgid", e))?;
        sys::setuid(*uid).map_err(|e| ("setuid", e))?;
    }
    sys::unblock_all_signals().map_err(|e| ("sigprocmask", e))
}

fn exec(storage: &Storage) -> c_int {
    sys::execve(&storage.job.path, &storage.argv, &storage.envp)
}

/// `nix2gpu-init: cannot run `PROGRAM`: STEP failed (os error N)` on the child's stderr, built
/// in a buffer on its stack.
fn report(storage: &Storage, step: &str, error: c_int) {
    let mut line = Line::default();
    line.push(b"nix2gpu-init: cannot run `");
    line.push(storage.job.path.as_bytes());
    line.push(b"`: ");
    line.push(step.as_bytes());
    line.push(b" failed (os error ");
    line.push_number(error);
    line.push(b")\n");
    sys::write_stderr(line.bytes());
}

/// A fixed buffer that truncates what does not fit.
struct Line {
    buffer: [u8; 512],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self { buffer: [0; 512], len: 0 }
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        for (slot, byte) in self.buffer.iter_mut().skip(self.len).zip(bytes) {
            *slot = *byte;
            self.len += 1;
        }
    }

    fn push_number(&mut self, number: c_int) {
        let mut digits = [0u8; 10];
        let mut rest = number.unsigned_abs();
        let mut count = 0;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
            count += 1;
            if rest == 0 {
                break;
            }
        }
        self.push(digits.get(digits.len() - count..).unwrap_or_default());
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.get(..self.len).unwrap_or_default()
    }
}

/// Raw Linux system calls on x86_64: a return value in -4095..-1 is -errno. None of them
/// touches `errno` or any other memory of libc.
mod sys {
    use std::arch::asm;
    use std::ffi::CStr;

    use nix::libc::{self, c_int, c_long};

    /// # Safety
    /// The arguments must be valid for system call `number`.
    unsafe fn call(number: c_long, args: [usize; 4]) -> isize {
        let result: isize;
        // SAFETY: the caller's contract; the syscall instruction clobbers rcx and r11.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") number as isize => result,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        result
    }

    fn check(result: isize) -> Result<(), c_int> {
        if (-4095..0).contains(&result) { Err(-result as c_int) } else { Ok(()) }
    }

    /// The kernel's `struct sigaction` on x86_64.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }

    const SIGSET_BYTES: usize = 8;

    /// The signals the init's process has a handler for: std's for stack overflows (SIGSEGV,
    /// SIGBUS) and glibc's for its own use of real-time signals 32 and 33 (thread cancellation
    /// and set*id across threads, installed with the first thread). The init itself installs
    /// none: its signals arrive through a signalfd. A PID-1 test checks this list against the
    /// running init's caught set (SigCgt in /proc/PID/status).
    const HANDLED: [usize; 4] = [libc::SIGSEGV as usize, libc::SIGBUS as usize, 32, 33];

    /// Every handled signal, and SIGPIPE (which Rust's runtime ignores in the init), back to
    /// its default action, before the child unblocks signals: a handler of the init must never
    /// run in the child, which shares its memory. Other ignored signals stay ignored, as across
    /// fork and exec. A fixed list, not a query of all 64 actions: five system calls instead of
    /// 69 in every start.
    pub fn default_signal_handlers() {
        let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
        let default_ptr = std::ptr::from_ref(&default) as usize;
        for signal in HANDLED.into_iter().chain([libc::SIGPIPE as usize]) {
            // SAFETY: sets SIG_DFL from a structure of the kernel's layout.
            unsafe { call(libc::SYS_rt_sigaction, [signal, default_ptr, 0, SIGSET_BYTES]) };
        }
    }

    pub fn unblock_all_signals() -> Result<(), c_int> {
        let empty: u64 = 0;
        let empty_ptr = std::ptr::from_ref(&empty) as usize;
        // SAFETY: an 8-byte signal set.
        check(unsafe {
            call(libc::SYS_rt_sigprocmask, [libc::SIG_SETMASK as usize, empty_ptr, 0, SIGSET_BYTES])
        })
    }

    pub fn setsid() -> Result<(), c_int> {
        // SAFETY: no arguments.
        check(unsafe { call(libc::SYS_setsid, [0; 4]) })
    }

    pub fn setpgid_self() -> Result<(), c_int> {
        // SAFETY: integers only.
        check(unsafe { call(libc::SYS_setpgid, [0; 4]) })
    }

    /// The child's process group becomes the terminal's foreground group. No terminal (or none
    /// controlling) is fine: there is nothing to hand over.
    pub fn take_terminal() -> Result<(), c_int> {
        // SAFETY: no arguments.
        let group = unsafe { call(libc::SYS_getpgid, [0; 4]) } as libc::pid_t;
        let group_ptr = std::ptr::from_ref(&group) as usize;
        // SAFETY: TIOCSPGRP reads one pid_t.
        match check(unsafe { call(libc::SYS_ioctl, [0, libc::TIOCSPGRP as usize, group_ptr, 0]) }) {
            Err(libc::ENOTTY | libc::ENXIO | libc::EBADF) => Ok(()),
            other => other,
        }
    }

    pub fn dup2(source: c_int, target: c_int) -> Result<(), c_int> {
        // SAFETY: integers only.
        check(unsafe { call(libc::SYS_dup2, [source as usize, target as usize, 0, 0]) })
    }

    /// Clears close-on-exec.
    pub fn keep_open(fd: c_int) -> Result<(), c_int> {
        // SAFETY: integers only.
        check(unsafe { call(libc::SYS_fcntl, [fd as usize, libc::F_SETFD as usize, 0, 0]) })
    }

    pub fn chdir(dir: &CStr) -> Result<(), c_int> {
        // SAFETY: a NUL-terminated path.
        check(unsafe { call(libc::SYS_chdir, [dir.as_ptr() as usize, 0, 0, 0]) })
    }

    pub fn setgroups(groups: &[libc::gid_t]) -> Result<(), c_int> {
        // SAFETY: a count and an array of that many gids.
        check(unsafe { call(libc::SYS_setgroups, [groups.len(), groups.as_ptr() as usize, 0, 0]) })
    }

    pub fn setgid(gid: libc::gid_t) -> Result<(), c_int> {
        // SAFETY: an integer.
        check(unsafe { call(libc::SYS_setgid, [gid as usize, 0, 0, 0]) })
    }

    pub fn setuid(uid: libc::uid_t) -> Result<(), c_int> {
        // SAFETY: an integer.
        check(unsafe { call(libc::SYS_setuid, [uid as usize, 0, 0, 0]) })
    }

    /// Returns only on failure, with the errno.
    pub fn execve(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> c_int {
        let args = [path.as_ptr() as usize, argv.as_ptr() as usize, envp.as_ptr() as usize, 0];
        // SAFETY: a NUL-terminated path and two null-terminated arrays of such strings.
        match check(unsafe { call(libc::SYS_execve, args) }) {
            Err(error) => error,
            Ok(()) => libc::EINVAL,
        }
    }

    pub fn write_stderr(bytes: &[u8]) {
        // SAFETY: a buffer and its length.
        unsafe { call(libc::SYS_write, [2, bytes.as_ptr() as usize, bytes.len(), 0]) };
    }

    pub fn exit_group(code: c_int) -> ! {
        loop {
            // SAFETY: ends this process (the child's own thread group).
            unsafe { call(libc::SYS_exit_group, [code as usize, 0, 0, 0]) };
        }
    }
}
