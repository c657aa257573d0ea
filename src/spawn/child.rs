//! The child between `clone` and `exec`.
//!
//! A child is created with `CLONE_VM | CLONE_VFORK | CLONE_FILES`: it runs on a stack of its
//! own in the init's memory and descriptor table while the init waits, until it has exec'd
//! (or failed to). Both sharings are what keep a start cheap when the init supervises a
//! thousand services:
//! - memory: a fork would copy the init's page tables and make every page copy-on-write, and
//!   the exec right after would throw the copy away;
//! - descriptors: a fork (or `posix_spawn`) copies the whole table, two pipe ends per running
//!   service, and the exec then closes every one of them again, one by one, so each start cost
//!   in proportion to the services already running. Here the child's first act is
//!   `close_range(first, ~0, CLOSE_RANGE_UNSHARE)`, which gives it a private table holding only
//!   the descriptors below `first`: the standard three and the [`Slots`], where the init puts
//!   what the child needs before each start.
//!
//! Memory is shared until exec, so the child only makes system calls on data prepared before
//! the clone: it allocates nothing, takes no lock and cannot panic. Privileges are dropped with
//! raw system calls, because glibc's `setuid` and friends change the credentials of every
//! thread of the process, which for a child sharing the init's memory would be the init's.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::libc::{self, c_int, c_uint, c_void};
use nix::unistd::Pid;

/// Descriptors kept open for the whole life of the init: /dev/null, and the two places where
/// the write ends of a service's pipes are put for its start. A child copies the descriptors
/// below `first` and nothing else.
struct Slots {
    null: OwnedFd,
    out: OwnedFd,
    err: OwnedFd,
    first: c_uint,
}

static SLOTS: OnceLock<Slots> = OnceLock::new();

/// Takes the slots. The init does this at boot before it opens anything of its own, so that
/// they are the lowest free descriptors and few others lie below them; otherwise the first
/// start does it.
pub fn reserve_slots() -> io::Result<()> {
    if SLOTS.get().is_some() {
        return Ok(());
    }
    let null = above_stdio(std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?.into())?;
    let out = above_stdio(null.try_clone()?)?;
    let err = above_stdio(null.try_clone()?)?;
    let highest = null.as_raw_fd().max(out.as_raw_fd()).max(err.as_raw_fd());
    let first = c_uint::try_from(highest + 1).unwrap_or(c_uint::MAX);
    let _ = SLOTS.set(Slots { null, out, err, first });
    Ok(())
}

fn slots() -> io::Result<&'static Slots> {
    reserve_slots()?;
    // Set just above (or before) unless reserving failed, which returned the error.
    SLOTS.get().ok_or_else(|| io::Error::other("descriptor slots not reserved"))
}

/// `fd`, moved to 3 or above: when the init started with stdin, stdout or stderr closed, an
/// open takes its number.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; it touches no memory.
    match unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) } {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: a new descriptor that nothing else owns.
        moved => Ok(unsafe { OwnedFd::from_raw_fd(moved) }),
    }
}

/// Where the child's stdout and stderr go.
pub enum ChildOutput {
    Inherit,
    Null,
    /// The write ends of the service's stdout and stderr pipes.
    Pipes(OwnedFd, OwnedFd),
}

/// Everything the child does, prepared in the init.
pub struct Job<'a> {
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    pub working_dir: Option<&'a CStr>,
    pub stdin_null: bool,
    pub output: ChildOutput,
    /// A process group of its own in the init's session (the main process) instead of a
    /// session of its own.
    pub main: bool,
    /// Hand the terminal on stdin to the child's group.
    pub foreground: bool,
    /// Supplementary groups, gid and uid.
    pub credentials: Option<(&'a [libc::gid_t], libc::gid_t, libc::uid_t)>,
    /// Descriptors to keep open across exec: the main process's inheritance. The child then
    /// copies the whole table, as only the main process (started once) needs.
    pub keep_open: &'a [RawFd],
}

/// What the child reads: raw pointers into data that lives until `start` returns, which is
/// after the child has exec'd or exited.
struct Plan {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    working_dir: *const libc::c_char,
    /// Sources for descriptors 0, 1, 2; -1 leaves one as it is.
    stdio: [RawFd; 3],
    /// Copy only the descriptors below this one (`None`: all of them).
    share_below: Option<c_uint>,
    main: bool,
    foreground: bool,
    groups: *const libc::gid_t,
    group_count: usize,
    ids: Option<(libc::gid_t, libc::uid_t)>,
    keep_open: *const RawFd,
    keep_open_count: usize,
    /// The errno that stopped the child; 0 when it exec'd.
    error: AtomicI32,
}

