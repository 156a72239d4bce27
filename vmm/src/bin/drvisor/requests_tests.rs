//! The `--break`/`--watch` parser: a table of accepted and refused specs, and property tests.
//!
//! Reference model for the properties: a spec is accepted iff its address part is a symbol
//! name or a number that fits 64 bits, each later part is one of `w`, `r`, `rw` or a positive
//! 0x-hex/decimal length, no part kind appears twice, and a numeric address plus a given
//! length does not wrap. Every refusal is one line of bounded length, and nothing panics.

use proptest::prelude::*;

use super::*;

fn w(text: &str) -> Result<WatchSpec, String> {
    watch(text)
}

fn spec(physical: bool, target: Target, access: Access, len: Option<u64>) -> WatchSpec {
    WatchSpec {
        physical,
        target,
        access,
        len,
    }
}

#[test]
fn accepted_watch_specs() {
    use Access::*;
    let sym = |s: &str| Target::Symbol(s.into());
    let table: &[(&str, WatchSpec)] = &[
        ("x", spec(false, sym("x"), Write, None)),
        ("x:r", spec(false, sym("x"), Read, None)),
        ("x:rw:8", spec(false, sym("x"), ReadWrite, Some(8))),
        ("x:8:rw", spec(false, sym("x"), ReadWrite, Some(8))),
        ("x:0x10", spec(false, sym("x"), Write, Some(16))),
        ("x:0X10", spec(false, sym("x"), Write, Some(16))),
        (
            "0x1000:w:4096",
            spec(false, Target::Number(0x1000), Write, Some(4096)),
        ),
        (
            "phys:4096:r:1",
            spec(true, Target::Number(4096), Read, Some(1)),
        ),
        (
            "0xfffffffffffffff0:w:15",
            spec(
                false,
                Target::Number(0xffff_ffff_ffff_fff0),
                Write,
                Some(15),
            ),
        ),
    ];
    for (text, want) in table {
        assert_eq!(&w(text).unwrap(), want, "{text}");
    }
}

#[test]
fn refused_watch_specs_say_why() {
    let table: &[(&str, &str)] = &[
        ("x:w:r", "the access is given twice (`r` after `w`)"),
        ("x:rw:rw", "the access is given twice"),
        ("x:8:16", "the length is given twice"),
        ("x:w:r:8:16", "the access is given twice"),
        ("x:0", "neither an access"),
        ("x:0x0", "neither an access"),
        ("x:-1", "neither an access"),
        ("x:0x+1", "neither an access"),
        ("x:", "neither an access"),
        ("x:q", "neither an access"),
        ("x:18446744073709551616", "neither an access"),
        (
            "0xffffffffffffffff:w:8",
            "runs past the end of the 64-bit address space",
        ),
        ("phys:0xffffffffffffffff:w:8", "runs past the end"),
        ("0xfffffffffffffff0:w:16", "runs past the end"),
        ("0x1g", "is not a valid address"),
        ("99999999999999999999", "is not a valid address"),
        ("", "give a symbol or an address"),
        ("phys:", "give a symbol or an address"),
    ];
    for (text, needle) in table {
        let e = w(text).unwrap_err();
        assert!(e.starts_with("--watch "), "{text}: {e}");
        assert!(e.contains(needle), "{text}: {e} (wanted {needle})");
    }
}

