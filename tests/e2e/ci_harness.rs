//! `drvisor ci` end to end: the example specs against real VMs (every check kind passing and
//! failing), spec errors with their line and column, every exit code this host can produce,
//! shards that partition the suite, and a guest that never exits, killed at its timeout with no
//! drvisor process left behind.

use std::path::{Path, PathBuf};

use drvisor::probe::Mechanism;

use crate::common::*;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/examples")
}

fn specs_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `drvisor ci ARGS... --json FILE`: the run and the parsed report.
fn ci(args: &[String]) -> Result<(Run, serde_json::Value), Failed> {
    ci_within(args, None)
}

/// [`ci`], killed only after `limit` if given.
fn ci_within(
    args: &[String],
    limit: Option<std::time::Duration>,
) -> Result<(Run, serde_json::Value), Failed> {
    let json = temp_path("ci.json");
    let mut all: Vec<&str> = vec!["ci"];
    all.extend(args.iter().map(String::as_str));
    let j = json.display().to_string();
    all.extend(["--json", &j]);
    let run = match limit {
        Some(limit) => drvisor_within(&all, limit),
        None => drvisor(&all),
    };
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let _ = std::fs::remove_file(&json);
    Ok((run, report))
}

/// A spec file with `text`, in a folder of its own.
fn spec_file(name: &str, text: &str) -> PathBuf {
    let dir = temp_path("specs");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a spec");
    path
}

fn case_status<'a>(report: &'a serde_json::Value, spec: &str, case: &str) -> Option<&'a str> {
    report["specs"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == spec)?["cases"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == case)?["status"]
        .as_str()
}

fn passing_examples() -> Result<(), Failed> {
    let junit = temp_path("junit.xml");
    let mut args = specs_in(&examples());
    args.extend(["--junit".into(), junit.display().to_string()]);
    let (run, report) = ci(&args)?;
    run.expect_code(0)?;
    let t = &report["totals"];
    ensure(t["failed"] == 0 && t["passed"].as_u64() > Some(10), || {
        format!("{t}\n{run}")
    })?;
    for (spec, case) in [
        ("exec", "target_0 called count times"),
        ("exec", "target_2 at most 5 on vCPU 0"),
        ("exec", "target_3 called from exec_loop"),
        ("exec", "summary line"),
        ("exec", "no panic"),
        ("write", "u32 written count times, values 1..4"),
        ("write", "u8 never written 0"),
        ("stop", "stop at target_3"),
        ("status", "status 7"),
        ("status", "exec never runs"),
        ("ktap", "selftests"),
        ("ktap", "selftests/targets/calls_counted_0"),
        ("ktap", "selftests/targets/calls_counted_3"),
        ("ktap", "selftests/targets"),
        ("ktap", "selftests/watch_page_starts_zeroed"),
        ("ktap", "target_2 called count times"),
    ] {
        ensure(case_status(&report, spec, case) == Some("passed"), || {
            format!("{spec}::{case} did not pass\n{run}")
        })?;
    }
    ensure(
        case_status(&report, "ktap", "selftests/sse_state") == Some("skipped"),
        || format!("the KTAP SKIP is not a skipped case\n{run}"),
    )?;
    // capture puts the first hit's registers and 128 bytes of its stack into the report.
    let exec = report["specs"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "exec"));
    let captured = exec
        .and_then(|s| s["cases"].as_array())
        .and_then(|c| {
            c.iter()
                .find(|c| c["name"] == "target_1 at least once, registers captured")
        })
        .and_then(|c| c["context"].as_str())
        .unwrap_or_default();
    ensure(
        captured.contains("hit #1 of drv_target_1")
            && captured.contains("rip=")
            && captured
                .lines()
                .any(|l| l.starts_with("stack at 0x") && l.split(' ').count() == 3 + 16),
        || format!("no captured context with 16 stack quadwords: {captured:?}"),
    )?;
    // The JUnit file has one testcase per case of the JSON report.
    let xml = std::fs::read_to_string(&junit).map_err(|e| format!("no junit: {e}"))?;
    let _ = std::fs::remove_file(&junit);
    let cases = xml.matches("<testcase ").count() as u64;
    ensure(Some(cases) == t["cases"].as_u64(), || {
        format!("{cases} testcases vs {t}")
    })?;
    ensure(xml.matches("<testsuite ").count() == 5, || xml.clone())
}