/// Starts `job` with the program at `path` and returns once the child has exec'd. An error is
/// the one that stopped the child (the exec's, or a step's before it).
pub fn start(path: &CStr, job: &Job<'_>) -> io::Result<Pid> {
    let slots = slots()?;
    let stdio = place_stdio(job, slots);
    let started = stdio.and_then(|stdio| clone_and_wait(&plan(path, job, stdio, slots)));
    // The slots get /dev/null back whatever happened, so the init keeps no write end open (a
    // pipe with a writer left never reports end-of-file).
    release(slots);
    started
}

fn plan(path: &CStr, job: &Job<'_>, stdio: [RawFd; 3], slots: &Slots) -> PlanWithArrays {
    let argv = null_terminated(job.argv);
    let envp = null_terminated(job.envp);
    let groups = job.credentials.map_or(&[][..], |(groups, _, _)| groups);
    let plan = Plan {
        path: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        working_dir: job.working_dir.map_or(std::ptr::null(), CStr::as_ptr),
        stdio,
        share_below: job.keep_open.is_empty().then_some(slots.first),
        main: job.main,
        foreground: job.foreground,
        groups: groups.as_ptr(),
        group_count: groups.len(),
        ids: job.credentials.map(|(_, gid, uid)| (gid, uid)),
        keep_open: job.keep_open.as_ptr(),
        keep_open_count: job.keep_open.len(),
        error: AtomicI32::new(0),
    };
    PlanWithArrays { plan, _argv: argv, _envp: envp }
}

/// The plan with the pointer arrays it points into, kept alive together.
struct PlanWithArrays {
    plan: Plan,
    _argv: Vec<*const libc::c_char>,
    _envp: Vec<*const libc::c_char>,
}

/// The descriptors the child puts on 0, 1 and 2. A service's pipe ends are moved into the
/// slots (the init's own copies are closed by the caller dropping them), since the child sees
/// nothing else.
fn place_stdio(job: &Job<'_>, slots: &Slots) -> io::Result<[RawFd; 3]> {
    let null = slots.null.as_raw_fd();
    let stdin = if job.stdin_null { null } else { -1 };
    let (out, err) = match &job.output {
        ChildOutput::Inherit => (-1, -1),
        ChildOutput::Null => (null, null),
        ChildOutput::Pipes(out, err) => {
            dup_into(out.as_raw_fd(), &slots.out)?;
            dup_into(err.as_raw_fd(), &slots.err)?;
            (slots.out.as_raw_fd(), slots.err.as_raw_fd())
        }
    };
    Ok([stdin, out, err])
}

/// Puts /dev/null back into the pipe slots.
fn release(slots: &Slots) {
    let _ = dup_into(slots.null.as_raw_fd(), &slots.out);
    let _ = dup_into(slots.null.as_raw_fd(), &slots.err);
}

/// dup3(2) onto a slot, close-on-exec: the slot keeps its number, now for `fd`'s file.
fn dup_into(fd: RawFd, slot: &OwnedFd) -> io::Result<()> {
    // SAFETY: both descriptors are open and owned by the init; the slot's number stays owned by
    // its OwnedFd, only the file behind it changes.
    match unsafe { libc::dup3(fd, slot.as_raw_fd(), libc::O_CLOEXEC) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// The argument or environment array as exec wants it: pointers, then a null pointer.
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect()
}

/// The child's stack: it runs a handful of system calls on data prepared by the init.
const STACK_BYTES: usize = 64 * 1024;

fn clone_and_wait(plan: &PlanWithArrays) -> io::Result<Pid> {
    let plan = &plan.plan;
    // u128 elements keep the stack 16-byte aligned, as the ABI wants.
    let mut stack = vec![0u128; STACK_BYTES / 16];
    let top = stack.as_mut_ptr_range().end.cast::<c_void>();
    let all = full_signal_set();
    let mut previous = empty_signal_set();
    // No handler of the init may run in the child, which shares its memory: every signal stays
    // blocked from before the clone until the child has reset the handlers.
    // SAFETY: valid signal sets; the mask is restored below.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous) };
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD;
    // SAFETY: `child` only makes system calls on `plan`, which outlives the child's use of it
    // (CLONE_VFORK: clone returns after the child exec'd or exited), and runs on `stack`,
    // which is not touched by the init meanwhile.
    let pid = unsafe { libc::clone(child, top, flags, std::ptr::from_ref(plan).cast_mut().cast()) };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    drop(stack);
    if pid == -1 {
        return Err(clone_error);
    }
    let pid = Pid::from_raw(pid);
    match plan.error.load(Ordering::Acquire) {
        0 => Ok(pid),
        error => {
            // The child exited (127) without exec: reap it here, so that the reaper never sees
            // a process nobody started.
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(io::Error::from_raw_os_error(error))
        }
    }
}

fn full_signal_set() -> libc::sigset_t {
    let mut set = empty_signal_set();
    // SAFETY: an initialized set.
    unsafe { libc::sigfillset(&mut set) };
    set
}

fn empty_signal_set() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::uninit();
    // SAFETY: sigemptyset initializes the whole set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        set.assume_init()
    }
}

