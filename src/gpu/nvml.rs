//! NVML, NVIDIA's management library: the report `gpu-probe` prints (a serde type, so that
//! whoever runs the probe as a child reads it back), NVML's return codes by name, and the
//! probe that loads the library.
//!
//! [`probe_library`] dlopens a driver library into the calling process, where a crash or a
//! hang inside it takes that process along. It therefore only runs in `gpu-probe`'s hidden
//! child mode, under the deadline [`super::probe`] keeps; PID 1 never loads NVML.
//!
//! Signatures and constants are NVML's header's (nvml.h, API version 13, as vendored in
//! NVIDIA/go-nvml gen/nvml/nvml.h). The unversioned names there are macros for the `_v2`
//! symbols, so those are the ones looked up.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::fmt;
use std::path::Path;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use serde::{Deserialize, Serialize};

/// The library's soname: what NVIDIA's own tools open, and what the toolkit links.
pub const LIBRARY: &str = "libnvidia-ml.so.1";

/// What the probe found out, from NVML or from `nvidia-smi`, and why not where it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// Where the driver version and devices came from; `None` when nothing answered.
    pub source: Option<Source>,
    /// The `libnvidia-ml.so.1` that was loaded (or tried).
    pub library: Option<String>,
    /// The kernel driver's version, e.g. `535.309.01`.
    pub driver_version: Option<String>,
    pub devices: Vec<GpuDevice>,
    /// Why NVML gave no answer.
    pub nvml_error: Option<Failure>,
    /// Why `nvidia-smi` gave no answer, when it was tried (only when NVML could not be loaded).
    pub nvidia_smi_error: Option<Failure>,
}

/// Which program answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Nvml,
    NvidiaSmi,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuDevice {
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub memory: Option<Memory>,
    /// The first query that failed for this device; the fields it would have filled are `None`.
    pub error: Option<Failure>,
}

/// Device memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
}

/// Why a source gave no answer. Each names what a person needs to act on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// The library is not in any directory searched, or `dlopen` refused it.
    LibraryNotLoaded { message: String },
    /// The library lacks a function the probe needs (not NVML, or too old).
    SymbolMissing { symbol: String, message: String },
    /// An NVML call returned an error: `code` is its `nvmlReturn_t`, `name` the header's name
    /// for it, `description` what `nvmlErrorString` says.
    Nvml { function: String, code: i32, name: String, description: Option<String> },
    /// The program died by a signal (the driver library crashed it).
    Crashed { signal: i32, signal_name: String },
    /// No answer within the timeout; the program was killed (`still_running` if it had not
    /// gone a moment after SIGKILL, e.g. stuck in the kernel driver).
    Hung { timeout_seconds: f64, still_running: bool },
    /// The program could not be started.
    NotRun { message: String },
    /// The program exited with a failure code; `output` is what it said.
    Exited { code: i32, output: String },
    /// The program's output was not understood.
    Unreadable { message: String },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LibraryNotLoaded { message } => write!(f, "cannot load the library: {message}"),
            Self::SymbolMissing { symbol, message } => write!(f, "missing function {symbol}: {message}"),
            Self::Nvml { function, code, name, description } => {
                write!(f, "{function} failed: {name} ({code})")?;
                match description {
                    Some(description) => write!(f, ": {description}"),
                    None => Ok(()),
                }
            }
            Self::Crashed { signal, signal_name } => write!(f, "crashed: killed by {signal_name} ({signal})"),
            Self::Hung { timeout_seconds, still_running } => {
                write!(f, "hung: no answer within {timeout_seconds}s, killed")?;
                if *still_running {
                    f.write_str(" (but still not gone: stuck in the kernel?)")
                } else {
                    Ok(())
                }
            }
            Self::NotRun { message } => write!(f, "cannot run: {message}"),
            Self::Exited { code, output } if output.is_empty() => write!(f, "exited with code {code}"),
            Self::Exited { code, output } => write!(f, "exited with code {code}: {output}"),
            Self::Unreadable { message } => write!(f, "unreadable answer: {message}"),
        }
    }
}

impl GpuReport {
    /// A report with nothing in it yet.
    pub fn empty(library: Option<String>) -> Self {
        Self {
            source: None,
            library,
            driver_version: None,
            devices: Vec::new(),
            nvml_error: None,
            nvidia_smi_error: None,
        }
    }

    /// At least one GPU answered: the probe's success (exit code 0).
    pub fn found_gpu(&self) -> bool {
        !self.devices.is_empty()
    }
}

