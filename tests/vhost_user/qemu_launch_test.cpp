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

TEST(QemuLaunch, VolumesRoundTripAndBecomeVhostUserFsDevices) {
    auto config = sample();
    config.volumes = {{"vol0", "/srv/project", true}, {"vol1", "/home/me/out", false}};
    auto parsed = parse_qemu_shim_config(to_json_document(config).dump());
    ASSERT_TRUE(parsed) << parsed.error().to_string();
    ASSERT_EQ(parsed->volumes.size(), 2u);
    EXPECT_EQ(parsed->volumes[0].host_path, "/srv/project");
    EXPECT_TRUE(parsed->volumes[0].read_only);
    EXPECT_EQ(parsed->virtiofsd, "/usr/lib/qemu/virtiofsd");
    const auto argv = qemu_argv(*parsed, "");
    EXPECT_TRUE(has_pair(argv, "-chardev", "socket,id=fs0,fd=5"));
    EXPECT_TRUE(has_pair(argv, "-device", "vhost-user-fs-device,chardev=fs0,tag=vol0"));
    EXPECT_TRUE(has_pair(argv, "-chardev", "socket,id=fs1,fd=6"));
    EXPECT_TRUE(has_pair(argv, "-device", "vhost-user-fs-device,chardev=fs1,tag=vol1"));
    // virtiofsd: its listening socket, the folder, its own namespace sandbox.
    const auto daemon = virtiofsd_argv(*parsed, parsed->volumes[0], 3);
    EXPECT_EQ(daemon.front(), "/usr/lib/qemu/virtiofsd");
    EXPECT_NE(std::find(daemon.begin(), daemon.end(), "--fd=3"), daemon.end());
    EXPECT_TRUE(has_pair(daemon, "-o", "source=/srv/project"));
    EXPECT_TRUE(has_pair(daemon, "-o", "sandbox=namespace"));
}

TEST(QemuLaunch, TheNetworkRoundTripsAndBecomesAVhostUserNetdev) {
    auto config = sample();
    EXPECT_FALSE(parse_qemu_shim_config(to_json_document(config).dump())->network.enabled);
    const auto without = qemu_argv(config, "", "boxlite-net-x");
    EXPECT_EQ(std::find(without.begin(), without.end(), "-netdev"), without.end());  // no network: no device
    config.network.enabled = true;
    config.network.allow_net = {"198.51.100.0/24", "*.example.com"};
    config.network.publish = {{false, "127.0.0.1/18080:8000"}, {true, "15353:5353"}};
    config.network.dns = "127.0.0.1";
    auto parsed = parse_qemu_shim_config(to_json_document(config).dump());
    ASSERT_TRUE(parsed) << parsed.error().to_string();
    EXPECT_TRUE(parsed->network.enabled);
    EXPECT_EQ(parsed->network.allow_net, config.network.allow_net);
    ASSERT_EQ(parsed->network.publish.size(), 2u);
    EXPECT_EQ(parsed->network.publish[0].spec, "127.0.0.1/18080:8000");
    EXPECT_TRUE(parsed->network.publish[1].udp);
    EXPECT_EQ(parsed->network.dns, "127.0.0.1");
    const auto argv = qemu_argv(*parsed, "", "boxlite-net-x");
    EXPECT_TRUE(has_pair(argv, "-chardev", "socket,id=net0,path=boxlite-net-x,abstract=on"));
    EXPECT_TRUE(has_pair(argv, "-netdev", "vhost-user,id=n0,chardev=net0"));
    EXPECT_TRUE(has_pair(argv, "-device", "virtio-net-device,netdev=n0,mac=5a:94:ef:e4:0c:ee"));
    // The benchmark peer: QEMU's own virtio-net on -netdev stream over an inherited socket.
    const auto peer = qemu_stream_netdev_argv(kStreamPeerFd);
    EXPECT_TRUE(has_pair(peer, "-netdev", "stream,id=n0,server=off,addr.type=fd,addr.str=21"));
    EXPECT_TRUE(has_pair(peer, "-device", "virtio-net-device,netdev=n0,mac=5a:94:ef:e4:0c:ee"));
}

