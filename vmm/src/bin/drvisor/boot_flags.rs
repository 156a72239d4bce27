//! A boot error in the command line's words: the library says what does not fit, this says
//! which flag changes it.

use drvisor::boot::Error;

/// `e`, naming the flag to change where one would help.
pub fn message(e: &Error) -> String {
    match e {
        Error::TooBig {
            what,
            needed_mib,
            mem_mib,
        } => format!(
            "{what} needs {needed_mib} MiB of guest RAM but --mem is {mem_mib} MiB; raise --mem"
        ),
        Error::InitrdTooBig { size } => format!(
            "--initrd: the initrd ({size} bytes) does not fit in guest RAM above the kernel; raise --mem"
        ),
        Error::ModuleTooBig { what, size } => format!(
            "--module {what} ({size} bytes) does not fit in guest RAM after the kernel; raise --mem"
        ),
        Error::ModulesWithBzImage => {
            "--module needs a PVH or multiboot kernel; a bzImage takes one --initrd only".into()
        }
        Error::Cmdline { .. } => format!("--cmdline: {e}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_refusals_say_raise_mem() {
        let e = Error::TooBig {
            what: "k".into(),
            needed_mib: 300,
            mem_mib: 256,
        };
        assert!(!e.to_string().contains("--"), "{e}");
        let m = message(&e);
        assert!(
            m.contains("--mem is 256 MiB") && m.ends_with("raise --mem"),
            "{m}"
        );
        let m = message(&Error::InitrdTooBig { size: 9 });
        assert!(
            m.starts_with("--initrd:") && m.ends_with("raise --mem"),
            "{m}"
        );
        let m = message(&Error::ModuleTooBig {
            what: "m.bin".into(),
            size: 9,
        });
        assert!(m.starts_with("--module m.bin (9 bytes)"), "{m}");
        assert!(message(&Error::ModulesWithBzImage).starts_with("--module needs"));
        let m = message(&Error::Cmdline {
            source: linux_loader::cmdline::Error::InvalidAscii,
        });
        assert!(
            m.starts_with("--cmdline: the kernel command line is invalid: "),
            "{m}"
        );
        let other = Error::BootInfoFull { room: 4096 };
        assert_eq!(message(&other), other.to_string());
    }
}
