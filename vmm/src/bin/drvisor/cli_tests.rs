//! The command line as a parser: clap's definition is consistent, and arbitrary arguments, from
//! known flags with hostile values to random bytes, never panic clap or the checks that run on
//! the flags alone before any file is opened. Every refusal is a value (clap's error or a
//! [`Failure`] with exit code 2), never a panic.

use clap::{CommandFactory, FromArgMatches};
use proptest::prelude::*;

use crate::cli::{Cli, Command};
use crate::cmdline::command_line;
use crate::{requests, Failure};

#[test]
fn the_clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

/// Runs every check of the flags alone on `args`; a refusal must be exit code 2.
fn flags_alone(args: &[String]) -> Result<(), String> {
    let argv: Vec<std::ffi::OsString> = std::iter::once("drvisor".to_owned())
        .chain(args.iter().cloned())
        .map(Into::into)
        .collect();
    let matches = Cli::command()
        .try_get_matches_from(&argv)
        .map_err(|e| crate::clap_error_line(&e, &argv))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    let Command::Run(run) = cli.command else {
        return Ok(());
    };
    let usage = |f: Failure| {
        assert_eq!(f.code, drvisor::exit_code::USAGE, "{}", f.message);
        assert!(!f.message.contains('\n'), "{}", f.message);
        f.message
    };
    drvisor::memory::size_of(run.mem).map_err(|e| e.to_string())?;
    command_line(&run).map_err(usage)?;
    crate::cpu_features(&run.cpu_features).map_err(usage)?;
    let flags = requests::Flags {
        breaks: &run.breaks,
        watches: &run.watches,
        vcpus: &run.vcpus_of,
        actions: &run.actions,
        engines: &run.engines,
        captures: &run.captures,
        conditions: &run.conditions,
    };
    requests::parse(&matches, flags)?;
    Ok(())
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("drv_target_0".to_owned()),
        Just("drv_watch_u64:w:8".to_owned()),
        Just("phys:0xffffffffffffffff:rw:0x10".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("scenario=panic".to_owned()),
        Just("ncpus=9".to_owned()),
        Just("-x2apic,+avx2".to_owned()),
        Just("+avx,-xsave".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| format!("{n:#x}")),
        ".{0,12}",
    ]
}

fn flag() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("--kernel"),
        Just("--initrd"),
        Just("--cmdline"),
        Just("--vcpus"),
        Just("--mem"),
        Just("--scenario"),
        Just("--cpu-features"),
        Just("--strict-ports"),
        Just("--break"),
        Just("--watch"),
        Just("--engine"),
        Just("--vcpu"),
        Just("--action"),
        Just("--policy"),
        Just("--show-plan"),
        Just("--events"),
        Just("--symbols"),
        Just("--json"),
        Just("--"),
        Just("-h"),
    ]
    .prop_map(str::to_owned)
}

fn argument() -> impl Strategy<Value = String> {
    prop_oneof![3 => flag(), 2 => value()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn run_flags_with_hostile_values_never_panic(
        args in proptest::collection::vec(argument(), 0..12),
    ) {
        let mut all = vec!["run".to_owned()];
        all.extend(args);
        let _ = flags_alone(&all);
    }

    #[test]
    fn arbitrary_arguments_never_panic(
        args in proptest::collection::vec(".{0,16}", 0..6),
    ) {
        let _ = flags_alone(&args);
    }
}

#[test]
fn cpuid_defaults_to_filtered_and_takes_host() {
    use clap::Parser;

    use crate::cli::CpuidArg;
    let parse = |extra: &[&str]| {
        let args = ["drvisor", "run"].iter().chain(extra).copied();
        match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(run)) => Ok(run.cpuid),
            Ok(_) => Err("not run".to_owned()),
            Err(e) => Err(e.kind().to_string()),
        }
    };
    assert_eq!(parse(&[]), Ok(CpuidArg::Filtered));
    assert_eq!(parse(&["--cpuid", "host"]), Ok(CpuidArg::Host));
    assert_eq!(parse(&["--cpuid", "filtered"]), Ok(CpuidArg::Filtered));
    assert!(parse(&["--cpuid", "max"]).is_err());
    assert_eq!(
        drvisor::cpu::CpuidMode::from(CpuidArg::Host),
        drvisor::cpu::CpuidMode::Host
    );
}

