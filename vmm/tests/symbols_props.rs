//! System.map parsing against a reference model.
//!
//! Model: a map is a list of `ADDRESS TYPE NAME` lines (hex address, any type letter, a name);
//! blank lines are skipped. A name given by one symbol (one address, one class) resolves to
//! its address, unless that symbol is absolute (`A`/`a`: not an address, refused); a name that
//! several symbols share is ambiguous (refused, listing them). Any other line is refused with
//! its 1-based number, in a message of one bounded line. Nothing panics, whatever the text.

use std::collections::BTreeMap;

use drvisor::symbols::{Error, SymbolTable};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.$]{0,15}"
}

fn entry() -> impl Strategy<Value = (u64, char, String)> {
    (
        any::<u64>(),
        proptest::sample::select(vec!['T', 't', 'D', 'd', 'B', 'r', 'W', 'A']),
        name(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn well_formed_maps_resolve_every_unique_name(
        entries in proptest::collection::vec(entry(), 1..40),
        blank_every in 2usize..10,
        zero_padded in any::<bool>(),
    ) {
        let mut text = String::new();
        // Per name: its distinct symbols, as (address, absolute).
        let mut model: BTreeMap<&str, Vec<(u64, bool)>> = BTreeMap::new();
        for (i, (addr, kind, name)) in entries.iter().enumerate() {
            if i % blank_every == 0 {
                text.push_str("   \n");
            }
            if zero_padded {
                text.push_str(&format!("{addr:016x} {kind} {name}\n"));
            } else {
                text.push_str(&format!("{addr:x}\t{kind}  {name}\n"));
            }
            let symbol = (*addr, kind.eq_ignore_ascii_case(&'a'));
            let symbols = model.entry(name).or_default();
            if !symbols.contains(&symbol) {
                symbols.push(symbol);
            }
        }
        let table = SymbolTable::from_system_map(&text, "System.map").unwrap();
        for (name, symbols) in model {
            let got = table.resolve(name);
            match symbols.as_slice() {
                [(addr, false)] => prop_assert_eq!(got, Ok(*addr)),
                [(_, true)] => prop_assert!(matches!(got, Err(Error::NotAnAddress { .. })), "{got:?}"),
                _ => prop_assert!(matches!(got, Err(Error::Ambiguous { .. })), "{got:?}"),
            }
        }
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number(
        good in proptest::collection::vec(entry(), 0..10),
        bad in prop_oneof![
            Just("nonsense".to_owned()),
            Just("ffff T".to_owned()),
            Just("xyz T name".to_owned()),
            Just("10000000000000000 T too_wide".to_owned()),
            "[g-z]{1,8} T [a-z]{1,8}",
        ],
    ) {
        let mut text: String = good
            .iter()
            .map(|(a, k, n)| format!("{a:x} {k} {n}\n"))
            .collect();
        text.push_str(&bad);
        text.push('\n');
        let err = SymbolTable::from_system_map(&text, "m").unwrap_err();
        let is_bad_line = matches!(err, Error::BadMapLine { line, .. } if line == good.len() + 1);
        prop_assert!(is_bad_line, "{:?}", err);
    }

    #[test]
    fn arbitrary_text_never_panics_and_errors_stay_one_short_line(text in ".{0,400}") {
        if let Err(e) = SymbolTable::from_system_map(&text, "m") {
            let msg = e.to_string();
            prop_assert!(!msg.contains('\n') && msg.len() < 400, "{}", msg);
        }
    }

    #[test]
    fn lookups_in_any_table_never_panic(text in ".{0,200}", query in ".{0,40}") {
        if let Ok(table) = SymbolTable::from_system_map(&text, "m") {
            if let Err(e) = table.resolve(&query) {
                prop_assert!(!e.to_string().contains('\n'));
            }
            let _ = table.describe(0);
            let _ = table.describe(u64::MAX);
        }
    }

    #[test]
    fn elf_symbol_reading_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = SymbolTable::from_elf(&bytes);
    }
}

#[test]
fn a_huge_name_gets_no_slow_suggestion_and_a_short_message() {
    let table = SymbolTable::from_system_map("1000 T drv_target_0\n", "m").unwrap();
    let long = "d".repeat(1 << 20);
    let start = std::time::Instant::now();
    let e = table.resolve(&long).unwrap_err();
    assert!(start.elapsed().as_secs() < 2);
    assert!(e.to_string().len() < 400);
}
