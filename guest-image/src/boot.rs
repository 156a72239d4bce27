//! PVH entry: 32-bit protected mode -> 64-bit long mode, per-CPU stacks, then `drv_main`.
//!
//! The boot CPU enters at `pvh_entry` in 32-bit protected mode with paging off, flat segments,
//! interrupts off and EBX = physical address of the `hvm_start_info`. It starts the other CPUs
//! with INIT/SIPI ([`start_aps`]): each runs the real-mode trampoline `drv_tramp_start`, copied
//! to [`TRAMPOLINE`], which switches to the same protected-mode state and jumps to `pvh_entry`
//! with the same EBX. Each CPU then:
//!   1. loads our GDT (64-bit code at 0x08, flat data at 0x10),
//!   2. reads its index from CPUID.1:EBX[31:24] (initial APIC ID),
//!   3. enables PAE, loads CR3 with the static page tables, sets EFER.LME, enables paging,
//!   4. far-jumps to 64-bit code, picks stack `index` (16 KiB each, `MAX_CPUS` of them),
//!   5. calls `drv_main(cpu_index, start_info_paddr)`.
//!
//! A CPU whose index is >= `MAX_CPUS` parks immediately (`cli; hlt` loop), and so does a CPU
//! whose index another CPU already claimed (counted in `drv_dup_cpus`, see `dup_cpus`).
//!
//! The page tables identity-map the first 4 GiB with 2 MiB pages. They are static data (nothing
//! writes them at run time) and have the Accessed/Dirty bits preset so the CPU never has to
//! update them either; the GDT descriptors likewise have their Accessed bits preset.

/// Number of CPUs with a stack. Must match `.rept`/`.skip` sizes in the asm below.
pub const MAX_CPUS: usize = 32;
/// Per-CPU stack size (log2 = 14). Must match the shift in the asm below.
pub const STACK_SIZE: usize = 16 * 1024;

