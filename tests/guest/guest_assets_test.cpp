// Guest assets (lib/engine/common/guest_assets.hpp): the vmlinux out of Debian's LZ4 bzImage,
// module .modinfo and load order, the initramfs and its cache, against the real kernel that
// scripts/setup unpacks, and with corrupt input in bounded fuzz loops.
#include "engine/common/guest_assets.hpp"
#include "engine/kvm/launch.hpp"
#include "support/support.hpp"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>

namespace {

namespace fs = std::filesystem;
using namespace boxlite;
using boxlite::test::TempDir;

std::vector<std::byte> slurp(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> bytes(chars.size());
    std::memcpy(bytes.data(), chars.data(), chars.size());
    return bytes;
}

/// The kernel scripts/setup unpacks; its absence is a broken setup, not a missing precondition.
fs::path real_kernel_tree() {
    auto source = engine::locate_guest_kernel({});
    EXPECT_TRUE(source) << (source ? "" : source.error().message());
    return source ? fs::canonical(source->path) : fs::path();
}

fs::path real_vmlinuz() {
    for (const auto& entry : fs::directory_iterator(real_kernel_tree() / "boot"))
        if (entry.path().filename().string().rfind("vmlinuz-", 0) == 0) return entry.path();
    return {};
}

fs::path real_module(const std::string& name) {
    for (const auto& entry : fs::recursive_directory_iterator(real_kernel_tree() / "lib" / "modules"))
        if (entry.path().filename() == name + ".ko") return entry.path();
    return {};
}

TEST(GuestAssets, ExtractsTheDebianCloudKernel) {
    const auto image = slurp(real_vmlinuz());
    ASSERT_GT(image.size(), 1000000U);
    auto vmlinux = engine::extract_vmlinux(image);
    ASSERT_TRUE(vmlinux) << vmlinux.error().message();
    EXPECT_GT(vmlinux->size(), image.size());
    EXPECT_TRUE(engine::validate_vmlinux(*vmlinux));
}

TEST(GuestAssets, CorruptKernelImagesGiveClearErrors) {
    const auto image = slurp(real_vmlinuz());
    ASSERT_GT(image.size(), 0x1000U);
    auto message = [](auto result) { return result ? std::string("accepted") : result.error().message(); };
    EXPECT_NE(message(engine::extract_vmlinux(std::span(image).first(0x100))).find("not a bzImage"), std::string::npos);
    // Truncated inside the payload (which does not end the file: code follows it).
    for (std::size_t cut : {std::size_t{0x300}, image.size() / 3, image.size() / 2}) {
        auto result = engine::extract_vmlinux(std::span(image).first(cut));
        EXPECT_FALSE(result) << "cut at " << cut;
    }
    // Flipped bytes: never a crash or an overrun (ASan checks); a header flip is an error.
    std::mt19937 random(20);
    for (int round = 0; round < 12; ++round) {
        auto broken = image;
        const std::size_t at = 0x200 + random() % (broken.size() - 0x200);
        broken[at] ^= std::byte{0xa5};
        (void)engine::extract_vmlinux(broken);
    }
    auto header = image;
    header[0x24c] = std::byte{0xff};  // payload length past the end of the file
    header[0x24f] = std::byte{0x7f};
    EXPECT_NE(message(engine::extract_vmlinux(header)).find("outside"), std::string::npos);
    // An ELF that is not a kernel.
    auto vmlinux = engine::extract_vmlinux(image);
    ASSERT_TRUE(vmlinux);
    auto not_x86 = *vmlinux;
    not_x86[18] = std::byte{183};
    EXPECT_NE(message(engine::validate_vmlinux(not_x86)).find("x86-64"), std::string::npos);
    EXPECT_FALSE(engine::validate_vmlinux(std::span(*vmlinux).first(100)));
}

TEST(GuestAssets, SmallRandomInputsNeverCrashTheParsers) {
    std::mt19937 random(7);
    for (int round = 0; round < 3000; ++round) {
        std::vector<std::byte> bytes(random() % 700);
        for (auto& b : bytes) b = std::byte(static_cast<unsigned char>(random()));
        if (bytes.size() > 0x210 && round % 2) std::memcpy(bytes.data() + 0x202, "HdrS", 4);
        if (bytes.size() > 8 && round % 3 == 0)
            std::memcpy(bytes.data(),
                        "\x7f"
                        "ELF\x02\x01",
                        6);
        if (bytes.size() > 4 && round % 5 == 0) std::memcpy(bytes.data(), "\x02\x21\x4c\x18", 4);
        (void)engine::extract_vmlinux(bytes);
        (void)engine::validate_vmlinux(bytes);
        (void)engine::read_modinfo(bytes);
        (void)engine::decompress_lz4_legacy(bytes, 1 << 20);
    }
}

TEST(GuestAssets, ReadsModinfoDependsAndSurvivesCorruption) {
    const auto module = slurp(real_module("virtio_blk"));
    auto fields = engine::read_modinfo(module);
    ASSERT_TRUE(fields) << fields.error().message();
    auto depends = std::find_if(fields->begin(), fields->end(), [](auto& f) { return f.rfind("depends=", 0) == 0; });
    ASSERT_NE(depends, fields->end());
    EXPECT_NE(depends->find("virtio"), std::string::npos) << *depends;
    EXPECT_FALSE(engine::read_modinfo(std::span(module).first(63)));
    std::mt19937 random(3);
    for (int round = 0; round < 200; ++round) {
        auto broken = module;
        broken[random() % 64] ^= std::byte(static_cast<unsigned char>(1 + random() % 255));
        (void)engine::read_modinfo(broken);
        auto cut = std::span(module).first(random() % module.size());
        (void)engine::read_modinfo(cut);
    }
}

TEST(GuestAssets, StripsTheModuleSignatureAndRefusesABadTrailer) {
    const auto module = slurp(real_module("virtio_blk"));
    const std::string_view magic = "~Module signature appended~\n";
    ASSERT_GT(module.size(), magic.size());
    // Debian signs its modules: the trailer is there, and goes.
    ASSERT_EQ(std::memcmp(module.data() + module.size() - magic.size(), magic.data(), magic.size()), 0);
    auto stripped = engine::strip_module_signature(module);
    ASSERT_TRUE(stripped) << stripped.error().message();
    EXPECT_LT(stripped->size() + magic.size() + 12, module.size());
    EXPECT_EQ(stripped->data(), module.data());  // a prefix of the module
    auto fields = engine::read_modinfo(*stripped);
    ASSERT_TRUE(fields) << fields.error().message();
    EXPECT_FALSE(fields->empty());
    // The ELF ends where the signature began: its section headers are still inside it.
    auto again = engine::strip_module_signature(*stripped);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->size(), stripped->size());  // no trailer: as it is
    // A signature length larger than what precedes it.
    auto bad = module;
    const auto info = bad.size() - magic.size() - 12;
    for (std::size_t i = 8; i < 12; ++i) bad[info + i] = std::byte{0x7f};
    auto refused = engine::strip_module_signature(bad);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("signature"), std::string::npos) << refused.error().message();
    // Only the magic (no room for the signature information).
    std::vector<std::byte> only_magic(magic.size());
    std::memcpy(only_magic.data(), magic.data(), magic.size());
    EXPECT_FALSE(engine::strip_module_signature(only_magic));
    std::mt19937 random(5);
    for (int round = 0; round < 200; ++round) {
        auto broken = module;
        broken[broken.size() - 1 - random() % 64] ^= std::byte(static_cast<unsigned char>(1 + random() % 255));
        if (auto cut = engine::strip_module_signature(broken)) {
            EXPECT_LE(cut->size(), broken.size());
        }
    }
}

