// What the kvm engine hands boxlite-shim-kvm, and the pieces of its start() that run without a
// guest kernel. Three parts:
//   1. the shim config (KvmShimConfig): one JSON document on the shim's config fd, read to EOF
//      before anything starts. Everything a VM needs is in it, nothing comes from the shim's
//      environment, so the shim can run in the jailer with no access to the caller's state;
//   2. the guest agent's launch document (GuestLaunchConfig), which the shim puts in the initrd;
//   3. the engine's own steps (engine.cpp): the disk overlay, the config from a launch request,
//      spawning the shim.
//
// ---- 2. the guest launch document
//
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
//    "rlimits": {"nofile": N, "fsize": N, "cpu": N, "nproc": N},   // each optional
//    "power_off_when_ready": false,        // optional, tests only
//    "volumes": [{"tag": "vol0", "path": "/data", "read_only": true}, ...]}   // optional
// Each volume is a virtiofs tag a virtiofsd serves (through QEMU's vhost-user-fs-device, or our
// VMM's vhost-user frontend: docs/volumes.md); the agent mounts it at `path` inside the box root.
// The agent (PID 1 in the guest) reads it before it serves anything; with the file missing it
// keeps its defaults. Memory needs no limit there: the VM's RAM is the box's memory.
#pragma once

#include "engine/common/virtiofsd.hpp"

#include <boxlite/engine.hpp>
#include <boxlite/engine/kvm_engine.hpp>
#include <boxlite/error.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite::vmm {

// ---- 1. the shim config
struct ShimDiskConfig {
    std::string path;
    std::string format = "qcow2";  ///< "qcow2" or "raw"
    bool read_only = false;
    std::string serial = "boxlite-root";
};

/// The box's MAC address (upstream's; the namespace engine's eth0 has the same).
inline constexpr std::array<std::uint8_t, 6> kBoxMac = {0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee};

/// A published port as passt's -t/-u takes it: "[ADDR/]HOSTPORT:BOXPORT".
struct VmPublishedPort {
    bool udp = false;
    std::string spec;
    friend bool operator==(const VmPublishedPort&, const VmPublishedPort&) = default;
};

/// The box network of a VM engine (docs/networking.md): our virtio-net device, its frames pumped
/// by the shim through the egress firewall to a passt the shim starts. The same on the kvm engine
/// (our virtio-mmio transport) and the qemu engine (served over vhost-user).
struct VmNetwork {
    bool enabled = false;
    std::vector<std::string> allow_net;  ///< the firewall's allow list (lib/net/firewall.hpp)
    std::vector<VmPublishedPort> publish;
    std::string passt;  ///< passt's binary; empty: found in /usr/bin
    std::string dns;    ///< where passt forwards the box's DNS; empty: the host's resolv.conf
};

/// The "network" object of a shim config (only for an enabled network), and back; the parser
/// throws on a malformed object (the callers turn that into a Config error).
inline nlohmann::json network_to_json(const VmNetwork& n) {
    auto publish = nlohmann::json::array();
    for (const auto& p : n.publish) publish.push_back({{"udp", p.udp}, {"spec", p.spec}});
    return {{"allow_net", n.allow_net}, {"publish", publish}, {"passt", n.passt}, {"dns", n.dns}};
}
inline VmNetwork network_from_json(const nlohmann::json& j) {
    VmNetwork n;
    n.enabled = true;
    n.allow_net = j.value("allow_net", std::vector<std::string>{});
    for (const auto& p : j.value("publish", nlohmann::json::array()))
        n.publish.push_back(VmPublishedPort{p.value("udp", false), p.at("spec").get<std::string>()});
    n.passt = j.value("passt", std::string());
    n.dns = j.value("dns", std::string());
    return n;
}

