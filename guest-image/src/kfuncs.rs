//! Targets that start the way compiled kernel functions do, for breakpoints resumed by
//! emulation: `drv_kfunc_0..3`, each written out in assembly so every byte is known:
//!
//! ```text
//! drv_kfunc_K:        f3 0f 1e fa              endbr64
//! drv_kfunc_K_nop5:   0f 1f 44 00 00           nopl 0x0(%rax,%rax,1)   (ftrace's NOP)
//! drv_kfunc_K_push:   55                       push %rbp
//! drv_kfunc_K_mov:    48 89 e5                 mov %rsp,%rbp
//! drv_kfunc_K_sub:    48 83 ec 10              sub $0x10,%rsp
//! drv_kfunc_K_inc:    f0 48 ff 05 .. .. .. ..  lock incq KFUNC_CALLS[K](%rip)
//!                     c9                       leave
//!                     c3                       ret
//! ```
//!
//! Every instruction has its own symbol, so a host breakpoint can be put on each path: the
//! first five are emulated by drvisor, `lock inc` is stepped over.

use core::sync::atomic::AtomicU64;

/// `KFUNC_CALLS[K]` = calls of `drv_kfunc_K` since boot, over all CPUs (its `lock incq`).
#[no_mangle]
pub static KFUNC_CALLS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

core::arch::global_asm!(
    r#"
    .pushsection .text.drv_kfunc, "ax"
    .macro DRV_KFUNC k
    .globl drv_kfunc_\k, drv_kfunc_\k\()_nop5, drv_kfunc_\k\()_push
    .globl drv_kfunc_\k\()_mov, drv_kfunc_\k\()_sub, drv_kfunc_\k\()_inc
    .type drv_kfunc_\k, @function
    .type drv_kfunc_\k\()_nop5, @function
    .type drv_kfunc_\k\()_push, @function
    .type drv_kfunc_\k\()_mov, @function
    .type drv_kfunc_\k\()_sub, @function
    .type drv_kfunc_\k\()_inc, @function
    .p2align 4
drv_kfunc_\k:
    .byte 0xf3, 0x0f, 0x1e, 0xfa
drv_kfunc_\k\()_nop5:
    .byte 0x0f, 0x1f, 0x44, 0x00, 0x00
drv_kfunc_\k\()_push:
    push %rbp
drv_kfunc_\k\()_mov:
    .byte 0x48, 0x89, 0xe5
drv_kfunc_\k\()_sub:
    .byte 0x48, 0x83, 0xec, 0x10
drv_kfunc_\k\()_inc:
    lock incq KFUNC_CALLS+8*\k(%rip)
    leave
    ret
    .size drv_kfunc_\k, . - drv_kfunc_\k
    .endm
    DRV_KFUNC 0
    DRV_KFUNC 1
    DRV_KFUNC 2
    DRV_KFUNC 3
    .popsection
"#,
    options(att_syntax)
);

extern "C" {
    fn drv_kfunc_0();
    fn drv_kfunc_1();
    fn drv_kfunc_2();
    fn drv_kfunc_3();
    fn drv_kfunc_0_inc();
    fn drv_kfunc_1_inc();
    fn drv_kfunc_2_inc();
    fn drv_kfunc_3_inc();
}

/// Entry address of `drv_kfunc_K`.
pub fn kfunc_addr(k: u8) -> u64 {
    let f: unsafe extern "C" fn() = match k {
        0 => drv_kfunc_0,
        1 => drv_kfunc_1,
        2 => drv_kfunc_2,
        _ => drv_kfunc_3,
    };
    f as usize as u64
}

/// Address of `drv_kfunc_K_inc`, its `lock incq`.
pub fn kfunc_inc_addr(k: u8) -> u64 {
    let f: unsafe extern "C" fn() = match k {
        0 => drv_kfunc_0_inc,
        1 => drv_kfunc_1_inc,
        2 => drv_kfunc_2_inc,
        _ => drv_kfunc_3_inc,
    };
    f as usize as u64
}

/// Calls `drv_kfunc_0..3` in turn, `count` times each; returns the calls made.
pub fn kfunc_loop(count: u64) -> u64 {
    for _ in 0..count {
        // SAFETY: the functions above follow the C ABI: they keep every callee-saved register
        // (rbp through push/leave, rsp through leave/ret) and touch only KFUNC_CALLS.
        unsafe {
            drv_kfunc_0();
            drv_kfunc_1();
            drv_kfunc_2();
            drv_kfunc_3();
        }
    }
    count * 4
}
