// What the guest agent needs from a launch request in a VM: the box's environment, working
// directory, user and resource limits, and where to listen.
//
// It reaches the guest as /boxlite/launch.json (mode 0600: the environment may hold secrets)
// in an extra initramfs archive the shim puts in front of the base initramfs: Linux unpacks
// concatenated archives into the same rootfs (the early-microcode layout: an uncompressed newc
// archive, then the compressed one). The kernel command line is no place for it — x86 Linux cuts
// it at 2047 bytes, takes unknown `a=b` words as init's environment but at most 32 of them,
// drops names with a dot, and consumes those that are parameters of its own.
//
// The document (version 1):
//   {"version": 1, "box_id": "...", "agent_port": 2695,
//    "env": ["KEY=VALUE", ...],            // exactly the main process's environment, in order
//    "working_dir": "/", "user": "",       // user: "uid[:gid]" or a name; "" = root
//    "rlimits": {"nofile": N, "fsize": N, "cpu": N, "nproc": N}}   // each optional
// The agent (PID 1 in the guest) reads it before it serves anything; with the file missing it
// keeps its defaults. Memory needs no limit there: the VM's RAM is the box's memory.
#pragma once

#include <boxlite/error.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite::vmm {

/// Where the launch document appears in the guest, and the directory holding it.
inline constexpr std::string_view kGuestLaunchDir = "boxlite";
inline constexpr std::string_view kGuestLaunchFile = "boxlite/launch.json";

struct GuestLimits {
    std::optional<std::uint64_t> nofile, fsize, cpu, nproc;
    friend bool operator==(const GuestLimits&, const GuestLimits&) = default;
};

struct GuestLaunchConfig {
    std::string box_id;
    std::uint32_t agent_port = 0;
    std::vector<std::pair<std::string, std::string>> env;
    std::string working_dir = "/";
    std::string user;
    GuestLimits rlimits;
};

nlohmann::json to_json_document(const GuestLaunchConfig& config);
/// The inverse (what the agent side does); a Config error names what is malformed.
BoxliteResult<GuestLaunchConfig> parse_guest_launch(std::string_view text);

/// A newc cpio archive holding kGuestLaunchDir and kGuestLaunchFile (0600) with `document`,
/// padded to 4 bytes so another archive can follow it.
std::vector<std::byte> guest_launch_archive(std::string_view document);

/// One file or directory read back from a newc archive (for tests and diagnostics).
struct CpioEntry {
    std::string name;
    std::uint32_t mode = 0;
    std::string data;
};
/// Parses the newc archives at the start of `bytes` up to the first byte that is neither an
/// archive nor padding; a truncated or malformed header is an error.
BoxliteResult<std::vector<CpioEntry>> read_newc_archive(std::span<const std::byte> bytes);

}  // namespace boxlite::vmm
