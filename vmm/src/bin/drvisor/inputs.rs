//! The run's input files and their limits: `--kernel`, `--initrd`, `--module`, `--symbols`.
//!
//! [`open_all`] runs every check that needs no content (each file open, regular and within its
//! limit); [`Opened::read`] then reads them, the kernel first, so that modules the kernel
//! cannot take are refused before they are read. What the kernel image says about itself (its
//! symbols, task layout and ORC table; a bzImage's payload decompressed for them) is read on a
//! thread of its own while the VM starts.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use drvisor::boot::{KernelFormat, KernelImage, Module};
use drvisor::control::ImageKnowledge;
use drvisor::deferred::Deferred;
use drvisor::guest_image;
use drvisor::input_file::{self, InputFile, Limit};
use drvisor::kernel::{LazyOrc, Source};
use drvisor::seccomp::ThreadKind;
use drvisor::symbols::SymbolTable;

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
    /// Each `--module`'s file and command line.
    pub modules: Vec<(InputFile, String)>,
    pub symbols: Option<InputFile>,
}

fn open(flag: &'static str, path: &Path, limit: Limit) -> Result<InputFile, Failure> {
    input_file::open(flag, path, limit).map_err(|e| Failure::usage(e.to_string()))
}

/// Opens a kernel image within [`MAX_KERNEL`]; `flag` names it in errors.
pub fn open_kernel(flag: &'static str, path: &Path) -> Result<InputFile, Failure> {
    open(
        flag,
        path,
        Limit {
            bytes: MAX_KERNEL,
            why: "a sane maximum for a kernel image".into(),
        },
    )
}

/// Opens a System.map within [`MAX_SYMBOLS`]; `flag` names it in errors.
pub fn open_system_map(flag: &'static str, path: &Path) -> Result<InputFile, Failure> {
    open(
        flag,
        path,
        Limit {
            bytes: MAX_SYMBOLS,
            why: "a sane maximum for a System.map".into(),
        },
    )
}

