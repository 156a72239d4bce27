//! The user's mistakes: a one-line message that names the problem, exit code 2, no panic.

use std::process::Command;

use crate::bzimage::synthetic_bzimage;
use crate::common::{drvisor, ensure, run_command, skipped, Failed, Run, Trial, DRVISOR};

/// Exit code 2, one `drvisor:` line on stderr containing `needle`, nothing panicked.
fn one_line_usage_error(run: &Run, needle: &str) -> Result<(), Failed> {
    run.expect_code(2)?;
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    ensure(
        lines.len() == 1 && lines[0].starts_with("drvisor: ") && lines[0].contains(needle),
        || format!("wanted one line mentioning `{needle}`\n{run}"),
    )?;
    ensure(!run.stderr.contains("panicked"), || format!("panic\n{run}"))
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("drvisor-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

fn case(name: &'static str, f: fn() -> Result<(), Failed>) -> Trial {
    Trial::test(format!("usage_errors::{name}"), f)
}

pub fn trials() -> Vec<Trial> {
    let mut trials = vec![
        case("missing_kernel", || {
            let run = drvisor(&["run", "--kernel", "/nonexistent/vmlinux"]);
            one_line_usage_error(&run, "--kernel /nonexistent/vmlinux: cannot read it")
        }),
        case("kernel_that_is_not_elf_or_bzimage", || {
            let path = temp_file("notakernel", b"#!/bin/sh\necho hi\n");
            let run = drvisor(&["run", "--kernel", path.to_str().unwrap_or_default()]);
            let _ = std::fs::remove_file(&path);
            one_line_usage_error(&run, "not a kernel drvisor can boot")
        }),
        case("elf_without_pvh_note_or_multiboot", || {
            let run = drvisor(&["run", "--kernel", "/bin/true"]);
            one_line_usage_error(&run, "ELF64 without PVH or multiboot")
        }),
        case("kernel_too_big_for_mem", || {
            let path = temp_file("big-bzimage", &synthetic_bzimage(&[0xf4], 3 << 20));
            let run = drvisor(&[
                "run",
                "--kernel",
                path.to_str().unwrap_or_default(),
                "--mem",
                "2",
            ]);
            let _ = std::fs::remove_file(&path);
            one_line_usage_error(&run, "needs 4 MiB of guest RAM but --mem is 2 MiB")
        }),
        case("mem_too_small", || {
            one_line_usage_error(
                &drvisor(&["run", "--mem", "1"]),
                "--mem 1: 1 MiB of guest RAM is too small",
            )
        }),
        case("zero_vcpus", || {
            one_line_usage_error(
                &drvisor(&["run", "--vcpus", "0"]),
                "--vcpus 0: 0 vCPUs is out of range",
            )
        }),
        case("more_vcpus_than_kvm_allows", || {
            one_line_usage_error(
                &drvisor(&["run", "--vcpus", "100000"]),
                "--vcpus 100000 is out of range",
            )
        }),
        case("unknown_scenario", || {
            let run = drvisor(&["run", "--scenario", "nope"]);
            one_line_usage_error(&run, "unknown scenario `nope`")?;
            ensure(run.stderr.contains("hello"), || {
                "does not list the known scenarios".into()
            })
        }),
        case("module_with_a_bzimage", || {
            let kernel = temp_file("bz-for-module", &synthetic_bzimage(&[0xf4], 8192));
            let module = temp_file("module", b"module");
            let run = drvisor(&[
                "run",
                "--kernel",
                kernel.to_str().unwrap_or_default(),
                "--module",
                module.to_str().unwrap_or_default(),
            ]);
            let _ = std::fs::remove_file(&kernel);
            let _ = std::fs::remove_file(&module);
            one_line_usage_error(&run, "--module needs a PVH or multiboot kernel")
        }),
        case("unreadable_module", || {
            let run = drvisor(&["run", "--module", "/nonexistent/module,arg"]);
            one_line_usage_error(&run, "--module /nonexistent/module: cannot read it")
        }),
        case("unknown_flag", || {
            let run = drvisor(&["run", "--frobnicate"]);
            run.expect_code(2)?;
            ensure(run.stderr.contains("--frobnicate"), || run.to_string())
        }),
        // A missing argument is named, with the --help of the subcommand it belongs to.
        case("missing_argument_of_ctl", || {
            one_line_usage_error(
                &drvisor(&["ctl", "vm"]),
                "the following required arguments were not provided: --sock <PATH> (see drvisor ctl --help)",
            )
        }),
        case("missing_argument_of_ci", || {
            one_line_usage_error(
                &drvisor(&["ci"]),
                "the following required arguments were not provided: <SPEC.toml|unittests.cfg>... (see drvisor ci --help)",
            )
        }),
        case("missing_argument_of_ctl_break_add", || {
            one_line_usage_error(
                &drvisor(&["ctl", "break", "add"]),
                "the following required arguments were not provided: <LOCATION> (see drvisor ctl break add --help)",
            )?;
            one_line_usage_error(
                &drvisor(&["ctl", "--sock", "/nonexistent/sock", "break", "add"]),
                "the following required arguments were not provided: <LOCATION> (see drvisor ctl break add --help)",
            )
        }),
        case("missing_argument_of_guest_image", || {
            one_line_usage_error(
                &drvisor(&["guest-image"]),
                "the following required arguments were not provided: --write <FILE> (see drvisor guest-image --help)",
            )
        }),
        case("bad_value_points_at_its_subcommand", || {
            one_line_usage_error(
                &drvisor(&["ctl", "--sock", "/nonexistent/sock", "break", "add", "f", "--action", "x"]),
                "invalid value 'x' for '--action <ACTION>'; use one of: continue, pause, stop (see drvisor ctl break add --help)",
            )?;
            one_line_usage_error(
                &drvisor(&["probe", "--frobnicate"]),
                "unexpected argument '--frobnicate' found (see drvisor probe --help)",
            )
        }),
        // A kernel command line may begin with `-` (kvm-unit-tests' `-pause_filter_test`).
        case("cmdline_beginning_with_a_hyphen", || {
            for args in [
                &["run", "--scenario", "hello", "--cmdline", "-x"][..],
                &["run", "--scenario", "hello", "--cmdline=-x"],
            ] {
                let run = drvisor(args);
                run.expect_code(0)?;
                ensure(
                    run.stdout.contains("cmdline=\"scenario=hello ncpus=1 -x\""),
                    || format!("{args:?}: the guest did not get `-x`\n{run}"),
                )?;
            }
            Ok(())
        }),
        // Debian's /boot/System.map: one line that says where the real one is.
        case("placeholder_system_map", || {
            let path = temp_file(
                "placeholder-System.map",
                b"ffffffffffffffff B The real System.map is in the linux-image-6.1.0-18-amd64-dbg package\n",
            );
            let run = drvisor(&[
                "run",
                "--symbols",
                path.to_str().unwrap_or_default(),
                "--break",
                "start_kernel",
            ]);
            let _ = std::fs::remove_file(&path);
            one_line_usage_error(&run, ": a placeholder System.map, with no symbols")?;
            for needle in ["-dbg package", "kallsyms", "drop --symbols"] {
                ensure(run.stderr.contains(needle), || {
                    format!("does not say `{needle}`\n{run}")
                })?;
            }
            Ok(())
        }),
    ];
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let kvm_private = std::fs::metadata("/dev/kvm")
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o006 == 0)
        .unwrap_or(false);
    if root && kvm_private {
        trials.push(case("no_access_to_dev_kvm", || {
            use std::os::unix::fs::PermissionsExt;
            // The checkout may sit where an unprivileged user cannot read (/root): run a copy
            // of the binary (it embeds the guest) from a world-readable directory.
            let dir = std::env::temp_dir().join(format!("drvisor-nokvm-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            let exe = dir.join("drvisor");
            std::fs::copy(DRVISOR, &exe)?;
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
            // An unprivileged user: /dev/kvm is root-only on these machines (mode 0600).
            let unprivileged = |args: &[&str]| {
                run_command(
                    Command::new("setpriv")
                        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                        .arg(&exe)
                        .args(args),
                )
            };
            let run = unprivileged(&["run", "--scenario", "hello"]);
            let probe = unprivileged(&["probe"]);
            let _ = std::fs::remove_dir_all(&dir);
            // `run` and `probe` say it in the same words, with the same hint.
            let hint = "cannot open /dev/kvm: Permission denied (os error 13); drvisor needs read/write access to it (are you in the `kvm` group?)";
            one_line_usage_error(&run, hint)?;
            one_line_usage_error(&probe, hint)
        }));
    } else {
        trials.push(skipped(
            "usage_errors::no_access_to_dev_kvm",
            "needs root, and a /dev/kvm that other users cannot open, to show the refusal",
        ));
    }
    trials
}
