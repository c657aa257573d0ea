//! The fallback when NVML cannot be loaded at all: `nvidia-smi`'s CSV query, which names the
//! same facts (it finds `libnvidia-ml.so.1` its own way, e.g. through `LD_LIBRARY_PATH`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::bounded;
use super::nvml::{Failure, GpuDevice, Memory};

/// The fields asked for, in this order (`nvidia-smi --help-query-gpu`).
const QUERY: &str = "--query-gpu=driver_version,name,uuid,memory.total,memory.used,memory.free";
/// No header line, no units: numbers in MiB.
const FORMAT: &str = "--format=csv,noheader,nounits";

/// Runs `program` (a path, or `nvidia-smi` looked up in PATH) under `timeout` and reads its
/// answer: the driver version and the devices.
pub fn query(program: &Path, timeout: Duration) -> Result<(String, Vec<GpuDevice>), Failure> {
    let finished = bounded::run(Command::new(program).args([QUERY, FORMAT]), timeout)?;
    if let Some(crash) = finished.crash() {
        return Err(crash);
    }
    match finished.status.code() {
        Some(0) => parse(&String::from_utf8_lossy(&finished.stdout)),
        code => Err(Failure::Exited { code: code.unwrap_or(-1), output: finished.said() }),
    }
}

/// Parses the CSV: one line per GPU, `driver, name, uuid, total, used, free`. Memory that is
/// not a number (`[N/A]`, e.g. on some virtual GPUs) is unknown, not an error.
fn parse(text: &str) -> Result<(String, Vec<GpuDevice>), Failure> {
    let mut driver_version = None;
    let mut devices = Vec::new();
    for (index, line) in text.lines().filter(|line| !line.trim().is_empty()).enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [driver, name, uuid, total, used, free] = fields[..] else {
            return Err(Failure::Unreadable { message: format!("expected 6 fields, got {:?}", line) });
        };
        driver_version.get_or_insert_with(|| driver.to_string());
        let mebibytes = |field: &str| field.parse::<u64>().ok().map(|mib| mib * 1024 * 1024);
        let memory = match (mebibytes(total), mebibytes(used), mebibytes(free)) {
            (Some(total_bytes), Some(used_bytes), Some(free_bytes)) => {
                Some(Memory { total_bytes, used_bytes, free_bytes })
            }
            _ => None,
        };
        devices.push(GpuDevice {
            index: index as u32,
            name: Some(name.to_string()),
            uuid: Some(uuid.to_string()),
            memory,
            error: None,
        });
    }
    let driver_version =
        driver_version.ok_or_else(|| Failure::Unreadable { message: "it listed no GPU".to_string() })?;
    Ok((driver_version, devices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_gpus_in_mebibytes() {
        let text = "550.54.15, NVIDIA H100 80GB HBM3, GPU-3c1b0c4e-0f1e-7d2a-9c55-6a1f2b3c4d5e, 81559, 1, 81003\n\
                    550.54.15, NVIDIA H100 80GB HBM3, GPU-8a2d, [N/A], [N/A], [N/A]\n";
        let (driver, devices) = parse(text).unwrap();
        assert_eq!(driver, "550.54.15");
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].name.as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(devices[0].uuid.as_deref(), Some("GPU-3c1b0c4e-0f1e-7d2a-9c55-6a1f2b3c4d5e"));
        assert_eq!(
            devices[0].memory,
            Some(Memory { total_bytes: 81559 << 20, used_bytes: 1 << 20, free_bytes: 81003 << 20 })
        );
        assert_eq!((devices[1].index, devices[1].memory), (1, None));
    }

    #[test]
    fn other_output_is_unreadable() {
        assert!(matches!(parse(""), Err(Failure::Unreadable { .. })));
        assert!(matches!(parse("No devices were found\n"), Err(Failure::Unreadable { .. })));
    }

    #[test]
    fn a_failing_program_reports_its_code_and_words() {
        let failure = query(Path::new("false"), Duration::from_secs(10)).unwrap_err();
        assert_eq!(failure, Failure::Exited { code: 1, output: String::new() });
    }
}