/// `nvmlReturn_t` values and their names (nvml.h, `nvmlReturn_enum`).
const RETURN_CODES: [(i32, &str); 32] = [
    (0, "NVML_SUCCESS"),
    (1, "NVML_ERROR_UNINITIALIZED"),
    (2, "NVML_ERROR_INVALID_ARGUMENT"),
    (3, "NVML_ERROR_NOT_SUPPORTED"),
    (4, "NVML_ERROR_NO_PERMISSION"),
    (5, "NVML_ERROR_ALREADY_INITIALIZED"),
    (6, "NVML_ERROR_NOT_FOUND"),
    (7, "NVML_ERROR_INSUFFICIENT_SIZE"),
    (8, "NVML_ERROR_INSUFFICIENT_POWER"),
    (9, "NVML_ERROR_DRIVER_NOT_LOADED"),
    (10, "NVML_ERROR_TIMEOUT"),
    (11, "NVML_ERROR_IRQ_ISSUE"),
    (12, "NVML_ERROR_LIBRARY_NOT_FOUND"),
    (13, "NVML_ERROR_FUNCTION_NOT_FOUND"),
    (14, "NVML_ERROR_CORRUPTED_INFOROM"),
    (15, "NVML_ERROR_GPU_IS_LOST"),
    (16, "NVML_ERROR_RESET_REQUIRED"),
    (17, "NVML_ERROR_OPERATING_SYSTEM"),
    (18, "NVML_ERROR_LIB_RM_VERSION_MISMATCH"),
    (19, "NVML_ERROR_IN_USE"),
    (20, "NVML_ERROR_MEMORY"),
    (21, "NVML_ERROR_NO_DATA"),
    (22, "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED"),
    (23, "NVML_ERROR_INSUFFICIENT_RESOURCES"),
    (24, "NVML_ERROR_FREQ_NOT_SUPPORTED"),
    (25, "NVML_ERROR_ARGUMENT_VERSION_MISMATCH"),
    (26, "NVML_ERROR_DEPRECATED"),
    (27, "NVML_ERROR_NOT_READY"),
    (28, "NVML_ERROR_GPU_NOT_FOUND"),
    (29, "NVML_ERROR_INVALID_STATE"),
    (30, "NVML_ERROR_RESET_TYPE_NOT_SUPPORTED"),
    (999, "NVML_ERROR_UNKNOWN"),
];

/// The header's name for an `nvmlReturn_t`; a code newer than this table says so.
pub fn return_code_name(code: i32) -> &'static str {
    RETURN_CODES.iter().find(|(known, _)| *known == code).map_or("NVML_ERROR_UNRECOGNIZED", |(_, name)| name)
}

/// Loads NVML from `path` and reads the driver version and every device. Runs in the probe's
/// child process only (see the module comment).
pub fn probe_library(path: &Path) -> GpuReport {
    let mut report = GpuReport::empty(Some(path.display().to_string()));
    match Nvml::load(path).and_then(|nvml| nvml.read()) {
        Ok((driver_version, devices)) => {
            report.source = Some(Source::Nvml);
            report.driver_version = Some(driver_version);
            report.devices = devices;
        }
        Err(failure) => report.nvml_error = Some(failure),
    }
    report
}

/// `nvmlDevice_t`: an opaque pointer (nvml.h `typedef struct nvmlDevice_st* nvmlDevice_t`).
type DeviceHandle = *mut c_void;

/// `nvmlMemory_t` (nvml.h): bytes, in this order.
#[repr(C)]
#[derive(Default)]
struct RawMemory {
    total: u64,
    free: u64,
    used: u64,
}

/// Room for every string NVML returns here: larger than the header's buffer sizes for the
/// driver version (80), the device name (96) and the UUID (96).
const TEXT_BUFFER: usize = 256;

/// The NVML functions the probe calls, resolved up front so that a library without one of
/// them is reported before anything is called.
struct Nvml {
    init: unsafe extern "C" fn() -> c_int,
    shutdown: unsafe extern "C" fn() -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    driver_version: unsafe extern "C" fn(*mut c_char, c_uint) -> c_int,
    device_count: unsafe extern "C" fn(*mut c_uint) -> c_int,
    device_by_index: unsafe extern "C" fn(c_uint, *mut DeviceHandle) -> c_int,
    device_name: unsafe extern "C" fn(DeviceHandle, *mut c_char, c_uint) -> c_int,
    device_uuid: unsafe extern "C" fn(DeviceHandle, *mut c_char, c_uint) -> c_int,
    device_memory: unsafe extern "C" fn(DeviceHandle, *mut RawMemory) -> c_int,
    /// Keeps the function pointers above valid.
    _library: Library,
}

