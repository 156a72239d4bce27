//! `--cpu-features`: what the guest's own `cpuid` reports (the test guest's `cpuid` scenario)
//! with features hidden, and the refusals of features the guest cannot have.
//!
//! Which trials run depends on this host's `KVM_GET_SUPPORTED_CPUID` and on the probe: a trial
//! that needs a feature KVM does not offer is listed as ignored with the reason.

use drvisor::cpu::{feature_table, CpuFeature, CpuModel, FeatureEdits};
use kvm_bindings::CpuId;

use crate::common::{drvisor, ensure, field, skipped, Context, Failed, Run, Trial};

/// CPUID.1:ECX bits.
const X2APIC: u32 = 1 << 21;
const XSAVE: u32 = 1 << 26;
const AVX: u32 = 1 << 28;

/// KVM's list on this host.
fn kvm_supported() -> CpuId {
    kvm_ioctls::Kvm::new()
        .and_then(|kvm| kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES))
        .expect("KVM_GET_SUPPORTED_CPUID")
}

fn offers(cpuid: &CpuId, name: &str) -> bool {
    feature_table::lookup(name)
        .expect("a known feature")
        .offered_by(cpuid)
}

/// The guest's `drv: cpuid leaf=LEAF` line's `key=` value.
fn guest_cpuid(run: &Run, leaf: &str, key: &str) -> Result<u32, Failed> {
    let lines = run.guest_lines(&["cpuid", &format!("leaf={leaf}")]);
    let [line] = lines.as_slice() else {
        return Err(format!("wanted one `cpuid leaf={leaf}` line\n{run}").into());
    };
    let value = field(line, key).ok_or_else(|| format!("no {key}= in {line:?}"))?;
    u32::from_str_radix(value.trim_start_matches("0x"), 16)
        .map_err(|e| format!("{key}={value} in {line:?}: {e}").into())
}

/// Whether the guest's printed leaves show the feature `name`.
fn guest_sees(run: &Run, name: &str) -> Result<bool, Failed> {
    let entry = |function, regs: [u32; 4]| kvm_bindings::kvm_cpuid_entry2 {
        function,
        eax: regs[0],
        ebx: regs[1],
        ecx: regs[2],
        edx: regs[3],
        ..Default::default()
    };
    let printed = CpuId::from_entries(&[
        entry(
            1,
            [
                0,
                0,
                guest_cpuid(run, "1", "ecx")?,
                guest_cpuid(run, "1", "edx")?,
            ],
        ),
        entry(
            7,
            [
                0,
                guest_cpuid(run, "7", "ebx")?,
                guest_cpuid(run, "7", "ecx")?,
                guest_cpuid(run, "7", "edx")?,
            ],
        ),
        entry(
            0x8000_0001,
            [
                0,
                0,
                guest_cpuid(run, "0x80000001", "ecx")?,
                guest_cpuid(run, "0x80000001", "edx")?,
            ],
        ),
    ])
    .map_err(|e| format!("{e:?}"))?;
    Ok(offers(&printed, name))
}

fn cpuid_run(extra: &[&str]) -> Result<Run, Failed> {
    let mut args = vec!["run", "--scenario", "cpuid"];
    args.extend_from_slice(extra);
    let run = drvisor(&args);
    run.expect_code(0)?;
    Ok(run)
}

/// The default keeps x2APIC; `-x2apic` clears CPUID.1:ECX[21] and nothing else the guest sees
/// in leaves 1, 7 and 0x80000001, and says nothing about other features.
fn hiding_x2apic() -> Result<(), Failed> {
    let shown = cpuid_run(&[])?;
    let hidden = cpuid_run(&["--cpu-features", "-x2apic"])?;
    let ecx = guest_cpuid(&shown, "1", "ecx")?;
    ensure(ecx & X2APIC != 0, || {
        format!("KVM offers x2APIC but the default guest does not see it\n{shown}")
    })?;
    let ecx_hidden = guest_cpuid(&hidden, "1", "ecx")?;
    ensure(ecx_hidden == ecx & !X2APIC, || {
        format!("leaf 1 ECX {ecx:#x} by default, {ecx_hidden:#x} with -x2apic\n{hidden}")
    })?;
    for (leaf, key) in [
        ("1", "edx"),
        ("7", "ebx"),
        ("7", "ecx"),
        ("7", "edx"),
        ("0x80000001", "ecx"),
        ("0x80000001", "edx"),
    ] {
        let (a, b) = (
            guest_cpuid(&shown, leaf, key)?,
            guest_cpuid(&hidden, leaf, key)?,
        );
        ensure(a == b, || {
            format!("leaf {leaf} {key}: {a:#x} by default, {b:#x} with -x2apic\n{hidden}")
        })?;
    }
    ensure(!hidden.stderr.contains("also hides"), || {
        format!("x2apic takes nothing along\n{hidden}")
    })
}

