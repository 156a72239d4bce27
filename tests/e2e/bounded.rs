//! Running the binary under a wall-clock bound: past it, the child is killed and the test
//! fails ("a hang"), so no input can stall the test run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Failed, Run, DRVISOR};

/// Runs `drvisor` with `args` (stdin closed) and kills it after `bound`.
pub fn bounded(args: &[String], bound: Duration) -> Result<Run, Failed> {
    let child = Command::new(DRVISOR)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    wait_bounded(child, bound, &format!("{args:?}"))
}

/// Waits for `child` at most `bound`; past it, kills it and fails.
pub fn wait_bounded(mut child: Child, bound: Duration, what: &str) -> Result<Run, Failed> {
    use std::io::Read;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    // Readers keep the pipes drained, so a chatty child cannot block on a full pipe.
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what}: still running after {bound:?}; killed (a hang)").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Run {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}
