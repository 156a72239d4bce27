//! Guest RAM: one anonymous mapping from guest-physical 0.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The size is too small to hold the boot area and a kernel.
    #[error("--mem {0} MiB is too small: drvisor needs at least 2 MiB of guest RAM")]
    TooSmall(u64),
    /// The host refused the mapping.
    #[error("could not map {mib} MiB of guest RAM: {source}")]
    Mmap {
        /// Requested size.
        mib: u64,
        /// What the host said.
        source: vm_memory::mmap::FromRangesError,
    },
}

/// The smallest guest RAM drvisor accepts.
pub const MIN_MIB: u64 = 2;

/// Creates `mib` MiB of guest RAM starting at guest-physical 0.
pub fn create(mib: u64) -> Result<GuestMemoryMmap, Error> {
    if mib < MIN_MIB {
        return Err(Error::TooSmall(mib));
    }
    let size = (mib << 20) as usize;
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)])
        .map_err(|source| Error::Mmap { mib, source })
}