/// drvisor sets the hypervisor bit itself (with KVM's leaves 0x40000000); `-hypervisor` clears
/// it all the same.
fn hiding_the_hypervisor_bit() -> Result<(), Failed> {
    let shown = cpuid_run(&[])?;
    let hidden = cpuid_run(&["--cpu-features", "-hypervisor"])?;
    ensure(guest_sees(&shown, "hypervisor")?, || {
        format!("the default guest does not see the hypervisor bit\n{shown}")
    })?;
    ensure(!guest_sees(&hidden, "hypervisor")?, || {
        format!("-hypervisor: the guest still sees it\n{hidden}")
    })?;
    ensure(
        guest_sees(&hidden, "x2apic")? == guest_sees(&shown, "x2apic")?,
        || format!("-hypervisor changed x2apic\n{hidden}"),
    )
}

/// `+x2apic` where KVM offers it is no change at all.
fn requiring_x2apic() -> Result<(), Failed> {
    let run = cpuid_run(&["--cpu-features", "+x2apic"])?;
    ensure(guest_cpuid(&run, "1", "ecx")? & X2APIC != 0, || {
        format!("+x2apic: the guest does not see it\n{run}")
    })
}

/// `--cpu-model qemu64` hides every named feature qemu64 lacks exactly as `--cpu-features`
/// hiding them does (on hosts where `KVM_SET_CPUID2` cannot clear a bit, both leave it), keeps
/// its own as the host's CPU shows them, and changes what this guest sees; a feature the user
/// requires stays.
fn qemu64_model() -> Result<(), Failed> {
    let host = cpuid_run(&[])?;
    let qemu64 = cpuid_run(&["--cpu-model", "qemu64"])?;
    let hides: Vec<String> = CpuModel::Qemu64
        .hides(&FeatureEdits::default())
        .iter()
        .map(|f| format!("-{}", f.name))
        .collect();
    let hidden = cpuid_run(&["--cpu-features", &hides.join(",")])?;
    let own = CpuModel::Qemu64.features().unwrap_or_default();
    let mut gone = Vec::new();
    for feature in feature_table::FEATURES {
        let name = feature.name;
        let (on_host, on_qemu64) = (guest_sees(&host, name)?, guest_sees(&qemu64, name)?);
        let want = if own.contains(&name) {
            on_host
        } else {
            guest_sees(&hidden, name)?
        };
        ensure(on_qemu64 == want, || {
            format!("{name}: qemu64 shows {on_qemu64}, want {want}\n{qemu64}")
        })?;
        if on_host && !on_qemu64 {
            gone.push(name);
        }
    }
    ensure(!gone.is_empty(), || {
        format!("qemu64 changed nothing the guest sees\n{qemu64}")
    })?;
    println!("  qemu64 hides here: {}", gone.join(" "));
    let identity = |run: &Run, key: &str| -> Result<String, Failed> {
        let lines = run.guest_lines(&["cpuid", "identity"]);
        let line = lines
            .first()
            .ok_or_else(|| format!("no identity line\n{run}"))?;
        Ok(field(line, key).unwrap_or_default().to_owned())
    };
    ensure(identity(&qemu64, "signature")? == "0x60fb1", || {
        format!("qemu64 is family 15, model 107, stepping 1 (0x60fb1)\n{qemu64}")
    })?;
    ensure(identity(&qemu64, "max")? == "0xd", || {
        format!("max leaf\n{qemu64}")
    })?;
    ensure(identity(&qemu64, "max_ext")? == "0x8000000a", || {
        format!("max extended leaf\n{qemu64}")
    })?;
    ensure(
        identity(&qemu64, "vendor")? == identity(&host, "vendor")?,
        || format!("qemu64 keeps the host's vendor\n{qemu64}"),
    )?;
    // osxsave and ospke follow CR4 and cannot be required.
    let Some(wanted) = gone.iter().find(|n| !["osxsave", "ospke"].contains(n)) else {
        return Ok(());
    };
    let kept = cpuid_run(&[
        "--cpu-model",
        "qemu64",
        "--cpu-features",
        &format!("+{wanted}"),
    ])?;
    ensure(guest_sees(&kept, wanted)?, || {
        format!("qemu64 with +{wanted}: the guest does not see it\n{kept}")
    })
}

