//! A real backtrace at a hit: a stock Debian kernel (built with the ORC unwinder, no frame
//! pointers) run to `setup_arch`, whose hit event's `backtrace` is the call chain the kernel's
//! own ORC table gives (and its early page faults', through their `pt_regs`); and a kernel
//! without one (the test guest) says so in one line and in each hit event. The
//! Debian run is listed as ignored, with the reason, when `ci/linux/cache` (from
//! `ci/linux/fetch.sh`) is absent.

use std::path::PathBuf;

use crate::common::{
    drvisor_with_events_within, drvisor_with_hits, ensure, hits_only, skipped, Failed, Run, Trial,
    LINUX_BOOT_TIMEOUT,
};

fn kernel() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ci/linux/cache/vmlinuz")
}

/// The function of a frame (`start_kernel+0x64/0x6fc` -> `start_kernel`).
fn function(frame: &serde_json::Value) -> &str {
    let text = frame.as_str().unwrap_or_default();
    text.split('+').next().unwrap_or(text)
}

fn debian_setup_arch_backtrace() -> Result<(), Failed> {
    let kernel = kernel();
    let (run, events) = drvisor_with_events_within(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap_or_default(),
            "--cmdline",
            "console=ttyS0 earlyprintk=serial,ttyS0 nokaslr",
            "--mem",
            "512",
            "--break",
            "do_early_exception",
            "--capture",
            "512",
            "--break",
            "setup_arch",
            "--capture",
            "512",
            "--action",
            "stop",
        ],
        LINUX_BOOT_TIMEOUT,
    )?;
    let hits = hits_only(events);
    run.expect_code(74)?;
    let of = |label: &str| -> Vec<&serde_json::Value> {
        hits.iter().filter(|h| h["label"] == label).collect()
    };
    early_exceptions_go_through_their_pt_regs(of("do_early_exception"))?;
    let at_setup_arch = of("setup_arch");
    let [hit] = at_setup_arch.as_slice() else {
        return Err(format!("{} hits at setup_arch, not 1\n{run}", at_setup_arch.len()).into());
    };
    let frames = hit["backtrace"]
        .as_array()
        .ok_or_else(|| format!("no `backtrace` in the hit event: {hit}"))?;
    // Linux 6.1 as Debian builds it: x86_64_start_kernel and x86_64_start_reservations end in
    // tail calls, so no frame of theirs is on the stack; the walk ends at the entry code's
    // end-of-stack mark.
    let functions: Vec<&str> = frames.iter().map(function).collect();
    ensure(
        functions
            == [
                "setup_arch",
                "start_kernel",
                "secondary_startup_64_no_verify",
            ],
        || format!("backtrace {frames:?}\n{hit}"),
    )?;
    ensure(
        frames[0]
            .as_str()
            .is_some_and(|f| f.starts_with("setup_arch+0x0/0x")),
        || format!("the first frame is not the breakpoint's instruction: {frames:?}"),
    )?;
    ensure(hit["backtrace_end"] == "end of stack", || {
        format!("backtrace_end: {}", hit["backtrace_end"])
    })?;
    // Each caller's frame is a return address on the captured stack, which `symbolized` names
    // too (as a guess, `?`); the walk keeps only the real ones.
    let guesses: Vec<String> = hit["symbolized"]
        .as_array()
        .ok_or("no `symbolized` in the hit event")?
        .iter()
        .filter_map(|w| w["symbol"].as_str()?.strip_prefix("? ").map(str::to_owned))
        .collect();
    for frame in &frames[1..] {
        let frame = frame.as_str().unwrap_or_default();
        ensure(guesses.iter().any(|g| g == frame), || {
            format!("{frame} is not among the stack's code words {guesses:?}")
        })?;
    }
    ensure(guesses.len() > frames.len() - 1, || {
        format!("the stack holds no word the walk left out: {guesses:?} / {frames:?}")
    })?;
    Ok(())
}