#[test]
fn numbers_take_hex_and_decimal_only() {
    assert_eq!(number("0x10"), Some(16));
    assert_eq!(number("16"), Some(16));
    assert_eq!(number("0xffffffffffffffff"), Some(u64::MAX));
    assert_eq!(number("18446744073709551615"), Some(u64::MAX));
    for bad in [
        "", "0x", "+1", "-1", "0x-1", "0x+1", "1_000", " 1", "1e3", "0b1",
    ] {
        assert_eq!(number(bad), None, "{bad}");
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[test]
fn flags_bind_to_the_nearest_break_or_watch_before_them() {
    let (b, wt) = (s("drv_target_0"), s("x:w:8"));
    let one = 1u32;
    let parsed = bind(
        [(1, &b)],
        [(5, &wt)],
        Bound {
            vcpus: vec![(3, &one)],
            actions: vec![(7, HitAction::Stop)],
            engines: vec![(9, EngineChoice::Page)],
            captures: vec![],
            conditions: vec![],
        },
    )
    .unwrap();
    assert_eq!(parsed[0].vcpu, Some(1));
    assert_eq!(parsed[0].action, None);
    assert_eq!(parsed[1].action, Some(HitAction::Stop));
    assert_eq!(parsed[1].engine, Some(EngineChoice::Page));
}

#[test]
fn a_flag_given_twice_for_one_breakpoint_is_refused() {
    let b = s("drv_target_0");
    let (stop, cont) = (HitAction::Stop, HitAction::Continue);
    let e = bind(
        [(1, &b)],
        [],
        Bound {
            vcpus: vec![],
            actions: vec![(3, stop), (5, cont)],
            engines: vec![],
            captures: vec![],
            conditions: vec![],
        },
    )
    .unwrap_err();
    assert_eq!(
        e,
        "--action given twice for drv_target_0; give it once after each --break or --watch"
    );
    let (zero, one) = (0u32, 1u32);
    let e = bind(
        [(1, &b)],
        [],
        Bound {
            vcpus: vec![(3, &zero), (5, &one)],
            actions: vec![],
            engines: vec![],
            captures: vec![],
            conditions: vec![],
        },
    )
    .unwrap_err();
    assert!(e.starts_with("--vcpu given twice"), "{e}");
    let wt = s("x:w:8");
    let (hw, page) = (EngineChoice::Hw, EngineChoice::Page);
    let e = bind(
        [],
        [(1, &wt)],
        Bound {
            vcpus: vec![],
            actions: vec![],
            engines: vec![(3, hw), (5, page)],
            captures: vec![],
            conditions: vec![],
        },
    )
    .unwrap_err();
    assert!(e.starts_with("--engine given twice"), "{e}");
}

#[test]
fn the_same_flag_for_two_breakpoints_is_fine() {
    let (a, b) = (s("drv_target_0"), s("drv_target_1"));
    let (stop, cont) = (HitAction::Stop, HitAction::Continue);
    let parsed = bind(
        [(1, &a), (5, &b)],
        [],
        Bound {
            vcpus: vec![],
            actions: vec![(3, stop), (7, cont)],
            engines: vec![],
            captures: vec![],
            conditions: vec![],
        },
    )
    .unwrap();
    assert_eq!(parsed.len(), 2);
}

#[test]
fn a_huge_spec_gives_a_short_message() {
    let huge = format!("{}:q", "a".repeat(1 << 20));
    let e = w(&huge).unwrap_err();
    assert!(e.len() < 600, "{} bytes", e.len());
}

#[test]
fn resolution_checks_the_range_of_a_symbol_too() {
    let map = "ffffffffffffff00 D top\n0000000000001000 D low\n";
    let symbols = SymbolTable::from_system_map(map, "m").unwrap();
    let parsed = |text: &str| Parsed {
        label: text.into(),
        kind: Kind::Watch(w(text).unwrap()),
        vcpu: None,
        action: None,
        engine: None,
        capture: None,
        condition: None,
    };
    let e = match resolve(vec![parsed("top:w:0x100")], &symbols) {
        Err(e) => e,
        Ok(_) => panic!("top:w:0x100 accepted"),
    };
    assert!(e.contains("runs past the end"), "{e}");
    assert!(resolve(vec![parsed("top:w:0xff")], &symbols).is_ok());
    let e = match resolve(vec![parsed("low")], &symbols) {
        Err(e) => e,
        Ok(_) => panic!("a System.map symbol without a length accepted"),
    };
    assert!(e.contains("give a length"), "{e}");
}

/// The reference model of the module comment.
fn model_accepts(text: &str) -> bool {
    let rest = text.strip_prefix("phys:").unwrap_or(text);
    let mut parts = rest.split(':');
    let name = parts.next().unwrap_or_default();
    let addr = if name.is_empty() {
        return false;
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        match number(name) {
            Some(a) => Some(a),
            None => return false,
        }
    } else {
        None
    };
    let (mut access, mut len) = (0, None);
    for part in parts {
        if ["w", "r", "rw"].contains(&part) {
            access += 1;
        } else {
            match number(part) {
                Some(n) if n > 0 && len.is_none() => len = Some(n),
                _ => return false,
            }
        }
    }
    if access > 1 {
        return false;
    }
    !matches!((addr, len), (Some(a), Some(l)) if a.checked_add(l).is_none())
}

fn part() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(s("w")),
        Just(s("r")),
        Just(s("rw")),
        Just(s("")),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| format!("{n:#x}")),
        (0u64..64).prop_map(|n| n.to_string()),
        "[a-z_0-9]{1,8}",
        ".{0,6}",
    ]
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        "drv_[a-z_0-9]{0,10}",
        any::<u64>().prop_map(|n| format!("{n:#x}")),
        (u64::MAX - 64..=u64::MAX).prop_map(|n| format!("{n:#x}")),
        any::<u64>().prop_map(|n| n.to_string()),
        ".{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn structured_specs_match_the_model(
        phys in any::<bool>(),
        addr in address(),
        parts in proptest::collection::vec(part(), 0..4),
    ) {
        let mut text = if phys { format!("phys:{addr}") } else { addr };
        for p in &parts {
            text.push(':');
            text.push_str(p);
        }
        let got = w(&text);
        prop_assert_eq!(got.is_ok(), model_accepts(&text), "{:?}: {:?}", text, got);
        if let Err(e) = got {
            prop_assert!(e.starts_with("--watch ") && !e.contains('\n') && e.len() < 1000);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,64}") {
        if let Err(e) = w(&text) {
            prop_assert!(!e.contains('\n') && e.len() < 1000, "{}", e);
        }
        if let Err(e) = location(&text) {
            prop_assert!(!e.contains('\n') && e.len() < 1000, "{}", e);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = w(&text);
        let _ = location(&text);
    }

    #[test]
    fn bindings_never_panic_and_refuse_a_flag_before_any_owner(
        breaks in proptest::collection::vec(0usize..20, 0..4),
        watches in proptest::collection::vec(0usize..20, 0..4),
        actions in proptest::collection::vec((0usize..20, 0usize..3), 0..4),
    ) {
        let b = s("drv_target_0");
        let wt = s("x:w:8");
        let names = [HitAction::Continue, HitAction::Pause, HitAction::Stop];
        let acts: Vec<(usize, HitAction)> =
            actions.iter().map(|&(at, i)| (at, names[i])).collect();
        let mut taken = std::collections::BTreeSet::new();
        let bs: Vec<(usize, &String)> =
            breaks.iter().filter(|&&at| taken.insert(at)).map(|&at| (at, &b)).collect();
        let ws: Vec<(usize, &String)> =
            watches.iter().filter(|&&at| taken.insert(at)).map(|&at| (at, &wt)).collect();
        let acts: Vec<(usize, HitAction)> =
            acts.into_iter().filter(|(at, _)| taken.insert(*at)).collect();
        let first_owner = taken_owner_min(&bs, &ws);
        let result = bind(
            bs.clone(),
            ws.clone(),
            Bound { vcpus: vec![], actions: acts.clone(), engines: vec![], captures: vec![], conditions: vec![] },
        );
        let before_any_owner = |at: usize| match first_owner {
            Some(first) => at < first,
            None => true,
        };
        if acts.iter().any(|(at, _)| before_any_owner(*at)) {
            prop_assert!(result.is_err());
        }
        if let Ok(parsed) = result {
            prop_assert_eq!(parsed.len(), bs.len() + ws.len());
        }
    }
}