/// `--cpu-vendor` is the guest's vendor string, the other vendor's as well as the host's.
fn cpu_vendor() -> Result<(), Failed> {
    for vendor in ["GenuineIntel", "AuthenticAMD"] {
        let run = cpuid_run(&["--cpu-vendor", vendor])?;
        let lines = run.guest_lines(&["cpuid", "identity"]);
        ensure(
            lines.len() == 1 && field(lines[0], "vendor") == Some(vendor),
            || format!("--cpu-vendor {vendor}: the guest sees otherwise\n{run}"),
        )?;
    }
    let bad = drvisor(&["run", "--scenario", "cpuid", "--cpu-vendor", "Intel"]);
    bad.expect_code(2)?;
    ensure(bad.stderr.contains("12 printable ASCII"), || {
        bad.to_string()
    })
}

/// `-xsave` takes AVX along and says so on one line.
fn hiding_xsave_hides_avx() -> Result<(), Failed> {
    let run = cpuid_run(&["--cpuid", "host", "--cpu-features", "-xsave"])?;
    let ecx = guest_cpuid(&run, "1", "ecx")?;
    ensure(ecx & (XSAVE | AVX) == 0, || {
        format!("-xsave: leaf 1 ECX {ecx:#x} still has XSAVE or AVX\n{run}")
    })?;
    let lists: Vec<Vec<&str>> = run
        .stderr
        .lines()
        .filter_map(|l| l.split_once("--cpu-features also hides "))
        .filter_map(|(_, rest)| rest.split_once(" from the guest"))
        .map(|(names, _)| names.split(", ").collect())
        .collect();
    ensure(
        matches!(lists.as_slice(), [names] if names.contains(&"avx") && !names.contains(&"xsave")),
        || format!("wanted one line naming avx (not xsave itself): {lists:?}\n{run}"),
    )
}

/// A feature KVM does not offer is refused, exit code 2, naming KVM's list.
fn refuses_what_kvm_cannot_give(name: &'static str) -> Result<(), Failed> {
    let run = drvisor(&[
        "run",
        "--scenario",
        "cpuid",
        "--cpu-features",
        &format!("+{name}"),
    ]);
    run.expect_code(2)?;
    ensure(
        run.stderr.contains(&format!("--cpu-features: +{name}:"))
            && run.stderr.contains("not in KVM_GET_SUPPORTED_CPUID"),
        || format!("+{name} not refused as KVM's\n{run}"),
    )?;
    ensure(run.guest_lines(&["cpuid"]).is_empty(), || {
        format!("the guest ran\n{run}")
    })
}

/// A feature the probe found unusable is refused under `--cpuid filtered` (naming the way
/// out) and given under `--cpuid host`.
fn refuses_what_the_filter_takes_out(name: &'static str) -> Result<(), Failed> {
    let list = format!("+{name}");
    let run = drvisor(&["run", "--scenario", "cpuid", "--cpu-features", &list]);
    run.expect_code(2)?;
    ensure(run.stderr.contains("--cpuid host keeps it"), || {
        format!("+{name} under the filter\n{run}")
    })?;
    cpuid_run(&["--cpuid", "host", "--cpu-features", &list]).map(|_| ())
}

/// Where the probe found KVM showing a feature its list lacks (`kvm_pvm`), hiding it is said to
/// fail, and the guest indeed still sees it.
fn warns_where_kvm_cannot_hide(name: &'static str) -> Result<(), Failed> {
    let run = cpuid_run(&["--cpu-features", &format!("-{name}")])?;
    ensure(
        run.stderr
            .lines()
            .any(|l| l.contains("warning: --cpu-features cannot hide") && l.contains(name)),
        || format!("no warning for -{name}\n{run}"),
    )?;
    ensure(guest_sees(&run, name)?, || {
        format!("-{name}: the guest no longer sees it, the warning is wrong\n{run}")
    })
}