struct KvmShimConfig {
    std::string box_id;
    std::uint32_t cpus = 1;
    std::uint64_t memory_mib = 512;
    /// Linux boot: kernel (vmlinux or bzImage), initrd (may be empty), command line.
    std::string kernel;
    std::string initrd;
    std::string cmdline;
    /// Instead of Linux: a flat 32-bit binary run at layout::kTestGuestLoad (tiny test guests,
    /// so the whole shim path can be exercised where 64-bit guests cannot run).
    std::string flat32_image;
    std::optional<ShimDiskConfig> disk;
    std::string vsock_uds;  ///< empty: no vsock device
    std::uint64_t guest_cid = 3;
    std::string console_log;  ///< UART + virtio-console output; empty: discarded
    /// console.log rotates to console.log.1 at this size (the guest writes it at will).
    std::uint64_t console_log_max_bytes = std::uint64_t{4} << 20;
    bool rng = true;
    /// The guest agent's launch document (part 2 below); for a Linux boot the shim
    /// puts it in front of the initrd as /boxlite/launch.json. Null: none.
    nlohmann::json guest_launch;
    /// Volumes: one virtiofsd (`virtiofsd`, an absolute path) per share, started by the shim and
    /// attached as a virtio-fs device through the VMM's vhost-user frontend, in order.
    std::vector<engine::VirtiofsShare> volumes;
    std::string virtiofsd;
    /// The box network: with `enabled`, a virtio-net device (after vsock, before the volumes)
    /// pumped to passt by the shim. Disabled: no device, loopback only in the guest.
    VmNetwork network;
};

inline void to_json(nlohmann::json& j, const ShimDiskConfig& d) {
    j = {{"path", d.path}, {"format", d.format}, {"read_only", d.read_only}, {"serial", d.serial}};
}
inline void from_json(const nlohmann::json& j, ShimDiskConfig& d) {
    d.path = j.at("path").get<std::string>();
    d.format = j.value("format", std::string("qcow2"));
    d.read_only = j.value("read_only", false);
    d.serial = j.value("serial", std::string("boxlite-root"));
}

inline nlohmann::json to_json_document(const KvmShimConfig& c) {
    nlohmann::json j = {{"box_id", c.box_id},
                        {"cpus", c.cpus},
                        {"memory_mib", c.memory_mib},
                        {"kernel", c.kernel},
                        {"initrd", c.initrd},
                        {"cmdline", c.cmdline},
                        {"flat32_image", c.flat32_image},
                        {"vsock_uds", c.vsock_uds},
                        {"guest_cid", c.guest_cid},
                        {"console_log", c.console_log},
                        {"console_log_max_bytes", c.console_log_max_bytes},
                        {"rng", c.rng}};
    if (c.disk) j["disk"] = *c.disk;
    if (!c.guest_launch.is_null()) j["guest_launch"] = c.guest_launch;
    if (!c.volumes.empty()) {
        nlohmann::json volumes = nlohmann::json::array();
        for (const auto& v : c.volumes)
            volumes.push_back({{"tag", v.tag}, {"host_path", v.host_path}, {"read_only", v.read_only}});
        j["volumes"] = volumes;
        j["virtiofsd"] = c.virtiofsd;
    }
    if (c.network.enabled) j["network"] = network_to_json(c.network);
    return j;
}

