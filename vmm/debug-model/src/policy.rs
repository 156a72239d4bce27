//! Who wins when host and guest breakpoints do not fit into four slots together.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The arbitration policy, chosen by the operator (`--policy`, the REST API).
///
/// It only matters when a vCPU's host breakpoints and guest-enabled slots add up to more than
/// four; placement itself (host from DR3 down, guest from DR0 up) is the same under every policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Host breakpoints are placed first; the guest's surplus slots are reported pending. This is
    /// the 2009 review's order (kernel breakpoints before ptrace users) and the default, because
    /// the operator asked for the host breakpoints explicitly.
    #[default]
    HostFirst,
    /// The guest's enabled slots are placed first; surplus host breakpoints are suspended on that
    /// vCPU and reported pending, so a debugger inside the guest keeps working.
    GuestFirst,
    /// Placed like [`Policy::GuestFirst`], and in addition a host registration that would starve
    /// the guest is refused up front by [`crate::check_registration`].
    Deny,
}

impl Policy {
    /// Every policy, in declaration order.
    pub const ALL: [Policy; 3] = [Policy::HostFirst, Policy::GuestFirst, Policy::Deny];

    /// The name used on the command line, in JSON and in messages.
    pub const fn name(self) -> &'static str {
        match self {
            Policy::HostFirst => "host-first",
            Policy::GuestFirst => "guest-first",
            Policy::Deny => "deny",
        }
    }

    /// Whether guest slots are placed before host breakpoints.
    pub const fn guest_placed_first(self) -> bool {
        !matches!(self, Policy::HostFirst)
    }
}

/// An unknown policy name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy `{0}`: use host-first, guest-first or deny")]
pub struct PolicyParseError(pub String);

impl FromStr for Policy {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| PolicyParseError(s.to_owned()))
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let table = [
            (Policy::HostFirst, "host-first"),
            (Policy::GuestFirst, "guest-first"),
            (Policy::Deny, "deny"),
        ];
        for (policy, name) in table {
            assert_eq!(policy.to_string(), name);
            assert_eq!(name.parse::<Policy>(), Ok(policy));
        }
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = "host_first".parse::<Policy>().expect_err("unknown");
        assert_eq!(err, PolicyParseError("host_first".into()));
        assert!(err
            .to_string()
            .contains("use host-first, guest-first or deny"));
    }

    #[test]
    fn default_is_host_first() {
        assert_eq!(Policy::default(), Policy::HostFirst);
    }
}
