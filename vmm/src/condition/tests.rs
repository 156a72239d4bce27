//! The language as a whole: evaluation on a fake hit, the task fields on fake kernel memory,
//! and properties (printing and parsing again changes nothing; nothing panics).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::ast::{BinOp, Expr, Field, Gpr, Load, Reg, UnOp, REGISTERS};
use super::eval::{value, Fault, Machine};
use super::parse::parse;
use super::Condition;
use crate::kernel::TaskLayout;

/// A hit on a fake vCPU: registers, a few mapped bytes, a GS base.
#[derive(Clone, Debug, Default)]
struct Fake {
    regs: [u64; 18],
    cpu: u64,
    hits: u64,
    memory: BTreeMap<u64, u8>,
    gs: Option<u64>,
}

fn index(r: Gpr) -> usize {
    REGISTERS.iter().position(|(_, g, _)| *g == r).unwrap_or(0)
}

impl Fake {
    fn set(&mut self, r: Gpr, v: u64) {
        self.regs[index(r)] = v;
    }

    fn write(&mut self, addr: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.memory.insert(addr + i as u64, *b);
        }
    }
}

impl Machine for Fake {
    fn reg(&self, r: Gpr) -> u64 {
        self.regs[index(r)]
    }
    fn cpu(&self) -> u64 {
        self.cpu
    }
    fn hits(&self) -> u64 {
        self.hits
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        for (i, b) in buf.iter_mut().enumerate() {
            match self.memory.get(&addr.wrapping_add(i as u64)) {
                Some(v) => *b = *v,
                None => {
                    return Err(Fault::Unmapped {
                        addr,
                        len: buf.len() as u8,
                    })
                }
            }
        }
        Ok(())
    }
    fn kernel_gs_base(&self) -> Result<u64, Fault> {
        self.gs.ok_or(Fault::UserMode)
    }
}

fn eval(text: &str, m: &Fake) -> Result<u64, Fault> {
    value(
        &parse(text).unwrap_or_else(|e| panic!("{text}: {e}")),
        m,
        Some(&LAYOUT),
    )
}

const LAYOUT: TaskLayout = TaskLayout {
    current_task: 0x40,
    pid: 0x10,
    tgid: 0x14,
    comm: 0x20,
};

/// A kernel at a hit: per-CPU area at 0x9000, whose current_task points at a task at 0x5000
/// named `bash`, pid 1234, tgid -7 (to see the sign).
fn kernel() -> Fake {
    let mut m = Fake {
        gs: Some(0x9000),
        ..Fake::default()
    };
    m.write(0x9040, &0x5000u64.to_le_bytes());
    m.write(0x5010, &1234i32.to_le_bytes());
    m.write(0x5014, &(-7i32).to_le_bytes());
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"bash");
    m.write(0x5020, &comm);
    m
}

#[test]
fn registers_counters_and_arithmetic() {
    let mut m = Fake {
        cpu: 3,
        hits: 20,
        ..Fake::default()
    };
    m.set(Gpr::Rdi, 0x1_0000_0005);
    assert_eq!(eval("rdi", &m), Ok(0x1_0000_0005));
    assert_eq!(eval("edi", &m), Ok(5));
    assert_eq!(eval("hits % 10 == 0 && cpu == 3", &m), Ok(1));
    assert_eq!(eval("1 + 2 * 3 - 4 / 2", &m), Ok(5));
    assert_eq!(eval("(1 << 4) | 3 ^ 1", &m), Ok(18));
    assert_eq!(eval("~0 == 0xffffffffffffffff", &m), Ok(1));
    assert_eq!(eval("-1 > 0", &m), Ok(1), "unsigned: -1 is 2^64-1");
    assert_eq!(eval("!hits + !0", &m), Ok(1));
    assert_eq!(
        eval("10 % 3 == 1 && 10 >= 10 && 9 <= 10 && 3 != 4", &m),
        Ok(1)
    );
}

#[test]
fn memory_reads_are_little_endian_and_signed_reads_extend() {
    let mut m = Fake::default();
    m.set(Gpr::Rsp, 0x100);
    m.write(0x100, &[0xfe, 0xff, 0xff, 0xff, 1, 0, 0, 0]);
    assert_eq!(eval("*(u8 *)rsp", &m), Ok(0xfe));
    assert_eq!(eval("*(u32 *)(rsp)", &m), Ok(0xffff_fffe));
    assert_eq!(eval("*(u64 *)rsp", &m), Ok(0x1_ffff_fffe));
    assert_eq!(eval("*(i32 *)rsp", &m), Ok(-2i64 as u64));
    assert_eq!(eval("*(i32 *)rsp < 0", &m), Ok(1), "signed compare");
    assert_eq!(eval("*(u32 *)rsp < 0", &m), Ok(0));
    assert_eq!(eval("*(i8 *)(rsp + 4) == 1", &m), Ok(1));
    assert_eq!(
        eval("*(u32 *)(rsp + 6)", &m),
        Err(Fault::Unmapped {
            addr: 0x106,
            len: 4
        })
    );
}

