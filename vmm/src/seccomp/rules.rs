//! The system calls each kind of drvisor thread may make.
//!
//! The lists were taken from what each thread makes in the whole end-to-end suite, traced
//! (`strace -f -Y`, every call by thread name), plus what Rust's runtime and glibc make on
//! paths the suite rarely takes (a thread's start and end, a panic's message). Adding a
//! call to a list needs a reason in a comment.

use std::collections::BTreeMap;
use std::fmt;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The kinds of drvisor threads, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The main thread once the VM runs: the event loop (the serial console, stdin), then the
    /// run's end (joining the others, the summary, removing its sockets).
    Main,
    /// A vCPU: `KVM_RUN` and the other vCPU ioctls, its devices, its hit callbacks.
    Vcpu,
    /// The REST plane's threads (the tokio runtime's).
    Api,
    /// The gdb stub's threads.
    Gdb,
    /// The events writer.
    Events,
    /// The small helpers: timers, the console-lines reader, the stream feeder, the signal
    /// thread, the kernel image's reader (decompression and parsing: memory calls only).
    Helper,
}

impl fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThreadKind::Main => "main",
            ThreadKind::Vcpu => "vCPU",
            ThreadKind::Api => "REST API",
            ThreadKind::Gdb => "gdb stub",
            ThreadKind::Events => "events writer",
            ThreadKind::Helper => "helper",
        })
    }
}

/// `(name, number)` of every system call the filters name, and of the ones a report is most
/// likely to meet, for [`syscall_name`].
macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name)),*]
    };
}

const NAMES: &[(&str, i64)] = syscalls![
    SYS_accept,
    SYS_accept4,
    SYS_bind,
    SYS_brk,
    SYS_chmod,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_clone,
    SYS_clone3,
    SYS_close,
    SYS_connect,
    SYS_dup,
    SYS_dup2,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_wait,
    SYS_eventfd2,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_fcntl,
    SYS_fdatasync,
    SYS_fork,
    SYS_fstat,
    SYS_fsync,
    SYS_futex,
    SYS_getcwd,
    SYS_getpid,
    SYS_getrandom,
    SYS_getsockname,
    SYS_getsockopt,
    SYS_gettid,
    SYS_ioctl,
    SYS_kill,
    SYS_linkat,
    SYS_listen,
    SYS_lseek,
    SYS_madvise,
    SYS_mkdir,
    SYS_mmap,
    SYS_mount,
    SYS_mprotect,
    SYS_mremap,
    SYS_munmap,
    SYS_nanosleep,
    SYS_newfstatat,
    SYS_open,
    SYS_openat,
    SYS_pipe2,
    SYS_poll,
    SYS_ppoll,
    SYS_prctl,
    SYS_pread64,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_ptrace,
    SYS_pwrite64,
    SYS_read,
    SYS_readv,
    SYS_recvfrom,
    SYS_recvmsg,
    SYS_rename,
    SYS_restart_syscall,
    SYS_rseq,
    SYS_rt_sigaction,
    SYS_rt_sigprocmask,
    SYS_rt_sigreturn,
    SYS_sched_getaffinity,
    SYS_sched_yield,
    SYS_seccomp,
    SYS_sendmsg,
    SYS_sendto,
    SYS_set_robust_list,
    SYS_setsockopt,
    SYS_shutdown,
    SYS_sigaltstack,
    SYS_socket,
    SYS_socketpair,
    SYS_statx,
    SYS_tgkill,
    SYS_unlink,
    SYS_unlinkat,
    SYS_vfork,
    SYS_wait4,
    SYS_write,
    SYS_writev,
];

/// The name of system call `nr`, if it is one [`NAMES`] has.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(_, n)| *n == nr)
        .map(|(name, _)| name.trim_start_matches("SYS_"))
}

