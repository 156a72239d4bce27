//! What a client may look at and change in the guest through the session: memory by
//! guest-virtual address, the registers of parked vCPUs, and the plan and probe as text.

use std::collections::BTreeMap;

use drvisor_api::rest::VcpuRegisters;
use drvisor_api::Registers;
use drvisor_debug::HostBpId;
use vm_memory::{Bytes, GuestAddress};

use super::session::Session;
use crate::debug::plan_view;
use crate::watch::WatchRange;

/// Why guest-virtual memory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The range does not translate through the vCPU's page tables (not mapped, too long...).
    #[error(transparent)]
    Translate(crate::watch::Error),
    /// A translated piece is not guest RAM.
    #[error("guest-physical {gpa:#x}: {source}")]
    Access {
        /// The piece's first guest-physical byte.
        gpa: u64,
        /// What guest memory said.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Why a vCPU could not be single-stepped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The host's KVM does not deliver single-step exits.
    #[error("this host does not deliver single-steps (probe row \"single-step\"); step on a host whose probe shows it, or set a breakpoint further on and continue")]
    NotDelivered,
    /// No such vCPU.
    #[error("there is no vCPU {index}: this VM has {count} (0 to {})", .count.saturating_sub(1))]
    NoSuchVcpu {
        /// The index asked for.
        index: usize,
        /// How many vCPUs the VM has.
        count: usize,
    },
}

impl Session {
    /// The guest-physical pieces of `[gva, gva + len)` through vCPU `vcpu`'s page tables.
    fn pieces(&self, vcpu: usize, gva: u64, len: usize) -> Result<Vec<(u64, u64)>, MemoryError> {
        self.watch
            .physical_ranges_on(
                WatchRange::Virtual {
                    gva,
                    len: len as u64,
                },
                vcpu,
            )
            .map_err(MemoryError::Translate)
    }

    /// Reads guest-virtual memory, translated through vCPU `vcpu`'s page tables (as of its
    /// last exit: where a paused vCPU is) page by page; returns the guest-physical address of
    /// the first byte.
    pub fn read_virtual(&self, vcpu: usize, gva: u64, buf: &mut [u8]) -> Result<u64, MemoryError> {
        let pieces = self.pieces(vcpu, gva, buf.len())?;
        let first = pieces.first().map_or(0, |p| p.0);
        let mut at = 0usize;
        for (gpa, len) in pieces {
            let piece = &mut buf[at..at + len as usize];
            self.mem
                .read_slice(piece, GuestAddress(gpa))
                .map_err(|source| MemoryError::Access { gpa, source })?;
            at += len as usize;
        }
        Ok(first)
    }

    /// Writes guest-virtual memory, translated as [`Session::read_virtual`] does. The write
    /// goes straight to guest RAM: page watches on the bytes do not report it (it is the
    /// debugger's, not the guest's).
    pub fn write_virtual(&self, vcpu: usize, gva: u64, data: &[u8]) -> Result<(), MemoryError> {
        let _door = self.door();
        let mut at = 0usize;
        for (gpa, len) in self.pieces(vcpu, gva, data.len())? {
            let piece = &data[at..at + len as usize];
            self.mem
                .write_slice(piece, GuestAddress(gpa))
                .map_err(|source| MemoryError::Access { gpa, source })?;
            at += len as usize;
        }
        Ok(())
    }

    /// vCPU `index`'s registers, if it is parked (waiting a moment for it to park).
    pub fn parked_registers(&self, index: usize) -> Option<VcpuRegisters> {
        self.parked.wait(index, std::time::Duration::from_secs(5))
    }

    /// vCPU `index`'s registers and the rest of its state gdb shows (CR8, the kernel GS base,
    /// the x87/SSE state), if it is parked (waiting a moment for it to park).
    pub fn parked_system(
        &self,
        index: usize,
    ) -> Option<(VcpuRegisters, crate::vcpu::parked::SystemState)> {
        self.parked
            .wait_system(index, std::time::Duration::from_secs(5))
    }

    /// Writes vCPU `index`'s x87/SSE state, loaded before it runs again. `false` unless it is
    /// parked.
    pub fn write_fpu(&self, index: usize, fpu: kvm_bindings::kvm_fpu) -> bool {
        let _door = self.door();
        self.parked
            .write_fpu(index, fpu, std::time::Duration::from_secs(5))
    }

    /// Writes vCPU `index`'s general registers, loaded before it runs again. `false` unless
    /// it is parked.
    pub fn write_registers(&self, index: usize, regs: Registers) -> bool {
        let _door = self.door();
        self.parked
            .write(index, regs, std::time::Duration::from_secs(5))
    }

    /// The number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.facts.vcpus as usize
    }

    /// The slot plan as `--show-plan` prints it, with every breakpoint's label.
    pub fn plan_text(&self) -> String {
        let labels: BTreeMap<HostBpId, String> = self
            .breakpoints()
            .into_iter()
            .map(|b| (HostBpId(b.id), format!("{} ({:?})", b.location, b.owner)))
            .collect();
        let mut text =
            plan_view::describe(&self.debug.plan(), &labels, self.debug.caps().exec_note());
        let pages = self.watch.states();
        if !pages.is_empty() {
            text.push_str(&crate::watch::describe_page_watches(&pages));
        }
        text
    }

    /// The probe's table, as `drvisor probe` prints it.
    pub fn probe_text(&self) -> String {
        match &self.probe {
            Some(p) => p.to_string(),
            None => "the capabilities were given, not probed".into(),
        }
    }

    /// The slot policy's name.
    pub fn policy_name(&self) -> &str {
        &self.facts.policy
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.control.is_finished()
    }

    /// The run's exit code, once it has ended.
    pub fn exit_code(&self) -> Option<u8> {
        self.control.outcome().map(|o| o.exit_code())
    }

    /// Runs vCPU `index` for one instruction while every other vCPU stays paused, and returns
    /// once it has parked again (`false` if it did not within `timeout`). The VM must be
    /// paused; this host must deliver single-steps.
    pub fn step(&self, index: usize, timeout: std::time::Duration) -> Result<bool, StepError> {
        if !self.debug.caps().single_step {
            return Err(StepError::NotDelivered);
        }
        if index >= self.vcpu_count() {
            return Err(StepError::NoSuchVcpu {
                index,
                count: self.vcpu_count(),
            });
        }
        let _door = self.door();
        let steps = self.parked.steps(index);
        self.debug.step_one(index);
        let done = self.parked.wait_stepped(index, steps, timeout);
        if !done {
            self.debug.cancel_step(index);
        }
        Ok(done)
    }

    /// Whether every vCPU has parked, waiting up to `timeout`.
    pub fn wait_parked(&self, timeout: std::time::Duration) -> bool {
        self.parked.wait_all(timeout)
    }
}
