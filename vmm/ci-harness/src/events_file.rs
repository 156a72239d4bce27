//! The `--events` file of one spec's run, and the hit events read back from it.
//!
//! The file has no name to leave behind: a temporary file without a name (`O_TMPFILE`, or
//! unlinked at once where the file system lacks it), which the child writes through its fd 3
//! ([`CHILD_PATH`], which `drvisor run` uses as the inherited descriptor, not by reopening it).
//! Whatever ends the harness, nothing is left in the temporary directory.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use drvisor_api::HitEvent;

/// Where the child finds its events file: `/proc/self/fd`, not `/dev/fd`, which is only a
/// symlink to it that udev or the distribution makes (a minimal initramfs, as the nested VMX
/// guest's, has no `/dev/fd`).
pub const CHILD_PATH: &str = "/proc/self/fd/3";

/// The most of an events file read back (a run that floods it is judged on the first part).
const EVENTS_READ_MAX: u64 = 256 * 1024 * 1024;

/// One run's events file, open for reading and writing, without a name.
pub struct EventsFile(File);

impl EventsFile {
    /// A new, empty, nameless file in the temporary directory.
    pub fn new() -> std::io::Result<EventsFile> {
        let dir = std::env::temp_dir();
        let nameless = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        match nameless {
            Ok(f) => Ok(EventsFile(f)),
            // No O_TMPFILE (9p, some FUSE): a name made unique by this process's own counter,
            // not by the clock, since specs run in parallel start within one clock tick.
            Err(_) => {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                named_then_unlinked(&dir, &NEXT).map(EventsFile)
            }
        }
    }

    /// The open file (the child gets it as its fd 3).
    pub fn file(&self) -> &File {
        &self.0
    }

    /// What the child wrote (up to [`EVENTS_READ_MAX`] bytes).
    pub fn read(&mut self) -> String {
        use std::io::Seek;
        let mut bytes = Vec::new();
        if self.0.seek(std::io::SeekFrom::Start(0)).is_ok() {
            let _ = (&mut self.0).take(EVENTS_READ_MAX).read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The fallback without `O_TMPFILE`: a new file in `dir` named
/// `drvisor-ci-PID-N-events.jsonl` with the next `N` of `next`, removed as soon as it is open.
/// A name already taken (left by an earlier process with this pid) is passed over.
fn named_then_unlinked(dir: &Path, next: &AtomicU64) -> std::io::Result<File> {
    loop {
        let path = dir.join(format!(
            "drvisor-ci-{}-{}-events.jsonl",
            std::process::id(),
            next.fetch_add(1, Ordering::Relaxed)
        ));
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match opened {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            // A file left by an earlier process with this pid.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("in {}: {e}", dir.display()),
                ))
            }
        }
    }
}

/// The hit events of an `--events` file, each with its line's `ns` (its time since the run's
/// start); other events (`lost`, `page-traps`) are skipped.
pub fn hit_events(text: &str) -> (Vec<HitEvent>, Vec<Option<u64>>) {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "hit")
        .filter_map(|v| {
            let ns = v["ns"].as_u64();
            serde_json::from_value(v).ok().map(|e| (e, ns))
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list the folder")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_events_file_reads_back_what_was_written() {
        let mut events = EventsFile::new().expect("a temporary events file");
        events
            .file()
            .write_all(b"{\"event\":\"lost\"}\n")
            .expect("write");
        assert_eq!(events.read(), "{\"event\":\"lost\"}\n");
    }

    /// Without `O_TMPFILE`, files made at once get distinct names, and none is left behind.
    #[test]
    fn fallback_files_made_together_do_not_collide_or_stay() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let next = AtomicU64::new(0);
        let mut a = named_then_unlinked(dir.path(), &next).expect("the first file");
        let mut b = named_then_unlinked(dir.path(), &next).expect("the second file");
        a.write_all(b"a").expect("write a");
        b.write_all(b"b").expect("write b");
        assert!(
            names_in(dir.path()).is_empty(),
            "{:?}",
            names_in(dir.path())
        );
        let mut a_text = String::new();
        let mut b_text = String::new();
        use std::io::Seek;
        a.rewind().expect("rewind a");
        b.rewind().expect("rewind b");
        a.read_to_string(&mut a_text).expect("read a");
        b.read_to_string(&mut b_text).expect("read b");
        assert_eq!((a_text.as_str(), b_text.as_str()), ("a", "b"));
        assert_eq!(next.load(Ordering::Relaxed), 2);
    }

    /// A name left by an earlier process with this pid is passed over, not opened or removed.
    #[test]
    fn a_fallback_name_already_taken_is_passed_over() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let left = format!("drvisor-ci-{}-0-events.jsonl", std::process::id());
        std::fs::write(dir.path().join(&left), "old").expect("a leftover file");
        let next = AtomicU64::new(0);
        named_then_unlinked(dir.path(), &next).expect("a file");
        assert_eq!(
            next.load(Ordering::Relaxed),
            2,
            "name 0 passed over, 1 taken"
        );
        assert_eq!(names_in(dir.path()), std::slice::from_ref(&left));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&left)).expect("the leftover"),
            "old"
        );
    }

    /// Any other failure names the folder.
    #[test]
    fn a_fallback_that_cannot_create_names_the_folder() {
        let e = named_then_unlinked(Path::new("/nonexistent/folder"), &AtomicU64::new(0))
            .expect_err("no such folder");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().starts_with("in /nonexistent/folder: "), "{e}");
    }

    #[test]
    fn only_hits_are_read() {
        let text =
            "{\"seq\":7,\"event\":\"page-traps\",\"traps\":12,\"false_traps\":6}\nnot json\n";
        assert!(hit_events(text).0.is_empty());
    }

    #[test]
    fn hits_keep_their_time() {
        let hit = |ns: Option<u64>| {
            let mut v = serde_json::json!({
                "seq": 2, "event": "hit", "id": 1, "label": "f", "vcpu": 1, "rip": 0x1000,
                "addr": 0x1000, "kind": "exec", "engine": "hw", "action": "continue", "count": 1,
                "regs": {"rax":0,"rbx":0,"rcx":0,"rdx":0,"rsi":0,"rdi":0,"rsp":0,"rbp":0,"r8":0,
                         "r9":0,"r10":0,"r11":0,"r12":0,"r13":0,"r14":0,"r15":0,"rip":0x1000,
                         "rflags":2}
            });
            if let Some(ns) = ns {
                v["ns"] = ns.into();
            }
            v.to_string() + "\n"
        };
        let text = hit(Some(2500)) + &hit(None);
        let (hits, ns) = hit_events(&text);
        assert_eq!(hits.len(), 2, "{text}");
        assert_eq!(ns, vec![Some(2500), None]);
    }
}