/// Before `start_kernel`, the early page faults (the kernel maps its memory on demand then):
/// each one's walk goes from the handler through the exception's `pt_regs` into the code
/// that faulted, at the faulting instruction, and on to the end of the stack. The first is
/// `copy_bootdata` reading the boot parameters.
fn early_exceptions_go_through_their_pt_regs(hits: Vec<&serde_json::Value>) -> Result<(), Failed> {
    ensure(!hits.is_empty(), || {
        "no early exception before setup_arch".into()
    })?;
    for hit in &hits {
        let frames = hit["backtrace"]
            .as_array()
            .ok_or_else(|| format!("no `backtrace` in the hit event: {hit}"))?;
        let functions: Vec<&str> = frames.iter().map(function).collect();
        ensure(
            functions.len() >= 4
                && functions[..2] == ["do_early_exception", "early_idt_handler_common"]
                && functions.last() == Some(&"secondary_startup_64_no_verify")
                && hit["backtrace_end"] == "end of stack",
            || {
                format!(
                    "early exception backtrace {frames:?} ({})",
                    hit["backtrace_end"]
                )
            },
        )?;
    }
    let first: Vec<&str> = hits[0]["backtrace"]
        .as_array()
        .map(|f| f.iter().map(function).collect())
        .unwrap_or_default();
    ensure(
        first
            == [
                "do_early_exception",
                "early_idt_handler_common",
                "copy_bootdata",
                "x86_64_start_kernel",
                "secondary_startup_64_no_verify",
            ],
        || format!("the first early exception's backtrace: {first:?}"),
    )
}

/// The test guest (no ORC table) broken at `drv_target_0`, called once, with `more` arguments.
fn test_guest_hits(more: &[&str]) -> Result<(Run, Vec<serde_json::Value>), Failed> {
    let mut args = vec![
        "run",
        "--scenario",
        "exec",
        "--cmdline",
        "count=1",
        "--break",
        "drv_target_0",
    ];
    args.extend(more);
    drvisor_with_hits(&args)
}

fn no_orc_is_said_in_one_line() -> Result<(), Failed> {
    let (run, hits) = test_guest_hits(&["--capture", "64"])?;
    run.expect_code(0)?;
    let why = "the kernel has no .orc_unwind_ip section (built without CONFIG_UNWINDER_ORC)";
    let notice = format!("hit events carry no backtrace: {why}");
    ensure(run.stderr.matches(&notice).count() == 1, || {
        format!("no one-line notice `{notice}`\n{run}")
    })?;
    ensure(
        !hits.is_empty() && hits.iter().all(|h| h.get("backtrace").is_none()),
        || format!("{} hits, or one with a backtrace: {hits:?}", hits.len()),
    )?;
    // Each hit event says why it has none.
    let end = format!("no backtrace: {why}");
    ensure(
        hits.iter().all(|h| h["backtrace_end"] == end.as_str()),
        || format!("a hit event without `backtrace_end: {end}`: {hits:?}"),
    )?;
    // Without --capture nothing is asked, so nothing is said.
    let (run, hits) = test_guest_hits(&[])?;
    run.expect_code(0)?;
    ensure(!run.stderr.contains("no backtrace"), || run.to_string())?;
    ensure(
        hits.iter().all(|h| h.get("backtrace_end").is_none()),
        || format!("a hit that captures nothing has a `backtrace_end`: {hits:?}"),
    )
}

pub fn trials() -> Vec<Trial> {
    let name = "kernel_backtrace::debian_setup_arch_backtrace_is_the_real_call_chain";
    let mut trials = vec![Trial::test(
        "kernel_backtrace::a_kernel_without_orc_is_said_in_one_line",
        no_orc_is_said_in_one_line,
    )];
    if kernel().is_file() {
        trials.push(Trial::test(name, debian_setup_arch_backtrace));
    } else {
        trials.push(skipped(
            name,
            "no ci/linux/cache/vmlinuz (run ci/linux/fetch.sh)",
        ));
    }
    trials
}
