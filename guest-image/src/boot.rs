//! PVH entry: 32-bit protected mode -> 64-bit long mode, per-CPU stacks, then `drv_main`.
//!
//! Every vCPU enters at `pvh_entry` at the same time (no INIT/SIPI), in 32-bit protected mode
//! with paging off, flat segments, interrupts off and EBX = physical address of the shared
//! `hvm_start_info`. Each CPU:
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