/// What every thread makes: memory, locks, time, its own start and end, writing to the fds
/// it was given (stderr, the events file), and the signal mask.
const EVERY_THREAD: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_fcntl,
    libc::SYS_futex,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_gettid,
    libc::SYS_madvise,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_munmap,
    libc::SYS_nanosleep,
    // PR_SET_NAME at a thread's start, PR_GET_NAME in the SIGSYS report.
    libc::SYS_prctl,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    // a thread's further filters (its own list comes first), and those of a thread it starts:
    // a filter can only take calls away
    libc::SYS_seccomp,
    libc::SYS_set_robust_list,
    libc::SYS_sigaltstack,
    libc::SYS_write,
    libc::SYS_writev,
];

/// What each kind makes besides [`EVERY_THREAD`].
fn own_calls(kind: ThreadKind) -> &'static [i64] {
    match kind {
        ThreadKind::Main => &[
            // the event loop: the serial console's input, the done eventfd
            libc::SYS_epoll_create1,
            libc::SYS_epoll_ctl,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_wait,
            libc::SYS_read,
            libc::SYS_poll,
            // wakes of other threads (the socketpairs of the events writer and the signal
            // thread)
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_tgkill,
            // KVM_SET_USER_MEMORY_REGION (a watch removed at the end), see `ioctl_rules`
            libc::SYS_ioctl,
            // the run's end: the sockets' files are removed if they are still ours
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_unlink,
            libc::SYS_shutdown,
        ],
        ThreadKind::Vcpu => &[
            // KVM_RUN and the vCPU ioctls (only KVM's: see `ioctl_rule`)
            libc::SYS_ioctl,
            // the kick signal: installed at the vCPU's start, sent to the others
            libc::SYS_rt_sigaction,
            libc::SYS_tgkill,
            // the wake of the events writer's socketpair
            libc::SYS_sendto,
            libc::SYS_read,
        ],
        ThreadKind::Api => &[
            libc::SYS_accept4,
            libc::SYS_epoll_ctl,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_wait,
            libc::SYS_read,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_shutdown,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
            libc::SYS_getsockname,
            libc::SYS_tgkill,
            // see `ioctl_rules`
            libc::SYS_ioctl,
            // tokio's blocking pool starts threads (clone3 is answered ENOSYS: see `filter`)
            libc::SYS_clone,
            libc::SYS_clone3,
        ],
        ThreadKind::Gdb => &[
            libc::SYS_accept4,
            libc::SYS_poll,
            libc::SYS_read,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_shutdown,
            libc::SYS_setsockopt,
            libc::SYS_getsockopt,
            // see `ioctl_rules`
            libc::SYS_ioctl,
            libc::SYS_tgkill,
            // a stale socket at the path is replaced (the accept thread checks and removes it)
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_unlink,
            // the accept thread starts the one that refuses a second gdb
            libc::SYS_clone,
            libc::SYS_clone3,
        ],
        ThreadKind::Events => &[
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_tgkill,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
        ],
        ThreadKind::Helper => &[
            libc::SYS_read,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_poll,
            libc::SYS_tgkill,
            // the page engine's timer re-maps watched pages (see `ioctl_rules`)
            libc::SYS_ioctl,
        ],
    }
}

/// `ioctl`: a vCPU may make any of KVM's (type 0xAE) on its own fds; the other threads only
/// `KVM_SET_USER_MEMORY_REGION` (the page engine hides and shows watched pages from whichever
/// thread arms, re-maps or removes a watch), FIONBIO (non-blocking sockets) and TCGETS
/// (whether stderr is a terminal).
fn ioctl_rules(kind: ThreadKind) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let arg = |mask: u64, value: u64| {
        SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(mask),
            value,
        )
    };
    let only = |request: u64| SeccompRule::new(vec![arg(0xffff_ffff, request)?]);
    Ok(match kind {
        ThreadKind::Vcpu => vec![SeccompRule::new(vec![arg(0xff00, 0xae00)?])?],
        _ => vec![
            only(KVM_SET_USER_MEMORY_REGION)?,
            only(libc::FIONBIO)?,
            only(libc::TCGETS)?,
        ],
    })
}

