//! Making injected driver libraries visible: soname links for the driver's own libraries (not
//! every `.so` in the directory, as nix2gpu did), the same links in `/run/opengl-driver/lib`
//! for Nix-built programs, one `/etc/ld.so.conf.d` entry (written once, not appended at every
//! boot), and the list of directories the loader cache covers.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::ldcache::library;

/// The `/etc/ld.so.conf.d` file naming the driver's directory.
pub const CONF_FILE: &str = "/etc/ld.so.conf.d/nix2gpu-nvidia.conf";

/// The driver version, from NVML's file name (`libnvidia-ml.so.535.309.01`, reached through
/// the soname link if that is what was found).
pub fn version(nvml: &Path) -> Option<String> {
    let file = fs::canonicalize(nvml).ok()?;
    let name = file.file_name()?.to_str()?;
    let version = name.strip_prefix("libnvidia-ml.so.")?;
    (version.contains('.') && version.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .then(|| version.to_string())
}

/// The driver's libraries in `dir`: regular files named `lib*.so.<version>`.
pub fn libraries(dir: &Path, version: &str) -> Vec<PathBuf> {
    let suffix = format!(".so.{version}");
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("lib") && name.ends_with(&suffix)
        })
        .map(|entry| entry.path())
        .filter(|path| fs::symlink_metadata(path).is_ok_and(|m| m.is_file()))
        .collect();
    found.sort();
    found
}

/// What linking did, for the log and the report.
#[derive(Debug, Default)]
pub struct Links {
    pub made: Vec<PathBuf>,
    /// Links that could not be made (a read-only directory), with why.
    pub failed: Vec<String>,
}

/// For each library, a link named by its DT_SONAME: beside it where missing (a toolkit whose
/// ldconfig ran made them already), and in `link_dir`, replaced when it points elsewhere.
pub fn link_sonames(libraries: &[PathBuf], link_dir: &Path) -> Links {
    let mut links = Links::default();
    if let Err(e) = fs::create_dir_all(link_dir) {
        links.failed.push(format!("{}: {e}", link_dir.display()));
    }
    for file in libraries {
        let Some(soname) = soname(file) else { continue };
        if let Some(dir) = file.parent() {
            let beside = dir.join(&soname);
            if fs::symlink_metadata(&beside).is_err() {
                record(&mut links, &beside, symlink(file_name(file), &beside));
            }
        }
        let nix = link_dir.join(&soname);
        if fs::read_link(&nix).ok().as_deref() != Some(file.as_path()) {
            let _ = fs::remove_file(&nix);
            record(&mut links, &nix, symlink(file, &nix));
        }
    }
    links
}

fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

fn record(links: &mut Links, link: &Path, result: io::Result<()>) {
    match result {
        Ok(()) => links.made.push(link.to_path_buf()),
        Err(e) => links.failed.push(format!("{}: {e}", link.display())),
    }
}

/// A library's DT_SONAME, as the loader cache's scan reads it.
fn soname(file: &Path) -> Option<String> {
    let opened = fs::File::open(file).ok()?;
    let soname = library::read(&opened)?.soname?;
    String::from_utf8(soname).ok().filter(|s| !s.contains('/'))
}

/// Writes `dir` into [`CONF_FILE`] (under `root`) unless it says so already. Returns whether it
/// was written.
pub fn conf_entry(root: &Path, dir: &Path) -> io::Result<bool> {
    let file = root.join(CONF_FILE.trim_start_matches('/'));
    let text = format!("{}\n", dir.display());
    if fs::read_to_string(&file).is_ok_and(|existing| existing == text) {
        return Ok(false);
    }
    if let Some(parent) = file.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&file, text)?;
    Ok(true)
}

