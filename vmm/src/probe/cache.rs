//! The probe's answers, kept per host in `$XDG_CACHE_HOME/drvisor/probe.json` (or
//! `~/.cache/drvisor/`), so that a VM start does not pay for the tiny VMs again.
//!
//! A cached answer is used only under an equal [`HostKey`]; a file that is missing, corrupt, of
//! another format, owned by someone else, or from another host (or another kernel, KVM setting,
//! microcode or drvisor) is ignored with a debug line and replaced. Writes go to a temporary file
//! beside it, renamed over it, so a reader sees the old file or the new one, never half of one.
//! Where nothing can be written the probe simply runs every time.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use kvm_ioctls::Kvm;
use serde::{Deserialize, Serialize};

use super::host_key::HostKey;
use super::{experiments, tiny_vm, Mechanism, ProbeReport};

/// The cache file's name inside the cache directory.
pub const FILE_NAME: &str = "probe.json";

/// The layout of the file; another number is ignored.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    key: HostKey,
    report: ProbeReport,
}

/// Which rows the caller needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// What routing and the guest's CPUID depend on (a VM start).
    Routing,
    /// Every row, with the speed measurement (`drvisor probe`).
    All,
}

/// Where the answers came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The cache file at this path.
    Cache(PathBuf),
    /// The experiments ran now.
    Probed,
}

/// drvisor's cache directory: `$XDG_CACHE_HOME/drvisor` when that is an absolute path (the XDG
/// rule), else `$HOME/.cache/drvisor`; `None` when neither is set.
pub fn default_dir() -> Option<PathBuf> {
    dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn dir_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let base = match xdg_cache_home.map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".cache"),
    };
    Some(base.join("drvisor"))
}

/// The probe's answers for this host: from the cache in `dir` when it holds them under this
/// host's key (and `refresh` is false), else from the experiments, run now and stored in `dir`.
/// `dir` `None` runs the experiments and stores nothing.
pub fn answers(
    kvm: &Kvm,
    dir: Option<&Path>,
    want: Want,
    refresh: bool,
) -> tiny_vm::Result<(ProbeReport, Source)> {
    let Some(dir) = dir else {
        return Ok((run(kvm, want)?, Source::Probed));
    };
    let key = HostKey::read();
    let path = dir.join(FILE_NAME);
    if !refresh {
        match load(&path, &key) {
            Ok(mut report) => {
                let complete =
                    want == Want::Routing || report.row(Mechanism::NativeCpl0, 0).is_some();
                if complete {
                    tracing::debug!("host probe: answers from the cache {}", path.display());
                    return Ok((report, Source::Cache(path)));
                }
                // Cached by a VM start, which skips the speed row: measure only that.
                report.rows.push(experiments::native_speed(kvm)?);
                save(dir, &key, &report);
                return Ok((report, Source::Probed));
            }
            Err(why) => tracing::debug!("host probe: cache not used: {why}"),
        }
    }
    let report = run(kvm, want)?;
    save(dir, &key, &report);
    Ok((report, Source::Probed))
}

fn run(kvm: &Kvm, want: Want) -> tiny_vm::Result<ProbeReport> {
    match want {
        Want::Routing => experiments::run_for_routing(kvm),
        Want::All => experiments::run_all(kvm),
    }
}

fn save(dir: &Path, key: &HostKey, report: &ProbeReport) {
    match store(dir, key, report) {
        Ok(path) => tracing::debug!("host probe: answers cached in {}", path.display()),
        Err(e) => tracing::debug!(
            "host probe: answers not cached in {}: {e} (the probe runs at every start)",
            dir.display()
        ),
    }
}

