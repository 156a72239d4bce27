//! What stdout shows while specs run: each spec's lines as it ends and, on a terminal only, a
//! progress line under them that is rewritten in place. Plain lines when stdout is a pipe or a
//! file (CI logs).

use std::io::{IsTerminal, Write};

use drvisor_ci::report::{self, SpecResult};
use drvisor_ci::schedule;
use drvisor_ci::spec::Spec;

/// The progress of one suite.
pub struct Progress {
    tty: bool,
    total: usize,
    done: usize,
    running: Vec<String>,
}

impl Progress {
    /// For a suite of `total` specs.
    pub fn new(total: usize) -> Progress {
        Progress {
            tty: std::io::stdout().is_terminal(),
            total,
            done: 0,
            running: Vec::new(),
        }
    }

    fn redraw(&self, lines: &str) {
        let mut out = std::io::stdout().lock();
        if !self.tty {
            let _ = out.write_all(lines.as_bytes());
            return;
        }
        let running: Vec<&str> = self.running.iter().map(String::as_str).collect();
        // \r and erase-line: the old progress line goes, the new lines take its place.
        let _ = write!(
            out,
            "\r\x1b[K{lines}{}",
            report::progress_line(self.done, self.total, &running)
        );
        let _ = out.flush();
    }

    /// The suite is over: the progress line goes.
    pub fn clear(&self) {
        if self.tty {
            let _ = write!(std::io::stdout().lock(), "\r\x1b[K");
        }
    }
}

impl schedule::Progress for Progress {
    fn started(&mut self, spec: &Spec) {
        self.running.push(spec.name.clone());
        self.redraw("");
    }

    fn finished(&mut self, spec: &Spec, result: &SpecResult) {
        self.running.retain(|n| *n != spec.name);
        self.done += 1;
        self.redraw(&report::spec_lines(result));
    }
}