TEST(QemuLaunch, BadVolumesAreRefused) {
    struct Case {
        QemuVolume volume;
        const char* message;
    };
    for (const auto& [volume, message] : std::vector<Case>{
             {{"", "/srv", false}, "volume tag ''"},
             {{std::string(37, 't'), "/srv", false}, "1..36 bytes"},
             {{"a,b", "/srv", false}, "volume tag 'a,b'"},
             {{"vol0", "relative", false}, "volume host path 'relative'"},
             {{"vol0", "/a,b", false}, "without ','"},
         }) {
        auto config = sample();
        config.volumes = {volume};
        auto refused = parse_qemu_shim_config(to_json_document(config).dump());
        ASSERT_FALSE(refused) << message;
        EXPECT_EQ(refused.error().kind(), ErrorKind::Config);
        EXPECT_NE(refused.error().message().find(message), std::string::npos) << refused.error().message();
    }
    auto config = sample();
    config.volumes = {{"vol0", "/srv", false}};
    config.virtiofsd = "virtiofsd";
    EXPECT_FALSE(parse_qemu_shim_config(to_json_document(config).dump()));
    config.virtiofsd = kDefaultVirtiofsd;
    config.volumes.assign(kMaxVolumes + 1, QemuVolume{"vol", "/srv", false});
    EXPECT_FALSE(parse_qemu_shim_config(to_json_document(config).dump()));
}

TEST(QemuLaunch, GuestLaunchVolumesRoundTripAndHostileOnesAreRefused) {
    vmm::GuestLaunchConfig guest;
    guest.box_id = "box";
    guest.volumes = {{"vol0", "/data", true}, {"vol1", "/mnt/out", false}};
    auto parsed = vmm::parse_guest_launch(vmm::to_json_document(guest).dump());
    ASSERT_TRUE(parsed) << parsed.error().to_string();
    EXPECT_EQ(parsed->volumes, guest.volumes);
    for (const auto& [path, tag] : std::vector<std::pair<std::string, std::string>>{
             {"relative", "vol0"}, {"/a/../etc", "vol0"}, {"/data", ""}, {"/data", std::string(40, 'x')}}) {
        guest.volumes = {{tag, path, false}};
        EXPECT_FALSE(vmm::parse_guest_launch(vmm::to_json_document(guest).dump())) << path << " " << tag;
    }
}

}  // namespace
}  // namespace boxlite::qemu

TEST(QemuLaunch, GuestBootTimeIsReadFromTheLastBootOnTheConsoleAndHostileLinesAreIgnored) {
    using boxlite::qemu::guest_console_ms;
    const std::string two_boots =
        "[    0.1] kernel noise\n"
        "boxlite-agent: [1500 ms] VM boot: /dev, /proc and /sys mounted\n"
        "boxlite-agent: [1800 ms] listening on vsock port 2695 (host name a)\n"
        "boxlite-agent: [9000 ms] powering off\n"
        "boxlite-agent: [1200 ms] VM boot: /dev, /proc and /sys mounted\n"
        "boxlite-agent: [1300 ms] loaded 3 modules: a b c\n"
        "boxlite-agent: [1450 ms] listening on vsock port 2695 (host name a)\n";
    EXPECT_EQ(guest_console_ms(two_boots, "VM boot:"), std::optional<std::uint64_t>(1200));
    EXPECT_EQ(guest_console_ms(two_boots, "listening on vsock port"), std::optional<std::uint64_t>(1450))
        << "the last boot's line, not the first one";
    // A boot that has not listened yet, no boot at all, and numbers that are not numbers or too big.
    EXPECT_FALSE(guest_console_ms("boxlite-agent: [5 ms] VM boot: x\n", "listening on vsock port"));
    EXPECT_FALSE(guest_console_ms("boxlite-agent: [5 ms] listening on vsock port 1\n", "listening on vsock port"));
    EXPECT_FALSE(guest_console_ms("", "VM boot:"));
    EXPECT_FALSE(guest_console_ms("boxlite-agent: [1e3 ms] VM boot: x\n", "VM boot:"));
    EXPECT_FALSE(guest_console_ms("boxlite-agent: [-5 ms] VM boot: x\n", "VM boot:"));
    EXPECT_FALSE(guest_console_ms("boxlite-agent: [99999999999999999999999 ms] VM boot: x\n", "VM boot:"));
    EXPECT_FALSE(guest_console_ms("boxlite-agent: [3600001 ms] VM boot: x\n", "VM boot:"));
    EXPECT_FALSE(guest_console_ms("boxlite-agent: [ ms] VM boot: x\n", "VM boot:"));
}