/// Why a cache file was not used (the probe then runs anew; only logged).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It cannot be opened or its metadata read (missing, say).
    #[error("{}: {source}", .path.display())]
    Io {
        /// The cache file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Another user owns it: their answers are not trusted.
    #[error("{} belongs to another user (uid {uid})", .path.display())]
    OtherOwner {
        /// The cache file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// It is no probe cache (cut short, hand-edited...).
    #[error("{} is not a probe cache: {source}", .path.display())]
    NotACache {
        /// The cache file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// Another drvisor's format.
    #[error("{} has format {found}, not {}", .path.display(), FORMAT)]
    OtherFormat {
        /// The cache file.
        path: PathBuf,
        /// The format it has.
        found: u32,
    },
    /// Probed on another host, kernel, CPU or drvisor.
    #[error("{} was probed under another {what}", .path.display())]
    OtherHost {
        /// The cache file.
        path: PathBuf,
        /// The first part of the host's key that differs.
        what: &'static str,
    },
}

/// The report cached at `path` if it was stored under `key`; else why not.
pub fn load(path: &Path, key: &HostKey) -> Result<ProbeReport, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let uid = std::os::unix::fs::MetadataExt::uid(&meta);
    if uid != me {
        return Err(LoadError::OtherOwner {
            path: path.to_owned(),
            uid,
        });
    }
    let cached: CacheFile =
        serde_json::from_reader(std::io::BufReader::new(file)).map_err(|source| {
            LoadError::NotACache {
                path: path.to_owned(),
                source,
            }
        })?;
    if cached.format != FORMAT {
        return Err(LoadError::OtherFormat {
            path: path.to_owned(),
            found: cached.format,
        });
    }
    match cached.key.first_difference(key) {
        None => Ok(cached.report),
        Some(what) => Err(LoadError::OtherHost {
            path: path.to_owned(),
            what,
        }),
    }
}

/// Writes `report` under `key` into `dir` (created, mode 0700, if missing): a temporary file
/// beside the cache file, renamed over it. Returns the cache file's path.
pub fn store(dir: &Path, key: &HostKey, report: &ProbeReport) -> std::io::Result<PathBuf> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)?;
    let path = dir.join(FILE_NAME);
    let temp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let file = CacheFile {
        format: FORMAT,
        key: key.clone(),
        report: report.clone(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let written = std::fs::File::create(&temp).and_then(|mut f| {
        f.write_all(&text)?;
        f.sync_data()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temp, &path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    renamed.map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::super::{Caps, ProbeRow};
    use super::*;

    fn report() -> ProbeReport {
        ProbeReport {
            caps: Caps {
                set_guest_debug: 1,
                debugregs: 1,
                readonly_mem: 1,
                set_guest_debug2: 0x70003,
                nr_memslots: 509,
                max_vcpus: 240,
            },
            rows: vec![ProbeRow {
                mechanism: Mechanism::HostExecBreakpoint,
                cpl: 0,
                works: true,
                observed: "exit=4 rip=0x100016 dr6=0xffff0ff1".into(),
            }],
            instructions: Vec::new(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("drvisor-probe-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_stored_report_loads_back_under_the_same_key() {
        let dir = temp_dir("same");
        let key = HostKey::read();
        let path = store(&dir, &key, &report()).unwrap();
        assert_eq!(path, dir.join(FILE_NAME));
        assert_eq!(load(&path, &key).unwrap(), report());
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_changed_key_invalidates_it() {
        let dir = temp_dir("key");
        let key = HostKey::read();
        let path = store(&dir, &key, &report()).unwrap();
        let mut other = key.clone();
        other.cpu.insert("microcode".into(), "0xdeadbeef".into());
        let why = load(&path, &other).unwrap_err();
        assert!(matches!(why, LoadError::OtherHost { .. }), "{why}");
        assert!(why.to_string().contains("CPU model or microcode"), "{why}");
        let mut other = key.clone();
        other.drvisor_version = "0.0.0".into();
        let why = load(&path, &other).unwrap_err();
        assert!(why.to_string().contains("drvisor version"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_or_other_format_file_is_ignored() {
        let dir = temp_dir("corrupt");
        let key = HostKey::read();
        let path = store(&dir, &key, &report()).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let why = load(&path, &key).unwrap_err();
        assert!(matches!(why, LoadError::NotACache { .. }), "{why}");
        assert!(why.to_string().contains("is not a probe cache"), "{why}");
        std::fs::write(&path, good.replacen("\"format\": 1", "\"format\": 99", 1)).unwrap();
        let why = load(&path, &key).unwrap_err();
        assert!(
            matches!(why, LoadError::OtherFormat { found: 99, .. }),
            "{why}"
        );
        std::fs::remove_file(&path).unwrap();
        let why = load(&path, &key).unwrap_err();
        assert!(
            matches!(&why, LoadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{why}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_not_a_panic() {
        let key = HostKey::read();
        let err = store(Path::new("/proc/drvisor-cannot-be-here"), &key, &report());
        assert!(err.is_err());
    }

    #[test]
    fn the_directory_follows_xdg_cache_home_when_absolute_else_home() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            dir_from(os("/tmp/c"), os("/home/u")),
            Some(PathBuf::from("/tmp/c/drvisor"))
        );
        // The XDG rule: a relative path is invalid and ignored.
        assert_eq!(
            dir_from(os("rel"), os("/home/u")),
            Some(PathBuf::from("/home/u/.cache/drvisor"))
        );
        assert_eq!(
            dir_from(None, os("/home/u")),
            Some(PathBuf::from("/home/u/.cache/drvisor"))
        );
        assert_eq!(dir_from(None, None), None);
        assert_eq!(dir_from(None, os("")), None);
    }
}
