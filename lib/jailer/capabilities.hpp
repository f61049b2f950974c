// Capabilities of a box's processes.
//
// Root in a namespace box is root on the host kernel (there is no user namespace): what keeps it
// from the host is the capability bounding set, plus the seccomp filter (seccomp_filter.hpp) and
// the masked /proc (namespace_mode.cpp). The box's init cuts the bounding set down before it
// executes the agent, so the agent and every command it runs — including setuid-root programs and
// file capabilities — can hold at most kBoxCapabilities.
//
// kBoxCapabilities is Docker's default set without CAP_MKNOD and CAP_NET_RAW:
//   - Docker keeps MKNOD because its device cgroup decides which nodes may be opened; we have no
//     device cgroup (none at all on cgroup v2 without a BPF program), so a box root that could
//     mknod `b 8 0` would read the host's disk. Without it, the box's devices are the fixed set
//     its init creates in /dev, and every other mount is nodev.
//   - NET_RAW (raw and packet sockets) buys nothing on a loopback-only network and is a
//     long-standing source of kernel bugs; `ping` is the one casualty.
// What the agent needs is all inside the set: SETUID/SETGID (commands as other users), CHOWN,
// FOWNER, FSETID and DAC_OVERRIDE (copy_in with ownership and modes, files of other users), KILL
// (signals to commands of other users, shutdown).
#pragma once

#include <boxlite/error.hpp>

#include <cstdint>
#include <string>

namespace boxlite::jailer {

/// One bit per capability number (CAP_CHOWN = bit 0), as /proc/<pid>/status prints them.
using CapabilityMask = std::uint64_t;

[[nodiscard]] constexpr CapabilityMask capability_bit(int capability) noexcept {
    return CapabilityMask{1} << capability;
}

/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
/// SYS_CHROOT, AUDIT_WRITE, SETFCAP (capability numbers from linux/capability.h).
inline constexpr CapabilityMask kBoxCapabilities = capability_bit(0) | capability_bit(1) | capability_bit(3) |
                                                   capability_bit(4) | capability_bit(5) | capability_bit(6) |
                                                   capability_bit(7) | capability_bit(8) | capability_bit(10) |
                                                   capability_bit(18) | capability_bit(29) | capability_bit(31);

/// "CAP_CHOWN, CAP_DAC_OVERRIDE, …" for the bits of `mask` (unknown bits as "CAP_<n>").
[[nodiscard]] std::string capability_names(CapabilityMask mask);

/// Limits this process and everything it will execute to `keep`: every other capability leaves
/// the bounding set; the ambient and inheritable sets are emptied; permitted and effective become
/// `keep` (intersected with what the process has). Needs CAP_SETPCAP. Irreversible.
[[nodiscard]] BoxliteResult<void> restrict_capabilities(CapabilityMask keep);

/// The calling process's bounding set, probed capability by capability.
[[nodiscard]] CapabilityMask bounding_set();

}  // namespace boxlite::jailer
