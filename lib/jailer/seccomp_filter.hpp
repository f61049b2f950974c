// The seccomp filter of a namespace box: a denylist of system calls a container has no business
// making, each answered with EPERM (clone3 with ENOSYS, below). Everything else is allowed.
//
// A denylist rather than Docker's allowlist: the box runs arbitrary images, and an allowlist that
// lags behind the kernel breaks programs for no gain once the dangerous calls are out. The calls
// fall into groups:
//   - change the host kernel or machine: kexec_*, *_module, reboot, swapon/swapoff, acct,
//     iopl/ioperm, settimeofday/clock_settime/clock_adjtime/stime, syslog (the host's kernel log);
//   - rearrange mounts or namespaces after the box was set up: mount, umount(2), pivot_root, the
//     new mount API (fsopen, fsconfig, fsmount, fspick, move_mount, open_tree, mount_setattr),
//     setns, and unshare/clone asking for any CLONE_NEW* flag (a user namespace needs no
//     capability, and inside one the rest of the kernel's attack surface opens up again);
//   - large kernel attack surface or host-wide state no box needs: bpf, perf_event_open,
//     userfaultfd, io_uring_*, keyctl/add_key/request_key (the keyring is not namespaced),
//     open_by_handle_at/name_to_handle_at (file handles walk around the mount root), kcmp,
//     lookup_dcookie, quotactl(_fd), nfsservctl, uselib, ustat, sysfs, _sysctl, vm86(old),
//     fanotify_init, and the long-gone create_module, get_kernel_syms, query_module.
// Most of these would also fail for lack of a capability; the filter is the second wall, and the
// only one for user namespaces, userfaultfd, io_uring, keyrings, bpf and perf (which unprivileged
// processes may use on many kernels).
//
// clone3 passes its flags in memory, where a filter cannot look; it gets ENOSYS, so C libraries
// fall back to clone(), whose flags the filter does check.
//
// On x86_64 the filter also covers the i386 and x32 system call tables, so 32-bit programs run
// under the same rules; calls from any other ABI kill the process.
#pragma once

#include <boxlite/error.hpp>

#include <span>
#include <string_view>

namespace boxlite::jailer {

struct SeccompOptions {
    /// Also set no_new_privs: setuid programs and file capabilities then grant nothing.
    bool no_new_privs = false;
};

/// The system calls the filter answers with EPERM unconditionally (names as libseccomp knows
/// them; ones unknown to it or to this architecture are skipped).
[[nodiscard]] std::span<const std::string_view> denied_syscalls();

/// Installs the filter on the calling thread; it is inherited by every child and survives exec.
/// Without no_new_privs this needs CAP_SYS_ADMIN, so call it before dropping capabilities.
[[nodiscard]] BoxliteResult<void> install_box_seccomp_filter(const SeccompOptions& options);

}  // namespace boxlite::jailer