/// The child: the steps in order, then exec. On failure the errno goes to `plan.error` and the
/// child exits 127.
extern "C" fn child(plan: *mut c_void) -> c_int {
    // SAFETY: the pointer is the `Plan` that `clone_and_wait` passed, alive until we exec.
    let plan = unsafe { &*plan.cast::<Plan>() };
    // SAFETY: each step only makes system calls on the plan's data (see the module doc).
    let error = unsafe { prepare(plan) }.err().unwrap_or_else(|| {
        // SAFETY: pointers to NUL-terminated strings and null-terminated arrays.
        unsafe { libc::execve(plan.path, plan.argv, plan.envp) };
        errno()
    });
    plan.error.store(error.max(1), Ordering::Release);
    // SAFETY: _exit runs no atexit handler and flushes nothing of the shared memory.
    unsafe { libc::_exit(crate::exit_code::NOT_FOUND) }
}

/// Everything before exec. Errors are errno values.
///
/// # Safety
/// Only in the cloned child, with a plan whose pointers are valid.
unsafe fn prepare(plan: &Plan) -> Result<(), c_int> {
    // SAFETY: the caller's contract; each call below is a plain system call.
    unsafe {
        own_descriptor_table(plan.share_below)?;
        default_signal_handlers();
        if plan.main {
            check(libc::setpgid(0, 0))?;
            if plan.foreground {
                take_terminal()?;
            }
        } else {
            check(libc::setsid())?;
        }
        for (target, source) in (0..).zip(plan.stdio) {
            if source >= 0 {
                check(libc::dup2(source, target))?;
            }
        }
        for index in 0..plan.keep_open_count {
            check(libc::fcntl(*plan.keep_open.add(index), libc::F_SETFD, 0))?;
        }
        if !plan.working_dir.is_null() {
            check(libc::chdir(plan.working_dir))?;
        }
        if let Some((gid, uid)) = plan.ids {
            check_long(libc::syscall(libc::SYS_setgroups, plan.group_count, plan.groups))?;
            check_long(libc::syscall(libc::SYS_setgid, gid))?;
            check_long(libc::syscall(libc::SYS_setuid, uid))?;
        }
        let empty = empty_signal_set();
        check(libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()))
    }
}

/// A descriptor table of the child's own: only the descriptors below `share_below` when given
/// (kernels before 5.9 lack the flag; then the whole table), else all of them.
unsafe fn own_descriptor_table(share_below: Option<c_uint>) -> Result<(), c_int> {
    if let Some(first) = share_below {
        // SAFETY: close_range(2) takes integers only.
        let done =
            unsafe { libc::syscall(libc::SYS_close_range, first, c_uint::MAX, libc::CLOSE_RANGE_UNSHARE) };
        if done == 0 {
            return Ok(());
        }
    }
    // SAFETY: unshare(2) takes an integer only.
    check(unsafe { libc::unshare(libc::CLONE_FILES) })
}

/// Every caught signal back to its default action, and SIGPIPE too (Rust's runtime ignores it
/// in the init); other ignored signals stay ignored, as across a fork and exec.
unsafe fn default_signal_handlers() {
    for signal in 1..libc::SIGRTMAX() {
        let mut current = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: reads the action into a zeroed structure of the right type.
        if unsafe { libc::sigaction(signal, std::ptr::null(), current.as_mut_ptr()) } != 0 {
            continue;
        }
        // SAFETY: sigaction succeeded and filled it.
        let handler = unsafe { current.assume_init() }.sa_sigaction;
        if handler != libc::SIG_DFL && (handler != libc::SIG_IGN || signal == libc::SIGPIPE) {
            let mut default = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
            // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask and no flags.
            unsafe { libc::sigaction(signal, default.as_mut_ptr(), std::ptr::null_mut()) };
        }
    }
}

/// Makes the child's process group the foreground group of the terminal on stdin. No terminal
/// (or none controlling) is fine: there is nothing to hand over.
unsafe fn take_terminal() -> Result<(), c_int> {
    // SAFETY: TIOCSPGRP reads one pid_t from the pointer.
    let group = unsafe { libc::getpgrp() };
    match check(unsafe { libc::ioctl(0, libc::TIOCSPGRP, &group) }) {
        Err(libc::ENOTTY | libc::ENXIO | libc::EBADF) => Ok(()),
        other => other,
    }
}

fn check(result: c_int) -> Result<(), c_int> {
    if result == -1 { Err(errno()) } else { Ok(()) }
}

fn check_long(result: libc::c_long) -> Result<(), c_int> {
    if result == -1 { Err(errno()) } else { Ok(()) }
}

fn errno() -> c_int {
    // SAFETY: the calling thread's errno location, always valid.
    unsafe { *libc::__errno_location() }
}
