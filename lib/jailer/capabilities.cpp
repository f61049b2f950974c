#include "capabilities.hpp"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>

namespace boxlite::jailer {
namespace {

// Indexed by capability number; the kernel may know more than this table (then "CAP_<n>").
constexpr std::array<const char*, 41> kNames = {"CAP_CHOWN",
                                                "CAP_DAC_OVERRIDE",
                                                "CAP_DAC_READ_SEARCH",
                                                "CAP_FOWNER",
                                                "CAP_FSETID",
                                                "CAP_KILL",
                                                "CAP_SETGID",
                                                "CAP_SETUID",
                                                "CAP_SETPCAP",
                                                "CAP_LINUX_IMMUTABLE",
                                                "CAP_NET_BIND_SERVICE",
                                                "CAP_NET_BROADCAST",
                                                "CAP_NET_ADMIN",
                                                "CAP_NET_RAW",
                                                "CAP_IPC_LOCK",
                                                "CAP_IPC_OWNER",
                                                "CAP_SYS_MODULE",
                                                "CAP_SYS_RAWIO",
                                                "CAP_SYS_CHROOT",
                                                "CAP_SYS_PTRACE",
                                                "CAP_SYS_PACCT",
                                                "CAP_SYS_ADMIN",
                                                "CAP_SYS_BOOT",
                                                "CAP_SYS_NICE",
                                                "CAP_SYS_RESOURCE",
                                                "CAP_SYS_TIME",
                                                "CAP_SYS_TTY_CONFIG",
                                                "CAP_MKNOD",
                                                "CAP_LEASE",
                                                "CAP_AUDIT_WRITE",
                                                "CAP_AUDIT_CONTROL",
                                                "CAP_SETFCAP",
                                                "CAP_MAC_OVERRIDE",
                                                "CAP_MAC_ADMIN",
                                                "CAP_SYSLOG",
                                                "CAP_WAKE_ALARM",
                                                "CAP_BLOCK_SUSPEND",
                                                "CAP_AUDIT_READ",
                                                "CAP_PERFMON",
                                                "CAP_BPF",
                                                "CAP_CHECKPOINT_RESTORE"};

}  // namespace

std::string capability_names(CapabilityMask mask) {
    std::string out;
    for (int cap = 0; cap < 64; ++cap) {
        if ((mask & capability_bit(cap)) == 0) continue;
        if (!out.empty()) out += ", ";
        out += static_cast<std::size_t>(cap) < kNames.size() ? std::string(kNames[static_cast<std::size_t>(cap)])
                                                             : "CAP_" + std::to_string(cap);
    }
    return out;
}

CapabilityMask bounding_set() {
    CapabilityMask mask = 0;
    // PR_CAPBSET_READ fails with EINVAL past the last capability this kernel knows.
    for (int cap = 0; cap < 64; ++cap) {
        const int r = ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (r < 0) break;
        if (r == 1) mask |= capability_bit(cap);
    }
    return mask;
}

BoxliteResult<void> restrict_capabilities(CapabilityMask keep) {
    // The bounding set first: dropping needs CAP_SETPCAP in the effective set, which the capset
    // below may remove.
    for (int cap = 0; cap < 64; ++cap) {
        const int r = ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (r < 0) break;
        if (r == 1 && (keep & capability_bit(cap)) == 0 && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            return fail_errno(ErrorKind::Engine,
                              "dropping " + capability_names(capability_bit(cap)) + " from the bounding set", errno);
        }
    }
    // Ambient capabilities would survive the exec of a non-root program; none are wanted.
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
        return fail_errno(ErrorKind::Engine, "clearing the ambient capabilities", errno);
    }
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> data{};
    if (::syscall(SYS_capget, &header, data.data()) != 0) return fail_errno(ErrorKind::Engine, "capget", errno);
    const CapabilityMask permitted = (static_cast<CapabilityMask>(data[1].permitted) << 32 | data[0].permitted) & keep;
    for (std::size_t i = 0; i < data.size(); ++i) {
        const auto word = static_cast<std::uint32_t>(permitted >> (32 * i));
        data[i].permitted = word;
        data[i].effective = word;
        // Empty, as Docker does since CVE-2022-24769: an inheritable set would hand capabilities
        // to programs carrying inheritable file capabilities even when run by non-root users.
        data[i].inheritable = 0;
    }
    if (::syscall(SYS_capset, &header, data.data()) != 0) {
        return fail_errno(ErrorKind::Engine, "capset to " + capability_names(permitted), errno);
    }
    return {};
}

}  // namespace boxlite::jailer
