//! A throwaway VM for one probe experiment: 4 MiB of RAM, one vCPU already in 64-bit mode at
//! CPL0 or CPL3, code at [`CODE`], a data page at [`DATA`]. It mirrors `kvm-probe.c`, so the two
//! measure the same thing.

use kvm_bindings::{
    kvm_guest_debug, kvm_regs, kvm_segment, kvm_userspace_memory_region, KVM_MEM_READONLY,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Where the probe's code runs.
pub const CODE: u64 = 0x10_0000;
/// The probe's data page.
pub const DATA: u64 = 0x20_0000;
const MEM_SIZE: usize = 4 << 20;
const PML4: u64 = 0x9000;
const GDT: u64 = 0x500;
const IDT: u64 = 0x600;
/// Where the #DB-reporting exception stubs live (one per vector, 16 bytes apart).
pub const HANDLERS: u64 = CODE + 0x100;

/// Errors from a probe VM.
pub type Result<T> = std::result::Result<T, kvm_ioctls::Error>;

/// How one run of the probe vCPU ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// KVM_EXIT_DEBUG with DR6.
    Debug {
        /// DR6 as KVM reported it.
        dr6: u64,
    },
    /// KVM_EXIT_IO out, with its port and first byte.
    IoOut {
        /// Port.
        port: u16,
        /// First data byte.
        value: u8,
    },
    /// KVM_EXIT_MMIO.
    Mmio {
        /// Guest-physical address.
        addr: u64,
        /// Access length.
        len: usize,
        /// Write or read.
        write: bool,
    },
    /// KVM_EXIT_HLT.
    Hlt,
    /// KVM_EXIT_INTERNAL_ERROR.
    InternalError,
    /// Anything else, by KVM exit number.
    Other(u32),
}

impl Stop {
    /// The KVM exit-reason number, as `kvm-probe.c` prints it.
    pub fn exit_number(&self) -> u32 {
        match self {
            Stop::Debug { .. } => kvm_bindings::KVM_EXIT_DEBUG,
            Stop::IoOut { .. } => kvm_bindings::KVM_EXIT_IO,
            Stop::Mmio { .. } => kvm_bindings::KVM_EXIT_MMIO,
            Stop::Hlt => kvm_bindings::KVM_EXIT_HLT,
            Stop::InternalError => kvm_bindings::KVM_EXIT_INTERNAL_ERROR,
            Stop::Other(n) => *n,
        }
    }
}

/// One probe VM.
pub struct TinyVm {
    _vm: VmFd,
    /// Its only vCPU.
    pub vcpu: VcpuFd,
    /// Its RAM, which KVM maps for as long as the VM lives: private, so that no caller can
    /// replace it and leave the guest writing into freed memory.
    mem: GuestMemoryMmap,
}

impl TinyVm {
    /// Its RAM.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The vCPU and the RAM together (for a debug seam that needs both).
    pub fn vcpu_and_mem(&mut self) -> (&mut VcpuFd, &GuestMemoryMmap) {
        (&mut self.vcpu, &self.mem)
    }

