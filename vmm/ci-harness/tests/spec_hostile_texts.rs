//! The spec parser against hostile texts: every shipped example spec, mutated (flipped bytes,
//! cuts, keys twice, numbers out of range, huge strings, deep nesting), is either a spec or an
//! error that names the file, a line and a column inside the text, in a message of a few
//! lines. It never panics.

mod hostile_specs;

use std::path::Path;

use drvisor_ci::spec::{parse, Spec, SpecError, MESSAGE_MAX};
use hostile_specs::{mutate, Mutation, HOSTILE_VALUES, SEEDS};
use proptest::prelude::*;

const FILE: &str = "/specs/hostile.toml";

fn mutation() -> impl Strategy<Value = Mutation> {
    let any_line = 0usize..200;
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, with)| Mutation::FlipByte { at, with }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        any_line
            .clone()
            .prop_map(|line| Mutation::DuplicateLine { line }),
        (any_line.clone(), 0..HOSTILE_VALUES.len())
            .prop_map(|(line, value)| Mutation::HostileValue { line, value }),
        (
            any_line.clone(),
            prop_oneof![0usize..100, 60_000usize..200_000]
        )
            .prop_map(|(line, len)| Mutation::LongString { line, len }),
        (
            any_line.clone(),
            prop_oneof![1usize..10, 100usize..5_000],
            0usize..3
        )
            .prop_map(|(line, depth, how)| Mutation::Nest { line, depth, how }),
        (
            any_line.clone(),
            prop_oneof![1usize..10, 10_000usize..100_000]
        )
            .prop_map(|(line, len)| Mutation::LongKey { line, len }),
        any_line.prop_map(|line| Mutation::DeleteLine { line }),
    ]
}

/// What must hold of any text: a spec with at least one check, or an error whose display is
/// `FILE:LINE:COL: MESSAGE` with LINE and COL inside the text.
fn holds(text: &str, got: &Result<Spec, SpecError>) -> Result<(), TestCaseError> {
    let e = match got {
        Ok(spec) => {
            prop_assert!(!spec.checks.is_empty());
            return Ok(());
        }
        Err(e) => e,
    };
    let shown = e.to_string();
    let Some((line, col)) = e.at else {
        return Err(TestCaseError::fail(format!(
            "an error with no place: {shown}"
        )));
    };
    prop_assert!(
        shown.starts_with(&format!("{FILE}:{line}:{col}: ")),
        "{shown}"
    );
    prop_assert!(!e.message.trim().is_empty(), "{shown}");
    // Short enough to read: a long value it is about is not quoted whole.
    prop_assert!(
        e.message.chars().count() <= MESSAGE_MAX + 40,
        "{} characters: {shown:.400}",
        e.message.chars().count()
    );
    let lines: Vec<&str> = text.split('\n').collect();
    prop_assert!(
        (1..=lines.len()).contains(&line),
        "line {line} of {}: {shown}",
        lines.len()
    );
    let width = lines[line - 1].chars().count();
    prop_assert!(
        (1..=width + 1).contains(&col),
        "column {col} of a {width}-character line: {shown}"
    );
    Ok(())
}

proptest! {
    // No regressions file: the cases that once failed are named tests below. A fixed seed: CI
    // runs the same 512 cases every time (a new finding is a bug to fix, never a flake).
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0064_7276_6973_6f72),
        ..ProptestConfig::default()
    })]

    /// One mutation of one example.
    #[test]
    fn one_mutation_is_a_spec_or_an_error_at_a_place(
        seed in 0..SEEDS.len(),
        m in mutation(),
    ) {
        let text = mutate(SEEDS[seed].1, &m);
        let got = parse(Path::new(FILE), &text, &|_| true);
        holds(&text, &got)?;
    }

    /// Several mutations in a row, and inputs that do not exist (every path is missing).
    #[test]
    fn mutations_in_a_row_are_a_spec_or_an_error_at_a_place(
        seed in 0..SEEDS.len(),
        ms in proptest::collection::vec(mutation(), 2..6),
    ) {
        let text = ms.iter().fold(SEEDS[seed].1.to_owned(), |t, m| mutate(&t, m));
        let got = parse(Path::new(FILE), &text, &|_| false);
        holds(&text, &got)?;
    }

    /// Arbitrary text, not even TOML.
    #[test]
    fn any_text_is_a_spec_or_an_error_at_a_place(text in "\\PC{0,300}") {
        let got = parse(Path::new(FILE), &text, &|_| true);
        holds(&text, &got)?;
    }
}

/// The examples themselves parse (so the mutations start from valid specs).
#[test]
fn the_seeds_are_valid_specs() {
    for (name, text) in SEEDS {
        if let Err(e) = parse(Path::new(FILE), text, &|_| true) {
            panic!("{name}: {e}");
        }
    }
}

/// The hostile cases named in the property, each at least once, whatever proptest draws.
#[test]
fn each_hostile_value_on_each_key_is_a_spec_or_an_error_at_a_place() {
    for (name, seed) in SEEDS {
        for line in 0..40 {
            for (value, shown) in HOSTILE_VALUES.iter().enumerate() {
                let text = mutate(seed, &Mutation::HostileValue { line, value });
                let got = parse(Path::new(FILE), &text, &|_| true);
                if let Err(e) = holds(&text, &got) {
                    panic!("{name}, line {line}, {shown}: {e}");
                }
            }
        }
    }
}

#[test]
fn deep_nesting_is_an_error_at_a_place() {
    for how in 0..3 {
        for depth in [100, 1_000, 100_000] {
            let text = mutate(
                SEEDS[0].1,
                &Mutation::Nest {
                    line: 0,
                    depth,
                    how,
                },
            );
            let got = parse(Path::new(FILE), &text, &|_| true);
            if let Err(e) = holds(&text, &got) {
                panic!("depth {depth}, how {how}: {e}");
            }
        }
    }
}

/// A text cut to nothing still takes an inserted line (the mutator once indexed past the end).
#[test]
fn an_insertion_into_an_empty_text() {
    let cut = mutate(SEEDS[0].1, &Mutation::Truncate { at: 0 });
    assert_eq!(cut, "");
    for m in [
        Mutation::Nest {
            line: 1,
            depth: 3,
            how: 2,
        },
        Mutation::LongKey { line: 1, len: 8 },
    ] {
        let text = mutate(&cut, &m);
        assert_eq!(text.lines().count(), 1, "{m:?}: {text:?}");
        holds(&text, &parse(Path::new(FILE), &text, &|_| true)).unwrap();
    }
}
