//! The run's input files and their limits: `--kernel`, `--initrd`, `--symbols`.
//!
//! [`open_all`] runs every check that needs no content (each file open, regular and within its
//! limit; an initrd only with a kernel that can take one, as far as that is known without
//! reading); reading comes after, in [`Opened::read_kernel`] and friends.

use std::path::Path;

use drvisor::input_file::{self, InputFile, Limit};

use crate::cli::RunArgs;
use crate::Failure;

/// The largest kernel file read: an ELF may carry debug info far beyond what it loads, so the
/// bound is a sane maximum rather than guest RAM; what it loads must still fit `--mem`.
pub const MAX_KERNEL: u64 = 1 << 30;
/// The largest System.map read (a full distribution kernel's is about 10 MB).
pub const MAX_SYMBOLS: u64 = 256 << 20;
/// The boot protocol places the initrd below 4 GiB.
const INITRD_ADDRESS_LIMIT: u64 = 1 << 32;

/// The input files, open and checked, not yet read.
pub struct Opened {
    pub kernel: Option<InputFile>,
    pub initrd: Option<InputFile>,
    pub symbols: Option<InputFile>,
}

fn open(flag: &'static str, path: &Path, limit: Limit) -> Result<InputFile, Failure> {
    input_file::open(flag, path, limit).map_err(|e| Failure::usage(e.to_string()))
}

/// Opens every input file and checks it without reading it.
pub fn open_all(args: &RunArgs, ram_bytes: u64) -> Result<Opened, Failure> {
    if args.initrd.is_some() && args.kernel.is_none() {
        // The embedded test guest is a PVH ELF: known without reading anything.
        return Err(Failure::usage(
            "--initrd is only supported with a bzImage kernel (give one with --kernel); the embedded test guest is a PVH ELF",
        ));
    }
    let kernel = args
        .kernel
        .as_deref()
        .map(|p| {
            open(
                "--kernel",
                p,
                Limit {
                    bytes: MAX_KERNEL,
                    why: "a sane maximum for a kernel image".into(),
                },
            )
        })
        .transpose()?;
    let initrd = args
        .initrd
        .as_deref()
        .map(|p| {
            open(
                "--initrd",
                p,
                Limit {
                    bytes: ram_bytes.min(INITRD_ADDRESS_LIMIT),
                    why: format!(
                        "it must fit in guest RAM below 4 GiB, and --mem is {} MiB",
                        args.mem
                    ),
                },
            )
        })
        .transpose()?;
    let symbols = args
        .symbols
        .as_deref()
        .map(|p| {
            open(
                "--symbols",
                p,
                Limit {
                    bytes: MAX_SYMBOLS,
                    why: "a sane maximum for a System.map".into(),
                },
            )
        })
        .transpose()?;
    Ok(Opened {
        kernel,
        initrd,
        symbols,
    })
}

/// Reads an input file checked by [`open_all`].
pub fn read(file: InputFile) -> Result<Vec<u8>, Failure> {
    file.read().map_err(|e| Failure::usage(e.to_string()))
}
