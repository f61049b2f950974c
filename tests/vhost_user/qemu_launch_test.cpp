// The qemu engine's shim config and QEMU command line (lib/engine/qemu/launch.hpp), without a VM.
#include "engine/qemu/launch.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace boxlite::qemu {
namespace {

QemuShimConfig sample() {
    QemuShimConfig config;
    config.vm.box_id = "box";
    config.vm.cpus = 2;
    config.vm.memory_mib = 384;
    config.vm.kernel = "/k/vmlinux";
    config.vm.cmdline = "console=ttyS0 tsc=reliable";
    config.vm.disk = vmm::ShimDiskConfig{"/b/disk.qcow2", "qcow2", false, "boxlite-root"};
    config.vm.vsock_uds = "/b/vsock.sock";
    config.accel = "tcg";
    return config;
}

bool has_pair(const std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
    for (std::size_t i = 0; i + 1 < argv.size(); ++i)
        if (argv[i] == flag && argv[i + 1] == value) return true;
    return false;
}

TEST(QemuLaunch, ConfigRoundTripsThroughJson) {
    auto parsed = parse_qemu_shim_config(to_json_document(sample()).dump());
    ASSERT_TRUE(parsed) << parsed.error().to_string();
    EXPECT_EQ(parsed->qemu, "/usr/bin/qemu-system-x86_64");
    EXPECT_EQ(parsed->accel, "tcg");
    EXPECT_EQ(parsed->vm.memory_mib, 384u);
    EXPECT_EQ(parsed->vm.disk->path, "/b/disk.qcow2");
}

TEST(QemuLaunch, BadConfigsAreRefusedNamingTheField) {
    auto config = sample();
    config.accel = "hvf";
    auto bad_accel = parse_qemu_shim_config(to_json_document(config).dump());
    ASSERT_FALSE(bad_accel);
    EXPECT_NE(bad_accel.error().message().find("accel 'hvf' (allowed: kvm, tcg)"), std::string::npos);
    config = sample();
    config.qemu = "qemu-system-x86_64";
    auto relative = parse_qemu_shim_config(to_json_document(config).dump());
    ASSERT_FALSE(relative);
    EXPECT_NE(relative.error().message().find("not an absolute path"), std::string::npos);
    auto missing = parse_qemu_shim_config(vmm::to_json_document(sample().vm).dump());
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message().find("\"qemu\" object"), std::string::npos);
}

TEST(QemuLaunch, CommandLineHasOurDevicesSharedMemoryAndTheSandbox) {
    const auto argv = qemu_argv(sample(), "/b/initrd.cpio");
    EXPECT_EQ(argv.front(), "/usr/bin/qemu-system-x86_64");
    EXPECT_TRUE(has_pair(argv, "-object", "memory-backend-memfd,id=mem,size=384M,share=on"));
    EXPECT_TRUE(has_pair(argv, "-global", "virtio-mmio.force-legacy=false"));
    EXPECT_TRUE(has_pair(argv, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
    EXPECT_TRUE(has_pair(argv, "-accel", "tcg"));
    EXPECT_TRUE(has_pair(argv, "-smp", "2"));
    EXPECT_TRUE(has_pair(argv, "-initrd", "/b/initrd.cpio"));
    EXPECT_TRUE(has_pair(argv, "-chardev", "socket,id=vsock0,fd=3"));
    EXPECT_TRUE(has_pair(argv, "-device", "vhost-user-vsock-device,chardev=vsock0"));
    EXPECT_TRUE(has_pair(argv, "-chardev", "socket,id=blk0,fd=4"));
    EXPECT_TRUE(std::find(argv.begin(), argv.end(), "-nodefaults") != argv.end());
    EXPECT_NE(argv[std::find(argv.begin(), argv.end(), "-M") - argv.begin() + 1].find("microvm,acpi=on"),
              std::string::npos);
    auto kvm = sample();
    kvm.accel = "kvm";
    EXPECT_TRUE(has_pair(qemu_argv(kvm, ""), "-accel", "kvm"));
    EXPECT_TRUE(has_pair(qemu_argv(kvm, ""), "-cpu", "host"));
}

}  // namespace
}  // namespace boxlite::qemu