/// Opens every input file and checks it without reading it.
pub fn open_all(args: &RunArgs, ram_bytes: u64) -> Result<Opened, Failure> {
    let kernel = args
        .kernel
        .as_deref()
        .map(|p| open_kernel("--kernel", p))
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
        .map(|p| open_system_map("--symbols", p))
        .transpose()?;
    let module_limit = || Limit {
        bytes: ram_bytes.min(INITRD_ADDRESS_LIMIT),
        why: format!(
            "it must fit in guest RAM below 4 GiB, and --mem is {} MiB",
            args.mem
        ),
    };
    let modules = args
        .modules
        .iter()
        .map(|spec| {
            let (path, cmdline) = spec.split_once(',').unwrap_or((spec, ""));
            Ok((
                open("--module", Path::new(path), module_limit())?,
                cmdline.to_owned(),
            ))
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    Ok(Opened {
        kernel,
        initrd,
        modules,
        symbols,
    })
}

/// The input files' content.
pub struct Inputs {
    pub kernel: KernelImage,
    pub initrd: Option<Vec<u8>>,
    pub modules: Vec<Module>,
    /// The kernel's symbols, task layout and ORC table, being read on a thread of their own.
    pub image: Deferred<ImageKnowledge>,
}

/// Reads an input file opened here; its errors are usage errors.
pub fn read(file: InputFile) -> Result<Vec<u8>, Failure> {
    file.read().map_err(|e| Failure::usage(e.to_string()))
}

impl Opened {
    /// Reads and classifies the files: the kernel (or the embedded guest), then the initrd if
    /// that kernel takes one, then the symbols (a System.map, or the kernel's own).
    /// `cmdline` is the kernel's command line (kallsyms addresses need `nokaslr`).
    pub fn read(self, cmdline: &str) -> Result<Inputs, Failure> {
        let kernel = match self.kernel {
            None => guest_image::kernel(),
            Some(file) => {
                let name = file.shown_path().to_owned();
                KernelImage::from_bytes(name, read(file)?)
                    .map_err(|e| Failure::usage(e.to_string()))?
            }
        };
        if !self.modules.is_empty() && kernel.format() == KernelFormat::BzImage {
            return Err(Failure::usage(format!(
                "--module needs a PVH or multiboot kernel, and {} is a bzImage; give it an \
                 --initrd instead",
                kernel.name()
            )));
        }
        let initrd = self.initrd.map(read).transpose()?;
        let modules = self
            .modules
            .into_iter()
            .map(|(file, cmdline)| {
                let name = file.shown_path().to_owned();
                Ok(Module {
                    name,
                    bytes: read(file)?,
                    cmdline,
                })
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        let image = read_image_knowledge(self.symbols, kernel.shared_bytes(), cmdline)?;
        Ok(Inputs {
            kernel,
            initrd,
            modules,
            image,
        })
    }
}

/// A guest's symbols: the System.map `map`, else the kernel's own (its ELF symbol table, or
/// its kallsyms), with where they came from. `kernel` gives the kernel image, and is asked only
/// without a System.map. `drvisor symbols` and the names in `drvisor ci`'s reports read them
/// here; `drvisor run` through [`read_symbols_and_layout`], which shares the System.map's
/// reading and `drvisor::kernel`'s.
pub fn guest_symbols<'k>(
    map: Option<InputFile>,
    kernel: impl FnOnce() -> Result<Cow<'k, [u8]>, Failure>,
) -> Result<(SymbolTable, Source), Failure> {
    Ok(match map {
        Some(file) => (read_system_map(file)?, Source::Given),
        None => drvisor::kernel::own_symbols(&kernel()?),
    })
}

/// [`guest_symbols`] of `kernel`, kallsyms said in one line with the count and the time taken.
pub fn read_symbols(
    file: Option<InputFile>,
    kernel: &[u8],
    cmdline: Option<&str>,
) -> Result<SymbolTable, Failure> {
    let (table, source) = guest_symbols(file, || Ok(Cow::Borrowed(kernel)))?;
    say_where_from(&source, cmdline);
    Ok(table)
}

/// [`read_symbols`], and what else the kernel image says about itself: where it keeps the
/// current task and its pid and comm (from its BTF, for a Linux kernel that has it) and its ORC
/// unwind table's sections (backtraces, decoded at the first), reading a bzImage's payload
/// once for all, on a thread of its own under the helpers' seccomp filter. A System.map is read
/// here, so that its mistakes end the run before it starts.
fn read_image_knowledge(
    file: Option<InputFile>,
    kernel: Arc<std::borrow::Cow<'static, [u8]>>,
    cmdline: &str,
) -> Result<Deferred<ImageKnowledge>, Failure> {
    let given = file.map(read_system_map).transpose()?;
    let cmdline = cmdline.to_owned();
    // The thread's messages go through the process's console, made here: making it stats
    // stdout and may start a thread, which the thread's filter forbids.
    drvisor::console_lines::ConsoleLines::stdio();
    Deferred::spawn("drvisor-image", move || {
        drvisor::seccomp::enter_or_exit(ThreadKind::Helper);
        let facts = drvisor::kernel::image_facts(&kernel, given);
        say_where_from(&facts.source, Some(&cmdline));
        let task_layout = facts
            .layout
            .inspect_err(|why| tracing::debug!("no task layout (comm, pid, tgid): {why}"))
            .ok();
        ImageKnowledge {
            symbols: facts.symbols,
            task_layout,
            orc: Arc::new(LazyOrc::new(facts.orc)),
        }
    })
    .map_err(|e| {
        Failure::vmm(format!(
            "cannot start the thread that reads the kernel image: {e}"
        ))
    })
}

fn read_system_map(file: InputFile) -> Result<SymbolTable, Failure> {
    let name = file.shown_path().to_owned();
    let text = String::from_utf8(read(file)?).map_err(|e| {
        Failure::usage(format!(
            "--symbols {name}: not text (invalid UTF-8 at byte {}); give a System.map",
            e.utf8_error().valid_up_to()
        ))
    })?;
    SymbolTable::from_system_map(&text, &name).map_err(|e| match e {
        drvisor::symbols::Error::Placeholder { .. } => {
            Failure::usage(format!("--symbols {e}: drop --symbols for that"))
        }
        e => Failure::usage(e.to_string()),
    })
}

/// One line when the symbols are the kernel's own kallsyms: how many, from where, how long.
fn say_where_from(source: &Source, cmdline: Option<&str>) {
    if let Source::Kallsyms {
        count,
        took,
        from_bzimage,
    } = source
    {
        let moves =
            *from_bzimage && cmdline.is_some_and(|c| !c.split_whitespace().any(|w| w == "nokaslr"));
        crate::announce::say(format!(
            "{count} symbols from the kernel's own kallsyms ({}, {} ms){}",
            if *from_bzimage {
                "decompressed from the bzImage"
            } else {
                "in the ELF's data"
            },
            took.as_millis(),
            if moves {
                "; their addresses hold only with `nokaslr` on the command line (else \
                 the kernel moves itself to a random address)"
            } else {
                ""
            }
        ));
    }
}
