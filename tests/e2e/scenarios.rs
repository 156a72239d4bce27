//! Every scenario of the embedded guest boots and ends with its summary and status 0.

use crate::common::{drvisor, ensure, field, has_field, Failed, Trial};

fn scenario(name: &'static str, extra: &'static [&'static str]) -> Trial {
    Trial::test(format!("scenario::{name}"), move || {
        let mut args = vec!["run", "--scenario", name];
        args.extend_from_slice(extra);
        let run = drvisor(&args);
        run.expect_code(0)?;
        let summary = run.summary()?;
        ensure(
            has_field(summary, &format!("scenario={name}")) && has_field(summary, "status=0"),
            || format!("bad summary: {summary}"),
        )
    })
}

fn exec_counts() -> Result<(), Failed> {
    let run = drvisor(&["run", "--scenario", "exec", "--cmdline", "count=37"]);
    run.expect_code(0)?;
    for t in 0..4 {
        let lines = run.guest_lines(&["scenario=exec", &format!("target={t}")]);
        ensure(
            lines.len() == 1 && field(lines[0], "calls") == Some("37"),
            || format!("target {t}: {lines:?}\n{run}"),
        )?;
    }
    Ok(())
}

fn smp(vcpus: &'static str) -> Trial {
    Trial::test(format!("scenario::smp_{vcpus}_vcpus"), move || {
        let run = drvisor(&["run", "--scenario", "smp", "--vcpus", vcpus]);
        run.expect_code(0)?;
        let n: usize = vcpus.parse().expect("number");
        let summary = run.summary()?;
        ensure(
            has_field(summary, &format!("cpus={n}")) && has_field(summary, "status=0"),
            || format!("bad summary: {summary}"),
        )?;
        for cpu in 0..n {
            let lines = run.guest_lines(&["scenario=smp", &format!("cpu={cpu}")]);
            ensure(lines.len() == 1, || {
                format!("cpu {cpu} did not report\n{run}")
            })?;
        }
        Ok(())
    })
}

/// Host stdin reaches the guest through the event loop and the UART's receive FIFO.
fn echo_reads_the_console() -> Result<(), Failed> {
    let run = crate::common::drvisor_with_stdin(&["run", "--scenario", "echo"], b"hello-drvisor\n");
    run.expect_code(0)?;
    let lines = run.guest_lines(&["scenario=echo", "got=hello-drvisor", "len=13"]);
    ensure(lines.len() == 1, || {
        format!("the guest did not read the input\n{run}")
    })?;
    // More than the UART's 64-byte FIFO: the rest waits on the host side, none is dropped.
    let long = "x".repeat(150);
    let run = crate::common::drvisor_with_stdin(
        &["run", "--scenario", "echo"],
        format!("{long}\n").as_bytes(),
    );
    run.expect_code(0)?;
    let got = format!("got={long}");
    ensure(
        run.guest_lines(&["scenario=echo", &got, "len=150"]).len() == 1,
        || run.to_string(),
    )
}

/// 5 GiB of RAM: 3 GiB below the hole under 4 GiB, 2 GiB above it. KVM accepts the VMX TSS
/// and identity-map pages in the hole (it refuses them over a memslot), and the guest boots.
fn ram_past_the_hole() -> Result<(), Failed> {
    let run = drvisor(&["run", "--mem", "5120", "--vcpus", "2"]);
    run.expect_code(0)?;
    let summary = run.summary()?;
    ensure(has_field(summary, "status=0"), || {
        format!("bad summary: {summary}")
    })
}

/// pc-testdev's line ports drive the in-kernel I/O APIC: two rising edges on line `line`, made
/// by the guest's writes of 1, 0, 1 to port 0x2000+line, are two interrupts (see the guest's
/// `irq-line` scenario).
fn irq_line_raises_interrupts(line: &str) -> Result<(), Failed> {
    let cmdline = format!("line={line}");
    let run = drvisor(&["run", "--scenario", "irq-line", "--cmdline", &cmdline]);
    run.expect_code(0)?;
    let want = format!("drv: irq-line line={line} interrupts=2");
    ensure(run.stdout.lines().any(|l| l == want), || {
        format!("wanted `{want}`\n{run}")
    })
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("scenario::irq_line_14_raises_interrupts", || {
            irq_line_raises_interrupts("14")
        }),
        Trial::test("scenario::irq_line_23_raises_interrupts", || {
            irq_line_raises_interrupts("23")
        }),
        scenario("hello", &[]),
        scenario("exec", &[]),
        scenario("write", &[]),
        scenario("guest-dr", &[]),
        scenario("bad-port", &[]),
        scenario("cpuid", &[]),
        Trial::test("scenario::exec_count_from_cmdline", exec_counts),
        Trial::test("scenario::echo_reads_the_console", echo_reads_the_console),
        smp("2"),
        smp("4"),
        Trial::test("scenario::hello_with_ram_past_the_hole", ram_past_the_hole),
    ]
}