#[test]
fn faults_are_errors_not_panics() {
    let m = Fake::default();
    assert_eq!(eval("1 / 0", &m), Err(Fault::DivisionByZero));
    assert_eq!(eval("1 % 0", &m), Err(Fault::DivisionByZero));
    assert_eq!(
        eval("*(i64 *)0 / -1", &{
            let mut m = Fake::default();
            m.write(0, &i64::MIN.to_le_bytes());
            m
        }),
        Err(Fault::DivisionOverflow)
    );
    assert_eq!(eval("1 << 64", &m), Err(Fault::Shift(64)));
    assert_eq!(
        eval("*(u8 *)0x1234", &m),
        Err(Fault::Unmapped {
            addr: 0x1234,
            len: 1
        })
    );
}

#[test]
fn and_or_short_circuit() {
    let m = Fake::default();
    assert_eq!(eval("0 && 1 / 0", &m), Ok(0));
    assert_eq!(eval("1 || *(u8 *)0x1234", &m), Ok(1));
    assert_eq!(eval("1 && 1 / 0", &m), Err(Fault::DivisionByZero));
}

#[test]
fn the_current_tasks_comm_pid_and_tgid() {
    let m = kernel();
    assert_eq!(eval("comm == \"bash\"", &m), Ok(1));
    assert_eq!(
        eval("comm == \"bas\"", &m),
        Ok(0),
        "a prefix is not the name"
    );
    assert_eq!(eval("comm == \"bash2\"", &m), Ok(0));
    assert_eq!(eval("\"bash\" != comm", &m), Ok(0));
    assert_eq!(eval("pid == 1234 && tgid == -7 && tgid < 0", &m), Ok(1));
    let mut full = kernel();
    full.write(0x5020, b"fifteen_chars_x\0");
    assert_eq!(eval("comm == \"fifteen_chars_x\"", &full), Ok(1));
    // A 16-byte comm with no NUL (a broken task): all 16 bytes are compared, no match.
    full.write(0x5020, b"sixteen_chars_xy");
    assert_eq!(eval("comm == \"sixteen_chars_x\"", &full), Ok(0));
}

#[test]
fn task_fields_fault_in_user_mode_or_without_a_layout() {
    let mut m = kernel();
    m.gs = None;
    assert_eq!(eval("pid == 1", &m), Err(Fault::UserMode));
    let m = kernel();
    let e = parse("pid == 1234").unwrap();
    assert_eq!(value(&e, &m, None), Err(Fault::NoTaskLayout));
    let mut dangling = kernel();
    dangling.write(0x9040, &0xdead_0000u64.to_le_bytes());
    assert_eq!(
        eval("comm == \"x\"", &dangling),
        Err(Fault::Unmapped {
            addr: 0xdead_0020,
            len: 16
        })
    );
}

#[test]
fn a_condition_counts_matches_and_faults() {
    let c = Condition::parse("*(u8 *)rdi == 1").unwrap();
    assert!(!c.uses_task());
    let mut m = Fake::default();
    m.write(0x10, &[1]);
    m.set(Gpr::Rdi, 0x10);
    assert!(c.test(&m, None, "t"));
    m.set(Gpr::Rdi, 0x20);
    assert!(!c.test(&m, None, "t"), "a fault is false");
    assert!(!c.test(&m, None, "t"));
    assert_eq!((c.matched(), c.faults()), (1, 2));
    assert!(Condition::parse("comm == \"a\" || rdi")
        .unwrap()
        .uses_task());
}

// Properties.

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        any::<u64>().prop_map(Expr::Int),
        (0u64..20).prop_map(Expr::Int),
        (0..REGISTERS.len()).prop_map(|i| Expr::Reg(Reg {
            gpr: REGISTERS[i].1,
            low32: REGISTERS[i].2
        })),
        Just(Expr::Cpu),
        Just(Expr::Hits),
        Just(Expr::Task(Field::Pid)),
        Just(Expr::Task(Field::Tgid)),
        ("[a-z]{0,15}").prop_map(|s| Expr::CommIs {
            equal: true,
            name: s.into_bytes().into()
        }),
    ]
}

const BIN_OPS: &[BinOp] = &[
    BinOp::Mul,
    BinOp::Div,
    BinOp::Rem,
    BinOp::Add,
    BinOp::Sub,
    BinOp::Shl,
    BinOp::Shr,
    BinOp::Lt,
    BinOp::Le,
    BinOp::Gt,
    BinOp::Ge,
    BinOp::Eq,
    BinOp::Ne,
    BinOp::BitAnd,
    BinOp::BitXor,
    BinOp::BitOr,
    BinOp::And,
    BinOp::Or,
];