impl Nvml {
    fn load(path: &Path) -> Result<Self, Failure> {
        // SAFETY: loading runs the library's initialisers; that this could crash or hang is
        // why this runs in a child process whose death the parent reports.
        let library = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|error| Failure::LibraryNotLoaded { message: dl_error(&error) })?;
        // SAFETY (each): the types are the header's signatures for these symbols.
        unsafe {
            Ok(Self {
                init: symbol(&library, "nvmlInit_v2")?,
                shutdown: symbol(&library, "nvmlShutdown")?,
                error_string: symbol(&library, "nvmlErrorString")?,
                driver_version: symbol(&library, "nvmlSystemGetDriverVersion")?,
                device_count: symbol(&library, "nvmlDeviceGetCount_v2")?,
                device_by_index: symbol(&library, "nvmlDeviceGetHandleByIndex_v2")?,
                device_name: symbol(&library, "nvmlDeviceGetName")?,
                device_uuid: symbol(&library, "nvmlDeviceGetUUID")?,
                device_memory: symbol(&library, "nvmlDeviceGetMemoryInfo")?,
                _library: library,
            })
        }
    }

    /// Init, read, shutdown (also after a failed read: NVML counts inits).
    fn read(&self) -> Result<(String, Vec<GpuDevice>), Failure> {
        // SAFETY: takes no arguments.
        self.check("nvmlInit_v2", unsafe { (self.init)() })?;
        let result = self.read_initialised();
        // SAFETY: NVML was initialised above. Its result changes nothing about what was read.
        unsafe { (self.shutdown)() };
        result
    }

    fn read_initialised(&self) -> Result<(String, Vec<GpuDevice>), Failure> {
        // SAFETY: the buffer and its length come from `text`.
        let driver_version = self.text("nvmlSystemGetDriverVersion", |buffer, length| unsafe {
            (self.driver_version)(buffer, length)
        })?;
        let mut count: c_uint = 0;
        // SAFETY: writes one unsigned int.
        self.check("nvmlDeviceGetCount_v2", unsafe { (self.device_count)(&mut count) })?;
        Ok((driver_version, (0..count).map(|index| self.device(index)).collect()))
    }

    /// One device; a query that fails is recorded on the device, not fatal to the others
    /// (NVML counts devices it may then refuse: `NVML_ERROR_NO_PERMISSION`).
    fn device(&self, index: u32) -> GpuDevice {
        let mut device = GpuDevice { index, name: None, uuid: None, memory: None, error: None };
        let mut handle: DeviceHandle = std::ptr::null_mut();
        // SAFETY: writes one handle.
        let filled = self
            .check("nvmlDeviceGetHandleByIndex_v2", unsafe { (self.device_by_index)(index, &mut handle) })
            .and_then(|()| {
                // SAFETY (each): `handle` is the one NVML returned; buffers come from `text`.
                device.name = Some(self.text("nvmlDeviceGetName", |buffer, length| unsafe {
                    (self.device_name)(handle, buffer, length)
                })?);
                device.uuid = Some(self.text("nvmlDeviceGetUUID", |buffer, length| unsafe {
                    (self.device_uuid)(handle, buffer, length)
                })?);
                let mut raw = RawMemory::default();
                self.check("nvmlDeviceGetMemoryInfo", unsafe { (self.device_memory)(handle, &mut raw) })?;
                device.memory =
                    Some(Memory { total_bytes: raw.total, used_bytes: raw.used, free_bytes: raw.free });
                Ok(())
            });
        device.error = filled.err();
        device
    }

    /// Calls `query` with a buffer and its length, and reads the NUL-terminated text it wrote.
    fn text(
        &self,
        function: &str,
        query: impl FnOnce(*mut c_char, c_uint) -> c_int,
    ) -> Result<String, Failure> {
        let mut buffer = [0u8; TEXT_BUFFER];
        self.check(function, query(buffer.as_mut_ptr().cast(), TEXT_BUFFER as c_uint))?;
        let text = CStr::from_bytes_until_nul(&buffer).map_or_else(
            |_| String::from_utf8_lossy(&buffer).into_owned(),
            |text| text.to_string_lossy().into_owned(),
        );
        Ok(text)
    }

    /// `Ok` for `NVML_SUCCESS`, else the error by name, code and NVML's own description.
    fn check(&self, function: &str, code: c_int) -> Result<(), Failure> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: nvmlErrorString takes any code and returns a static string (or null).
        let description = unsafe { (self.error_string)(code) };
        let description = (!description.is_null())
            // SAFETY: non-null, NUL-terminated, static (nvml.h).
            .then(|| unsafe { CStr::from_ptr(description) }.to_string_lossy().into_owned());
        Err(Failure::Nvml {
            function: function.to_string(),
            code,
            name: return_code_name(code).to_string(),
            description,
        })
    }
}

