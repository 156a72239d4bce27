//! The page watches as `--show-plan` and the `plan` command show them.

use super::PageWatchState;

/// The page watches and the pages they trap, for `--show-plan`.
pub fn describe_page_watches(watches: &[PageWatchState]) -> String {
    let mut out = String::from("page watches (engine page):\n");
    for w in watches {
        let ranges: Vec<String> = w
            .ranges
            .iter()
            .map(|(a, n)| format!("{a:#x}+{n}"))
            .collect();
        let traps: Vec<String> = w
            .pages
            .iter()
            .map(|(p, m)| format!("{p:#x} {m:?}"))
            .collect();
        out.push_str(&format!(
            "  #{} {} {}: armed by page protection on [{}] (pages: {})\n",
            w.id,
            w.label,
            w.access,
            ranges.join(", "),
            traps.join(", ")
        ));
    }
    out
}
