//! The probe's answers are cached per host: a second start reads them, a cache of another host
//! or a corrupt one is ignored (and replaced), `drvisor probe --refresh` runs the experiments
//! again. Each test has a cache directory of its own (`XDG_CACHE_HOME`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{ensure, run_command, Failed, Run, Trial, DRVISOR};

const CACHE_HIT: &str = "host probe: answers from the cache";
const CACHE_STORED: &str = "host probe: answers cached in";

fn cache_home(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drvisor-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn drvisor_in(home: &Path, args: &[&str]) -> Run {
    run_command(
        Command::new(DRVISOR)
            .args(args)
            .env("XDG_CACHE_HOME", home)
            .env("DRVISOR_LOG", "debug"),
    )
}

fn hello(home: &Path) -> Result<Run, Failed> {
    let run = drvisor_in(home, &["run", "--scenario", "hello"]);
    run.expect_code(0)?;
    Ok(run)
}

fn cache_file(home: &Path) -> PathBuf {
    home.join("drvisor").join(drvisor::probe::cache::FILE_NAME)
}

fn second_start_reads_the_cache() -> Result<(), Failed> {
    let home = cache_home("warm");
    let first = hello(&home)?;
    ensure(
        first.stderr.contains(CACHE_STORED) && !first.stderr.contains(CACHE_HIT),
        || format!("a cold start probes and stores:\n{}", first.stderr),
    )?;
    ensure(cache_file(&home).is_file(), || "no cache file".into())?;
    let second = hello(&home)?;
    ensure(
        second.stderr.contains(CACHE_HIT) && !second.stderr.contains(CACHE_STORED),
        || format!("a warm start reads the cache:\n{}", second.stderr),
    )?;
    // `drvisor probe` adds the speed row (not needed to start a VM) and keeps the rest.
    let probe = drvisor_in(&home, &["probe"]);
    probe.expect_code(0)?;
    ensure(
        probe.stdout.contains("CPL0 guest code runs natively"),
        || probe.stdout.clone(),
    )?;
    let again = drvisor_in(&home, &["probe"]);
    again.expect_code(0)?;
    ensure(
        again.stderr.contains("--refresh") && again.stderr.contains(CACHE_HIT),
        || {
            format!(
                "the second `drvisor probe` says it read the cache:\n{}",
                again.stderr
            )
        },
    )?;
    let refreshed = drvisor_in(&home, &["probe", "--refresh"]);
    refreshed.expect_code(0)?;
    ensure(
        !refreshed.stderr.contains(CACHE_HIT) && refreshed.stderr.contains(CACHE_STORED),
        || format!("--refresh probes again:\n{}", refreshed.stderr),
    )?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

fn another_hosts_cache_is_ignored_and_replaced() -> Result<(), Failed> {
    let home = cache_home("foreign");
    hello(&home)?;
    let path = cache_file(&home);
    let text = std::fs::read_to_string(&path)?;
    let foreign = text.replacen("\"kernel_release\": \"", "\"kernel_release\": \"other-", 1);
    ensure(foreign != text, || format!("no kernel_release in\n{text}"))?;
    std::fs::write(&path, foreign)?;
    let run = hello(&home)?;
    ensure(
        run.stderr
            .contains("was probed under another kernel release")
            && run.stderr.contains(CACHE_STORED),
        || format!("a foreign key is ignored and replaced:\n{}", run.stderr),
    )?;
    let key = |t: &str| serde_json::from_str::<serde_json::Value>(t).map(|v| v["key"].clone());
    ensure(
        key(&std::fs::read_to_string(&path)?)? == key(&text)?,
        || "the replaced cache is this host's again".into(),
    )?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

fn a_corrupt_cache_is_ignored() -> Result<(), Failed> {
    let home = cache_home("corrupt");
    hello(&home)?;
    let path = cache_file(&home);
    // A report that says no mechanism works, with a broken tail: never trusted.
    std::fs::write(&path, "{\"format\": 1, \"key\": {\"kernel_release\": ")?;
    let run = hello(&home)?;
    ensure(
        run.stderr.contains("is not a probe cache") && run.stderr.contains(CACHE_STORED),
        || format!("a corrupt file is ignored and replaced:\n{}", run.stderr),
    )?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

fn an_unwritable_cache_directory_still_starts() -> Result<(), Failed> {
    // A cache home that is a file: nothing can be created under it.
    let home = cache_home("unwritable");
    std::fs::write(&home, "not a directory")?;
    let run = hello(&home)?;
    ensure(run.stderr.contains("answers not cached"), || {
        format!(
            "the start says the answers were not cached:\n{}",
            run.stderr
        )
    })?;
    let _ = std::fs::remove_file(&home);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "probe_cache::second_start_reads_the_cache",
            second_start_reads_the_cache,
        ),
        Trial::test(
            "probe_cache::another_hosts_cache_is_ignored_and_replaced",
            another_hosts_cache_is_ignored_and_replaced,
        ),
        Trial::test(
            "probe_cache::a_corrupt_cache_is_ignored",
            a_corrupt_cache_is_ignored,
        ),
        Trial::test(
            "probe_cache::an_unwritable_cache_directory_still_starts",
            an_unwritable_cache_directory_still_starts,
        ),
    ]
}