fn failing_examples() -> Result<(), Failed> {
    let (run, report) = ci(&specs_in(&examples().join("failing")))?;
    run.expect_code(1)?;
    for (spec, case) in [
        ("exec-fails", "wrong hit count"),
        ("exec-fails", "never, but it is called"),
        ("exec-fails", "too many"),
        ("exec-fails", "console_match that is not there"),
        ("exec-fails", "console_never that is there"),
        ("exec-fails", "no KTAP from the test guest"),
        ("exec-fails", "wrong exit status"),
        ("write-fails", "value out of range"),
        ("write-fails", "a forbidden value"),
        ("write-fails", "wrong last value"),
        ("spin-timeout", "(run)"),
        ("ktap-fails", "selftests"),
        ("ktap-fails", "selftests/count_is_positive"),
    ] {
        ensure(case_status(&report, spec, case) == Some("failed"), || {
            format!("{spec}::{case} did not fail\n{run}")
        })?;
    }
    ensure(
        run.stdout.contains("observed: value 0x3 written (hit #3)"),
        || run.to_string(),
    )?;
    // The spinning guest's place, from drvisor's closing line, symbolized.
    ensure(
        run.stdout
            .contains("timed out after 2 s with vCPU 0 at rip=0x")
            && run.stdout.contains("); the VM was killed"),
        || run.to_string(),
    )
}

/// `stack_contains` on the embedded test guest: `drv_target_0` is called from `exec_loop`
/// (a Rust function, named by its path's end), so that check passes on every hit; `drv_kfunc_0`
/// is not on its stack, so that check fails, and the report and the JUnit XML name the
/// functions the stack does hold and the function the rip is in.
fn stack_contains_names_the_caller() -> Result<(), Failed> {
    let spec = spec_file(
        "callers.toml",
        "[vm]\nscenario = \"exec\"\ncmdline = \"count=3\"\n\
         [[check]]\nname = \"from exec_loop\"\nbreak = \"drv_target_0\"\nhits = 3\n\
         stack_contains = \"exec_loop\"\n\
         [[check]]\nname = \"from kfunc\"\nbreak = \"drv_target_1\"\ncapture = 256\n\
         stack_contains = \"drv_kfunc_0\"\n",
    );
    let junit = temp_path("callers.xml");
    let (run, report) = ci(&[
        spec.display().to_string(),
        "--junit".into(),
        junit.display().to_string(),
    ])?;
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    let _ = std::fs::remove_file(&junit);
    run.expect_code(1)?;
    ensure(
        case_status(&report, "callers", "from exec_loop") == Some("passed"),
        || format!("`from exec_loop` did not pass\n{run}"),
    )?;
    ensure(
        case_status(&report, "callers", "from kfunc") == Some("failed"),
        || format!("`from kfunc` did not fail\n{run}"),
    )?;
    let want_observed =
        "observed: hit #1: its captured stack names drvisor_guest::targets::exec_loop";
    ensure(run.stdout.contains(want_observed), || {
        format!("wanted {want_observed:?}\n{run}")
    })?;
    // The offending hit's rip, at the breakpoint: the function's first instruction.
    ensure(run.stdout.contains(" (drv_target_1+0x0) addr="), || {
        format!("the rip is not named\n{run}")
    })?;
    ensure(
        run.stdout.contains("stack words into code: rsp+0x0: ? "),
        || format!("the stack's code words are not listed\n{run}"),
    )?;
    for want in [
        "(drv_target_1+0x0)",
        "drvisor_guest::targets::exec_loop",
        "drv_kfunc_0",
    ] {
        ensure(xml.contains(want), || {
            format!("the JUnit XML lacks {want:?}\n{xml}")
        })?;
    }
    Ok(())
}

/// `tests/html-nesting.py`: whether an HTML file nests every element it opens.
fn html_nesting() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/html-nesting.py")
}

