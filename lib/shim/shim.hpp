// boxlite-shim: the per-box process between the runtime and the box.
//
//   boxlite-shim <mode> [options]      modes: namespace (namespace_mode.cpp); kvm, which execs
//                                      boxlite-shim-kvm beside it (kvm_main.cpp, kvm_mode.cpp)
//
// The runtime (an Engine's start()) spawns it detached from its own process tree, passes a
// pipe as --ready-fd and reads one line back: "ok <agent-pid>" once the guest agent accepts
// connections at --socket, or "error <message>". With --watchdog-fd the shim watches the other
// end of a pipe the creating process holds: when it closes (the creator exited), the box is
// killed — that is how `detach=false` boxes die with their creator. With --ready-ack on, the
// ready fd is a socket, and after "ok" the shim waits for the runtime's one-byte answer that the
// box is recorded: a starter killed before it answers takes the box with it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace boxlite::shim {

struct VolumeMount {
    std::string host_path;
    std::string guest_path;
    bool read_only = false;
};

/// A published port as passt's -t/-u takes it: "[ADDR/]HOSTPORT:BOXPORT".
struct PublishedPort {
    bool udp = false;
    std::string spec;
};

struct ShimOptions {
    std::string mode;
    std::string box_id;
    std::string hostname;
    std::string box_dir;
    std::string rootfs;
    std::string agent;
    std::string socket;
    int ready_fd = -1;
    /// --ready-ack on: after "ok" the shim waits for one byte back on the ready fd (a socket)
    /// saying the runtime recorded the box; EOF instead (the starter died) ends the box.
    bool ready_ack = false;
    /// --upper volatile: the box's upper layer goes with the box (an auto-remove box), so the
    /// overlay is mounted with `volatile`: its unmount, when the box's last process exits, skips
    /// syncing the host filesystem under the upper layer (a whole-filesystem sync on the stop path,
    /// flushing every other process's dirty data too). "durable" (the default) keeps the sync.
    bool volatile_upper = false;
    /// --lock-fd N: the box's lock file (flock'ed by the starter, shared with us), held until
    /// the runtime has recorded the box, so nobody works on a box still being set up.
    int lock_fd = -1;
    int watchdog_fd = -1;
    std::optional<std::uint64_t> memory_bytes;
    std::optional<std::uint32_t> cpus;
    std::optional<std::uint64_t> pids;
    std::optional<std::uint64_t> nofile;
    std::optional<std::uint64_t> fsize;
    std::optional<std::uint64_t> cpu_time;
    /// --disk-bytes: the box's writable layer lives on an ext4 file system of this size (a sparse
    /// image, disk.ext4 in box_dir, loop-mounted inside the box's mount namespace only).
    std::optional<std::uint64_t> disk_bytes;
    std::uint64_t log_max_bytes = 4ULL << 20;  ///< agent.log rotates to agent.log.1 at this size
    std::vector<VolumeMount> volumes;
    std::vector<std::string> env;  ///< the box's environment (image Env + BoxOptions::env)
    std::string workdir;           ///< default working directory of commands
    std::string user;              ///< default user of commands
    /// --capabilities all: keep the full bounding set (SecurityOptions::jailer_enabled == false);
    /// otherwise the box runs with jailer::kBoxCapabilities.
    bool all_capabilities = false;
    /// --seccomp off: no system call filter (SecurityOptions::seccomp_enabled == false).
    bool seccomp = true;
    /// --network on: eth0 in the box, pumped to passt through the firewall (network.hpp);
    /// off: loopback only and no passt.
    bool network = false;
    std::vector<std::string> allow_net;  ///< --allow-net, repeatable: the firewall's allow list
    std::string passt;                   ///< --passt: passt's binary (default: found in /usr/bin)
    std::string dns;                     ///< --dns: the resolver passt forwards the box's DNS to
    std::vector<PublishedPort> publish;  ///< --publish-tcp / --publish-udp "[ADDR/]HOSTPORT:BOXPORT"
};

/// Runs the namespace mode to completion; returns the shim's exit code.
int run_namespace_mode(const ShimOptions& options);

/// Writes one line to the ready fd (and closes it), if still open.
void report(int& ready_fd, const std::string& line);

}  // namespace boxlite::shim