fn tree() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(6, 48, 2, |inner| {
        prop_oneof![
            (0..3usize, inner.clone()).prop_map(|(i, e)| Expr::Unary(
                [UnOp::Neg, UnOp::Not, UnOp::LogicalNot][i],
                Box::new(e)
            )),
            (0..8usize, inner.clone()).prop_map(|(i, e)| Expr::Load(
                Load {
                    bytes: [1, 2, 4, 8][i % 4],
                    signed: i >= 4
                },
                Box::new(e)
            )),
            (0..BIN_OPS.len(), any::<bool>(), inner.clone(), inner).prop_map(
                |(i, signed, l, r)| Expr::Binary {
                    op: BIN_OPS[i],
                    signed,
                    lhs: Box::new(l),
                    rhs: Box::new(r)
                }
            ),
        ]
    })
}

/// A hit with every register set, small addresses 0..0x400 mapped, and a task.
fn machine() -> impl Strategy<Value = Fake> {
    (
        proptest::array::uniform18(prop_oneof![any::<u64>(), 0u64..0x400]),
        0u64..4,
        1u64..100,
        proptest::collection::vec(any::<u8>(), 0x400),
    )
        .prop_map(|(regs, cpu, hits, bytes)| {
            let mut m = kernel();
            m.regs = regs;
            m.cpu = cpu;
            m.hits = hits;
            m.write(0, &bytes);
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A tree printed and parsed again prints the same, is a fixed point of printing and
    /// parsing, and evaluates the same on any hit.
    #[test]
    fn printing_and_parsing_again_changes_nothing(e in tree(), m in machine()) {
        let text = e.to_string();
        prop_assume!(text.chars().count() <= super::parse::MAX_LEN);
        let once = parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
        prop_assert_eq!(once.to_string(), text.clone());
        let twice = parse(&once.to_string()).unwrap();
        prop_assert_eq!(&twice, &once);
        prop_assert_eq!(
            value(&once, &m, Some(&LAYOUT)),
            value(&twice, &m, Some(&LAYOUT))
        );
    }

    /// Evaluation never panics, whatever the tree (signedness included) and the hit.
    #[test]
    fn evaluation_never_panics(e in tree(), m in machine()) {
        let _ = value(&e, &m, Some(&LAYOUT));
        let _ = value(&e, &m, None);
    }

    /// Parsing never panics, on any text or on soups of the language's own tokens.
    #[test]
    fn parsing_never_panics(text in "\\PC{0,64}") {
        let _ = parse(&text);
    }

    #[test]
    fn parsing_token_soup_never_panics(
        words in proptest::collection::vec(
            prop_oneof![
                Just("rdi"), Just("("), Just(")"), Just("*"), Just("(u32 *)"), Just("&&"),
                Just("||"), Just("=="), Just("!"), Just("-"), Just("1"), Just("0x10"),
                Just("comm"), Just("\"a\""), Just("<<"), Just("%"), Just("hits"), Just("pid"),
            ],
            0..24,
        )
    ) {
        let text = words.join(" ");
        if let Err(e) = parse(&text) {
            prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{text}: {e}");
        }
    }

    /// `&&` and `||` agree with their truth tables whenever both sides evaluate.
    #[test]
    fn logic_agrees_with_rust(a in tree(), b in tree(), m in machine()) {
        let both = |op: &str| format!("({a}) {op} ({b})");
        prop_assume!(a.to_string().len() + b.to_string().len() < 1000);
        let and = value(&parse(&both("&&")).unwrap(), &m, Some(&LAYOUT));
        let or = value(&parse(&both("||")).unwrap(), &m, Some(&LAYOUT));
        // The sides as parsed (the parser decides their signedness, not the generator).
        let pa = value(&parse(&a.to_string()).unwrap(), &m, Some(&LAYOUT));
        let pb = value(&parse(&b.to_string()).unwrap(), &m, Some(&LAYOUT));
        match pa {
            Ok(0) => { prop_assert_eq!(and, Ok(0)); prop_assert_eq!(or, pb.map(|v| u64::from(v != 0))); }
            Ok(_) => { prop_assert_eq!(or, Ok(1)); prop_assert_eq!(and, pb.map(|v| u64::from(v != 0))); }
            Err(f) => { prop_assert_eq!(and, Err(f)); prop_assert_eq!(or, Err(f)); }
        }
    }
}

#[test]
fn a_hits_identity_is_the_current_tasks() {
    use crate::condition::eval::identity;
    assert_eq!(
        identity(&kernel(), &LAYOUT),
        Ok(("bash".to_owned(), 1234, -7))
    );
    let user = Fake::default();
    assert!(
        identity(&user, &LAYOUT).is_err(),
        "no kernel GS base, no identity"
    );
}
