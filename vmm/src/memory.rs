//! Guest RAM: anonymous mappings from guest-physical 0, split around the hole below 4 GiB
//! ([`crate::layout::ram_regions`]).

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The size is too small to hold the boot area and a kernel.
    #[error("{0} MiB of guest RAM is too small: drvisor needs at least 2 MiB")]
    TooSmall(u64),
    /// More than drvisor accepts (and, past it, more than KVM or the host can map).
    #[error("{0} MiB of guest RAM is too large: drvisor accepts at most {MAX_MIB} MiB (1 TiB)")]
    TooLarge(u64),
    /// The host refused the mapping.
    #[error("could not map {mib} MiB of guest RAM: {source}; ask for less")]
    Mmap {
        /// Requested size.
        mib: u64,
        /// What the host said.
        source: vm_memory::mmap::FromRangesError,
    },
}

/// The smallest guest RAM drvisor accepts.
pub const MIN_MIB: u64 = 2;

/// The most guest RAM drvisor accepts: 1 TiB. Here, KVM refuses a 16 TiB memslot, and
/// registering 1 TiB already takes KVM seconds; `mib << 20` must never wrap either (2^44 MiB
/// + 2 used to become 2 MiB).
pub const MAX_MIB: u64 = 1 << 20;

/// The size in bytes of `mib` MiB of guest RAM, or why drvisor refuses it.
pub fn size_of(mib: u64) -> Result<u64, Error> {
    if mib < MIN_MIB {
        return Err(Error::TooSmall(mib));
    }
    if mib > MAX_MIB {
        return Err(Error::TooLarge(mib));
    }
    Ok(mib << 20)
}

/// Creates `mib` MiB of guest RAM starting at guest-physical 0.
pub fn create(mib: u64) -> Result<GuestMemoryMmap, Error> {
    let mut ranges = Vec::new();
    for (start, len) in crate::layout::ram_regions(size_of(mib)?) {
        let len = usize::try_from(len).map_err(|_| Error::TooLarge(mib))?;
        ranges.push((GuestAddress(start), len));
    }
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| Error::Mmap { mib, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_at_and_past_the_limits() {
        assert!(matches!(size_of(1), Err(Error::TooSmall(1))));
        assert_eq!(size_of(2).unwrap(), 2 << 20);
        assert_eq!(size_of(MAX_MIB).unwrap(), 1 << 40);
        assert!(matches!(size_of(MAX_MIB + 1), Err(Error::TooLarge(_))));
        // 2^44 + 2 MiB: `mib << 20` wraps to 2 MiB.
        assert!(matches!(size_of((1 << 44) + 2), Err(Error::TooLarge(_))));
        assert!(matches!(size_of(u64::MAX), Err(Error::TooLarge(_))));
    }
}
