//! Reading a file the user names (`--kernel`, `--initrd`, `--symbols`) without trusting it.
//!
//! Every check that needs no content comes before a byte is read: the file is opened with
//! `O_NONBLOCK`, so a FIFO with no writer cannot block the open; `fstat` on that descriptor
//! must show a regular file (not `/dev/zero`, a FIFO, a socket or a directory), no larger than
//! the caller's limit. The read itself stops one byte past the limit, so a file that grows
//! after the check cannot make drvisor read without bound either.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::quote::cut;

/// Why an input file was refused. Every variant is the user's mistake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or reading failed (missing, no permission, I/O error).
    #[error("{flag} {path}: cannot read it: {source}")]
    Io {
        /// The flag that named the file.
        flag: &'static str,
        /// The path, cut for messages.
        path: String,
        /// What the host said.
        source: std::io::Error,
    },
    /// Not a regular file.
    #[error("{flag} {path}: is {kind}, not a regular file; give a file")]
    NotRegular {
        /// The flag that named the file.
        flag: &'static str,
        /// The path, cut for messages.
        path: String,
        /// What it is instead ("a directory", "a FIFO", "a character device", ...).
        kind: &'static str,
    },
    /// Larger than the limit for this kind of file.
    #[error("{flag} {path}: {size} bytes is larger than the {limit} bytes allowed ({why})")]
    TooLarge {
        /// The flag that named the file.
        flag: &'static str,
        /// The path, cut for messages.
        path: String,
        /// Its size (or, if it grew while being read, at least this).
        size: u64,
        /// The limit.
        limit: u64,
        /// Where the limit comes from, and how to change it if it can be.
        why: String,
    },
}

/// How large an input file may be, and why (said in the refusal).
#[derive(Clone, Debug)]
pub struct Limit {
    /// The most bytes accepted.
    pub bytes: u64,
    /// Where the limit comes from, e.g. "guest RAM, --mem 64" or "a sane maximum".
    pub why: String,
}

/// An input file that passed the checks that need no content: open, regular, within its limit.
#[derive(Debug)]
pub struct InputFile {
    flag: &'static str,
    path: String,
    file: File,
    size: u64,
    limit: Limit,
}

/// Opens `path` (named by `flag`) and checks it without reading content.
pub fn open(flag: &'static str, path: &Path, limit: Limit) -> Result<InputFile, Error> {
    let shown = cut(&path.display().to_string()).into_owned();
    let io = |source| Error::Io {
        flag,
        path: shown.clone(),
        source,
    };
    // O_NONBLOCK: opening a FIFO for reading returns at once even with no writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let t = meta.file_type();
    if !t.is_file() {
        let kind = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "a special file"
        };
        return Err(Error::NotRegular {
            flag,
            path: shown,
            kind,
        });
    }
    if meta.len() > limit.bytes {
        return Err(Error::TooLarge {
            flag,
            path: shown,
            size: meta.len(),
            limit: limit.bytes,
            why: limit.why,
        });
    }
    Ok(InputFile {
        flag,
        path: shown,
        size: meta.len(),
        file,
        limit,
    })
}

impl InputFile {
    /// The size `fstat` reported.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path as shown in messages (cut).
    pub fn shown_path(&self) -> &str {
        &self.path
    }

    /// Reads the whole file: at most the limit, and an error if it grew past it.
    pub fn read(self) -> Result<Vec<u8>, Error> {
        let InputFile {
            flag,
            path,
            file,
            size,
            limit,
        } = self;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(limit.bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| Error::Io {
                flag,
                path: path.clone(),
                source,
            })?;
        if bytes.len() as u64 > limit.bytes {
            return Err(Error::TooLarge {
                flag,
                path,
                size: bytes.len() as u64,
                limit: limit.bytes,
                why: limit.why,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(bytes: u64) -> Limit {
        Limit {
            bytes,
            why: "test".into(),
        }
    }

    #[test]
    fn dev_zero_is_refused_before_reading() {
        let e = open("--kernel", Path::new("/dev/zero"), limit(1 << 20)).unwrap_err();
        assert!(matches!(
            e,
            Error::NotRegular {
                kind: "a character device",
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "--kernel /dev/zero: is a character device, not a regular file; give a file"
        );
    }

    #[test]
    fn a_directory_is_refused() {
        let e = open("--symbols", Path::new("/"), limit(1)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::NotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let path = std::env::temp_dir().join(format!("drvisor-fifo-{}", std::process::id()));
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open("--initrd", &path, limit(1)).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(e, Error::NotRegular { kind: "a FIFO", .. }), "{e}");
    }

    #[test]
    fn size_over_the_limit_is_refused_and_at_the_limit_read() {
        let path = std::env::temp_dir().join(format!("drvisor-limit-{}", std::process::id()));
        std::fs::write(&path, [7u8; 10]).unwrap();
        let e = open("--initrd", &path, limit(9)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooLarge {
                    size: 10,
                    limit: 9,
                    ..
                }
            ),
            "{e}"
        );
        let bytes = open("--initrd", &path, limit(10)).unwrap().read().unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(bytes, [7u8; 10]);
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let e = open("--kernel", Path::new("/nonexistent/x"), limit(1)).unwrap_err();
        assert!(matches!(e, Error::Io { .. }));
        assert!(e
            .to_string()
            .starts_with("--kernel /nonexistent/x: cannot read it"));
    }
}
