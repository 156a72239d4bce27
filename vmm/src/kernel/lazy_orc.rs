//! A kernel's ORC table, decoded when the first backtrace asks for it. At start a run only
//! finds the table's sections and checks their format (so it can say at once when a kernel
//! has none); decoding them (some 370 000 entries, 7 MB, for a distribution kernel) waits for
//! a capturing hit in kernel mode, and a run whose hits never capture never pays for it.

use std::sync::OnceLock;
use std::time::Instant;

use super::orc::{OrcSections, OrcTable};
use super::OrcError;

/// The sections found at start, and the table once decoded.
#[derive(Debug)]
pub struct LazyOrc {
    sections: Result<OrcSections, OrcError>,
    table: OnceLock<Result<OrcTable, OrcError>>,
}

impl LazyOrc {
    /// The table of `sections` (or, for all its callers, why there is none), not yet decoded.
    pub fn new(sections: Result<OrcSections, OrcError>) -> LazyOrc {
        LazyOrc {
            sections,
            table: OnceLock::new(),
        }
    }

    /// Why the kernel has no table, as known before decoding it (`None` where it has
    /// sections to decode).
    pub fn missing(&self) -> Option<&OrcError> {
        self.sections.as_ref().err()
    }

    /// Whether the table has been decoded (tried, if it failed).
    pub fn is_decoded(&self) -> bool {
        self.table.get().is_some()
    }

    /// The table, decoded at the first call (once; a caller that comes meanwhile waits for
    /// it), or why there is none.
    pub fn table(&self) -> Result<&OrcTable, &OrcError> {
        let sections = self.sections.as_ref()?;
        self.table
            .get_or_init(|| {
                let start = Instant::now();
                let decoded = sections.decode().map_err(OrcError::Orc);
                match &decoded {
                    Ok(table) => tracing::debug!(
                        "{} ORC entries decoded in {} ms, for backtraces",
                        table.len(),
                        start.elapsed().as_millis()
                    ),
                    Err(why) => tracing::warn!("hit events carry no backtrace: {why}"),
                }
                decoded
            })
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::super::orc::Error;
    use super::*;

    const BASE: u64 = 0xffff_ffff_8200_0000;

    /// Two entries, for code at `BASE` and `BASE + 4` (each ip relative to its own slot).
    fn sections(flags: u16) -> Result<OrcSections, OrcError> {
        let ips = [0i32, 0]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect::<Vec<_>>();
        let entry = |bits: u16| [8u8, 0, 0, 0, bits as u8, (bits >> 8) as u8];
        let entries = [entry(5), entry(flags)].concat();
        OrcSections::from_sections(BASE, &ips, &entries).map_err(OrcError::Orc)
    }

    #[test]
    fn the_table_is_decoded_at_the_first_ask_and_only_then() {
        let lazy = LazyOrc::new(sections(5));
        assert!(lazy.missing().is_none());
        assert!(!lazy.is_decoded(), "decoded before it was asked for");
        let first = lazy.table().unwrap() as *const OrcTable;
        assert!(lazy.is_decoded());
        assert_eq!(lazy.table().unwrap().len(), 2);
        assert_eq!(
            lazy.table().unwrap() as *const OrcTable,
            first,
            "decoded twice"
        );
    }

    #[test]
    fn a_kernel_without_sections_says_why_before_and_at_the_ask() {
        let lazy = LazyOrc::new(Err(OrcError::Orc(Error::NoSection(".orc_unwind_ip"))));
        let why = lazy.missing().unwrap().to_string();
        assert!(why.contains("CONFIG_UNWINDER_ORC"), "{why}");
        assert_eq!(lazy.table().unwrap_err().to_string(), why);
        assert!(!lazy.is_decoded());
    }

    #[test]
    fn an_entry_beyond_the_layout_is_found_at_the_decode() {
        // Linux 6.3's `end` bit (11): the sections look whole, their entries do not decode.
        let lazy = LazyOrc::new(sections(5 | 1 << 11));
        assert!(lazy.missing().is_none());
        let why = lazy.table().unwrap_err().to_string();
        assert!(
            why.contains("entry 1 sets flag bits 0xf800, which the Linux4_14 layout leaves clear"),
            "{why}"
        );
        assert!(lazy.is_decoded());
    }
}
