#include "engine/qemu/launch.hpp"

namespace boxlite::qemu {

nlohmann::json to_json_document(const QemuShimConfig& config) {
    auto j = vmm::to_json_document(config.vm);
    j["qemu"] = {{"binary", config.qemu}, {"accel", config.accel}};
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
    } catch (const std::exception& e) {
        return fail(ErrorKind::Config, "qemu shim config: the \"qemu\" object is missing or malformed: {}", e.what());
    }
    if (config.qemu.empty() || config.qemu.front() != '/')
        return fail(ErrorKind::Config, "qemu shim config: qemu binary '{}' is not an absolute path", config.qemu);
    if (config.accel != "kvm" && config.accel != "tcg")
        return fail(ErrorKind::Config, "qemu shim config: accel '{}' (allowed: kvm, tcg)", config.accel);
    if (config.vm.kernel.empty())
        return fail(ErrorKind::Config, "qemu shim config: no guest kernel (flat32 images are for the kvm shim)");
    return config;
}

std::vector<std::string> qemu_argv(const QemuShimConfig& config, const std::string& initrd) {
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
    return argv;
}

}  // namespace boxlite::qemu
