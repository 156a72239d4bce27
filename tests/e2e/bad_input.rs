//! The bad-input corpus: what a hostile or careless user can hand `drvisor run`, each case with
//! its expected exit code and message, run by the real binary under a wall-clock bound. A hang
//! kills the binary and fails the case; it never stalls the test run.
//!
//! A refusal (exit 2) must be exactly one `drvisor:` line on stderr, of bounded length, with no
//! panic. Cases that boot the guest check the code and the message the same way.

use std::path::PathBuf;
use std::time::Duration;

use crate::bounded::bounded;
use crate::bzimage::synthetic_bzimage;
use crate::common::{ensure, temp_path, Failed, Trial};

/// A refusal takes milliseconds; this bound only turns a hang into a failure.
const REFUSAL_BOUND: Duration = Duration::from_secs(30);
/// Cases that boot the test guest (a few seconds under the emulator, more on a loaded machine).
const BOOT_BOUND: Duration = Duration::from_secs(120);
/// The longest stderr line a refusal may print: quoted input is cut.
const MAX_LINE: usize = 600;

/// Files the corpus hands drvisor, made once per test process.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = temp_path("bad-input");
        let _ = std::fs::create_dir_all(&dir);
        let f = Files { dir };
        let write = |name: &str, bytes: &[u8]| {
            let _ = std::fs::write(f.path(name), bytes);
        };
        write("empty", b"");
        write(
            "bz",
            &synthetic_bzimage(&[0xb0, 0x00, 0xe6, 0xf4, 0xf4], 8192),
        );
        write("guest.elf", drvisor::guest_image::ELF);
        write("nuls.map", &vec![0u8; 1 << 20]);
        write("not-utf8.map", b"1000 T ok\n\xff\xfe T bad\n");
        write("bad-line.map", b"1000 T drv_target_0\nnonsense\n");
        write("good.map", b"100010 T drv_target_0\n");
        write("initrd", &[0xab; 4096]);
        // bzImage headers that are not a 64-bit kernel boot (boot.rst field offsets).
        let bz = synthetic_bzimage(&[0xb0, 0x00, 0xe6, 0xf4, 0xf4], 8192);
        let patched = |at: usize, value: &[u8]| {
            let mut b = bz.clone();
            b[at..at + value.len()].copy_from_slice(value);
            b
        };
        write("bz-setup-sects-0", &patched(0x1f1, &[0]));
        write("bz-version-ffff", &patched(0x206, &[0xff, 0xff]));
        write("bz-no-kernel-64", &patched(0x236, &[0, 0]));
        write("bz-empty-payload", &bz[..1024]);
        write("bz-init-size-max", &patched(0x260, &[0xff; 4]));
        write("bz-alignment-0", &patched(0x230, &[0; 4]));
        // The test guest with a segment moved over the boot area, or away from the entry.
        let elf = drvisor::guest_image::ELF;
        let paddr = |segment: usize, addr: u64| {
            let mut b = elf.to_vec();
            let at = 64 + segment * 56 + 24; // ELF64: program headers at 64, 56 bytes each
            b[at..at + 8].copy_from_slice(&addr.to_le_bytes());
            b
        };
        for (name, addr) in [
            ("0", 0u64),
            ("500", 0x500),
            ("7000", 0x7000),
            ("20000", 0x20000),
            ("a0000", 0xa0000),
        ] {
            write(&format!("elf-segment-at-{name}"), &paddr(2, addr));
        }
        write("elf-entry-outside", &paddr(0, 0x300_0000));
        let sparse = |name: &str, len: u64| {
            if let Ok(file) = std::fs::File::create(f.path(name)) {
                let _ = file.set_len(len);
            }
        };
        sparse("kernel-1GiB+1", (1 << 30) + 1);
        sparse("initrd-65MiB", 65 << 20);
        sparse("map-256MiB+1", (256 << 20) + 1);
        for fifo in ["fifo-kernel", "fifo-initrd", "fifo-symbols"] {
            if let Ok(c) = std::ffi::CString::new(f.path(fifo)) {
                // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
                unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
            }
        }
        f
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