core::arch::global_asm!(
    r#"
    /* ---- Xen PVH note: XEN_ELFNOTE_PHYS32_ENTRY (18) = 32-bit physical entry point ---- */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 4                 /* descsz */
    .long 18                /* type: XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_entry
    .balign 4
    .popsection

    /* ---- 32-bit entry ---- */
    .pushsection .text.boot, "ax"
    .code32
    .global pvh_entry
    .type pvh_entry, @function
pvh_entry:
    cli
    cld
    movl %ebx, %esi                 /* esi = hvm_start_info paddr (cpuid clobbers ebx) */
    lgdt drv_gdt_desc

    movl $1, %eax
    cpuid
    shrl $24, %ebx
    movl %ebx, %edi                 /* edi = initial APIC ID = vCPU index */

    movl %cr4, %eax
    orl $0x20, %eax                 /* CR4.PAE */
    movl %eax, %cr4

    movl $drv_pml4, %eax
    movl %eax, %cr3

    movl $0xC0000080, %ecx          /* IA32_EFER */
    rdmsr
    orl $0x100, %eax                /* EFER.LME */
    wrmsr

    movl %cr0, %eax
    orl $0x80000001, %eax           /* CR0.PG | CR0.PE */
    movl %eax, %cr0

    ljmp $0x08, $drv_entry64
    .size pvh_entry, . - pvh_entry

    /* ---- 64-bit entry ---- */
    .code64
    .type drv_entry64, @function
drv_entry64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs

    movl %edi, %edi                 /* zero-extend: upper halves are undefined after the switch */
    movl %esi, %esi
    cmpl $32, %edi                  /* MAX_CPUS */
    jae drv_park

    /* Claim the index: a second CPU with the same CPUID.1:EBX[31:24] (VMM did not set the
       APIC IDs per vCPU) must not share the stack; it parks and is counted instead. */
    movb $1, %al
    xchgb %al, drv_cpu_claimed(%rdi)
    testb %al, %al
    jnz drv_dup_cpu

    leaq 1(%rdi), %rax
    shlq $14, %rax                  /* (index + 1) * STACK_SIZE */
    leaq drv_stacks(%rax), %rsp     /* top of this CPU's stack */
    xorl %ebp, %ebp
    call drv_main                   /* (edi = cpu index, esi = start_info paddr), never returns */

drv_dup_cpu:
    lock incl drv_dup_cpus
    .global drv_park
drv_park:
    cli
    hlt
    jmp drv_park
    .size drv_entry64, . - drv_entry64
    .popsection

    /* ---- AP trampoline: copied to 0x1000 (SIPI vector 0x01) by start_aps, run in real mode ---- */
    .pushsection .rodata.drv_trampoline, "a"
    .code16
    .global drv_tramp_start
drv_tramp_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (drv_tramp_gdt_desc - drv_tramp_start + 0x1000)
    movl %cr0, %eax
    orl $1, %eax                    /* CR0.PE */
    movl %eax, %cr0
    ljmpl $0x08, $(drv_tramp_32 - drv_tramp_start + 0x1000)
    .code32
drv_tramp_32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl (drv_tramp_start_info - drv_tramp_start + 0x1000), %ebx
    movl $pvh_entry, %eax
    jmp *%eax
    .balign 8
drv_tramp_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff        /* 0x08: flat 32-bit code, accessed */
    .quad 0x00cf93000000ffff        /* 0x10: flat data, accessed */
drv_tramp_gdt_desc:
    .word 23
    .long drv_tramp_gdt - drv_tramp_start + 0x1000
    .global drv_tramp_start_info
drv_tramp_start_info:
    .long 0                         /* start_info paddr, written into the copy */
    .global drv_tramp_end
drv_tramp_end:
    .code64
    .popsection

    /* ---- GDT (in .data: it must be writable memory, although the Accessed bits are preset) ---- */
    .pushsection .data, "aw"
    .balign 16
drv_gdt:
    .quad 0                         /* 0x00: null */
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code, DPL0, accessed */
    .quad 0x00cf93000000ffff        /* 0x10: flat 4 GiB data, DPL0, accessed */
drv_gdt_end:
    .balign 8
drv_gdt_desc:
    .word drv_gdt_end - drv_gdt - 1
    .quad drv_gdt                   /* 32-bit lgdt reads only the low 4 bytes */
    .popsection

    /* ---- static page tables: identity map 0..4 GiB with 2 MiB pages ---- */
    .pushsection .data.drv_pagetables, "aw"
    .balign 4096
    .global drv_pml4
drv_pml4:
    .quad drv_pdpt + 0x23           /* present | writable | accessed */
    .fill 511, 8, 0
drv_pdpt:
    .quad drv_pd + 0x0000 + 0x23
    .quad drv_pd + 0x1000 + 0x23
    .quad drv_pd + 0x2000 + 0x23
    .quad drv_pd + 0x3000 + 0x23
    .fill 508, 8, 0
drv_pd:
    .set drv_pd_i, 0
    .rept 2048
    .quad (drv_pd_i << 21) + 0xe3   /* present | writable | accessed | dirty | 2 MiB page */
    .set drv_pd_i, drv_pd_i + 1
    .endr
    .popsection

    /* ---- per-CPU stacks: 32 x 16 KiB, 16 KiB aligned so the index can be derived from RSP ---- */
    .pushsection .bss.drv_stacks, "aw", @nobits
    .balign 16384
    .global drv_stacks
drv_stacks:
    .skip 32 * 16384
    .global drv_stacks_end
drv_stacks_end:
drv_cpu_claimed:
    .skip 32                        /* one byte per CPU index, set by xchg at boot */
    .balign 4
    .global drv_dup_cpus
drv_dup_cpus:
    .long 0                         /* CPUs that found their index already claimed */
    .popsection
"#,
    options(att_syntax)
);

extern "C" {
    static drv_stacks: u8;
    static drv_dup_cpus: core::sync::atomic::AtomicU32;
    static drv_tramp_start: u8;
    static drv_tramp_start_info: u8;
    static drv_tramp_end: u8;
}