/// Parses and validates; hostile or broken input is a Config error naming the field.
inline BoxliteResult<KvmShimConfig> parse_shim_config(std::string_view text) {
    try {
        const auto j = nlohmann::json::parse(text);
        KvmShimConfig c;
        c.box_id = j.value("box_id", std::string());
        c.cpus = j.value("cpus", 1u);
        c.memory_mib = j.value("memory_mib", std::uint64_t{512});
        c.kernel = j.value("kernel", std::string());
        c.initrd = j.value("initrd", std::string());
        c.cmdline = j.value("cmdline", std::string());
        c.flat32_image = j.value("flat32_image", std::string());
        if (j.contains("disk") && !j["disk"].is_null()) c.disk = j["disk"].get<ShimDiskConfig>();
        c.vsock_uds = j.value("vsock_uds", std::string());
        c.guest_cid = j.value("guest_cid", std::uint64_t{3});
        c.console_log = j.value("console_log", std::string());
        c.console_log_max_bytes = j.value("console_log_max_bytes", std::uint64_t{4} << 20);
        c.rng = j.value("rng", true);
        if (j.contains("guest_launch")) c.guest_launch = j["guest_launch"];
        if (!c.guest_launch.is_null() && !c.guest_launch.is_object())
            return fail(ErrorKind::Config, "shim config: guest_launch must be an object");
        if (c.cpus == 0 || c.cpus > 64) return fail(ErrorKind::Config, "shim config: cpus {} is not in 1..64", c.cpus);
        if (c.memory_mib < 2 || c.memory_mib > 65536)
            return fail(ErrorKind::Config, "shim config: memory_mib {} is not in 2..65536", c.memory_mib);
        if (c.kernel.empty() == c.flat32_image.empty())
            return fail(ErrorKind::Config, "shim config: give exactly one of kernel and flat32_image");
        if (c.disk && c.disk->format != "qcow2" && c.disk->format != "raw")
            return fail(ErrorKind::Config, "shim config: disk format '{}' (allowed: qcow2, raw)", c.disk->format);
        for (const auto& entry : j.value("volumes", nlohmann::json::array())) {
            engine::VirtiofsShare v{entry.at("tag").get<std::string>(), entry.at("host_path").get<std::string>(),
                                    entry.value("read_only", false)};
            if (v.tag.empty() || v.tag.size() > 36)
                return fail(ErrorKind::Config, "shim config: volume tag '{}' is not 1..36 bytes", v.tag);
            if (v.host_path.empty() || v.host_path.front() != '/')
                return fail(ErrorKind::Config, "shim config: volume host path '{}' is not absolute", v.host_path);
            c.volumes.push_back(std::move(v));
        }
        if (c.volumes.size() > engine::kMaxVmVolumes)
            return fail(ErrorKind::Config, "shim config: {} volumes (at most {})", c.volumes.size(),
                        engine::kMaxVmVolumes);
        c.virtiofsd = j.value("virtiofsd", std::string());
        if (j.contains("network") && !j["network"].is_null()) {
            if (!j["network"].is_object()) return fail(ErrorKind::Config, "shim config: network must be an object");
            c.network = network_from_json(j["network"]);
            for (const auto& p : c.network.publish)
                if (p.spec.empty() || p.spec.find_first_of(" \t\n") != std::string::npos)
                    return fail(ErrorKind::Config, "shim config: published port '{}' is not HOSTPORT:BOXPORT", p.spec);
            if (!c.network.passt.empty() && c.network.passt.front() != '/')
                return fail(ErrorKind::Config, "shim config: passt '{}' is not an absolute path", c.network.passt);
        }
        if (!c.volumes.empty() && (c.virtiofsd.empty() || c.virtiofsd.front() != '/'))
            return fail(ErrorKind::Config, "shim config: virtiofsd '{}' is not an absolute path", c.virtiofsd);
        return c;
    } catch (const std::exception& e) {
        return fail(ErrorKind::Config, "shim config is not valid JSON of the expected shape: {}", e.what());
    }
}

// ---- 2. the guest launch document
/// Where the launch document appears in the guest, and the directory holding it.
inline constexpr std::string_view kGuestLaunchDir = "boxlite";
inline constexpr std::string_view kGuestLaunchFile = "boxlite/launch.json";
/// The vsock port the agent listens on when the document does not say (KvmEngineOptions::agent_port).
inline constexpr std::uint32_t kDefaultGuestAgentPort = 2695;

struct GuestLimits {
    std::optional<std::uint64_t> nofile, fsize, cpu, nproc;
    friend bool operator==(const GuestLimits&, const GuestLimits&) = default;
};

/// One virtiofs share the agent mounts: the device's tag, the absolute guest path, and whether
/// the guest mounts it read-only (the host enforces read-only too: the share is a read-only bind).
struct GuestVolume {
    std::string tag;
    std::string path;
    bool read_only = false;
    friend bool operator==(const GuestVolume&, const GuestVolume&) = default;
};