/// The directories glibc's ldconfig would cache: those named in `ld.so.conf` (following its
/// `include` lines), then the trusted ones. `root` is `/` outside tests.
pub fn cache_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    read_conf(root, &root.join("etc/ld.so.conf"), &mut dirs, 0);
    for trusted in
        ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"]
    {
        dirs.push(PathBuf::from(trusted));
    }
    let mut seen = std::collections::BTreeSet::new();
    dirs.retain(|dir| seen.insert(dir.clone()) && root.join(dir.strip_prefix("/").unwrap_or(dir)).is_dir());
    dirs
}

/// How deep `include` lines are followed (a file including itself stops there).
const MAX_INCLUDE_DEPTH: usize = 8;

fn read_conf(root: &Path, file: &Path, dirs: &mut Vec<PathBuf>, depth: usize) {
    let Ok(text) = fs::read_to_string(file) else { return };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include").filter(|rest| rest.starts_with([' ', '\t'])) {
            if depth < MAX_INCLUDE_DEPTH {
                for included in glob(root, pattern.trim()) {
                    read_conf(root, &included, dirs, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            dirs.push(PathBuf::from(line));
        }
    }
}

/// The files matching an `include` pattern: a `*` in the last component only (`dir/*.conf`,
/// the form distributions use), in name order.
fn glob(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let pattern = Path::new(pattern);
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let dir = root.join(dir.strip_prefix("/").unwrap_or(dir));
    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
    let exact = !name.contains('*');
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| {
            let entry_name = entry.file_name();
            let entry_name = entry_name.to_string_lossy();
            if exact {
                entry_name == name
            } else {
                entry_name.len() >= prefix.len() + suffix.len()
                    && entry_name.starts_with(prefix)
                    && entry_name.ends_with(suffix)
            }
        })
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Scratch;

    #[test]
    fn the_conf_entry_is_written_once() {
        let scratch = Scratch::new("conf");
        let root = scratch.0.clone();
        assert!(conf_entry(&root, Path::new("/usr/lib64")).unwrap());
        assert!(!conf_entry(&root, Path::new("/usr/lib64")).unwrap());
        let text = fs::read_to_string(root.join("etc/ld.so.conf.d/nix2gpu-nvidia.conf")).unwrap();
        assert_eq!(text, "/usr/lib64\n");
    }

    #[test]
    fn cache_dirs_follow_includes_then_trusted_dirs() {
        let scratch = Scratch::new("dirs");
        let root = scratch.0.clone();
        for dir in ["etc/ld.so.conf.d", "opt/a", "opt/b", "usr/lib64", "usr/lib"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::write(root.join("etc/ld.so.conf"), "# comment\ninclude /etc/ld.so.conf.d/*.conf\n/opt/missing\n")
            .unwrap();
        fs::write(root.join("etc/ld.so.conf.d/b.conf"), "/opt/b\n/usr/lib64\n").unwrap();
        fs::write(root.join("etc/ld.so.conf.d/a.conf"), "/opt/a # first\n").unwrap();
        fs::write(root.join("etc/ld.so.conf.d/a.conf.bak"), "/opt/never\n").unwrap();
        assert_eq!(cache_dirs(&root), ["/opt/a", "/opt/b", "/usr/lib64", "/usr/lib"].map(PathBuf::from));
    }

    #[test]
    fn the_version_comes_from_nvml_s_file_name() {
        let scratch = Scratch::new("version");
        let root = scratch.0.clone();
        fs::write(root.join("libnvidia-ml.so.535.309.01"), "").unwrap();
        symlink("libnvidia-ml.so.535.309.01", root.join("libnvidia-ml.so.1")).unwrap();
        assert_eq!(version(&root.join("libnvidia-ml.so.1")).as_deref(), Some("535.309.01"));
        fs::write(root.join("libcuda.so.535.309.01"), "").unwrap();
        fs::write(root.join("libz.so.1.2.13"), "").unwrap();
        let names: Vec<PathBuf> = libraries(&root, "535.309.01");
        assert_eq!(names, [root.join("libcuda.so.535.309.01"), root.join("libnvidia-ml.so.535.309.01")]);
    }
}