TEST(GuestAssets, LoadOrderPutsDependenciesFirst) {
    std::vector<engine::ModuleInfo> modules = {{"virtio_blk", {"virtio", "virtio_ring"}},
                                               {"virtio_ring", {}},
                                               {"virtio", {"virtio_ring"}}};
    auto order = engine::module_load_order(modules, {"virtio_blk"});
    ASSERT_TRUE(order);
    EXPECT_EQ(*order, (std::vector<std::string>{"virtio_ring", "virtio", "virtio_blk"}));
    modules.push_back({"a", {"b"}});
    modules.push_back({"b", {"a"}});
    auto cycle = engine::module_load_order(modules, {"a"});
    ASSERT_FALSE(cycle);
    EXPECT_NE(cycle.error().message().find("cycle"), std::string::npos);
    auto unknown = engine::module_load_order(modules, {"nope"});
    ASSERT_FALSE(unknown);
    EXPECT_NE(unknown.error().message().find("nope"), std::string::npos);
}

TEST(GuestAssets, BuildsTheInitramfsOnceAndCachesIt) {
    TempDir home("boxlite-assets");
    engine::GuestAssetOptions options;
    options.home = home.path();
    options.agent = boxlite::test::built_binary("boxlite-agent");
    auto first = engine::prepare_guest_assets(options);
    ASSERT_TRUE(first) << first.error().message();
    EXPECT_TRUE(first->built);
    EXPECT_FALSE(first->kernel_release.empty());
    ASSERT_TRUE(fs::exists(first->vmlinux));
    EXPECT_TRUE(engine::validate_vmlinux(slurp(first->vmlinux)));
    auto again = engine::prepare_guest_assets(options);
    ASSERT_TRUE(again);
    EXPECT_FALSE(again->built);
    EXPECT_EQ(again->initramfs, first->initramfs);
    EXPECT_EQ(again->modules, first->modules);

    const auto cpio = slurp(first->initramfs);
    auto entries = vmm::read_newc_archive(cpio);
    ASSERT_TRUE(entries) << entries.error().message();
    std::map<std::string, std::string> by_name;
    for (const auto& e : *entries) by_name[e.name] = e.data;
    ASSERT_TRUE(by_name.count("init"));
    EXPECT_EQ(by_name["init"], boxlite::test::read_file(options.agent));
    ASSERT_TRUE(by_name.count("dev/console"));
    const auto order = by_name["lib/modules/order"];
    for (const std::string m : {"virtio_ring.ko", "virtio.ko", "virtio_mmio.ko", "virtio_blk.ko", "vsock.ko",
                                "vmw_vsock_virtio_transport.ko", "fuse.ko", "virtiofs.ko", "overlay.ko"}) {
        EXPECT_NE(order.find(m + "\n"), std::string::npos) << m << " missing from " << order;
        EXPECT_TRUE(by_name.count("lib/modules/" + m)) << m;
    }
    EXPECT_LT(order.find("virtio_ring.ko"), order.find("virtio_blk.ko"));
    EXPECT_LT(order.find("vsock.ko"), order.find("vmw_vsock_virtio_transport.ko"));
    EXPECT_LT(order.find("fuse.ko"), order.find("virtiofs.ko"));
}