/// One case: the arguments after `run`, what must happen, within what bound.
struct Case {
    name: &'static str,
    args: Vec<String>,
    code: i32,
    needle: &'static str,
    bound: Duration,
}

fn refused(name: &'static str, args: &[&str], needle: &'static str) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        code: 2,
        needle,
        bound: REFUSAL_BOUND,
    }
}

fn ends(name: &'static str, args: &[&str], code: i32, needle: &'static str) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        needle,
        bound: BOOT_BOUND,
    }
}

fn check(case: &Case) -> Result<(), Failed> {
    let mut args = vec!["run".to_owned()];
    args.extend(case.args.iter().cloned());
    let run = bounded(&args, case.bound)?;
    run.expect_code(case.code)?;
    ensure(!run.stderr.contains("panicked"), || format!("panic\n{run}"))?;
    let long = run.stderr.lines().find(|l| l.len() > MAX_LINE);
    ensure(long.is_none(), || {
        format!(
            "a stderr line of {} bytes (quoted input must be cut)",
            long.map_or(0, str::len)
        )
    })?;
    if case.code == 2 {
        let lines: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        ensure(
            lines.len() == 1 && lines[0].starts_with("drvisor: "),
            || format!("wanted one `drvisor:` line\n{run}"),
        )?;
    }
    ensure(
        run.stderr.contains(case.needle) || run.stdout.contains(case.needle),
        || format!("wanted `{}`\n{run}", case.needle),
    )
}

