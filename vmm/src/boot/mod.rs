//! Loading a kernel into guest memory and describing how its first vCPU must start.
//!
//! Three protocols:
//! - an ELF32 or ELF64 with a Xen PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`): the vCPU starts in
//!   32-bit protected mode at the note's entry, with EBX pointing at an `hvm_start_info`
//!   ([`pvh`]);
//! - multiboot v1: 32-bit protected mode, EAX = `0x2BADB002`, EBX = the multiboot information
//!   ([`multiboot`]);
//! - a Linux bzImage: the vCPU starts in 64-bit mode at the kernel's `startup_64`, with RSI
//!   pointing at the zero page ([`bzimage`]).
//!
//! PVH and multiboot kernels take modules: `--initrd` is module 0, then each `--module`.

pub mod acpi;
pub mod bzimage;
pub mod e820;
pub mod elf;
mod image;
mod info_area;
mod modules;
pub mod mptable;
pub mod multiboot;
pub mod pvh;
pub mod sanity;
pub mod test_elf;

pub use image::{KernelFormat, KernelImage, Unbootable};

use vm_memory::GuestMemoryMmap;

/// Errors loading a kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is no kernel drvisor can boot, for the reason given.
    #[error("{what} cannot be booted: {reason}")]
    NotBootable {
        /// Where the image came from.
        what: String,
        /// Why, naming the format it was taken for.
        #[source]
        reason: Unbootable,
    },
    /// The kernel does not fit in guest RAM.
    #[error("{what} needs {needed_mib} MiB of guest RAM but the VM has {mem_mib} MiB; give the VM more memory")]
    TooBig {
        /// Where the image came from.
        what: String,
        /// RAM the image needs.
        needed_mib: u64,
        /// RAM the VM has.
        mem_mib: u64,
    },
    /// The initrd does not fit above the kernel.
    #[error("the initrd ({size} bytes) does not fit in guest RAM above the kernel; give the VM more memory")]
    InitrdTooBig {
        /// Size of the initrd.
        size: usize,
    },
    /// The command line is too long or malformed.
    #[error("the kernel command line is invalid: {source}")]
    Cmdline {
        /// linux-loader's reason.
        source: linux_loader::cmdline::Error,
    },
    /// The command line could not be placed in guest memory.
    #[error("writing the kernel command line to guest memory failed: {source}")]
    CmdlineWrite {
        /// linux-loader's reason.
        source: linux_loader::loader::Error,
    },
    /// Modules for a bzImage, whose protocol has one initrd and no modules.
    #[error("modules need a PVH or multiboot kernel; a bzImage takes one initrd only")]
    ModulesWithBzImage,
    /// A module does not fit in guest RAM below 4 GiB after the kernel.
    #[error(
        "module {what} ({size} bytes) does not fit in guest RAM after the kernel; give the VM more memory"
    )]
    ModuleTooBig {
        /// The module's file.
        what: String,
        /// Its size.
        size: usize,
    },
    /// The boot information (module list, command lines) outgrew its area.
    #[error("the module list and command lines need more than the {room} bytes of the boot information area; pass fewer or shorter ones")]
    BootInfoFull {
        /// The area's size.
        room: u64,
    },
    /// linux-loader refused the image.
    #[error("loading {what} failed: {source}")]
    Loader {
        /// Where the image came from.
        what: String,
        /// linux-loader's reason.
        source: linux_loader::loader::Error,
    },
    /// A load-time fact that makes the image unbootable.
    #[error("{what}: {source}")]
    Insane {
        /// Where the image came from.
        what: String,
        /// Which fact.
        source: sanity::Insane,
    },
    /// Writing boot data (`what`: the initrd, a kernel segment, the PVH start info...) to
    /// guest memory failed.
    #[error("writing {what} to guest memory failed: {source}")]
    GuestWrite {
        /// What was being written.
        what: &'static str,
        /// vm-memory's reason.
        source: vm_memory::GuestMemoryError,
    },
    /// linux-loader could not write a bzImage's boot parameters (the zero page).
    #[error("writing the Linux boot parameters (the zero page) failed: {source}")]
    ZeroPage {
        /// linux-loader's reason.
        source: linux_loader::configurator::Error,
    },
    /// The MP table cannot describe this VM.
    #[error("the MP table: {source}")]
    MpTable {
        /// Why.
        source: mptable::Error,
    },
    /// The ACPI tables cannot describe this VM.
    #[error("the ACPI tables: {source}")]
    Acpi {
        /// Why.
        source: acpi::Error,
    },
}

impl Error {
    /// Whether the kernel, its inputs or the flags are at fault (the user's mistake), rather
    /// than writing the boot data to guest memory (a VMM failure).
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            Error::CmdlineWrite { .. }
                | Error::GuestWrite { .. }
                | Error::ZeroPage { .. }
                | Error::MpTable { .. }
                | Error::Acpi { .. }
        )
    }

    /// A [`Error::GuestWrite`] of `what`, for `map_err`.
    pub(crate) fn guest_write(
        what: &'static str,
    ) -> impl FnOnce(vm_memory::GuestMemoryError) -> Error {
        move |source| Error::GuestWrite { what, source }
    }
}

/// A boot module for a PVH or multiboot kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Where it came from (messages).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its command line (the multiboot `string`, the PVH `cmdline_paddr`).
    pub cmdline: String,
}

/// A module once in guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedModule {
    /// Guest-physical start.
    pub start: u64,
    /// Guest-physical end (exclusive).
    pub end: u64,
    /// Its command line.
    pub cmdline: String,
}