/// `--html` on the passing and the failing examples together: the page names every spec and
/// case of the JSON report, with the same counts, a failure's context folded in `<details>`,
/// a timeline of timed hits, and it nests its elements properly.
fn html_report() -> Result<(), Failed> {
    let html = temp_path("report.html");
    let mut args = specs_in(&examples());
    args.extend(specs_in(&examples().join("failing")));
    args.extend(["--html".into(), html.display().to_string()]);
    let (run, report) = ci(&args)?;
    run.expect_code(1)?;
    let page = std::fs::read_to_string(&html).map_err(|e| format!("no HTML report: {e}\n{run}"))?;
    let nesting = std::process::Command::new("python3")
        .arg(html_nesting())
        .arg(&html)
        .output();
    let _ = std::fs::remove_file(&html);
    let esc = drvisor_ci::html::escape;
    let specs = report["specs"].as_array().cloned().unwrap_or_default();
    ensure(specs.len() == 9, || {
        format!("{} specs in the JSON\n{run}", specs.len())
    })?;
    for s in &specs {
        let name = s["name"].as_str().unwrap_or_default();
        ensure(page.contains(&format!("<h2>{}</h2>", esc(name))), || {
            format!("the page lacks spec {name:?}")
        })?;
        for c in s["cases"].as_array().into_iter().flatten() {
            let case = c["name"].as_str().unwrap_or_default();
            ensure(
                page.contains(&format!("</td><td>{}</td>", esc(case))),
                || format!("the page lacks case {name}::{case}"),
            )?;
        }
    }
    let t = &report["totals"];
    for status in ["passed", "failed", "skipped"] {
        let rows = page
            .matches(&format!("<tr class=\"case {status}\">"))
            .count() as u64;
        ensure(Some(rows) == t[status].as_u64(), || {
            format!("{rows} {status} rows vs {t}")
        })?;
        let summary = format!("<span class=\"{status}\">{} {status}</span>", t[status]);
        ensure(page.contains(&summary), || {
            format!("no {summary:?} in the summary")
        })?;
    }
    let counted = format!("{} spec(s), {} case(s):", t["specs"], t["cases"]);
    ensure(page.contains(&counted), || {
        format!("the summary does not count {t}")
    })?;
    // The failing examples' hit context (write-fails' offending write) is folded in.
    ensure(
        page.contains("<details><summary>the offending hit</summary><pre>hit #3 of "),
        || "no failure context in <details>".to_string(),
    )?;
    for tag in ["table", "details", "section", "svg"] {
        let open =
            page.matches(&format!("<{tag}>")).count() + page.matches(&format!("<{tag} ")).count();
        let close = page.matches(&format!("</{tag}>")).count();
        ensure(open == close && open > 0, || {
            format!("{open} <{tag}> against {close} </{tag}>")
        })?;
    }
    // The event lines carry their times: the exec spec's hits are drawn on a timeline.
    ensure(
        page.contains("Hits over the run, per check and vCPU")
            && page.contains("target_0 called count times vCPU 0: "),
        || "no timeline of timed hits".to_string(),
    )?;
    match nesting {
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            ensure(out.status.success() && said.trim() == "well-formed", || {
                format!("html.parser: {said}")
            })?;
        }
        Err(e) => println!("not checked with html.parser: cannot run python3: {e}"),
    }
    Ok(())
}

/// An unwritable `--html` path is said, and costs the run the exit code an unwritable
/// `--json` path costs it.
fn html_report_unwritable() -> Result<(), Failed> {
    let spec = examples().join("status.toml").display().to_string();
    let nowhere = "/proc/drvisor-no-such-dir/report";
    let html = drvisor(&["ci", &spec, "--html", &format!("{nowhere}.html")]);
    let json = drvisor(&["ci", &spec, "--json", &format!("{nowhere}.json")]);
    for (run, file) in [(&html, "html"), (&json, "json")] {
        ensure(
            run.stdout
                .contains(&format!("drvisor ci: cannot write {nowhere}.{file}: ")),
            || format!("no message for the unwritable {file} path\n{run}"),
        )?;
    }
    ensure(html.code == json.code && html.code == 4, || {
        format!(
            "--html exits {}, --json {}\n{html}\n{json}",
            html.code, json.code
        )
    })
}

