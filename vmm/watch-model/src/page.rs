//! Guest-physical pages: the granularity of every memslot and every trap.

/// The size of a guest-physical page and the granularity of KVM memslots on x86: KVM refuses a
/// memslot whose address or size is not a multiple of it (`kvm_set_memory_region` checks
/// `PAGE_SIZE` alignment), so protection can never be finer than one page.
pub const PAGE_SIZE: u64 = 4096;

/// The start of the page holding `gpa`.
pub const fn page_of(gpa: u64) -> u64 {
    gpa & !(PAGE_SIZE - 1)
}

/// Whether `value` is a multiple of [`PAGE_SIZE`].
pub(crate) const fn is_page_aligned(value: u64) -> bool {
    value & (PAGE_SIZE - 1) == 0
}

/// The start of every page holding a byte of `[start, end)`, ascending. Empty when
/// `start >= end`.
pub(crate) fn pages_of(start: u64, end: u64) -> impl Iterator<Item = u64> {
    let first = if start < end {
        Some(page_of(start))
    } else {
        None
    };
    // `checked_add` ends the walk at the top of the address space instead of wrapping to 0.
    std::iter::successors(first, |page| page.checked_add(PAGE_SIZE))
        .take_while(move |page| *page < end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_of_rounds_down() {
        for (gpa, page) in [(0, 0), (4095, 0), (4096, 4096), (0x1_2345, 0x1_2000)] {
            assert_eq!(page_of(gpa), page, "{gpa:#x}");
        }
        assert_eq!(page_of(u64::MAX), u64::MAX - 4095);
    }

    #[test]
    fn pages_of_lists_every_touched_page() {
        let table: [(u64, u64, &[u64]); 6] = [
            (0, 1, &[0]),
            (4095, 4097, &[0, 4096]),
            (4096, 8192, &[4096]),
            (100, 3 * 4096 + 1, &[0, 4096, 8192, 12288]),
            (10, 10, &[]),
            (u64::MAX - 10, u64::MAX, &[u64::MAX - 4095]),
        ];
        for (start, end, pages) in table {
            assert_eq!(
                pages_of(start, end).collect::<Vec<_>>(),
                pages,
                "{start:#x}..{end:#x}"
            );
        }
    }

    #[test]
    fn alignment() {
        assert!(is_page_aligned(0) && is_page_aligned(0x20_0000));
        assert!(!is_page_aligned(1) && !is_page_aligned(0x1800));
    }
}
