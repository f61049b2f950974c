// The configuration the kvm engine hands boxlite-shim-kvm on a pipe: one JSON document, read to
// EOF before anything starts. Everything a VM needs is in it, nothing comes from the shim's
// environment, so the shim can run in the jailer with no access to the caller's state.
#pragma once

#include <boxlite/error.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace boxlite::vmm {

struct ShimDiskConfig {
    std::string path;
    std::string format = "qcow2";  ///< "qcow2" or "raw"
    bool read_only = false;
    std::string serial = "boxlite-root";
};

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
    bool rng = true;
    /// The guest agent's launch document (lib/vmm/guest_launch.hpp); for a Linux boot the shim
    /// puts it in front of the initrd as /boxlite/launch.json. Null: none.
    nlohmann::json guest_launch;
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
    nlohmann::json j = {{"box_id", c.box_id},   {"cpus", c.cpus},           {"memory_mib", c.memory_mib},
                        {"kernel", c.kernel},   {"initrd", c.initrd},       {"cmdline", c.cmdline},
                        {"flat32_image", c.flat32_image}, {"vsock_uds", c.vsock_uds}, {"guest_cid", c.guest_cid},
                        {"console_log", c.console_log},   {"rng", c.rng}};
    if (c.disk) j["disk"] = *c.disk;
    if (!c.guest_launch.is_null()) j["guest_launch"] = c.guest_launch;
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
        return c;
    } catch (const std::exception& e) {
        return fail(ErrorKind::Config, "shim config is not valid JSON of the expected shape: {}", e.what());
    }
}

}  // namespace boxlite::vmm
