//! What a watch catches: writes, reads or both.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The accesses a watch reports, in the vocabulary of gdb's `watch`, `rwatch` and `awatch`.
///
/// Unlike a debug register, page protection can watch reads alone: a page with no memslot
/// exits on every access and the VMM sees whether it was a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Writes only.
    Write,
    /// Reads only.
    Read,
    /// Reads or writes. Named `rw` like the debug-register watch kinds of `drvisor-debug`, so
    /// the API speaks one vocabulary.
    #[serde(rename = "rw", alias = "read-write")]
    ReadWrite,
}

/// An access name nobody knows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown watch access `{0}`: use w (write), r (read) or rw (read or write)")]
pub struct AccessParseError(pub String);

impl Access {
    /// Every access, in declaration order.
    pub const ALL: [Access; 3] = [Access::Write, Access::Read, Access::ReadWrite];

    /// Whether a guest access that writes (`is_write`) or reads is one this watch reports.
    pub const fn catches(self, is_write: bool) -> bool {
        match self {
            Access::Write => is_write,
            Access::Read => !is_write,
            Access::ReadWrite => true,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Write => "write",
            Access::Read => "read",
            Access::ReadWrite => "rw",
        })
    }
}

/// Accepts `w`/`write`, `r`/`read`, and `rw`/`read-write`/`a`/`access` (gdb's `awatch`).
impl FromStr for Access {
    type Err = AccessParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "w" | "write" => Ok(Access::Write),
            "r" | "read" => Ok(Access::Read),
            "rw" | "read-write" | "a" | "access" => Ok(Access::ReadWrite),
            other => Err(AccessParseError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let table = [
            ("w", Some(Access::Write)),
            ("write", Some(Access::Write)),
            ("r", Some(Access::Read)),
            ("read", Some(Access::Read)),
            ("rw", Some(Access::ReadWrite)),
            ("read-write", Some(Access::ReadWrite)),
            ("a", Some(Access::ReadWrite)),
            ("access", Some(Access::ReadWrite)),
            ("x", None),
            ("W", None),
            ("", None),
        ];
        for (text, expect) in table {
            assert_eq!(text.parse::<Access>().ok(), expect, "{text:?}");
        }
        let msg = "exec".parse::<Access>().err().map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("`exec`") && m.contains("use w")));
    }

    #[test]
    fn display_round_trips() {
        for access in Access::ALL {
            assert_eq!(access.to_string().parse::<Access>(), Ok(access));
        }
    }

    #[test]
    fn catches() {
        let table = [
            (Access::Write, [false, true]),
            (Access::Read, [true, false]),
            (Access::ReadWrite, [true, true]),
        ];
        for (access, [read, write]) in table {
            assert_eq!(access.catches(false), read, "{access} on a read");
            assert_eq!(access.catches(true), write, "{access} on a write");
        }
    }
}
