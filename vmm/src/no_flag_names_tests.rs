//! Library errors name no command-line flag: the library has clients other than the command
//! line (the REST API, gdb, embedders), and the `drvisor` binary adds the flag context itself.

use crate::boot;
use crate::memory;
use crate::outcome::Outcome;
use crate::symbols;
use crate::watch::{ArmError, RouteError};

fn messages() -> Vec<String> {
    vec![
        memory::Error::TooSmall(1).to_string(),
        memory::Error::TooLarge(u64::MAX).to_string(),
        crate::vm::Error::VcpuCount { asked: 0, max: 8 }.to_string(),
        RouteError::HwUnavailable("no hardware data watchpoints here".into()).to_string(),
        RouteError::HwShape.to_string(),
        RouteError::NoFreeSlot.to_string(),
        ArmError::PageWatchOnOneVcpu { vcpu: 3 }.to_string(),
        ArmError::NoSlotShape.to_string(),
        symbols::Error::NoSymbols("jiffies".into()).to_string(),
        symbols::Error::NoOwnSymbols {
            name: "jiffies".into(),
            why: crate::kernel::kallsyms::Error::NoTokenTable.to_string(),
        }
        .to_string(),
        symbols::Error::NotCode {
            name: "jiffies".into(),
            kind: 'D',
        }
        .to_string(),
        symbols::Error::PastEnd {
            spec: "f+0x40".into(),
            name: "f".into(),
            offset: 0x40,
            size: 0x40,
            lands_in: Some(("g".into(), 0)),
        }
        .to_string(),
        symbols::Error::Wraps {
            spec: "f+0xfffffffffffffff0".into(),
            addr: 0x10,
            offset: 0xffff_ffff_ffff_fff0,
        }
        .to_string(),
        crate::kernel::payload::Error::Unsupported("bzip2").to_string(),
        crate::kernel::payload::Error::UnknownFormat("00".into()).to_string(),
        crate::kernel::TaskLayoutError::NoBtf.to_string(),
        symbols::Error::Placeholder {
            path: "System.map".into(),
            text: "The real System.map is in the linux-image-6.1-dbg package".into(),
        }
        .to_string(),
        Outcome::UnknownPort {
            vcpu: 0,
            rip: 0x1000,
            port: 0x1234,
        }
        .to_string(),
        boot::Error::TooBig {
            what: "k".into(),
            needed_mib: 300,
            mem_mib: 256,
        }
        .to_string(),
        boot::Error::InitrdTooBig { size: 1 }.to_string(),
        boot::Error::ModulesWithBzImage.to_string(),
        boot::Error::ModuleTooBig {
            what: "m".into(),
            size: 1,
        }
        .to_string(),
        boot::Error::NotBootable {
            what: "k".into(),
            reason: boot::Unbootable::NothingToLoad,
        }
        .to_string(),
        boot::Error::Cmdline {
            source: linux_loader::cmdline::Error::TooLarge,
        }
        .to_string(),
        boot::Error::ZeroPage {
            source: linux_loader::configurator::Error::Overflow,
        }
        .to_string(),
        boot::Error::MpTable {
            source: boot::mptable::Error::CpuCount(0),
        }
        .to_string(),
        crate::kernel::payload::Error::OldProtocol { major: 2, minor: 7 }.to_string(),
        boot::elf::ElfError::UnknownClass.to_string(),
        boot::multiboot::MultibootError::VideoMode.to_string(),
        crate::control::location::ParseError::Empty.to_string(),
        crate::control::location::RangeError { addr: 1, len: 2 }.to_string(),
        crate::control::StepError::NotDelivered.to_string(),
        crate::gdb::ListenError::NoUnixPath.to_string(),
        crate::gdb::UsageError::ExpectedIf.to_string(),
        crate::watch::UnknownEngine("x".into()).to_string(),
        crate::devices::UnknownExitStatus("x".into()).to_string(),
        crate::cpu::ApplyError::NotSupported { name: "avx512f" }.to_string(),
        crate::cpu::ApplyError::FilteredOut { name: "cx16" }.to_string(),
    ]
    .into_iter()
    .chain(
        [
            "",
            "x2apic",
            "-x2apci",
            "-zzzz",
            "+osxsave",
            "-avx,+avx",
            "+avx2,-xsave",
        ]
        .iter()
        .filter_map(|list| crate::cpu::FeatureEdits::parse(list).err())
        .map(|e| e.to_string()),
    )
    .collect()
}

#[test]
fn library_errors_name_no_flag() {
    for m in messages() {
        assert!(!m.contains("--"), "a library error names a flag: {m}");
    }
}
