//! What is wrong with a condition's text: the user's mistake, with the column where it is.

/// A condition that does not parse or does not type-check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{problem} at column {column}")]
pub struct Error {
    /// 1-based, in characters.
    pub column: usize,
    /// What is wrong there.
    pub problem: Problem,
}

/// What is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A character no token starts with.
    #[error("unexpected character '{0}'")]
    UnexpectedChar(char),
    /// A number that does not parse or does not fit in 64 bits.
    #[error("`{0}` is not a number that fits in 64 bits (write 0x hex or decimal)")]
    BadNumber(String),
    /// A string with no closing quote.
    #[error("a string is not closed (a '\"' is missing)")]
    UnterminatedString,
    /// A backslash before something other than `"` or `\`.
    #[error("only \\\" and \\\\ may follow a backslash in a string")]
    BadEscape,
    /// Something else came where this was expected.
    #[error("expected {expected}, found {found}")]
    Expected {
        /// What was expected.
        expected: String,
        /// What came instead.
        found: String,
    },
    /// A name that is none of the known ones.
    #[error("unknown name `{0}`: a condition reads registers (rax..r15, rip, rsp, rflags, eax..), cpu, hits, comm, pid, tgid")]
    UnknownName(String),
    /// A cast to a type that is not `u8`..`u64` or `i8`..`i64`.
    #[error("unknown type `{0}` in a memory read: write u8, u16, u32, u64, i8, i16, i32 or i64, as in *(u32 *)(rdi + 8)")]
    UnknownType(String),
    /// A string where a number is needed.
    #[error("a string can only be compared with `comm` by == or !=")]
    StringHere,
    /// `comm` used as a number.
    #[error("comm is a string: compare it with == or != to a string in double quotes, as in comm == \"init\"")]
    CommHere,
    /// More text than a condition may have.
    #[error("a condition may have at most {0} characters")]
    TooLong(usize),
    /// A string longer than `comm` can hold.
    #[error("\"{0}\" can never equal comm: a task's comm holds at most 15 bytes")]
    CommTooLong(String),
}