/// `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`.
const KVM_SET_USER_MEMORY_REGION: u64 = 0x4020_ae46;

/// The filters of `kind`, in the order to install them, answering a call outside the list
/// with `action`:
/// 1. the list ([`EVERY_THREAD`] and the kind's own);
/// 2. two calls answered with an error instead: `clone3` with ENOSYS (its flags are behind a
///    pointer, where no filter can look; glibc then starts threads with `clone`, whose flags
///    the first filter checks: threads only, no processes), and `openat` with EACCES (glibc's
///    malloc reads `/sys/devices/system/cpu/online` when a thread first needs an arena, and
///    goes on without it; no thread past its start needs to open a file).
pub fn filter(kind: ThreadKind, action: SeccompAction) -> Result<Vec<BpfProgram>, super::Error> {
    let build = |source| super::Error::Build { kind, source };
    let own = own_calls(kind);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = EVERY_THREAD
        .iter()
        .chain(own)
        .map(|&nr| (nr, vec![]))
        .collect();
    if own.contains(&libc::SYS_ioctl) {
        rules.insert(libc::SYS_ioctl, ioctl_rules(kind).map_err(build)?);
    }
    if own.contains(&libc::SYS_clone) {
        rules.insert(libc::SYS_clone, threads_only().map_err(build)?);
    }
    // Answered by the filters below.
    rules.insert(libc::SYS_openat, vec![]);
    rules.insert(libc::SYS_clone3, vec![]);
    let answered = |nr: i64, errno: i32| {
        SeccompFilter::new(
            BTreeMap::from([(nr, vec![])]),
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            TargetArch::x86_64,
        )
    };
    [
        SeccompFilter::new(rules, action, SeccompAction::Allow, TargetArch::x86_64),
        answered(libc::SYS_openat, libc::EACCES),
        answered(libc::SYS_clone3, libc::ENOSYS),
    ]
    .into_iter()
    .map(|f| f.and_then(BpfProgram::try_from).map_err(build))
    .collect()
}

/// `clone` of a thread (CLONE_THREAD set), not of a process.
fn threads_only() -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let thread = libc::CLONE_THREAD as u64;
    let flags = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(thread),
        thread,
    )?;
    Ok(vec![SeccompRule::new(vec![flags])?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_builds_in_both_actions() {
        for kind in [
            ThreadKind::Main,
            ThreadKind::Vcpu,
            ThreadKind::Api,
            ThreadKind::Gdb,
            ThreadKind::Events,
            ThreadKind::Helper,
        ] {
            for action in [SeccompAction::Trap, SeccompAction::Log] {
                let programs = filter(kind, action).unwrap();
                assert_eq!(programs.len(), 3, "{kind}");
                assert!(programs.iter().all(|p| !p.is_empty()), "{kind}");
            }
        }
    }

    #[test]
    fn no_thread_may_start_a_program_or_open_a_socket_it_was_not_given() {
        for kind in [
            ThreadKind::Vcpu,
            ThreadKind::Events,
            ThreadKind::Helper,
            ThreadKind::Main,
        ] {
            for nr in [
                libc::SYS_execve,
                libc::SYS_socket,
                libc::SYS_fork,
                libc::SYS_ptrace,
            ] {
                assert!(
                    !EVERY_THREAD.contains(&nr) && !own_calls(kind).contains(&nr),
                    "{kind} may make {:?}",
                    syscall_name(nr)
                );
            }
        }
    }

    #[test]
    fn names_are_known_for_reports() {
        assert_eq!(syscall_name(libc::SYS_execve), Some("execve"));
        assert_eq!(syscall_name(libc::SYS_ioctl), Some("ioctl"));
        assert_eq!(syscall_name(100_000), None);
    }
}