/// Looks up `name` as a function pointer of type `T`.
///
/// # Safety
/// `T` must be the symbol's real type.
unsafe fn symbol<T: Copy>(library: &Library, name: &str) -> Result<T, Failure> {
    // SAFETY: forwarded to the caller.
    unsafe { library.get::<T>(name) }
        .map(|symbol| *symbol)
        .map_err(|error| Failure::SymbolMissing { symbol: name.to_string(), message: dl_error(&error) })
}

/// dlerror's text: libloading's Display says only "dlopen failed"; the source has the reason.
/// The loader's message, made fit for a log line: a corrupted library's dependency names are
/// whatever bytes its string table holds, so anything but printable ASCII becomes `?`, and
/// the message is cut at [`MAX_DL_ERROR`] characters.
fn dl_error(error: &libloading::Error) -> String {
    use std::error::Error;
    let message = error.source().map_or_else(|| error.to_string(), ToString::to_string);
    printable(&message)
}

const MAX_DL_ERROR: usize = 300;

fn printable(text: &str) -> String {
    text.chars().take(MAX_DL_ERROR).map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_messages_are_printable_and_bounded() {
        let garbage = format!("\u{fffd}j\u{19}\u{fffd}a{}: cannot open shared object file", "x".repeat(400));
        let message = printable(&garbage);
        assert!(message.starts_with("?j??axxx"), "{message}");
        assert_eq!(message.chars().count(), MAX_DL_ERROR);
        assert_eq!(printable("libfoo.so: cannot open"), "libfoo.so: cannot open");
    }

    #[test]
    fn return_codes_by_name() {
        assert_eq!(return_code_name(9), "NVML_ERROR_DRIVER_NOT_LOADED");
        assert_eq!(return_code_name(999), "NVML_ERROR_UNKNOWN");
        assert_eq!(return_code_name(31), "NVML_ERROR_UNRECOGNIZED");
        let codes: Vec<i32> = RETURN_CODES.iter().map(|(code, _)| *code).collect();
        assert_eq!(&codes[..31], (0..31).collect::<Vec<_>>().as_slice(), "the header's codes are dense");
    }

    #[test]
    fn failures_read_well() {
        let nvml = Failure::Nvml {
            function: "nvmlInit_v2".into(),
            code: 9,
            name: "NVML_ERROR_DRIVER_NOT_LOADED".into(),
            description: Some("Driver Not Loaded".into()),
        };
        assert_eq!(
            nvml.to_string(),
            "nvmlInit_v2 failed: NVML_ERROR_DRIVER_NOT_LOADED (9): Driver Not Loaded"
        );
        let crash = Failure::Crashed { signal: 11, signal_name: "SIGSEGV".into() };
        assert_eq!(crash.to_string(), "crashed: killed by SIGSEGV (11)");
        let json = serde_json::to_value(&crash).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "crashed", "signal": 11, "signal_name": "SIGSEGV"}));
    }

    #[test]
    fn a_library_that_is_not_nvml_lacks_its_functions() {
        // The C library is loadable and certainly not NVML: the probe names the first
        // function it misses instead of calling anything.
        let report = probe_library(Path::new("libc.so.6"));
        match report.nvml_error {
            Some(Failure::SymbolMissing { symbol, message }) => {
                assert_eq!(symbol, "nvmlInit_v2");
                assert!(message.contains("undefined symbol"), "{message}");
            }
            other => panic!("expected a missing symbol, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_library_is_reported_with_dlerror() {
        let report = probe_library(Path::new("/nonexistent/libnvidia-ml.so.1"));
        match report.nvml_error {
            Some(Failure::LibraryNotLoaded { message }) => {
                assert!(message.contains("No such file or directory"), "{message}")
            }
            other => panic!("expected a load failure, got {other:?}"),
        }
        assert_eq!(report.library.as_deref(), Some("/nonexistent/libnvidia-ml.so.1"));
    }
}