fn taken_owner_min(bs: &[(usize, &String)], ws: &[(usize, &String)]) -> Option<usize> {
    bs.iter().chain(ws).map(|(at, _)| *at).min()
}

#[test]
fn if_binds_to_its_break_or_watch_and_a_mistake_names_the_column() {
    let (b0, b1) = (s("drv_target_0"), s("drv_target_1"));
    let (c0, c1) = (s("hits % 10 == 0"), s("rdi == 3"));
    let parsed = bind(
        [(1, &b0), (3, &b1)],
        [],
        Bound {
            vcpus: vec![],
            actions: vec![],
            engines: vec![],
            captures: vec![],
            conditions: vec![(2, &c0), (4, &c1)],
        },
    )
    .unwrap();
    assert_eq!(
        parsed[0].condition.as_ref().unwrap().text(),
        "hits % 10 == 0"
    );
    assert_eq!(parsed[1].condition.as_ref().unwrap().text(), "rdi == 3");

    let bad = s("rdi ==");
    let e = bind(
        [(1, &b0)],
        [],
        Bound {
            vcpus: vec![],
            actions: vec![],
            engines: vec![],
            captures: vec![],
            conditions: vec![(2, &bad)],
        },
    )
    .unwrap_err();
    assert_eq!(
        e,
        "--if 'rdi ==': expected an expression after '==', found the end of the condition at column 7"
    );
    let e = bind(
        [(3, &b0)],
        [],
        Bound {
            vcpus: vec![],
            actions: vec![],
            engines: vec![],
            captures: vec![],
            conditions: vec![(1, &c0)],
        },
    )
    .unwrap_err();
    assert!(e.starts_with("--if must follow"), "{e}");
    let e = bind(
        [(1, &b0)],
        [],
        Bound {
            vcpus: vec![],
            actions: vec![],
            engines: vec![],
            captures: vec![],
            conditions: vec![(2, &c0), (3, &c1)],
        },
    )
    .unwrap_err();
    assert!(e.starts_with("--if given twice"), "{e}");
}