// A new agent makes a new initramfs but shares the kernel's vmlinux; a build removes other
// sets nobody wrote for an hour, and nothing else.
TEST(GuestAssets, ANewAgentSharesTheVmlinuxAndStaleSetsGo) {
    TempDir home("boxlite-assets");
    fs::create_directories(home.path() / "init");
    const auto old_time = fs::file_time_type::clock::now() - std::chrono::hours(2);
    for (const char* name : {"initramfs-00000000000000aa.cpio", "vmlinux-00000000000000aa", "notes.txt"}) {
        boxlite::test::write_file(home.path() / "init" / name, "old");
        fs::last_write_time(home.path() / "init" / name, old_time);
    }
    boxlite::test::write_file(home.path() / "init" / "initramfs-00000000000000bb.cpio", "recent");
    engine::GuestAssetOptions options;
    options.home = home.path();
    options.agent = boxlite::test::built_binary("boxlite-agent");
    auto first = engine::prepare_guest_assets(options);
    ASSERT_TRUE(first) << first.error().message();
    EXPECT_FALSE(fs::exists(home.path() / "init" / "initramfs-00000000000000aa.cpio"));
    EXPECT_FALSE(fs::exists(home.path() / "init" / "vmlinux-00000000000000aa"));
    EXPECT_TRUE(fs::exists(home.path() / "init" / "notes.txt")) << "not ours";
    EXPECT_TRUE(fs::exists(home.path() / "init" / "initramfs-00000000000000bb.cpio")) << "written within the hour";

    const fs::path other_agent = home.path() / "other-agent";
    fs::copy_file(options.agent, other_agent);
    std::ofstream(other_agent, std::ios::binary | std::ios::app) << "another build";
    options.agent = other_agent;
    auto second = engine::prepare_guest_assets(options);
    ASSERT_TRUE(second) << second.error().message();
    EXPECT_TRUE(second->built);
    EXPECT_NE(second->initramfs, first->initramfs);
    EXPECT_EQ(second->vmlinux, first->vmlinux);
    EXPECT_TRUE(fs::exists(first->initramfs)) << "the first set is recent: kept";
}