#[test]
fn cpu_features_take_leading_dashes_and_repeat() {
    use clap::Parser;

    let parse = |extra: &[&str]| {
        let args = ["drvisor", "run"].iter().chain(extra).copied();
        match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(run)) => crate::cpu_features(&run.cpu_features)
                .map(|e| (e.hidden(), e.required()))
                .map_err(|f| (f.code, f.message)),
            _ => Err((0, "clap refused it".to_owned())),
        }
    };
    assert_eq!(parse(&[]), Ok((vec![], vec![])));
    assert_eq!(
        parse(&["--cpu-features", "-x2apic"]),
        Ok((vec!["x2apic"], vec![]))
    );
    assert_eq!(
        parse(&[
            "--cpu-features=-x2apic,+tsc-deadline",
            "--cpu-features",
            "-avx512f"
        ]),
        Ok((vec!["x2apic", "avx512f"], vec!["tsc-deadline"]))
    );
    let (code, message) = parse(&["--cpu-features", "-x2apci"]).unwrap_err();
    assert_eq!(code, drvisor::exit_code::USAGE);
    assert_eq!(
        message,
        "--cpu-features: unknown CPU feature \"x2apci\" (did you mean x2apic?)"
    );
    let (code, message) = parse(&["--cpu-features", "+avx2,-xsave"]).unwrap_err();
    assert_eq!(code, drvisor::exit_code::USAGE);
    assert!(message.contains("avx2 needs avx needs xsave"), "{message}");
}

/// The one line `drvisor ARGS` refuses its arguments with.
fn usage_line(args: &[&str]) -> String {
    let argv: Vec<std::ffi::OsString> = std::iter::once("drvisor")
        .chain(args.iter().copied())
        .map(Into::into)
        .collect();
    let e = Cli::command()
        .try_get_matches_from(&argv)
        .expect_err("a usage error");
    crate::clap_error_line(&e, &argv)
}

#[test]
fn a_missing_argument_is_named_with_its_subcommands_help() {
    let missing = "the following required arguments were not provided:";
    for (args, want) in [
        (&["ctl", "vm"][..], "--sock <PATH> (see drvisor ctl --help)"),
        (
            &["ci"],
            "<SPEC.toml|unittests.cfg>... (see drvisor ci --help)",
        ),
        (
            &["ctl", "--sock", "/x", "break", "add"],
            "<LOCATION> (see drvisor ctl break add --help)",
        ),
        (
            &["guest-image"],
            "--write <FILE> (see drvisor guest-image --help)",
        ),
    ] {
        assert_eq!(usage_line(args), format!("{missing} {want}"), "{args:?}");
    }
}

#[test]
fn every_usage_error_points_at_its_subcommands_help() {
    for (args, want) in [
        (
            &["run", "--engine", "x"][..],
            "invalid value 'x' for '--engine <ENGINE>'; use one of: hw, page, auto (see drvisor run --help)",
        ),
        (
            &["run", "--kernel", "ctl", "--vcpus", "x"],
            "invalid value 'x' for '--vcpus <VCPUS>': invalid digit found in string (see drvisor run --help)",
        ),
        (&["probe", "--x"], "unexpected argument '--x' found (see drvisor probe --help)"),
        (
            &["ctl", "--sock", "/x", "bogus"],
            "unrecognized subcommand 'bogus' (see drvisor ctl --help)",
        ),
        (
            &["ctl", "--sock", "/x", "--tcp", "127.0.0.1:1", "vm"],
            "the argument '--sock <PATH>' cannot be used with '--tcp <ADDR>' (see drvisor ctl --help)",
        ),
        (
            &["ctl", "--sock", "/x", "break", "add", "f", "--action", "x"],
            "invalid value 'x' for '--action <ACTION>'; use one of: continue, pause, stop (see drvisor ctl break add --help)",
        ),
    ] {
        assert_eq!(usage_line(args), want, "{args:?}");
    }
}

#[test]
fn cmdline_may_begin_with_a_hyphen() {
    use clap::Parser;

    let cmdline = |extra: &[&str]| {
        let args = ["drvisor", "run"].iter().chain(extra).copied();
        match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(run)) => Ok((run.cmdline, run.vcpus)),
            Ok(_) => Err("not run".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    };
    assert_eq!(
        cmdline(&["--cmdline", "-pause_filter_test x=1", "--vcpus", "2"]),
        Ok(("-pause_filter_test x=1".to_owned(), 2))
    );
    assert_eq!(cmdline(&["--cmdline", "-x"]), Ok(("-x".to_owned(), 1)));
    assert_eq!(cmdline(&["--cmdline=-x"]), Ok(("-x".to_owned(), 1)));
}

#[test]
fn the_pit_follows_the_guest_unless_asked() {
    use clap::Parser;

    let parse = |extra: &[&str]| {
        let args = ["drvisor", "run"].iter().chain(extra).copied();
        match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(run)) => Ok(run.pit()),
            Ok(_) => Err("not run".to_owned()),
            Err(e) => Err(e.kind().to_string()),
        }
    };
    // The embedded test guest never touches the PIT; a kernel of the user's own gets one.
    assert_eq!(parse(&[]), Ok(false));
    assert_eq!(parse(&["--kernel", "k"]), Ok(true));
    assert_eq!(parse(&["--pit", "on"]), Ok(true));
    assert_eq!(parse(&["--kernel", "k", "--pit", "off"]), Ok(false));
    assert!(parse(&["--pit", "maybe"]).is_err());
}
