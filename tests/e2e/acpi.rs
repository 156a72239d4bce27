//! The ACPI tables and PM timer, seen from inside a real VM: the test guest's `acpi` scenario
//! scans 0xe0000-0xfffff for the RSDP, follows the XSDT to the FADT and MADT, the FADT to the
//! FACS, DSDT and PM timer port, checks every checksum, counts the MADT's local APICs, and reads
//! the PM timer until it has moved 50 ms, timing that with the TSC (whose rate KVM knows). `--acpi off` leaves it
//! nothing to find.

use std::time::Instant;

use crate::common::{drvisor, ensure, field, guest_number, Failed, Run, Trial};

/// The PM timer's rate.
const PM_TIMER_HZ: f64 = 3_579_545.0;
/// The ticks the guest waits for (its `WINDOW`).
const WINDOW: u64 = 178_977;

/// The one guest line with all of `parts`.
fn one_line<'a>(run: &'a Run, parts: &[&str]) -> Result<&'a str, Failed> {
    match run.guest_lines(parts).as_slice() {
        [line] => Ok(line),
        _ => Err(format!("wanted one line with {parts:?}\n{run}").into()),
    }
}

/// The guest TSC's rate, from KVM (`KVM_GET_TSC_KHZ` on a fresh vCPU, the rate drvisor's vCPUs
/// get), or why it is not known.
fn guest_tsc_hz() -> Result<f64, String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let khz = vcpu
        .get_tsc_khz()
        .map_err(|e| format!("KVM_GET_TSC_KHZ: {e}"))?;
    Ok(f64::from(khz) * 1000.0)
}

fn finds_the_tables_and_the_pm_timer(vcpus: usize) -> Result<(), Failed> {
    let vcpus_arg = vcpus.to_string();
    let started = Instant::now();
    // Under --strict-ports a read of a port no device owns would end the run (exit 73): the
    // PM timer's port is owned.
    let run = drvisor(&[
        "run",
        "--scenario",
        "acpi",
        "--vcpus",
        &vcpus_arg,
        "--strict-ports",
    ]);
    let wall = started.elapsed().as_secs_f64();
    run.expect_code(0)?;
    ensure(run.summary()?.contains("status=0"), || run.to_string())?;

    // The RSDP where drvisor puts it, revision 2, both checksums good.
    let rsdp = run
        .guest_lines(&["acpi"])
        .into_iter()
        .find(|l| field(l, "rsdp").is_some())
        .ok_or_else(|| format!("no rsdp= line\n{run}"))?;
    ensure(
        field(rsdp, "rsdp") == Some("0xe0000")
            && field(rsdp, "revision") == Some("2")
            && field(rsdp, "checksum") == Some("ok"),
        || format!("{rsdp}\n{run}"),
    )?;
    // Every table: XSDT, FADT, MADT (listed by the XSDT), DSDT; checksums over their lengths.
    for (sig, len) in [
        ("XSDT", Some(52)),
        ("FACP", Some(276)),
        ("APIC", Some(44 + 8 * vcpus + 12 + 10 + 6)),
        ("DSDT", None),
    ] {
        let line = one_line(&run, &["acpi", &format!("table={sig}")])?;
        ensure(field(line, "checksum") == Some("ok"), || {
            format!("{sig}: {line}\n{run}")
        })?;
        if let Some(len) = len {
            ensure(field(line, "length") == Some(&len.to_string()), || {
                format!("{sig} length: {line}\n{run}")
            })?;
        }
    }
    ensure(
        guest_number(&run, &["acpi", "table=FACS"], "length")? == 64,
        || run.to_string(),
    )?;
    // The FADT's PM timer: port 0x608, 4 bytes, 32 bits; a full (not hardware-reduced) FADT
    // with the SCI on IRQ 9.
    let fadt = one_line(&run, &["acpi", "fadt"])?;
    for (key, want) in [
        ("pm_tmr_blk", "0x608"),
        ("pm_tmr_len", "4"),
        ("tmr_val_ext", "1"),
        ("hw_reduced", "0"),
        ("sci_int", "9"),
    ] {
        ensure(field(fadt, key) == Some(want), || {
            format!("{key} (wanted {want}): {fadt}\n{run}")
        })?;
    }
    // One local APIC per vCPU, one I/O APIC, the SCI's override.
    let lapics = guest_number(&run, &["acpi", "madt"], "lapics")?;
    ensure(lapics == vcpus as u64, || {
        format!("{lapics} local APICs for {vcpus} vCPUs\n{run}")
    })?;
    ensure(
        guest_number(&run, &["acpi", "madt"], "ioapics")? == 1
            && guest_number(&run, &["acpi", "madt"], "overrides")? == 1,
        || run.to_string(),
    )?;

    // The PM timer moved at least the window, never backwards, and no faster than real time:
    // the ticks counted are no more than the whole run's wall-clock time.
    let timer = ["acpi", "pm_timer", "port=0x608"];
    let delta = guest_number(&run, &timer, "delta")?;
    let reads = guest_number(&run, &timer, "reads")?;
    ensure(guest_number(&run, &timer, "backwards")? == 0, || {
        run.to_string()
    })?;
    ensure(delta >= WINDOW && reads >= 2, || {
        format!("delta {delta} after {reads} reads\n{run}")
    })?;
    let seconds = delta as f64 / PM_TIMER_HZ;
    ensure(seconds <= wall, || {
        format!("the PM timer counted {seconds:.3} s in a run of {wall:.3} s\n{run}")
    })?;
    // Against the TSC: the guest read the TSC just before and after each PM timer read, so the
    // TSC ticks between its first and last read lie in tsc_min..=tsc_max (a vCPU preempted in
    // a bracket widens it; it cannot move the truth out of it). At KVM's TSC rate, the PM
    // timer's ticks must fall there too, give or take 2 %.
    let tsc_min = guest_number(&run, &timer, "tsc_min")? as f64;
    let tsc_max = guest_number(&run, &timer, "tsc_max")? as f64;
    match guest_tsc_hz() {
        Ok(hz) => {
            let expected = seconds * hz;
            ensure(
                tsc_min * 0.98 <= expected && expected <= tsc_max * 1.02,
                || {
                    format!(
                        "the PM timer's {delta} ticks ({seconds:.4} s) are {expected:.0} TSC ticks \
                         at KVM's {hz:.0} Hz, but the guest counted {tsc_min}..={tsc_max}\n{run}"
                    )
                },
            )
        }
        Err(why) => {
            println!("acpi: not comparing the PM timer with the TSC: {why}");
            Ok(())
        }
    }
}