    /// A VM whose vCPU runs `code` at [`CODE`] at privilege level `cpl` (0 or 3). With
    /// `readonly_data`, the page at [`DATA`] is a read-only memslot.
    pub fn new(kvm: &Kvm, cpl: u8, readonly_data: bool, code: &[u8]) -> Result<TinyVm> {
        let vm = kvm.create_vm()?;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
            .map_err(|_| kvm_ioctls::Error::new(libc::ENOMEM))?;
        let host = mem.iter().next().map(|r| r.as_ptr() as u64).unwrap_or(0);
        let slots: Vec<(u64, u64, u32)> = if readonly_data {
            vec![
                (0, DATA, 0),
                (DATA, 0x1000, KVM_MEM_READONLY),
                (DATA + 0x1000, MEM_SIZE as u64 - DATA - 0x1000, 0),
            ]
        } else {
            vec![(0, MEM_SIZE as u64, 0)]
        };
        for (slot, (gpa, size, flags)) in slots.into_iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags,
                guest_phys_addr: gpa,
                memory_size: size,
                userspace_addr: host + gpa,
            };
            // SAFETY: the range lies inside `mem`, which lives as long as this VM.
            unsafe { vm.set_user_memory_region(region)? };
        }
        let write = |v: u64, at: u64| mem.write_obj(v, GuestAddress(at));
        let _ = write(0xa000 | 7, PML4);
        let _ = write(0xb000 | 7, 0xa000);
        let _ = write(0x87, 0xb000); // 0-2 MiB: one user-accessible 2 MiB page
        let _ = write(0xc000 | 7, 0xb008); // 2-4 MiB: 4 KiB pages, so DATA is its own page
        for i in 0..512u64 {
            let _ = write((DATA + i * 0x1000) | 7, 0xc000 + 8 * i);
        }
        let _ = mem.write_slice(code, GuestAddress(CODE));

        let vcpu = vm.create_vcpu(0)?;
        let mut sregs = vcpu.get_sregs()?;
        sregs.cr3 = PML4;
        sregs.cr4 = 0x20; // PAE
        sregs.cr0 = 0x8000_0031; // PG | NE | ET | PE
        sregs.efer = 0x500; // LMA | LME
        let seg = |selector: u16, type_: u8, l: u8, db: u8| kvm_segment {
            limit: 0xffff_ffff,
            selector: selector | u16::from(cpl),
            type_,
            present: 1,
            dpl: cpl,
            s: 1,
            l,
            db,
            g: 1,
            ..Default::default()
        };
        sregs.cs = seg(8, 11, 1, 0);
        let ds = seg(16, 3, 0, 1);
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (ds, ds, ds, ds, ds);
        vcpu.set_sregs(&sregs)?;
        vcpu.set_regs(&kvm_regs {
            rip: CODE,
            rflags: 2,
            rsp: 0x8_0000,
            ..Default::default()
        })?;
        Ok(TinyVm { _vm: vm, vcpu, mem })
    }

    /// Installs a 64-bit GDT and an IDT whose 32 exception vectors each run
    /// `mov al, vector; out 0x10, al; hlt`, so a delivered exception shows as an `out` to 0x10.
    pub fn install_reporting_idt(&mut self) -> Result<()> {
        let _ = self
            .mem
            .write_obj(0x0020_9a00_0000_0000u64, GuestAddress(GDT + 8));
        let _ = self
            .mem
            .write_obj(0x0000_9200_0000_0000u64, GuestAddress(GDT + 16));
        for vector in 0..32u64 {
            let handler = HANDLERS + vector * 16;
            let mut gate = [0u8; 16];
            gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
            gate[2] = 8; // code selector
            gate[5] = 0x8e; // present, DPL0, 64-bit interrupt gate
            gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
            let _ = self.mem.write_slice(&gate, GuestAddress(IDT + vector * 16));
            let stub = [0xb0, vector as u8, 0xe6, 0x10, 0xf4];
            let _ = self.mem.write_slice(&stub, GuestAddress(handler));
        }
        let mut sregs = self.vcpu.get_sregs()?;
        sregs.gdt.base = GDT;
        sregs.gdt.limit = 23;
        sregs.idt.base = IDT;
        sregs.idt.limit = 32 * 16 - 1;
        self.vcpu.set_sregs(&sregs)
    }

    /// `KVM_SET_GUEST_DEBUG` with `control`, DR0-3 and DR7.
    pub fn guest_debug(&self, control: u32, dr: [u64; 4], dr7: u64) -> Result<()> {
        let mut dbg = kvm_guest_debug {
            control,
            ..Default::default()
        };
        dbg.arch.debugreg[..4].copy_from_slice(&dr);
        dbg.arch.debugreg[7] = dr7;
        self.vcpu.set_guest_debug(&dbg)
    }

    /// Runs until the first exit and returns it with RIP after the exit.
    pub fn run(&mut self) -> Result<(Stop, u64)> {
        let (stop, _) = self.run_raw()?;
        Ok((stop, self.vcpu.get_regs()?.rip))
    }

    /// Runs until the first exit and returns it with what the exit itself reports of where the
    /// vCPU is (`debug.arch.pc` for a #DB exit; 0 otherwise), without reading registers: the
    /// benchmarks' loop, which must cost what a VMM's exit loop costs.
    pub fn run_raw(&mut self) -> Result<(Stop, u64)> {
        let stop = match self.vcpu.run()? {
            VcpuExit::Debug(arch) => return Ok((Stop::Debug { dr6: arch.dr6 }, arch.pc)),
            VcpuExit::IoOut(port, data) => Stop::IoOut {
                port,
                value: data.first().copied().unwrap_or(0),
            },
            VcpuExit::MmioWrite(addr, data) => Stop::Mmio {
                addr,
                len: data.len(),
                write: true,
            },
            VcpuExit::MmioRead(addr, data) => Stop::Mmio {
                addr,
                len: data.len(),
                write: false,
            },
            VcpuExit::Hlt => Stop::Hlt,
            VcpuExit::InternalError => Stop::InternalError,
            _ => Stop::Other(self.vcpu.get_kvm_run().exit_reason),
        };
        Ok((stop, 0))
    }
}