TEST(GuestAssets, TwoProcessesBuildTheAssetsOnce) {
    TempDir home("boxlite-assets");
    int go[2];
    ASSERT_EQ(::pipe(go), 0);
    std::vector<pid_t> children;
    for (int i = 0; i < 2; ++i) {
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::close(go[1]);
            char c;
            (void)!::read(go[0], &c, 1);  // both start together
            engine::GuestAssetOptions options;
            options.home = home.path();
            options.agent = boxlite::test::built_binary("boxlite-agent");
            auto assets = engine::prepare_guest_assets(options);
            ::_exit(!assets ? 2 : assets->built ? 1 : 0);
        }
        children.push_back(pid);
    }
    ::close(go[0]);
    ::close(go[1]);  // EOF releases both
    int built = 0;
    for (pid_t pid : children) {
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status));
        ASSERT_NE(WEXITSTATUS(status), 2);
        built += WEXITSTATUS(status);
    }
    EXPECT_EQ(built, 1);
    int initramfs = 0;
    for (const auto& entry : fs::directory_iterator(home.path() / "init"))
        initramfs += entry.path().filename().string().rfind("initramfs-", 0) == 0;
    EXPECT_EQ(initramfs, 1);
}

TEST(GuestAssets, AMissingOrCorruptKernelSaysWhereItLooked) {
    TempDir home("boxlite-assets");
    engine::GuestAssetOptions options;
    options.home = home.path();
    options.agent = boxlite::test::built_binary("boxlite-agent");
    options.kernel = home.path() / "no-such-kernel";
    auto missing = engine::prepare_guest_assets(options);
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message().find(options.kernel.string()), std::string::npos) << missing.error().message();
    boxlite::test::write_file(home.path() / "vmlinuz", std::string(4096, 'x'));
    options.kernel = home.path() / "vmlinuz";
    auto corrupt = engine::prepare_guest_assets(options);
    ASSERT_FALSE(corrupt);
    EXPECT_NE(corrupt.error().message().find("not a bzImage"), std::string::npos) << corrupt.error().message();
    EXPECT_NE(corrupt.error().message().find(options.kernel.string()), std::string::npos);

    ::setenv("BOXLITE_KERNEL", (home.path() / "elsewhere").c_str(), 1);
    auto from_env = engine::locate_guest_kernel({});
    ::unsetenv("BOXLITE_KERNEL");
    ASSERT_FALSE(from_env);
    EXPECT_NE(from_env.error().message().find("BOXLITE_KERNEL"), std::string::npos);
}

TEST(GuestAssets, TscCommandLineComesFromTheHost) {
    const auto words = engine::guest_tsc_cmdline();
    ASSERT_FALSE(words.empty());
    EXPECT_EQ(words.rfind("tsc_early_khz=", 0), 0U);
    EXPECT_NE(words.find(" tsc=reliable"), std::string::npos);
    const auto boot = engine::guest_boot_cmdline();
    EXPECT_NE(boot.find(words), std::string::npos) << boot;
    EXPECT_NE(boot.find("cryptomgr.notests=1"), std::string::npos) << boot;
}

}  // namespace