struct GuestLaunchConfig {
    std::string box_id;
    std::uint32_t agent_port = 0;
    std::vector<std::pair<std::string, std::string>> env;
    std::string working_dir = "/";
    std::string user;
    GuestLimits rlimits;
    /// Tests only: the agent powers the VM off as soon as it listens (boot checks without vsock).
    bool power_off_when_ready = false;
    std::vector<GuestVolume> volumes;
    /// The VM has our virtio-net device: the agent loads virtio_net and brings up eth0 with the
    /// box network's addresses (docs/networking.md), /etc/hosts and /etc/resolv.conf.
    bool network = false;
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

// ---- 3. the engine's steps (engine.cpp)
/// The box's disk: a QCOW2 overlay at `overlay` over the read-only raw ext4 image `base`.
/// Created when missing; its virtual size is disk_size_gb, but never less than the base (a disk
/// shorter than its filesystem would cut the filesystem off). An existing overlay is grown to a
/// larger disk_size_gb with the QCOW2 resize; it is never shrunk (that would drop data), so a
/// smaller value than the current size leaves it as it is. Returns the virtual size in bytes.
BoxliteResult<std::uint64_t> prepare_box_disk(const std::filesystem::path& overlay, const std::filesystem::path& base,
                                              std::optional<std::uint32_t> disk_size_gb);

/// The shim config for `launch`: vCPUs, guest RAM (memory_mib, capped by max_memory), kernel
/// command line, disk, vsock, console, and the guest agent's launch document (env, working
/// dir, user, rlimits). Volumes (engine/common/volumes.hpp, which checks their host folders)
/// and the network (add_vm_network, after the ports are bound) are added by the engine's start.
BoxliteResult<KvmShimConfig> make_shim_config(const KvmEngineOptions& options, const EngineLaunch& launch,
                                              const std::filesystem::path& kernel, const std::filesystem::path& initrd,
                                              const std::filesystem::path& disk);
/// make_shim_config without the kvm engine's refusals (KvmEngine::supports): for a VM engine
/// that checks what it supports itself (the qemu engine serves volumes through virtiofsd).
BoxliteResult<KvmShimConfig> make_vm_shim_config(const KvmEngineOptions& options, const EngineLaunch& launch,
                                                 const std::filesystem::path& kernel,
                                                 const std::filesystem::path& initrd,
                                                 const std::filesystem::path& disk);

/// The box network for a VM engine's shim: `network` enabled with the box's allow list, the
/// published ports as bound (engine::publish_ports), and BOXLITE_PASST / BOXLITE_NET_DNS from
/// this process's environment (tests point passt's DNS at their own server); the guest launch
/// document gets network=true (the agent brings up eth0).
BoxliteResult<void> add_vm_network(const BoxConfig& box, const std::vector<PortSpec>& published, VmNetwork& network,
                                   nlohmann::json& guest_launch);

struct ShimSpawn {
    std::filesystem::path shim;
    std::string config;         ///< the JSON document, written to the shim's fd 3
    std::filesystem::path log;  ///< the shim's stdout and stderr (appended)
    int watchdog_read_fd = -1;  ///< becomes the shim's fd 5 (taken over and closed here)
    std::chrono::milliseconds ready_timeout{30000};
};

struct SpawnedShim {
    std::int32_t pid = -1;  ///< a child of this process, in a session of its own
    std::string ready;      ///< the shim's "ok <pid>" line
};

/// Forks and execs the shim with the config on fd 3 (to EOF), its ready line on fd 4 and the
/// watchdog on fd 5; returns once it reported "ok". Anything else — an "error" line, exit,
/// silence past the timeout — kills and reaps it and returns the reason with the log's tail.
/// Safe to call from a multi-threaded process: the child only makes async-signal-safe calls.
BoxliteResult<SpawnedShim> spawn_kvm_shim(const ShimSpawn& spawn);

}  // namespace boxlite::vmm

namespace boxlite::detail {
// KvmEngine's members, as free functions the tests call directly (engine.cpp).
[[nodiscard]] BoxliteResult<EngineHandle> kvm_engine_start(const KvmEngineOptions& options, const EngineLaunch& launch);
[[nodiscard]] BoxliteResult<void> kvm_engine_stop(const EngineHandle& handle, std::chrono::milliseconds timeout);
[[nodiscard]] BoxliteResult<void> kvm_engine_kill(const EngineHandle& handle);
[[nodiscard]] bool kvm_engine_is_alive(const EngineHandle& handle);
[[nodiscard]] BoxliteResult<EngineMetrics> kvm_engine_metrics(const EngineHandle& handle);
}  // namespace boxlite::detail
