//! Hostile spec texts: a valid spec, mutated the ways a careless or malicious hand breaks one
//! (a flipped byte, a cut, a key given twice, a number out of every range, a huge string, deep
//! nesting). Plain Rust, no randomness of its own: the property test draws [`Mutation`]s with
//! proptest, and the end-to-end test (which includes this file) from a fixed seed.

#![allow(dead_code)]

/// The valid specs the repository ships, as seeds: (file name, text).
pub const SEEDS: &[(&str, &str)] = &[
    (
        "exec.toml",
        include_str!("../../../../ci/examples/exec.toml"),
    ),
    (
        "ktap.toml",
        include_str!("../../../../ci/examples/ktap.toml"),
    ),
    (
        "status.toml",
        include_str!("../../../../ci/examples/status.toml"),
    ),
    (
        "stop.toml",
        include_str!("../../../../ci/examples/stop.toml"),
    ),
    (
        "write.toml",
        include_str!("../../../../ci/examples/write.toml"),
    ),
];

/// Values that are out of range, of the wrong type, or merely odd, for any key.
pub const HOSTILE_VALUES: &[&str] = &[
    "1e300",
    "-1e300",
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775808",
    "-9223372036854775809",
    "4294967296",
    "-1",
    "0",
    "-0.0",
    "nan",
    "-nan",
    "inf",
    "-inf",
    "0x_",
    "0xffffffffffffffffff",
    "1__0",
    "\"\"",
    "\" \"",
    "\"\\u0000\"",
    "\"\\uD800\"",
    "''",
    "'''\n'''",
    "\"(\"",
    "\"a{1000}{1000}{1000}\"",
    "\"(?x)\"",
    "true",
    "[]",
    "[1, \"a\"]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
    "[18446744073709551615, 0]",
    "[0, 18446744073709551616]",
    "\"drv_target_0 drv_target_1\"",
    "\"phys:0xffffffffffffffff:w\"",
];

/// One change to a spec text. Indexes are taken modulo what they index, so any value is valid.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// XOR the byte at `at` with `with` (the result is read as UTF-8, lossily).
    FlipByte { at: usize, with: u8 },
    /// Keep only the first `at` bytes.
    Truncate { at: usize },
    /// Give line `line` twice (a key twice, a `[vm]` twice, a `[[check]]` twice).
    DuplicateLine { line: usize },
    /// Replace the value of the `line`-th `key = value` line with `HOSTILE_VALUES[value]`.
    HostileValue { line: usize, value: usize },
    /// Replace the value of the `line`-th `key = value` line with a string of `len` bytes.
    LongString { line: usize, len: usize },
    /// Insert, before line `line`, `depth` levels of nesting: arrays, inline tables, dotted
    /// table headers.
    Nest {
        line: usize,
        depth: usize,
        how: usize,
    },
    /// Insert a key `len` bytes long with a small value before line `line`.
    LongKey { line: usize, len: usize },
    /// Delete line `line`.
    DeleteLine { line: usize },
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The index in `lines` of the `n`-th (modulo their number) `key = value` line.
fn value_line(lines: &[String], n: usize) -> Option<usize> {
    let kv: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#') && l.contains(" = "))
        .map(|(i, _)| i)
        .collect();
    (!kv.is_empty()).then(|| kv[n % kv.len()])
}

fn with_value(lines: &mut [String], n: usize, value: &str) {
    if let Some(i) = value_line(lines, n) {
        let key = lines[i].split(" = ").next().unwrap_or_default().to_owned();
        lines[i] = format!("{key} = {value}");
    }
}

/// `text` with `m` applied.
pub fn mutate(text: &str, m: &Mutation) -> String {
    let mut ls = lines(text);
    let count = ls.len().max(1);
    match *m {
        Mutation::FlipByte { at, with } => {
            let mut bytes = text.as_bytes().to_vec();
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] ^= with;
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        Mutation::Truncate { at } => {
            let bytes = &text.as_bytes()[..at % (text.len() + 1)];
            return String::from_utf8_lossy(bytes).into_owned();
        }
        Mutation::DuplicateLine { line } => {
            if !ls.is_empty() {
                let i = line % count;
                let copy = ls[i].clone();
                ls.insert(i + 1, copy);
            }
        }
        Mutation::HostileValue { line, value } => {
            with_value(&mut ls, line, HOSTILE_VALUES[value % HOSTILE_VALUES.len()]);
        }
        Mutation::LongString { line, len } => {
            with_value(&mut ls, line, &format!("\"{}\"", "x".repeat(len)));
        }
        Mutation::Nest { line, depth, how } => {
            let nested = match how % 3 {
                0 => format!("deep = {}{}", "[".repeat(depth), "]".repeat(depth)),
                1 => format!("deep = {}1{}", "{ a = ".repeat(depth), " }".repeat(depth)),
                _ => format!("[{}]", vec!["t"; depth.max(1)].join(".")),
            };
            ls.insert(line % (ls.len() + 1), nested);
        }
        Mutation::LongKey { line, len } => {
            ls.insert(
                line % (ls.len() + 1),
                format!("{} = 1", "k".repeat(len.max(1))),
            );
        }
        Mutation::DeleteLine { line } => {
            if !ls.is_empty() {
                ls.remove(line % count);
            }
        }
    }
    join(&ls)
}
