//! Loading a kernel into guest memory and describing how its first vCPU must start.
//!
//! Two formats, both through linux-loader:
//! - an ELF with a Xen PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`): the vCPU starts in 32-bit protected
//!   mode at the note's entry, with EBX pointing at an `hvm_start_info` ([`pvh`]);
//! - a Linux bzImage: the vCPU starts in 64-bit mode at the kernel's `startup_64`, with RSI
//!   pointing at the zero page ([`bzimage`]).

pub mod bzimage;
mod image;
pub mod pvh;
pub mod sanity;

pub use image::{KernelFormat, KernelImage};

use vm_memory::GuestMemoryMmap;

/// Errors loading a kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is neither an ELF nor a bzImage.
    #[error("{what} is not a kernel drvisor can boot: expected an ELF with a PVH note or a Linux bzImage")]
    UnknownFormat {
        /// Where the image came from.
        what: String,
    },
    /// An ELF without the PVH entry note.
    #[error("{what} is an ELF without a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); rebuild it with CONFIG_PVH or add the note")]
    NoPvhNote {
        /// Where the image came from.
        what: String,
    },
    /// The kernel does not fit in guest RAM.
    #[error("{what} needs {needed_mib} MiB of guest RAM but --mem is {mem_mib} MiB; raise --mem")]
    TooBig {
        /// Where the image came from.
        what: String,
        /// RAM the image needs.
        needed_mib: u64,
        /// RAM the VM has.
        mem_mib: u64,
    },
    /// The initrd does not fit above the kernel.
    #[error("the initrd ({size} bytes) does not fit in guest RAM above the kernel; raise --mem")]
    InitrdTooBig {
        /// Size of the initrd.
        size: usize,
    },
    /// The command line is too long or malformed.
    #[error("the kernel command line is invalid: {0}")]
    Cmdline(String),
    /// An initrd was given for a PVH ELF kernel, which drvisor passes no modules to.
    #[error("--initrd is only supported with a bzImage kernel")]
    InitrdWithElf,
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
    /// Writing boot data to guest memory failed.
    #[error("writing boot parameters failed: {0}")]
    BootParams(String),
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
    /// Linux 64-bit boot protocol: long mode, identity-mapped, RSI = zero page.
    Linux64 {
        /// `startup_64`: the protected-mode kernel's load address + 0x200.
        entry: u64,
        /// Guest-physical address of `struct boot_params`.
        zero_page: u64,
    },
}

/// Loads `kernel` (and `initrd`, for a bzImage) with `cmdline` into `mem`.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &KernelImage,
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<Entry, Error> {
    sanity::check_image(kernel, mem)?;
    match kernel.format() {
        KernelFormat::Elf => {
            if !kernel.has_pvh_note() {
                return Err(Error::NoPvhNote {
                    what: kernel.name().to_owned(),
                });
            }
            if initrd.is_some() {
                return Err(Error::InitrdWithElf);
            }
            kernel.check_fits(mem)?;
            pvh::load(mem, kernel, cmdline)
        }
        KernelFormat::BzImage => {
            kernel.check_fits(mem)?;
            bzimage::load(mem, kernel, initrd, cmdline)
        }
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
        Cmdline::new(crate::layout::CMDLINE_MAX).map_err(|e| Error::Cmdline(e.to_string()))?;
    if !cmdline.is_empty() {
        line.insert_str(cmdline)
            .map_err(|e| Error::Cmdline(e.to_string()))?;
    }
    linux_loader::loader::load_cmdline(mem, GuestAddress(crate::layout::CMDLINE), &line)
        .map_err(|e| Error::Cmdline(e.to_string()))
}