/// Where the AP trampoline runs: SIPI vector 0x01. Free RAM in drvisor's (and QEMU's) low
/// memory: below drvisor's `hvm_start_info` at 0x6000, above its boot GDT at 0x500.
pub const TRAMPOLINE: usize = 0x1000;
/// The local APIC's registers (xAPIC mode, KVM's in-kernel LAPIC), identity-mapped.
const APIC_ICR_LOW: usize = 0xfee0_0300;
const APIC_ICR_HIGH: usize = 0xfee0_0310;
/// The spurious-interrupt vector register; bit 8 software-enables the APIC.
const APIC_SVR: usize = 0xfee0_00f0;
const SVR_ENABLE: u32 = 1 << 8;
/// ICR: delivery status (send pending).
const ICR_PENDING: u32 = 1 << 12;
/// ICR: INIT, level assert.
const ICR_INIT: u32 = 0x4500;
/// ICR: start-up, level assert; the low byte is the vector (start address >> 12).
const ICR_STARTUP: u32 = 0x4600;

/// Sends one IPI with `low` to the CPU with APIC ID `apic_id`, and waits until it is sent.
fn send_ipi(apic_id: u32, low: u32) {
    // SAFETY: the xAPIC ICR registers, identity-mapped by the static page tables; KVM's
    // in-kernel LAPIC serves them. Volatile: each access is a register access.
    unsafe {
        core::ptr::write_volatile(APIC_ICR_HIGH as *mut u32, apic_id << 24);
        core::ptr::write_volatile(APIC_ICR_LOW as *mut u32, low);
        while core::ptr::read_volatile(APIC_ICR_LOW as *const u32) & ICR_PENDING != 0 {
            core::hint::spin_loop();
        }
    }
}

/// Starts CPUs 1..`ncpus` (APIC IDs = indexes, as drvisor assigns them) with INIT and SIPI at
/// the trampoline, which enters `pvh_entry` with EBX = `start_info_paddr`.
pub fn start_aps(start_info_paddr: u32, ncpus: u32) {
    // SAFETY: only the addresses of the asm-defined trampoline bounds are taken; the copy goes
    // to identity-mapped low RAM that nothing else uses (see TRAMPOLINE), before any AP runs.
    unsafe {
        let start = core::ptr::addr_of!(drv_tramp_start);
        let len = core::ptr::addr_of!(drv_tramp_end) as usize - start as usize;
        let info_at = core::ptr::addr_of!(drv_tramp_start_info) as usize - start as usize;
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len);
        core::ptr::write_volatile((TRAMPOLINE + info_at) as *mut u32, start_info_paddr);
    }
    // SAFETY: the xAPIC spurious-vector register, identity-mapped like the ICR.
    unsafe { core::ptr::write_volatile(APIC_SVR as *mut u32, SVR_ENABLE | 0xff) };
    for apic_id in 1..ncpus.min(MAX_CPUS as u32) {
        send_ipi(apic_id, ICR_INIT);
        send_ipi(apic_id, ICR_STARTUP | (TRAMPOLINE >> 12) as u32);
    }
}

/// Number of CPUs that parked at boot because their CPUID.1:EBX[31:24] index was already taken
/// (a VMM that does not set a distinct initial APIC ID per vCPU).
pub fn dup_cpus() -> u32 {
    // SAFETY: a 4-byte aligned counter in .bss, only ever modified with `lock inc`.
    unsafe { drv_dup_cpus.load(core::sync::atomic::Ordering::Acquire) }
}

/// Index of the CPU running this code, derived from which 16 KiB stack RSP lies in.
/// Cheap (no CPUID exit); valid anywhere after `drv_entry64` set up the stack.
#[inline(always)]
pub fn cpu_index() -> usize {
    let rsp: usize;
    // SAFETY: reads RSP only; no memory access, no flags change.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    // Only the address of the asm-defined symbol is taken (safe), it is never read here.
    let base = core::ptr::addr_of!(drv_stacks) as usize;
    // RSP is strictly inside (stack_bottom, stack_top] while running; `- 1` maps the top to
    // its own stack.
    rsp.wrapping_sub(base).wrapping_sub(1) / STACK_SIZE
}

/// Stop this CPU for good: `cli; hlt` loop.
pub fn park() -> ! {
    loop {
        // SAFETY: cli/hlt only stop this CPU; interrupts are never used by this kernel.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
