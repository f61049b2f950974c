#include "engine/qemu/launch.hpp"

#include <charconv>

namespace boxlite::qemu {

nlohmann::json to_json_document(const QemuShimConfig& config) {
    auto j = vmm::to_json_document(config.vm);
    j["qemu"] = {{"binary", config.qemu}, {"accel", config.accel}};
    if (!config.volumes.empty()) {
        auto volumes = nlohmann::json::array();
        for (const auto& v : config.volumes)
            volumes.push_back({{"tag", v.tag}, {"host_path", v.host_path}, {"read_only", v.read_only}});
        j["qemu"]["volumes"] = volumes;
        j["qemu"]["virtiofsd"] = config.virtiofsd;
    }
    if (config.network.enabled) {
        j["qemu"]["network"] = vmm::network_to_json(config.network);
    }
    return j;
}

BoxliteResult<QemuShimConfig> parse_qemu_shim_config(std::string_view text) {
    BOXLITE_TRY(auto vm, vmm::parse_shim_config(text));
    QemuShimConfig config;
    config.vm = std::move(vm);
    try {
        const auto j = nlohmann::json::parse(text);
        const auto& q = j.at("qemu");
        config.qemu = q.at("binary").get<std::string>();
        config.accel = q.value("accel", std::string("tcg"));
        config.virtiofsd = q.value("virtiofsd", std::string(kDefaultVirtiofsd));
        for (const auto& v : q.value("volumes", nlohmann::json::array()))
            config.volumes.push_back(QemuVolume{v.at("tag").get<std::string>(), v.at("host_path").get<std::string>(),
                                                v.value("read_only", false)});
        if (q.contains("network") && !q["network"].is_null()) {
            config.network = vmm::network_from_json(q["network"]);
        }
    } catch (const std::exception& e) {
        return fail(ErrorKind::Config, "qemu shim config: the \"qemu\" object is missing or malformed: {}", e.what());
    }
    if (config.qemu.empty() || config.qemu.front() != '/')
        return fail(ErrorKind::Config, "qemu shim config: qemu binary '{}' is not an absolute path", config.qemu);
    if (config.accel != "kvm" && config.accel != "tcg")
        return fail(ErrorKind::Config, "qemu shim config: accel '{}' (allowed: kvm, tcg)", config.accel);
    if (config.vm.kernel.empty())
        return fail(ErrorKind::Config, "qemu shim config: no guest kernel (flat32 images are for the kvm shim)");
    if (config.volumes.size() > kMaxVolumes)
        return fail(ErrorKind::Config, "qemu shim config: {} volumes (at most {})", config.volumes.size(), kMaxVolumes);
    if (!config.volumes.empty() && (config.virtiofsd.empty() || config.virtiofsd.front() != '/'))
        return fail(ErrorKind::Config, "qemu shim config: virtiofsd '{}' is not an absolute path", config.virtiofsd);
    for (const auto& v : config.volumes) {
        if (v.tag.empty() || v.tag.size() > 36 ||
            v.tag.find_first_of(std::string_view(",= \0", 4)) != std::string::npos)
            return fail(ErrorKind::Config, "qemu shim config: volume tag '{}' (1..36 bytes, no ',', '=' or spaces)",
                        v.tag);
        // The path goes into "-o source=": a ',' would start another option.
        if (v.host_path.empty() || v.host_path.front() != '/' ||
            v.host_path.find_first_of(std::string_view(",\0", 2)) != std::string::npos)
            return fail(ErrorKind::Config,
                        "qemu shim config: volume host path '{}' is not an absolute path without ','", v.host_path);
    }
    return config;
}

std::vector<std::string> qemu_argv(const QemuShimConfig& config, const std::string& initrd,
                                   const std::string& net_address) {
    const auto& vm = config.vm;
    const bool kvm = config.accel == "kvm";
    std::vector<std::string> argv{
        config.qemu,
        // microvm with ACPI (the kernel finds virtio-mmio devices in the DSDT), no option ROMs
        // (the vmlinux boots through its PVH note), and a CMOS RTC: without one the guest kernel
        // spins about 3 s of guest time looking for it.
        "-M",
        "microvm,acpi=on,x-option-roms=off,rtc=on,memory-backend=mem",
        // Guest RAM in a shared memfd: the vhost-user back ends map the same pages.
        "-object",
        fmt::format("memory-backend-memfd,id=mem,size={}M,share=on", vm.memory_mib),
        "-m",
        fmt::format("{}M", vm.memory_mib),
        "-smp",
        std::to_string(vm.cpus),
        "-accel",
        kvm ? "kvm" : "tcg",
        "-cpu",
        kvm ? "host" : "max",
        // Modern virtio-mmio: vhost-user back ends refuse legacy devices.
        "-global",
        "virtio-mmio.force-legacy=false",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-serial",
        "stdio",
        "-kernel",
        vm.kernel,
        "-append",
        vm.cmdline,
    };
    if (!initrd.empty()) argv.insert(argv.end(), {"-initrd", initrd});
    if (!vm.vsock_uds.empty()) {
        argv.insert(argv.end(), {"-chardev", fmt::format("socket,id=vsock0,fd={}", kVsockBackendFd), "-device",
                                 "vhost-user-vsock-device,chardev=vsock0"});
    }
    if (vm.disk) {
        argv.insert(argv.end(), {"-chardev", fmt::format("socket,id=blk0,fd={}", kBlockBackendFd), "-device",
                                 "vhost-user-blk,chardev=blk0,num-queues=1"});
    }
    for (std::size_t i = 0; i < config.volumes.size(); ++i) {
        argv.insert(argv.end(), {"-chardev", fmt::format("socket,id=fs{},fd={}", i, kFirstVolumeFd + int(i)), "-device",
                                 fmt::format("vhost-user-fs-device,chardev=fs{},tag={}", i, config.volumes[i].tag)});
    }
    if (config.network.enabled && !net_address.empty()) {
        // QEMU's virtio-net model talks to the driver (config space, control queue); the rx and
        // tx rings are ours, over vhost-user. No offloads: the back end offers none.
        const auto& m = kBoxMac;
        argv.insert(argv.end(),
                    {"-chardev", fmt::format("socket,id=net0,path={},abstract=on", net_address), "-netdev",
                     "vhost-user,id=n0,chardev=net0", "-device",
                     fmt::format("virtio-net-device,netdev=n0,mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0],
                                 m[1], m[2], m[3], m[4], m[5])});
    }
    return argv;
}

std::vector<std::string> qemu_stream_netdev_argv(int fd) {
    const auto& m = kBoxMac;
    return {"-netdev", fmt::format("stream,id=n0,server=off,addr.type=fd,addr.str={}", fd), "-device",
            fmt::format("virtio-net-device,netdev=n0,mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2],
                        m[3], m[4], m[5])};
}

std::vector<std::string> virtiofsd_argv(const QemuShimConfig& config, const QemuVolume& volume, int listen_fd) {
    return engine::virtiofsd_argv(config.virtiofsd, volume, listen_fd);
}

std::optional<std::uint64_t> guest_console_ms(std::string_view console, std::string_view what) {
    // The last boot starts at its last "VM boot:" line; the wanted line is at or after it.
    auto from = console.rfind("] VM boot:");
    if (from == std::string_view::npos) return std::nullopt;
    from = console.rfind("boxlite-agent: [", from);
    const auto at = console.find(fmt::format(" ms] {}", what), from);
    if (from == std::string_view::npos || at == std::string_view::npos) return std::nullopt;
    const auto open = console.rfind('[', at);
    if (open == std::string_view::npos || open < from) return std::nullopt;
    std::uint64_t ms = 0;
    const auto digits = console.substr(open + 1, at - open - 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), ms);
    if (ec != std::errc() || end != digits.data() + digits.size() || ms > 3'600'000) return std::nullopt;
    return ms;
}

}  // namespace boxlite::qemu