fn off_leaves_nothing_to_find() -> Result<(), Failed> {
    let run = drvisor(&["run", "--scenario", "acpi", "--acpi", "off"]);
    run.expect_code(1)?;
    ensure(
        run.guest_lines(&["acpi", "error", "no", "RSDP"]).len() == 1,
        || run.to_string(),
    )
}

fn a_bad_value_is_refused() -> Result<(), Failed> {
    let run = drvisor(&["run", "--scenario", "acpi", "--acpi", "maybe"]);
    run.expect_code(2)?;
    ensure(
        run.stderr.contains("--acpi") && run.stderr.contains("on") && run.stderr.contains("off"),
        || run.to_string(),
    )?;
    ensure(run.guest_lines(&["acpi"]).is_empty(), || run.to_string())
}

/// The u64 at `addr` in the guest memory of a VM built (not run) from `config`.
fn u64_in_guest(config: drvisor::VmConfig, addr: u64) -> Result<u64, Failed> {
    use vm_memory::Bytes;
    let vm = drvisor::Vm::try_from(config)?;
    Ok(vm.memory().read_obj(vm_memory::GuestAddress(addr))?)
}

/// A bzImage finds the RSDP's address in its zero page (`acpi_rsdp_addr`, at 0x70), a PVH
/// kernel in `hvm_start_info.rsdp_paddr` (at 32); with ACPI off both stay 0 and nothing is at
/// 0xe0000.
fn kernels_are_told_where_the_rsdp_is() -> Result<(), Failed> {
    use drvisor::boot::{Entry, KernelImage};
    let bz = || -> Result<drvisor::VmConfig, Failed> {
        let image = crate::bzimage::synthetic_bzimage(&[0xf4], 8192);
        Ok(drvisor::VmConfig::new(
            KernelImage::from_bytes("bz", image)?,
            "",
        ))
    };
    let pvh = || drvisor::VmConfig::new(drvisor::guest_image::kernel(), "");
    let zero_page = drvisor::layout::ZERO_PAGE + 0x70;
    let start_info = drvisor::layout::PVH_START_INFO + 32;
    let rsdp = drvisor::layout::ACPI_START;
    ensure(u64_in_guest(bz()?, zero_page)? == rsdp, || {
        "bzImage: acpi_rsdp_addr".into()
    })?;
    ensure(u64_in_guest(pvh(), start_info)? == rsdp, || {
        "PVH: rsdp_paddr".into()
    })?;
    ensure(
        u64_in_guest(pvh(), rsdp)? == u64::from_le_bytes(*b"RSD PTR "),
        || "no RSDP at 0xe0000".into(),
    )?;
    let off = |mut c: drvisor::VmConfig| {
        c.acpi = false;
        c
    };
    ensure(u64_in_guest(off(bz()?), zero_page)? == 0, || {
        "--acpi off: bzImage acpi_rsdp_addr set".into()
    })?;
    ensure(u64_in_guest(off(pvh()), start_info)? == 0, || {
        "--acpi off: PVH rsdp_paddr set".into()
    })?;
    ensure(u64_in_guest(off(pvh()), rsdp)? == 0, || {
        "--acpi off: something at 0xe0000".into()
    })?;
    // The entries are the ones whose fields were read.
    let vm = drvisor::Vm::try_from(pvh())?;
    ensure(
        matches!(vm.entry(), Entry::Pvh { start_info, .. } if start_info == drvisor::layout::PVH_START_INFO),
        || format!("{:?}", vm.entry()),
    )?;
    let vm = drvisor::Vm::try_from(bz()?)?;
    ensure(
        matches!(vm.entry(), Entry::Linux64 { zero_page, .. } if zero_page == drvisor::layout::ZERO_PAGE),
        || format!("{:?}", vm.entry()),
    )
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "acpi::kernels_are_told_where_the_rsdp_is",
            kernels_are_told_where_the_rsdp_is,
        ),
        Trial::test("acpi::finds_the_tables_and_the_pm_timer_1_vcpu", || {
            finds_the_tables_and_the_pm_timer(1)
        }),
        Trial::test("acpi::finds_the_tables_and_the_pm_timer_4_vcpus", || {
            finds_the_tables_and_the_pm_timer(4)
        }),
        Trial::test(
            "acpi::off_leaves_nothing_to_find",
            off_leaves_nothing_to_find,
        ),
        Trial::test("acpi::a_bad_value_is_refused", a_bad_value_is_refused),
    ]
}
