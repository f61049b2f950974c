#include "seccomp_filter.hpp"

#include <sched.h>
#include <seccomp.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

namespace boxlite::jailer {
namespace {

constexpr std::array<std::string_view, 54> kDenied = {
    // The host kernel and machine.
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms",
    "query_module", "reboot", "swapon", "swapoff", "acct", "iopl", "ioperm", "settimeofday", "clock_settime",
    "clock_adjtime", "stime", "syslog",
    // Mounts and namespaces, fixed once the box is set up.
    "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "mount_setattr", "setns",
    // Kernel attack surface and host-wide state.
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl",
    "add_key", "request_key", "open_by_handle_at", "name_to_handle_at", "kcmp", "lookup_dcookie", "quotactl",
    "quotactl_fd", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old", "fanotify_init"};

constexpr std::array<unsigned long, 7> kCloneNamespaceFlags = {CLONE_NEWNS,  CLONE_NEWCGROUP, CLONE_NEWUTS,
                                                               CLONE_NEWIPC, CLONE_NEWUSER,   CLONE_NEWPID,
                                                               CLONE_NEWNET};

struct ContextDeleter {
    void operator()(void* ctx) const noexcept { seccomp_release(ctx); }
};
using Context = std::unique_ptr<void, ContextDeleter>;

BoxliteResult<void> check(int rc, const std::string& what) {
    if (rc == 0) return {};
    return fail_errno(ErrorKind::Engine, "seccomp: " + what, -rc);
}

}  // namespace

std::span<const std::string_view> denied_syscalls() { return kDenied; }

BoxliteResult<void> install_box_seccomp_filter(const SeccompOptions& options) {
    Context ctx(seccomp_init(SCMP_ACT_ALLOW));
    if (!ctx) return fail(ErrorKind::Engine, "seccomp: cannot create a filter (seccomp_init failed)");
    BOXLITE_TRY_VOID(check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, options.no_new_privs ? 1 : 0),
                           "setting the no_new_privs attribute"));
#if defined(__x86_64__)
    for (const auto arch : {SCMP_ARCH_X86, SCMP_ARCH_X32}) {
        const int rc = seccomp_arch_add(ctx.get(), arch);
        if (rc != 0 && rc != -EEXIST) return check(rc, "adding the 32-bit system call tables");
    }
#endif
    const auto deny = SCMP_ACT_ERRNO(EPERM);
    for (const auto name : kDenied) {
        const int nr = seccomp_syscall_resolve_name(std::string(name).c_str());
        if (nr == __NR_SCMP_ERROR) continue;  // unknown to this libseccomp: nothing to filter
        BOXLITE_TRY_VOID(check(seccomp_rule_add(ctx.get(), deny, nr, 0), "denying " + std::string(name)));
    }
    // unshare() and clone() are fine for threads and processes, not for new namespaces. Rules
    // for one call are alternatives: any one namespace bit is enough for EPERM.
    for (const auto flag : kCloneNamespaceFlags) {
        BOXLITE_TRY_VOID(
            check(seccomp_rule_add(ctx.get(), deny, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)),
                  "restricting clone"));
    }
    for (const auto flag : kCloneNamespaceFlags) {
        BOXLITE_TRY_VOID(
            check(seccomp_rule_add(ctx.get(), deny, SCMP_SYS(unshare), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)),
                  "restricting unshare"));
    }
    // CLONE_NEWTIME's bit is part of clone()'s exit-signal field, so only unshare() is checked.
    BOXLITE_TRY_VOID(check(seccomp_rule_add(ctx.get(), deny, SCMP_SYS(unshare), 1,
                                            SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWTIME, CLONE_NEWTIME)),
                           "restricting unshare"));
    BOXLITE_TRY_VOID(
        check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0), "answering clone3"));
    return check(seccomp_load(ctx.get()), "loading the filter");
}

}  // namespace boxlite::jailer