/// The live processes the harness with pid `pid` started: their environment carries
/// `DRVISOR_CI_HARNESS=<pid>`. Each as its pid and command line.
pub(crate) fn harness_children(pid: u32) -> Vec<String> {
    let mark = format!("DRVISOR_CI_HARNESS={pid}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == mark.as_bytes()))
        })
        // A zombie (reaped soon by its parent) is not a survivor.
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|st| {
                st.rsplit_once(") ")
                    .is_some_and(|(_, r)| !r.starts_with('Z'))
            })
        })
        .map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            )
        })
        .collect()
}

/// The spin guest is killed at its timeout, and no `drvisor run` of this harness survives it.
fn timeout_leaves_nothing_behind() -> Result<(), Failed> {
    let spec = spec_file(
        "spin.toml",
        "[vm]\nscenario = \"spin\"\ntimeout = 1\n[[check]]\nname = \"s\"\nexit_status = 0\n",
    );
    let mut cmd = std::process::Command::new(DRVISOR);
    cmd.args(["ci", &spec.display().to_string()]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id();
    let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure(out.status.code() == Some(1), || {
        format!("{:?}\n{stdout}", out.status)
    })?;
    ensure(stdout.contains("timed out after 1 s"), || {
        stdout.to_string()
    })?;
    let survivors = harness_children(pid);
    ensure(survivors.is_empty(), || {
        format!("left behind: {survivors:?}")
    })
}

/// How long `interrupted_leaves_nothing_behind` waits for the harness to start both VMs.
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// SIGTERM to the harness kills every VM it runs (they are in process groups of their own, so
/// the signal does not reach them by itself) and exits 128 + 15.
fn interrupted_leaves_nothing_behind() -> Result<(), Failed> {
    let text =
        "[vm]\nscenario = \"spin\"\ntimeout = 120\n[[check]]\nname = \"s\"\nexit_status = 0\n";
    let a = spec_file("spin-a.toml", text);
    let b = spec_file("spin-b.toml", text);
    let mut child = std::process::Command::new(DRVISOR)
        .args(["ci", "--jobs", "2"])
        .args([&a, &b])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id();
    let running = || harness_children(pid);
    // Starting is not what is tested: the limit only bounds a harness that never starts them
    // (inside an emulated L1 the host probe before the first start can take many seconds).
    let start = std::time::Instant::now();
    let mut seen = running();
    let mut ended = None;
    while seen.len() < 2 && start.elapsed() < START_LIMIT {
        if let Ok(Some(status)) = child.try_wait() {
            ended = Some(status);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        seen = running();
    }
    if ended.is_none() {
        // SAFETY: kill(2) on the harness's pid, not yet reaped; no memory is involved.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure(seen.len() == 2, || {
        format!(
            "the two VMs did not both run within {START_LIMIT:?} (seen: {seen:?}; the harness \
             {}); it said ({:?}):\n{stdout}",
            if ended.is_some() {
                "ended by itself"
            } else {
                "was stopped"
            },
            out.status
        )
    })?;
    ensure(out.status.code() == Some(143), || {
        format!("{:?}\n{stdout}", out.status)
    })?;
    ensure(stdout.contains("interrupted by signal 15"), || {
        stdout.to_string()
    })?;
    let left = running();
    ensure(left.is_empty(), || format!("left behind: {left:?}"))
}

/// Each spec error names file, line and column; nothing runs; exit code 2.
fn spec_errors() -> Result<(), Failed> {
    let table = [
        (
            "unknown-key.toml",
            "[[check]]\nname = \"a\"\nexit_status = 0\nbogus = 1\n",
            ":4:1: unknown field `bogus`",
        ),
        (
            "wrong-type.toml",
            "[vm]\nvcpus = \"two\"\n[[check]]\nname = \"a\"\nexit_status = 0\n",
            ":2:9: invalid type",
        ),
        (
            "bad-regex.toml",
            "[[check]]\nname = \"a\"\nconsole_never = \"a(b\"\n",
            ":3:17: bad regex",
        ),
        (
            "stack-contains-alone.toml",
            "[[check]]\nname = \"a\"\nexit_status = 0\nstack_contains = \"f\"\n",
            ":4:18: `stack_contains` belongs to a break or watch check",
        ),
        (
            "stack-contains-typo.toml",
            "[[check]]\nname = \"a\"\nbreak = \"f\"\nstack_contain = \"g\"\n",
            ":4:1: unknown field `stack_contain`",
        ),
        (
            "no-kernel.toml",
            "[vm]\nkernel = \"missing/bzImage\"\n[[check]]\nname = \"a\"\nexit_status = 0\n",
            ":2:10: kernel ",
        ),
    ];
    for (name, text, want) in table {
        let spec = spec_file(name, text);
        let run = drvisor(&["ci", &spec.display().to_string()]);
        run.expect_code(2)?;
        let line = format!("ERROR {}{want}", spec.display());
        ensure(run.stdout.contains(&line), || {
            format!("wanted {line:?}\n{run}")
        })?;
    }
    // An unknown symbol is found by drvisor run: reported at the check's line, exit 2.
    let spec = spec_file(
        "unknown-symbol.toml",
        "[vm]\nscenario = \"exec\"\n[[check]]\nname = \"a\"\nbreak = \"drv_target_9\"\n",
    );
    let run = drvisor(&["ci", &spec.display().to_string()]);
    run.expect_code(2)?;
    let want = format!(
        "ERROR {}:3: --break drv_target_9: unknown symbol",
        spec.display()
    );
    ensure(run.stdout.contains(&want), || {
        format!("wanted {want:?}\n{run}")
    })
}

/// Exit code 4: the VM cannot run (KVM_RUN refused through the test-only fault hook).
fn infrastructure_exit_code() -> Result<(), Failed> {
    let spec = examples().join("status.toml");
    let run = run_command(
        std::process::Command::new(DRVISOR)
            .env("DRVISOR_TEST_INJECT_FAULT", "kvm-run")
            .args(["ci", &spec.display().to_string()]),
    );
    run.expect_code(4)?;
    ensure(run.stdout.contains("the VM could not run"), || {
        run.to_string()
    })
}

/// Exit code 3: every check skipped, with the probe's reason (a hardware-only watch on a host
/// without hardware data watchpoints).
fn all_skipped_exit_code() -> Result<(), Failed> {
    let spec = spec_file("hw.toml", "[vm]\nscenario = \"write\"\n[[check]]\nname = \"hw watch\"\nwatch = \"drv_watch_u32\"\nengine = \"hw\"\n");
    let (run, report) = ci(&[spec.display().to_string()])?;
    run.expect_code(3)?;
    ensure(
        case_status(&report, "hw", "hw watch") == Some("skipped"),
        || run.to_string(),
    )?;
    ensure(
        run.stdout
            .contains("SKIP  hw::hw watch: the host probe found"),
        || run.to_string(),
    )
}

/// The shards of the examples are disjoint and cover them; --jobs 2 gives the same verdicts.
fn shards_partition() -> Result<(), Failed> {
    let all = specs_in(&examples());
    let mut seen: Vec<String> = Vec::new();
    for i in 0..3 {
        let mut args = all.clone();
        args.extend([
            "--shard".into(),
            format!("{i}/3"),
            "--jobs".into(),
            "2".into(),
        ]);
        let (run, report) = ci(&args)?;
        run.expect_code(0)?;
        for s in report["specs"].as_array().into_iter().flatten() {
            seen.push(s["path"].as_str().unwrap_or_default().to_owned());
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    ensure(sorted.len() == seen.len(), || {
        format!("a spec in two shards: {seen:?}")
    })?;
    ensure(sorted == all, || {
        format!("shards {sorted:?} vs suite {all:?}")
    })?;
    let run = drvisor(&["ci", &all[0], "--shard", "3/3"]);
    run.expect_code(2).map(|_| ())
}

/// Exit code 3: no access to /dev/kvm (an unprivileged user, as `usage_errors` does it).
fn no_kvm_exit_code() -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_path("nokvm");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let exe = dir.join("drvisor");
    std::fs::copy(DRVISOR, &exe)?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    let spec = dir.join("s.toml");
    std::fs::write(&spec, "[[check]]\nname = \"s\"\nexit_status = 0\n")?;
    std::fs::set_permissions(&spec, std::fs::Permissions::from_mode(0o644))?;
    let run = run_command(
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .arg("ci")
            .arg(&spec),
    );
    let _ = std::fs::remove_dir_all(&dir);
    run.expect_code(3)?;
    // In `drvisor run`'s words, with its hint.
    ensure(
        run.stdout.contains(
            "cannot open /dev/kvm: Permission denied (os error 13); drvisor needs read/write access to it (are you in the `kvm` group?)",
        ),
        || run.to_string(),
    )
}

/// A spec's command line that begins with `-` (as kvm-unit-tests' `-pause_filter_test`) reaches
/// the guest: the child drvisor is given it as one word, `--cmdline=VALUE`.
fn cmdline_beginning_with_a_hyphen() -> Result<(), Failed> {
    let spec = spec_file(
        "hyphen.toml",
        "[vm]\nscenario = \"hello\"\ncmdline = \"-x\"\ntimeout = 30\n\
         [[check]]\nname = \"the guest got -x\"\nconsole_match = 'cmdline=\"scenario=hello ncpus=1 -x\"'\n\
         [[check]]\nname = \"status 0\"\nexit_status = 0\n",
    );
    let (run, report) = ci(&[spec.display().to_string()])?;
    run.expect_code(0)?;
    ensure(
        case_status(&report, "hyphen", "the guest got -x") == Some("passed"),
        || run.to_string(),
    )
}

/// `cpu_features` in `[vm]` reaches `drvisor run` as one word (the list begins with `-`): the
/// guest's CPUID.1:ECX loses its hypervisor bit (31), which drvisor otherwise sets itself; an
/// unknown feature is refused as a spec error (exit 2) naming the feature.
fn cpu_features_in_a_spec() -> Result<(), Failed> {
    let hypervisor_bit = r"leaf=1 ecx=0x[89a-f][0-9a-f]{7} ";
    let spec = spec_file(
        "cpu-features.toml",
        &format!(
            "[vm]\nscenario = \"cpuid\"\ncpu_features = \"-hypervisor\"\ntimeout = 30\n\
             [[check]]\nname = \"hidden\"\nconsole_never = '{hypervisor_bit}'\n\
             [[check]]\nname = \"printed\"\nconsole_match = 'leaf=1 ecx=0x'\n"
        ),
    );
    let (run, report) = ci(&[spec.display().to_string()])?;
    run.expect_code(0)?;
    for case in ["hidden", "printed"] {
        ensure(
            case_status(&report, "cpu-features", case) == Some("passed"),
            || format!("{case} did not pass\n{run}"),
        )?;
    }
    // The same check fails without the key: it would pass for a harness that dropped it.
    let plain = spec_file(
        "cpu-features-plain.toml",
        &format!(
            "[vm]\nscenario = \"cpuid\"\ntimeout = 30\n\
             [[check]]\nname = \"hidden\"\nconsole_never = '{hypervisor_bit}'\n"
        ),
    );
    let (run, _) = ci(&[plain.display().to_string()])?;
    run.expect_code(1)?;
    let unknown = spec_file(
        "cpu-features-unknown.toml",
        "[vm]\nscenario = \"cpuid\"\ncpu_features = \"-x3apic\"\n\
         [[check]]\nname = \"a\"\nexit_status = 0\n",
    );
    let (run, _) = ci(&[unknown.display().to_string()])?;
    run.expect_code(2)?;
    ensure(run.stdout.contains("x3apic"), || run.to_string())
}

/// The stock Debian kernel: run when ci/linux/fetch.sh has put it in ci/linux/cache/, else
/// every check is listed as skipped with the reason (and the suite exits 3).
fn debian_kernel() -> Result<(), Failed> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/linux");
    let present = dir.join("cache/vmlinuz").is_file() && dir.join("cache/System.map").is_file();
    let (run, report) = ci_within(&specs_in(&dir), Some(LINUX_BOOT_TIMEOUT))?;
    if !present {
        run.expect_code(3)?;
        return ensure(run.stdout.contains("is not a file"), || run.to_string());
    }
    run.expect_code(0)?;
    for case in [
        "(run)",
        "start_kernel once",
        "setup_arch once",
        "early_serial_write once per console line",
    ] {
        ensure(
            case_status(&report, "debian-cloud", case) == Some("passed"),
            || format!("{case} did not pass\n{run}"),
        )?;
    }
    Ok(())
}

/// The kvm-unit-tests suite: its expectations are what those images do on this host.
fn kvm_unit_tests_suite() -> Result<(), Failed> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/kvm-unit-tests");
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/kvm-unit-tests");
    ensure(images.join("setjmp.flat").is_file(), || {
        format!(
            "no kvm-unit-tests images in {} (they belong to the repository)",
            images.display()
        )
    })?;
    let (run, report) = ci(&[specs_in(&dir), vec!["--jobs".into(), "2".into()]].concat())?;
    run.expect_code(0)?;
    // setjmp's ten PASS lines are ten cases of their own.
    let setjmp = report["specs"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "setjmp"))
        .and_then(|s| s["cases"].as_array())
        .map_or(0, |c| {
            c.iter()
                .filter(|c| {
                    c["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("results/"))
                })
                .count()
        });
    ensure(setjmp == 10, || format!("{setjmp} setjmp results\n{run}"))
}

