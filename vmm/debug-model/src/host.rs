//! Host-owned breakpoints: the operator's requests, with an id and a scope.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{BreakSpec, VcpuId};

/// The id drvisor gave a host breakpoint when it was registered.
///
/// Ids also order host breakpoints for placement: a lower id is placed first and so keeps its
/// slot when a later registration does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostBpId(pub u32);

impl fmt::Display for HostBpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Which vCPUs a host breakpoint is armed on, as its owner chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Every vCPU of the VM.
    Vm,
    /// One vCPU only.
    Vcpu(VcpuId),
}

impl Scope {
    /// Whether the scope covers `vcpu`.
    pub fn covers(self, vcpu: VcpuId) -> bool {
        match self {
            Scope::Vm => true,
            Scope::Vcpu(only) => only == vcpu,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Vm => f.write_str("vm"),
            Scope::Vcpu(vcpu) => write!(f, "{vcpu}"),
        }
    }
}

/// A breakpoint or watchpoint the host owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostBreakpoint {
    /// Its id; unique among the host breakpoints given to the arbiter.
    pub id: HostBpId,
    /// What to arm.
    pub spec: BreakSpec,
    /// Where to arm it.
    pub scope: Scope,
}

/// `#3 write/4@0x1000 on vm`.
impl fmt::Display for HostBreakpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} on {}", self.id, self.spec, self.scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_covers() {
        let table = [
            (Scope::Vm, 0, true),
            (Scope::Vm, 7, true),
            (Scope::Vcpu(VcpuId(1)), 1, true),
            (Scope::Vcpu(VcpuId(1)), 0, false),
            (Scope::Vcpu(VcpuId(1)), 2, false),
        ];
        for (scope, vcpu, expect) in table {
            assert_eq!(scope.covers(VcpuId(vcpu)), expect, "{scope} {vcpu}");
        }
    }

    #[test]
    fn display() {
        let bp = HostBreakpoint {
            id: HostBpId(3),
            spec: BreakSpec::exec(0x1000).expect("valid"),
            scope: Scope::Vcpu(VcpuId(2)),
        };
        assert_eq!(bp.to_string(), "#3 exec@0x1000 on vcpu2");
        assert_eq!(Scope::Vm.to_string(), "vm");
    }
}