/// Unknown names are usage errors with the close matches.
fn unknown_name() -> Result<(), Failed> {
    let run = drvisor(&["run", "--scenario", "cpuid", "--cpu-features", "-x2apci"]);
    run.expect_code(2)?;
    ensure(
        run.stderr
            .contains("unknown CPU feature \"x2apci\" (did you mean x2apic?)"),
        || format!("no suggestion\n{run}"),
    )
}

pub fn trials(ctx: &Context) -> Vec<Trial> {
    let kvm = kvm_supported();
    let mut trials = vec![Trial::test(
        "cpu_features::unknown_name_suggests_close_ones",
        unknown_name,
    )];
    if offers(&kvm, "x2apic") {
        trials.push(Trial::test(
            "cpu_features::hiding_x2apic_clears_cpuid_1_ecx_21",
            hiding_x2apic,
        ));
        trials.push(Trial::test(
            "cpu_features::requiring_x2apic_keeps_it",
            requiring_x2apic,
        ));
    } else {
        let why = "this host's KVM_GET_SUPPORTED_CPUID has no x2APIC";
        trials.push(skipped(
            "cpu_features::hiding_x2apic_clears_cpuid_1_ecx_21",
            why,
        ));
        trials.push(skipped("cpu_features::requiring_x2apic_keeps_it", why));
    }
    trials.push(Trial::test(
        "cpu_features::qemu64_model_shows_only_its_features",
        qemu64_model,
    ));
    trials.push(Trial::test(
        "cpu_features::cpu_vendor_is_the_guests_vendor",
        cpu_vendor,
    ));
    let name = "cpu_features::hiding_the_hypervisor_bit";
    if offers(&kvm, "hypervisor") {
        trials.push(Trial::test(name, hiding_the_hypervisor_bit));
    } else {
        trials.push(skipped(
            name,
            "this host's KVM_GET_SUPPORTED_CPUID has no hypervisor bit, so KVM_SET_CPUID2 may not decide it",
        ));
    }
    let name = "cpu_features::hiding_xsave_hides_avx";
    if offers(&kvm, "xsave") && offers(&kvm, "avx") {
        trials.push(Trial::test(name, hiding_xsave_hides_avx));
    } else {
        trials.push(skipped(
            name,
            "this host's KVM_GET_SUPPORTED_CPUID lacks XSAVE or AVX",
        ));
    }
    let name = "cpu_features::refuses_a_feature_kvm_cannot_give";
    match feature_table::FEATURES
        .iter()
        .find(|f| !f.offered_by(&kvm) && f.name != "hypervisor")
    {
        Some(f) => {
            let feature = f.name;
            trials.push(Trial::test(name, move || {
                refuses_what_kvm_cannot_give(feature)
            }));
        }
        None => trials.push(skipped(name, "this host's KVM offers every named feature")),
    }
    let name = "cpu_features::warns_where_kvm_cannot_hide";
    let unhideable = ctx
        .probe
        .instructions
        .iter()
        .find(|r| r.offered && !r.hideable)
        .and_then(|r| feature_table::lookup(r.feature.name()));
    match unhideable {
        Some(f) => {
            let feature = f.name;
            trials.push(Trial::test(name, move || {
                warns_where_kvm_cannot_hide(feature)
            }));
        }
        None => trials.push(skipped(
            name,
            "the probe found KVM able to hide every feature it tested",
        )),
    }
    let name = "cpu_features::refuses_what_the_filter_takes_out";
    let filtered = ctx
        .probe
        .unusable_features()
        .into_iter()
        .find(|f| f.offered_by(&kvm))
        .and_then(|f: CpuFeature| feature_table::lookup(f.name()));
    match filtered {
        Some(f) => {
            let feature = f.name;
            trials.push(Trial::test(name, move || {
                refuses_what_the_filter_takes_out(feature)
            }));
        }
        None => trials.push(skipped(
            name,
            "the probe found no feature in KVM's list unusable here",
        )),
    }
    trials
}