#[rustfmt::skip]
fn cases(f: &Files) -> Vec<Case> {
    let p = |n: &str| f.path(n);
    let (bz, elf, initrd) = (p("bz"), p("guest.elf"), p("initrd"));
    let long_name = "n".repeat(100_000);
    let long_cmdline = "x".repeat(5000);
    vec![
        // Input files: special files never hang, every check that needs no content first.
        refused("kernel_dev_zero", &["--kernel", "/dev/zero"], "is a character device, not a regular file"),
        refused("kernel_fifo", &["--kernel", &p("fifo-kernel")], "is a FIFO, not a regular file"),
        refused("kernel_directory", &["--kernel", "/"], "is a directory, not a regular file"),
        refused("kernel_missing", &["--kernel", "/nonexistent/vmlinux"], "cannot read it"),
        refused("kernel_empty", &["--kernel", &p("empty")], "not a kernel drvisor can boot"),
        refused("kernel_over_1_gib", &["--kernel", &p("kernel-1GiB+1")], "larger than the 1073741824 bytes allowed"),
        refused("initrd_dev_zero_default_kernel", &["--initrd", "/dev/zero"], "is a character device, not a regular file"),
        refused("initrd_fifo_default_kernel", &["--initrd", &p("fifo-initrd")], "is a FIFO, not a regular file"),
        refused("initrd_dev_zero", &["--kernel", &bz, "--initrd", "/dev/zero"], "is a character device"),
        refused("initrd_fifo", &["--kernel", &bz, "--initrd", &p("fifo-initrd")], "is a FIFO"),
        refused("initrd_missing", &["--kernel", &bz, "--initrd", "/nonexistent/initrd"], "cannot read it"),
        refused("initrd_larger_than_ram", &["--kernel", &bz, "--initrd", &p("initrd-65MiB"), "--mem", "64"], "--mem is 64 MiB"),
        refused("initrd_with_an_elf_kernel_not_read", &["--kernel", &elf, "--initrd", "/nonexistent/initrd"], "cannot read it"),
        refused("symbols_dev_zero", &["--symbols", "/dev/zero"], "is a character device"),
        refused("symbols_fifo", &["--symbols", &p("fifo-symbols")], "is a FIFO"),
        refused("symbols_over_256_mib", &["--symbols", &p("map-256MiB+1")], "larger than the 268435456 bytes allowed"),
        refused("symbols_one_mib_of_nuls", &["--symbols", &p("nuls.map")], "not a System.map line"),
        refused("symbols_not_utf8", &["--symbols", &p("not-utf8.map")], "invalid UTF-8 at byte"),
        refused("symbols_bad_line", &["--symbols", &p("bad-line.map")], ":2: not a System.map line"),
        refused("symbols_without_the_asked_name", &["--symbols", &p("good.map"), "--break", "drv_target_1"], "unknown symbol `drv_target_1`; did you mean drv_target_0?"),
        // Load-time facts about the kernel: refused before a vCPU runs, never blamed on it.
        refused("bzimage_setup_sects_0", &["--kernel", &p("bz-setup-sects-0")], "setup_sects is 0"),
        refused("bzimage_version_ffff", &["--kernel", &p("bz-version-ffff")], "boot protocol version 255.255"),
        refused("bzimage_without_xlf_kernel_64", &["--kernel", &p("bz-no-kernel-64")], "XLF_KERNEL_64"),
        refused("bzimage_empty_payload", &["--kernel", &p("bz-empty-payload")], "no protected-mode kernel"),
        refused("bzimage_init_size_max", &["--kernel", &p("bz-init-size-max")], "init_size 0xffffffff"),
        refused("bzimage_kernel_alignment_0", &["--kernel", &p("bz-alignment-0")], "kernel_alignment 0x0"),
        refused("elf_segment_at_0", &["--kernel", &p("elf-segment-at-0")], "below 1 MiB, where drvisor keeps boot data"),
        refused("elf_segment_at_0x500", &["--kernel", &p("elf-segment-at-500")], "below 1 MiB, where drvisor keeps boot data"),
        refused("elf_segment_on_the_zero_page", &["--kernel", &p("elf-segment-at-7000")], "below 1 MiB, where drvisor keeps boot data"),
        refused("elf_segment_on_the_command_line", &["--kernel", &p("elf-segment-at-20000")], "below 1 MiB, where drvisor keeps boot data"),
        refused("elf_segment_at_0xa0000", &["--kernel", &p("elf-segment-at-a0000")], "below 1 MiB, where drvisor keeps boot data"),
        refused("elf_entry_outside_every_segment", &["--kernel", &p("elf-entry-outside")], "outside every loaded segment"),
        // --mem: both ends, the wrap at 2^44 MiB, and beyond u64.
        refused("mem_0", &["--mem", "0"], "--mem 0: 0 MiB of guest RAM is too small"),
        refused("mem_1", &["--mem", "1"], "--mem 1: 1 MiB of guest RAM is too small"),
        refused("mem_one_past_the_limit", &["--mem", "1048577"], "at most 1048576 MiB"),
        refused("mem_that_wrapped_to_2_mib", &["--mem", "17592186044418"], "at most 1048576 MiB"),
        refused("mem_2_pow_30", &["--mem", "1073741824"], "at most 1048576 MiB"),
        refused("mem_u64_max", &["--mem", "18446744073709551615"], "at most 1048576 MiB"),
        refused("mem_past_u64", &["--mem", "18446744073709551616"], "--mem"),
        refused("mem_negative", &["--mem", "-1"], "-1"),
        refused("mem_hex", &["--mem", "0x40"], "0x40"),
        // --vcpus
        refused("vcpus_33_for_the_embedded_guest", &["--vcpus", "33"], "the embedded test guest runs 1 to 32 vCPUs"),
        refused("vcpus_0", &["--vcpus", "0"], "--vcpus 0: 0 vCPUs is out of range"),
        refused("vcpus_256", &["--kernel", &elf, "--vcpus", "256"], "--vcpus 256: 256 vCPUs is out of range"),
        refused("vcpus_past_u64", &["--vcpus", "18446744073709551616"], "--vcpus"),
        // --watch
        refused("watch_virtual_end_wraps", &["--watch", "0xffffffffffffffff:w:8"], "runs past the end of the 64-bit address space"),
        refused("watch_physical_end_wraps", &["--watch", "phys:0xffffffffffffffff:w:8"], "runs past the end of the 64-bit address space"),
        refused("watch_end_wraps_by_one", &["--watch", "0xfffffffffffffff0:w:16"], "runs past the end"),
        refused("watch_access_twice", &["--watch", "drv_watch_u64:w:r"], "the access is given twice"),
        refused("watch_all_parts_twice", &["--watch", "drv_watch_u64:w:r:8:16"], "the access is given twice"),
        refused("watch_length_twice", &["--watch", "drv_watch_u64:8:16"], "the length is given twice"),
        refused("watch_length_0", &["--watch", "drv_watch_u64:0"], "neither an access"),
        refused("watch_length_0x0", &["--watch", "drv_watch_u64:0x0"], "neither an access"),
        refused("watch_length_past_u64", &["--watch", "drv_watch_u64:18446744073709551616"], "neither an access"),
        refused("watch_empty_part", &["--watch", "drv_watch_u64::8"], "neither an access"),
        refused("watch_empty", &["--watch", ""], "give a symbol or an address"),
        refused("watch_longer_than_ram", &["--watch", "phys:0x0:w:0x10000000"], "longer than guest RAM"),
        refused("watch_outside_ram", &["--watch", "phys:0x10000000:w:8"], "0x10000000 is not RAM"),
        refused("watch_unknown_symbol", &["--watch", "drv_watch_u65"], "unknown symbol `drv_watch_u65`"),
        refused("watch_no_length_known", &["--watch", "0x1000"], "give a length"),
        // --break
        refused("break_unknown_symbol", &["--break", "drv_target_9"], "did you mean drv_target_0"),
        refused("break_bad_hex", &["--break", "0x1g"], "is not a valid address"),
        refused("break_past_u64", &["--break", "99999999999999999999"], "is not a valid address"),
        refused("break_empty", &["--break", ""], "give a symbol or an address"),
        // Flags bound to a breakpoint.
        refused("action_twice", &["--break", "drv_target_0", "--action", "stop", "--action", "continue"], "--action given twice for drv_target_0"),
        refused("capture_twice", &["--break", "drv_target_0", "--capture", "8", "--capture", "9"], "--capture given twice"),
        refused("capture_zero", &["--break", "drv_target_0", "--capture", "0"], "0 is not in 1..=4096"),
        refused("capture_too_much", &["--break", "drv_target_0", "--capture", "4097"], "4097 is not in 1..=4096"),
        refused("capture_alone", &["--capture", "8"], "--capture must follow"),
        refused("action_unknown", &["--break", "drv_target_0", "--action", "explode"], "invalid value 'explode' for '--action <ACTION>'; use one of: continue, pause, stop"),
        refused("action_without_owner", &["--action", "stop", "--break", "drv_target_0"], "--action must follow"),
        refused("vcpu_twice", &["--break", "drv_target_0", "--vcpu", "0", "--vcpu", "0"], "--vcpu given twice"),
        refused("vcpu_out_of_range", &["--break", "drv_target_0", "--vcpu", "4294967296"], "--vcpu"),
        refused("engine_twice", &["--watch", "drv_watch_u64", "--engine", "page", "--engine", "auto"], "--engine given twice"),
        refused("engine_on_a_break", &["--break", "drv_target_0", "--engine", "page"], "--engine applies to --watch only"),
        refused("engine_unknown", &["--watch", "drv_watch_u64", "--engine", "fpga"], "invalid value 'fpga' for '--engine <ENGINE>'; use one of: hw, page, auto"),
        // Other flags.
        refused("policy_unknown", &["--policy", "me-first"], "invalid value 'me-first' for '--policy <POLICY>'; use one of: host-first, guest-first, deny"),
        refused("scenario_unknown", &["--scenario", "nope"], "unknown scenario `nope`"),
        refused("scenario_two_words", &["--kernel", &elf, "--scenario", "hello count=5"], "a scenario is one word"),
        refused("cmdline_scenario_conflict", &["--scenario", "hello", "--cmdline", "scenario=panic"], "conflicts with --scenario hello"),
        refused("cmdline_ncpus_conflict", &["--cmdline", "ncpus=4"], "use --vcpus"),
        refused("cmdline_too_long", &["--cmdline", &long_cmdline], "it must be shorter than 4096"),
        refused("unknown_flag", &["--frobnicate"], "unexpected argument '--frobnicate' found (see drvisor run --help)"),
        refused("long_unknown_flag_is_cut", &["--frobnicate".repeat(10_000).as_str()], "more bytes)"),
        refused("events_in_a_missing_directory", &["--events", "/nonexistent/dir/events"], "--events"),
        refused("events_on_a_closed_descriptor", &["--events", "/dev/fd/97"], "--events /dev/fd/97: descriptor 97 is not open for writing"),
        // Quoted input is cut (the length bound is checked for every case).
        refused("long_symbol_is_cut", &["--break", &long_name], "more bytes)"),
        refused("long_watch_is_cut", &["--watch", &format!("{long_name}:q")], "more bytes)"),
        refused("long_policy_is_cut", &["--policy", &long_name], "more bytes)"),
        refused("long_kernel_path_is_cut", &["--kernel", &format!("/{long_name}")], "more bytes)"),
        // An access watch on the GDT page: KVM re-issues the read of `lgdt`'s operand for ever;
        // drvisor sees the streak, names the instruction and the watch, and ends the run.
        refused("access_watch_on_the_gdt", &["--watch", "drv_gdt:rw:24", "--events", "/dev/null"], "the operand of `lgdt`"),
        refused("long_events_path_is_cut", &["--events", &format!("/{long_name}")], "more bytes)"),
        refused("long_scenario_is_cut", &["--scenario", &long_name], "more bytes)"),
        refused("long_cmdline_word_is_cut", &["--scenario", "hello", "--cmdline", &format!("scenario={long_name}")], "more bytes)"),
        // The guest's status: 0-63 pass through; above, exit 77 with the raw value.
        ends("guest_status_0", &["--scenario", "status", "--cmdline", "status=0"], 0, "status=0"),
        ends("guest_status_63", &["--scenario", "status", "--cmdline", "status=63"], 63, "status=63"),
        ends("guest_status_64", &["--scenario", "status", "--cmdline", "status=64"], 77, "the guest exited with status 64, outside the guest range 0-63"),
        ends("guest_status_70", &["--scenario", "status", "--cmdline", "status=70"], 77, "the guest exited with status 70"),
        ends("guest_status_75", &["--scenario", "status", "--cmdline", "status=75"], 77, "the guest exited with status 75"),
        ends("guest_status_130", &["--scenario", "status", "--cmdline", "status=130"], 77, "the guest exited with status 130"),
        ends("guest_status_255", &["--scenario", "status", "--cmdline", "status=255"], 77, "the guest exited with status 255"),
        // Boundary values that must work.
        ends("mem_2_boots", &["--mem", "2"], 0, "drv: summary scenario=hello status=0"),
        ends("watch_length_in_hex", &["--scenario", "write", "--cmdline", "count=3", "--watch", "drv_watch_u64:w:0x8"], 0, "\"event\":\"hit\""),
        ends("symbols_from_a_system_map", &["--symbols", &p("good.map"), "--break", "drv_target_0"], 0, "drv: summary scenario=hello status=0"),
        ends("kernel_bzimage_with_initrd_boots", &["--kernel", &bz, "--initrd", &initrd], 0, ""),
    ]
}

pub fn trials() -> Vec<Trial> {
    let files = std::sync::Arc::new(Files::new());
    cases(&files)
        .into_iter()
        .map(|case| {
            let keep = files.clone();
            Trial::test(format!("bad_input::{}", case.name), move || {
                let _files = &keep;
                check(&case)
            })
        })
        .collect()
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
