/* Does a host interrupt get L1 back from an L2 that never exits by itself?
 *
 *   irq-exit sti|cli
 *
 * Runs a real-mode L2 of two instructions, `sti; jmp $` or `cli; jmp $`, with a 1 s SIGALRM
 * armed in L1. With external-interrupt exiting (KVM always sets it) every host interrupt, the
 * timer's included, is a VM exit whatever the guest's RFLAGS.IF: KVM_RUN then returns EINTR
 * within about a second in both cases. If L1's interrupts do not reach it while L2 runs with
 * IF=0, the `cli` case never returns and L1 stops with it.
 *
 * Seen 2026-12-05: on our PVM hosts both return EINTR after 1.0 s; inside the Bochs L1 even the
 * `sti` case never returns, and L1 stops (boot-l1.sh reports it hung). To run it there:
 *   gcc -static -O2 -o target/irq-exit tests/nested-vmx/irq-exit.c
 *   VMX_FILES=$PWD/target/irq-exit tests/nested-vmx/boot-l1.sh target/irq "$PWD/target/irq-exit sti > $PWD/target/irq/sti.txt"
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

static void on_alarm(int sig) { (void)sig; }

int main(int argc, char **argv) {
    int cli = argc > 1 && strcmp(argv[1], "cli") == 0;
    int kvm = open("/dev/kvm", O_RDWR);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    unsigned char *mem = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (kvm < 0 || vm < 0 || mem == MAP_FAILED) { perror("kvm"); return 2; }
    unsigned char code[] = { cli ? 0xfa : 0xfb, 0xeb, 0xfe };
    memcpy(mem + 0x1000, code, sizeof code);
    struct kvm_userspace_memory_region slot = { .memory_size = 0x10000, .userspace_addr = (unsigned long)mem };
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot) < 0 || vcpu < 0) { perror("vcpu"); return 2; }
    struct kvm_run *run = mmap(NULL, ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    struct kvm_sregs sregs;
    ioctl(vcpu, KVM_GET_SREGS, &sregs);
    sregs.cs.base = 0, sregs.cs.selector = 0;
    ioctl(vcpu, KVM_SET_SREGS, &sregs);
    struct kvm_regs regs = { .rip = 0x1000, .rflags = 2 };
    ioctl(vcpu, KVM_SET_REGS, &regs);
    struct sigaction sa = { .sa_handler = on_alarm };
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval t = { .it_value = { .tv_sec = 1 } };
    setitimer(ITIMER_REAL, &t, NULL);
    struct timeval a, b;
    gettimeofday(&a, NULL);
    int r = ioctl(vcpu, KVM_RUN, 0);
    int e = errno;
    gettimeofday(&b, NULL);
    printf("irq-exit %s: KVM_RUN returned %d (%s), exit_reason %d, after %.2f s\n", cli ? "cli" : "sti", r,
           r < 0 ? strerror(e) : "ok", run->exit_reason, (b.tv_sec - a.tv_sec) + (b.tv_usec - a.tv_usec) / 1e6);
    return r < 0 && e == EINTR ? 0 : 1;
}