pub fn trials(ctx: &Context) -> Vec<Trial> {
    let mut t = vec![
        Trial::test("ci_harness::passing_examples", passing_examples),
        Trial::test("ci_harness::failing_examples", failing_examples),
        Trial::test("ci_harness::html_report", html_report),
        Trial::test("ci_harness::html_report_unwritable", html_report_unwritable),
        Trial::test(
            "ci_harness::timeout_leaves_nothing_behind",
            timeout_leaves_nothing_behind,
        ),
        Trial::test("ci_harness::spec_errors", spec_errors),
        Trial::test(
            "ci_harness::interrupted_leaves_nothing_behind",
            interrupted_leaves_nothing_behind,
        ),
        Trial::test(
            "ci_harness::infrastructure_exit_code",
            infrastructure_exit_code,
        ),
        Trial::test("ci_harness::shards_partition", shards_partition),
        Trial::test(
            "ci_harness::stack_contains_names_the_caller",
            stack_contains_names_the_caller,
        ),
        Trial::test(
            "ci_harness::cmdline_beginning_with_a_hyphen",
            cmdline_beginning_with_a_hyphen,
        ),
        Trial::test("ci_harness::cpu_features_in_a_spec", cpu_features_in_a_spec),
    ];
    // ci/linux and ci/kvm-unit-tests expect what those kernels do on this project's hosts
    // (an emulation failure as the kernel's end, msr's six failures); on VMX/SVM they run
    // further, and those expectations have not been checked there.
    let like_ours =
        drvisor::debug::DebugCaps::from_probe(&ctx.probe) == drvisor::debug::DebugCaps::pvm_like();
    let elsewhere = "the spec's expectations are what this kernel does on this project's hosts \
                     (guest CPL0 code emulated); on this host it runs further, and they have not \
                     been checked here";
    if like_ours {
        t.push(Trial::test("ci_harness::debian_kernel", debian_kernel));
    } else {
        t.push(skipped("ci_harness::debian_kernel", elsewhere));
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let kvm_private = std::fs::metadata("/dev/kvm")
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o006 == 0)
        .unwrap_or(false);
    if root && kvm_private {
        t.push(Trial::test(
            "ci_harness::no_kvm_exit_code",
            no_kvm_exit_code,
        ));
    } else {
        t.push(skipped(
            "ci_harness::no_kvm_exit_code",
            "needs root, and a /dev/kvm that other users cannot open",
        ));
    }
    // The images are in the repository (tests/data/kvm-unit-tests): missing, the suite fails.
    if like_ours {
        t.push(Trial::test(
            "ci_harness::kvm_unit_tests_suite",
            kvm_unit_tests_suite,
        ));
    } else {
        t.push(skipped("ci_harness::kvm_unit_tests_suite", elsewhere));
    }
    if ctx.probe.delivers(Mechanism::HostWriteWatchpoint, 0) {
        t.push(skipped(
            "ci_harness::all_skipped_exit_code",
            "this host delivers hardware data watchpoints, so a hw-only watch is not skipped",
        ));
    } else {
        t.push(Trial::test(
            "ci_harness::all_skipped_exit_code",
            all_skipped_exit_code,
        ));
    }
    t
}
