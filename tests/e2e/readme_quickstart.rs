//! The README's quickstarts, run as written, so the README cannot rot.
//!
//! README.md marks them with the info strings of its fenced blocks:
//! - ```` ```sh quickstart=NAME ```` is a block of shell commands, run in order with
//!   `sh -e` (its stderr into its stdout, as a terminal shows both);
//! - ```` ```sh quickstart=NAME background ```` is "the first terminal": started in the
//!   background, and the blocks after it run once it printed the first line of its expected
//!   output (drvisor's line saying its socket is ready); it must then end by itself;
//! - ```` ```text expect=NAME ```` is the expected output of the command block before it: each
//!   of its lines must be a line of what the block printed, in this order, where `...` stands
//!   for any text (what differs between runs or hosts).
//!
//! Each quickstart runs with the binary under test first on `PATH`, in a fresh directory that
//! holds a link to the repository's `ci/` folder, as the repository's root would: nothing is
//! written into the repository, and runs of the suite side by side do not share a file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{ensure, skipped, temp_path, Failed, Trial, DRVISOR};

/// The README, as it is in the repository this test was built from.
const README: &str = include_str!("../../README.md");

/// How long one block may take (the nested hosts are slow).
const TIMEOUT: Duration = Duration::from_secs(180);

/// One fenced block the test runs or checks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Block {
    /// Commands; `background` for the first terminal.
    Commands {
        text: String,
        background: bool,
        line: usize,
    },
    /// The expected output of the commands before it.
    Expect { lines: Vec<String>, line: usize },
}

/// A quickstart: its name and its blocks, in the README's order.
#[derive(Clone, Debug)]
struct Quickstart {
    name: String,
    blocks: Vec<Block>,
}

/// The quickstarts of `readme`, in order of first appearance.
fn quickstarts(readme: &str) -> Result<Vec<Quickstart>, String> {
    let mut found: Vec<Quickstart> = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let words: Vec<&str> = info.split_whitespace().collect();
        let tag = |key: &str| {
            words
                .iter()
                .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        };
        let (name, expect) = match (tag("quickstart"), tag("expect")) {
            (Some(name), None) => (name, false),
            (None, Some(name)) => (name, true),
            (None, None) => {
                // An unmarked block: skip its body, so a ``` line inside it is not a start.
                for (_, l) in lines.by_ref() {
                    if l.trim_end() == "```" {
                        break;
                    }
                }
                continue;
            }
            (Some(_), Some(_)) => return Err(format!("README.md:{}: both tags", n + 1)),
        };
        let mut body = Vec::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim_end() == "```" {
                closed = true;
                break;
            }
            body.push(l);
        }
        if !closed {
            return Err(format!("README.md:{}: the block never ends", n + 1));
        }
        let block = if expect {
            Block::Expect {
                lines: body
                    .iter()
                    .map(|l| l.trim_end().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect(),
                line: n + 1,
            }
        } else {
            Block::Commands {
                text: body.join("\n"),
                background: words.contains(&"background"),
                line: n + 1,
            }
        };
        match found.iter_mut().find(|q| q.name == name) {
            Some(q) => q.blocks.push(block),
            None => found.push(Quickstart {
                name: name.to_owned(),
                blocks: vec![block],
            }),
        }
    }
    for q in &found {
        match q.blocks.first() {
            Some(Block::Commands { .. }) => {}
            _ => {
                return Err(format!(
                    "quickstart {} does not start with commands",
                    q.name
                ))
            }
        }
        if q.blocks
            .iter()
            .filter(|b| {
                matches!(
                    b,
                    Block::Commands {
                        background: true,
                        ..
                    }
                )
            })
            .count()
            > 1
        {
            return Err(format!("quickstart {} has two background blocks", q.name));
        }
    }
    Ok(found)
}

/// Whether `line` is `pattern`, where each `...` of the pattern stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Checks that every expected line is a line of `output`, in order; names the first missing.
fn check_output(expected: &[String], output: &str, what: &str) -> Result<(), Failed> {
    let got: Vec<&str> = output.lines().map(str::trim_end).collect();
    let mut from = 0;
    for want in expected {
        match got[from..].iter().position(|l| matches(want, l)) {
            Some(at) => from += at + 1,
            None => {
                return Err(format!(
                    "{what}: the README expects the line\n  {want}\n(in this order) but the \
                     output was:\n{output}"
                )
                .into())
            }
        }
    }
    Ok(())
}

/// A shell running one block, with stdout and stderr read as they come.
struct Shell {
    child: Child,
    output: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Shell {
    fn start(script: &str, dir: &Path) -> Result<Shell, Failed> {
        let bin_dir = Path::new(DRVISOR)
            .parent()
            .ok_or("the binary has no folder")?;
        let path = match std::env::var_os("PATH") {
            Some(p) => {
                let mut dirs = vec![bin_dir.to_path_buf()];
                dirs.extend(std::env::split_paths(&p));
                std::env::join_paths(dirs).map_err(|e| e.to_string())?
            }
            None => bin_dir.as_os_str().to_owned(),
        };
        let mut child = Command::new("sh")
            .args(["-e", "-c", &format!("exec 2>&1\n{script}")])
            .current_dir(dir)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start sh: {e}"))?;
        let output = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().ok_or("no stdout")?;
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Shell {
            child,
            output,
            reader: Some(reader),
        })
    }

    fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until a line of the output matches `pattern`.
    fn wait_for(&mut self, pattern: &str) -> Result<(), Failed> {
        let start = Instant::now();
        loop {
            let out = self.output();
            if out.lines().any(|l| matches(pattern, l.trim_end())) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the background command ended ({status}) before printing `{pattern}`:\n{out}"
                )
                .into());
            }
            if start.elapsed() > TIMEOUT {
                return Err(format!("no `{pattern}` within {TIMEOUT:?}:\n{out}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the shell to end: its exit code and everything it printed.
    fn finish(mut self) -> Result<(i32, String), Failed> {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if start.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!("still running after {TIMEOUT:?}:\n{}", self.output()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok((status.code().unwrap_or(-1), self.output()))
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // A failed check leaves no guest running behind it.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The repository's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory that looks like the repository's root to the quickstarts.
fn work_dir(name: &str) -> Result<PathBuf, Failed> {
    let dir = temp_path(&format!("quickstart-{name}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::os::unix::fs::symlink(repo_root().join("ci"), dir.join("ci"))
        .map_err(|e| format!("linking ci/: {e}"))?;
    Ok(dir)
}

/// Runs one quickstart's blocks in order and checks each expected output.
fn run(q: &Quickstart) -> Result<(), Failed> {
    let dir = work_dir(&q.name)?;
    let result = run_in(q, &dir);
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(q: &Quickstart, dir: &Path) -> Result<(), Failed> {
    let mut background: Option<(Shell, Vec<String>, usize)> = None;
    let mut i = 0;
    while i < q.blocks.len() {
        let Block::Commands {
            text,
            background: bg,
            line,
        } = &q.blocks[i]
        else {
            return Err(format!("quickstart {}: expected output without commands", q.name).into());
        };
        let expected = match q.blocks.get(i + 1) {
            Some(Block::Expect { lines, .. }) => {
                i += 1;
                lines.clone()
            }
            _ => Vec::new(),
        };
        i += 1;
        let mut shell = Shell::start(text, dir)?;
        if *bg {
            // "The first terminal": the next blocks start once it says it is ready.
            let ready = expected
                .first()
                .ok_or_else(|| {
                    format!("README.md:{line}: a background block needs its ready line")
                })?
                .clone();
            shell.wait_for(&ready)?;
            background = Some((shell, expected, *line));
            continue;
        }
        let (code, output) = shell.finish()?;
        ensure(code == 0, || {
            format!("README.md:{line}: the commands exited {code}:\n{text}\n---\n{output}")
        })?;
        check_output(&expected, &output, &format!("README.md:{line}"))?;
    }
    if let Some((shell, expected, line)) = background {
        let (code, output) = shell.finish()?;
        ensure(code == 0, || {
            format!("README.md:{line}: the background command exited {code}:\n{output}")
        })?;
        check_output(&expected, &output, &format!("README.md:{line}"))?;
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut trials = vec![Trial::test(
        "readme_quickstart::the_readme_has_four",
        || {
            let found = quickstarts(README)?;
            let names: Vec<&str> = found.iter().map(|q| q.name.as_str()).collect();
            ensure(names == ["break", "rest", "gdb", "ci"], || {
                format!("the README's quickstarts are {names:?}")
            })
        },
    )];
    trials.push(Trial::test("readme_quickstart::parser_and_matcher", || {
        parser_and_matcher();
        Ok(())
    }));
    let found = match quickstarts(README) {
        Ok(found) => found,
        Err(e) => {
            trials.push(Trial::test("readme_quickstart::parse", move || {
                Err(e.clone().into())
            }));
            return trials;
        }
    };
    let gdb = Command::new("gdb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    for q in found {
        let name = format!("readme_quickstart::{}", q.name);
        let uses = |tool: &str| {
            q.blocks.iter().any(|b| match b {
                Block::Commands { text, .. } => text
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{tool} "))),
                Block::Expect { .. } => false,
            })
        };
        if uses("gdb") && !gdb {
            trials.push(skipped(&name, "no gdb here (apt-get install gdb)"));
        } else if uses("drvisor ci") && !repo_root().join("ci/examples").is_dir() {
            trials.push(skipped(&name, "the repository's ci/examples is not here"));
        } else {
            trials.push(Trial::test(name, move || run(&q)));
        }
    }
    trials
}

/// The README's markup and the line matcher, on made-up text.
fn parser_and_matcher() {
    assert!(matches("a ... c", "a b c"));
    assert!(matches("a...", "a"));
    assert!(matches("up ... ms", "up 12 ms"));
    assert!(!matches("up ... ms", "up 12 s"));
    assert!(!matches("100", "1000"));
    assert!(!matches("a...b...c", "acb"));
    assert!(matches("a...b...c", "a-b-c"));
    let readme = "text\n```sh\nnot run\n```\n```sh quickstart=x background\nrun a\n```\n\
                  ```text expect=x\nready\n\nend\n```\n```sh quickstart=x\nrun b\n```\n";
    let q = quickstarts(readme).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(
        q[0].blocks,
        vec![
            Block::Commands {
                text: "run a".into(),
                background: true,
                line: 5
            },
            Block::Expect {
                lines: vec!["ready".into(), "end".into()],
                line: 8
            },
            Block::Commands {
                text: "run b".into(),
                background: false,
                line: 13
            },
        ]
    );
    assert!(
        check_output(&["b".into(), "a".into()], "a\nb\n", "t").is_err(),
        "order counts"
    );
    assert!(check_output(&["a".into(), "b".into()], "a\nx\nb\n", "t").is_ok());
    assert!(quickstarts("```sh quickstart=y\nnever closed\n").is_err());
}