/// How the boot vCPU must start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// PVH: 32-bit protected mode, paging off, EBX = `start_info`.
    Pvh {
        /// The note's entry address.
        entry: u64,
        /// Guest-physical address of `hvm_start_info`.
        start_info: u64,
    },
    /// Multiboot v1: 32-bit protected mode, paging off, EAX = `0x2BADB002`, EBX = `info`.
    Multiboot {
        /// The ELF's or the header's entry address.
        entry: u64,
        /// Guest-physical address of the multiboot information.
        info: u64,
    },
    /// Linux 64-bit boot protocol: long mode, identity-mapped, RSI = zero page.
    Linux64 {
        /// `startup_64`: the protected-mode kernel's load address + 0x200.
        entry: u64,
        /// Guest-physical address of `struct boot_params`.
        zero_page: u64,
    },
}

/// Loads `kernel` with `cmdline` into `mem`. A bzImage takes `initrd`; PVH and multiboot
/// kernels take `initrd` as module 0 (with an empty command line) and then `modules`.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &KernelImage,
    initrd: Option<&[u8]>,
    modules: &[Module],
    cmdline: &str,
) -> Result<Entry, Error> {
    sanity::check_image(kernel, mem)?;
    kernel.check_fits(mem)?;
    if kernel.format() == KernelFormat::BzImage {
        if !modules.is_empty() {
            return Err(Error::ModulesWithBzImage);
        }
        return bzimage::load(mem, kernel, initrd, cmdline);
    }
    kernel.load_segments(mem)?;
    let all: Vec<Module> = initrd
        .map(|bytes| Module {
            name: "--initrd".into(),
            bytes: bytes.to_vec(),
            cmdline: String::new(),
        })
        .into_iter()
        .chain(modules.iter().cloned())
        .collect();
    // Modules go above the kernel and never below 1 MiB; a kernel that loads over the boot
    // information's usual place (a multiboot image in low memory) gets it above itself too.
    let mut area = info_area::InfoArea::default();
    let mut free = kernel.load_end()?.max(crate::layout::HIMEM_START);
    if kernel.overlaps(&area.range()) {
        area = info_area::InfoArea::at(free.div_ceil(0x1000) * 0x1000);
        free = area.range().end;
    }
    let placed = modules::place(mem, free, &all)?;
    match kernel.format() {
        KernelFormat::Multiboot(_) => {
            // QEMU's convention: the command line starts with the kernel's file name, which
            // kvm-unit-tests and GRUB-style kernels take as argv[0].
            let line = if cmdline.is_empty() {
                kernel.name().to_owned()
            } else {
                format!("{} {cmdline}", kernel.name())
            };
            let info = multiboot::write_info(mem, &mut area, ram_size(mem), &line, &placed)?;
            Ok(Entry::Multiboot {
                entry: kernel.entry(),
                info,
            })
        }
        _ => pvh::write_start_info(mem, &mut area, kernel.entry(), cmdline, &placed),
    }
}

/// Total RAM size of `mem`, in bytes.
pub(crate) fn ram_size(mem: &GuestMemoryMmap) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    mem.iter().map(|r| r.len()).sum()
}

/// Writes `cmdline` at [`crate::layout::CMDLINE`].
pub(crate) fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), Error> {
    use linux_loader::loader::Cmdline;
    use vm_memory::GuestAddress;
    let mut line =
        Cmdline::new(crate::layout::CMDLINE_MAX).map_err(|source| Error::Cmdline { source })?;
    if !cmdline.is_empty() {
        line.insert_str(cmdline)
            .map_err(|source| Error::Cmdline { source })?;
    }
    linux_loader::loader::load_cmdline(mem, GuestAddress(crate::layout::CMDLINE), &line)
        .map_err(|source| Error::CmdlineWrite { source })
}

#[cfg(test)]
mod tests {
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::*;

    fn memory(bytes: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), bytes)]).expect("guest memory")
    }

    /// A command line the loader refuses is the user's (exit code 2), with linux-loader's
    /// reason as its source.
    #[test]
    fn a_bad_command_line_is_the_users() {
        let e = write_cmdline(&memory(1 << 20), "a\x07b").expect_err("a control character");
        assert!(
            matches!(
                e,
                Error::Cmdline {
                    source: linux_loader::cmdline::Error::InvalidAscii
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("the kernel command line is invalid: "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.is_usage());
        let long = "x".repeat(crate::layout::CMDLINE_MAX);
        let e = write_cmdline(&memory(1 << 20), &long).expect_err("too long");
        assert!(matches!(e, Error::Cmdline { .. }), "{e}");
    }

    /// Guest memory that cannot take the boot data is a VMM failure, not the user's.
    #[test]
    fn a_failed_write_is_the_vmms() {
        let e = write_cmdline(&memory(0x1000), "console=ttyS0").expect_err("no RAM at 0x20000");
        assert!(matches!(e, Error::CmdlineWrite { .. }), "{e}");
        assert!(!e.is_usage());
        let e = mptable::write(&memory(1 << 20), 0).expect_err("no vCPUs");
        assert!(
            matches!(
                e,
                Error::MpTable {
                    source: mptable::Error::CpuCount(0)
                }
            ),
            "{e}"
        );
        assert!(!e.is_usage());
        let e = mptable::write(&memory(0x1000), 1).expect_err("no RAM at the MP table");
        assert!(
            matches!(
                e,
                Error::GuestWrite {
                    what: "the MP table",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("writing the MP table to guest memory failed: "),
            "{e}"
        );
        assert!(!e.is_usage());
    }
}
