// Volumes on the namespace engine, end to end (issue 12): a real shim and agent in a busybox box,
// host folders bind-mounted by the shim before the box's root is sealed.
#include <boxlite/boxlite.hpp>

#include "namespace_fixture.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <thread>

using namespace boxlite;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

class NamespaceVolumes : public test::NamespaceBox {
protected:
    /// `script` through sh -c (as `user`, root by default): stdout and stderr, then "rc=<code>".
    std::string volume_sh(LiteBox& box, const std::string& script, const std::string& user = "") {
        auto command = BoxCommand("sh").args({"-c", "(" + script + ") 2>&1; echo rc=$?"});
        if (!user.empty()) command.user(user);
        return run(box, command).stdout_text;
    }

    LiteBox create_with(std::vector<VolumeSpec> volumes, bool auto_remove = true) {
        auto o = options(auto_remove);
        o.volumes = std::move(volumes);
        auto box = runtime_->create(o);
        EXPECT_TRUE(box) << box.error().to_string();
        return *box;
    }

    fs::path box_dir(const LiteBox& box) const { return runtime_->layout().box_dir(box.id()); }
};

/// Every mount namespace id (the ns/mnt link, "mnt:[4026...]") some process on the host is in.
std::set<std::string> live_mount_namespaces() {
    std::set<std::string> out;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::error_code ec;
        const auto link = fs::read_symlink(entry.path() / "ns" / "mnt", ec);
        if (!ec) out.insert(link.string());
    }
    return out;
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

TEST_F(NamespaceVolumes, HostFilesInTheBoxAndBoxFilesOnTheHost) {
    test::TempDir shared("boxlite-vol-rw");
    fs::permissions(shared.path(), fs::perms::all);  // a non-root user of the box writes here too
    test::write_file(shared.path() / "from-host.txt", "written on the host\n");
    auto box = create_with({{shared.str(), "/work", false}});
    EXPECT_EQ(volume_sh(box, "cat /work/from-host.txt"), "written on the host\nrc=0\n");
    EXPECT_EQ(volume_sh(box, "echo written in the box > /work/from-box.txt"), "rc=0\n");
    EXPECT_EQ(test::read_file(shared.path() / "from-box.txt"), "written in the box\n");
    // A change on either side is seen at once on the other (one file, not a copy).
    test::write_file(shared.path() / "from-host.txt", "changed\n");
    EXPECT_EQ(volume_sh(box, "cat /work/from-host.txt"), "changed\nrc=0\n");

    // Ownership (docs/volumes.md): no user namespace, so ids pass through unchanged. Root in
    // the box creates files owned by root, the caller (the namespace engine runs as root); any
    // other user of the box by its own uid.
    EXPECT_EQ(volume_sh(box, "touch /work/by-1000", "1000:1000"), "rc=0\n");
    struct stat st {};
    ASSERT_EQ(::stat((shared.path() / "from-box.txt").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, ::geteuid());
    EXPECT_EQ(st.st_uid, 0U);
    ASSERT_EQ(::stat((shared.path() / "by-1000").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1000U);
    EXPECT_EQ(st.st_gid, 1000U);

    // A single file can be a volume too; its mount point is created in the box.
    test::write_file(shared.path() / "config.ini", "key=value\n");
    auto file_box = create_with({{(shared.path() / "config.ini").string(), "/etc/app/config.ini", true}});
    EXPECT_EQ(volume_sh(file_box, "cat /etc/app/config.ini"), "key=value\nrc=0\n");
}

TEST_F(NamespaceVolumes, ReadOnlyHoldsForRootAndAfterARemount) {
    test::TempDir shared("boxlite-vol-ro");
    test::write_file(shared.path() / "data.txt", "read only\n");
    // A mount below the shared folder on the host: read-only must cover it too (a bind is
    // recursive; a remount of its top alone would leave this one writable).
    fs::create_directory(shared.path() / "sub");
    ASSERT_EQ(::mount("tmpfs", (shared.path() / "sub").c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
    struct Unmount {
        fs::path path;
        ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
    } unmount{shared.path() / "sub"};

    auto box = create_with({{shared.str(), "/ro", true}});
    EXPECT_EQ(volume_sh(box, "cat /ro/data.txt"), "read only\nrc=0\n");
    const std::string refused = "sh: can't create /ro/new: Read-only file system\nrc=1\n";
    EXPECT_EQ(volume_sh(box, "echo x > /ro/new"), refused);
    EXPECT_EQ(volume_sh(box, "echo x > /ro/sub/new"), "sh: can't create /ro/sub/new: Read-only file system\nrc=1\n");
    EXPECT_NE(volume_sh(box, "rm /ro/data.txt"), "rc=0\n");
    EXPECT_NE(volume_sh(box, "touch /ro/data.txt"), "rc=0\n");
    // Root tries to lift it: no CAP_SYS_ADMIN, and mount(2) is filtered.
    const auto remount = volume_sh(box, "mount -o remount,rw /ro");
    EXPECT_NE(remount.find("rc="), std::string::npos);
    EXPECT_EQ(remount.find("rc=0"), std::string::npos) << remount;
    EXPECT_NE(volume_sh(box, "mount -o remount,rw /ro/sub"), "rc=0\n");
    EXPECT_NE(volume_sh(box, "umount /ro"), "rc=0\n");
    EXPECT_NE(volume_sh(box, "mount --bind /tmp /ro"), "rc=0\n");
    EXPECT_EQ(volume_sh(box, "echo x > /ro/new"), refused) << "still read-only after the remount attempts";
    EXPECT_FALSE(fs::exists(shared.path() / "new"));
    EXPECT_FALSE(fs::exists(shared.path() / "sub" / "new"));
    // The box's own view: both mounts read-only and nodev.
    const auto mounts = volume_sh(box, "grep ' /ro' /proc/self/mountinfo");
    EXPECT_NE(mounts.find(" /ro ro,nodev"), std::string::npos) << mounts;
    EXPECT_NE(mounts.find(" /ro/sub ro,nodev"), std::string::npos) << mounts;
    // The host folder stays writable for the host.
    test::write_file(shared.path() / "later.txt", "host\n");
    EXPECT_EQ(volume_sh(box, "cat /ro/later.txt"), "host\nrc=0\n");
}

TEST_F(NamespaceVolumes, SymlinksDoNotLeadOutOfTheVolume) {
    // Beside the volume on the host: a file the box must never read, and a folder it must never
    // mount or create anything in.
    test::TempDir outside("boxlite-vol-outside");
    test::write_file(outside.path() / "secret.txt", "host secret\n");
    fs::create_directory(outside.path() / "escape");
    fs::create_directory(outside.path() / "shared");
    const auto shared = outside.path() / "shared";
    fs::permissions(shared, fs::perms::all);
    // Links that name host files, as the host would read them: absolute, and climbing out.
    fs::create_symlink(outside.path() / "secret.txt", shared / "absolute");
    fs::create_symlink("../secret.txt", shared / "relative");
    fs::create_symlink("../../../../../../../../../..", shared / "up");
    // A link where a second volume's mount point lies, as a box could have planted it in an
    // earlier run: the mount must land in the box, not in the host folder it names.
    fs::create_symlink(outside.path() / "escape", shared / "inner");
    test::TempDir inner("boxlite-vol-inner");
    test::write_file(inner.path() / "inner.txt", "inner volume\n");

    auto box = create_with({{shared.string(), "/data", false}, {inner.str(), "/data/inner", true}});
    for (const char* link : {"/data/absolute", "/data/relative"}) {
        const auto read = volume_sh(box, fmt::format("cat {}", link));
        EXPECT_EQ(read.find("host secret"), std::string::npos) << link << ": " << read;
        EXPECT_NE(read.find("No such file or directory"), std::string::npos) << link << ": " << read;
    }
    const auto up = volume_sh(box, "cat /data/up" + (outside.path() / "secret.txt").string());
    EXPECT_EQ(up.find("host secret"), std::string::npos) << up;
    // The box's own link, followed on its side, stays in the box as well.
    const auto image_hostname = test::read_file(*rootfs_ / "etc" / "hostname");
    ASSERT_NE(image_hostname, test::read_file("/etc/hostname")) << "the test needs two different files";
    EXPECT_EQ(volume_sh(box, "ln -s /etc/hostname /data/boxlink && cat /data/boxlink"), image_hostname + "rc=0\n");
    EXPECT_EQ(fs::read_symlink(shared / "boxlink"), fs::path("/etc/hostname")) << "the host sees the link, as it is";
    // The inner volume is where the box sees it, through its own resolution of the link.
    EXPECT_EQ(volume_sh(box, "cat /data/inner/inner.txt"), "inner volume\nrc=0\n");
    EXPECT_TRUE(fs::is_empty(outside.path() / "escape")) << "a mount point was made on the host";
    EXPECT_EQ(fs::read_symlink(shared / "inner"), outside.path() / "escape");
}

TEST_F(NamespaceVolumes, AnonymousVolumesLiveInTheBoxFolderAndGoWithIt) {
    auto box = create_with({{"", "/scratch", false}}, /*auto_remove=*/false);
    EXPECT_EQ(volume_sh(box, "echo kept > /scratch/file && cat /scratch/file"), "kept\nrc=0\n");
    const auto host = anonymous_volume_path(box_dir(box), 0);
    EXPECT_EQ(test::read_file(host / "file"), "kept\n");
    auto info = box.info();
    ASSERT_TRUE(info) << info.error().to_string();
    EXPECT_EQ(info->volumes, (std::vector<VolumeSpec>{{"", "/scratch", false}}));
    // It survives stop and start.
    ASSERT_TRUE(box.stop());
    ASSERT_TRUE(box.start());
    EXPECT_EQ(volume_sh(box, "cat /scratch/file"), "kept\nrc=0\n");
    ASSERT_TRUE(runtime_->remove(box.id().str(), true));
    EXPECT_FALSE(fs::exists(host));
    EXPECT_FALSE(fs::exists(box_dir(box)));
}

TEST_F(NamespaceVolumes, VolumesSurviveStopAndStartAndShowInInfo) {
    test::TempDir ro("boxlite-vol-keep-ro");
    test::TempDir rw("boxlite-vol-keep-rw");
    test::write_file(ro.path() / "a", "a\n");
    const std::vector<VolumeSpec> volumes = {{ro.str(), "/in", true}, {rw.str(), "/out", false}};
    auto box = create_with(volumes, /*auto_remove=*/false);
    EXPECT_EQ(volume_sh(box, "cat /in/a && echo 1 > /out/run1"), "a\nrc=0\n");
    ASSERT_TRUE(box.stop());
    auto stopped = box.info();
    ASSERT_TRUE(stopped);
    EXPECT_EQ(stopped->volumes, volumes);
    ASSERT_TRUE(box.start());
    EXPECT_EQ(volume_sh(box, "cat /in/a /out/run1 && echo 2 > /out/run2"), "a\n1\nrc=0\n");
    EXPECT_EQ(volume_sh(box, "echo x > /in/b"), "sh: can't create /in/b: Read-only file system\nrc=1\n");
    EXPECT_EQ(test::read_file(rw.path() / "run2"), "2\n");
    auto listed = runtime_->list_info();
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 1U);
    EXPECT_EQ(listed->front().volumes, volumes);
}

TEST_F(NamespaceVolumes, BadSpecsAreRefusedAtCreateAndWriteNothing) {
    test::TempDir dir("boxlite-vol-bad");
    const std::vector<std::pair<std::vector<VolumeSpec>, std::string>> cases = {
        {{{"relative/dir", "/data", false}}, "is relative; it must be an absolute path"},
        {{{(dir.path() / "missing").string(), "/data", false}}, "does not exist; create it first"},
        {{{dir.str(), "data", false}}, "must be an absolute path in the box"},
        {{{dir.str(), "/data/../etc", false}}, "must not contain '..'"},
        {{{dir.str(), "/x", false}, {"", "/x/", true}}, "two volumes are mounted at guest path /x"},
        {{{dir.str(), "/proc", false}}, "is on /proc"},
        {{{"", "/sys/kernel", false}}, "is on /sys"},
        {{{dir.str(), "/dev/x", true}}, "is on /dev"},
    };
    const auto boxes = runtime_->layout().boxes_dir();
    for (const auto& [volumes, expected] : cases) {
        auto o = options();
        o.volumes = volumes;
        auto box = runtime_->create(o);
        ASSERT_FALSE(box) << expected;
        EXPECT_EQ(box.error().kind(), ErrorKind::Config) << box.error().to_string();
        EXPECT_NE(box.error().message().find(expected), std::string::npos) << box.error().to_string();
    }
    EXPECT_TRUE(runtime_->list_info()->empty()) << "no row";
    EXPECT_TRUE(!fs::exists(boxes) || fs::is_empty(boxes)) << "no folder";
    EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST_F(NamespaceVolumes, KillingTheShimLeavesNoMountBehind) {
    test::TempDir shared("boxlite-vol-kill");
    auto box = create_with({{shared.str(), "/vol", true}, {"", "/anon", false}}, /*auto_remove=*/false);
    EXPECT_EQ(volume_sh(box, "grep -E -c ' /vol ro,| /anon rw,' /proc/self/mountinfo"), "2\nrc=0\n");
    auto info = box.info();
    ASSERT_TRUE(info && info->pid) << "running, with its shim's pid";
    const auto agent_pid = std::stoi(test::read_file(box_dir(box) / "agent.pid"));
    std::error_code ec;
    const auto box_namespace = fs::read_symlink(fmt::format("/proc/{}/ns/mnt", agent_pid), ec).string();
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_NE(box_namespace, fs::read_symlink("/proc/self/ns/mnt").string());
    ASSERT_TRUE(live_mount_namespaces().contains(box_namespace));

    ASSERT_EQ(::kill(*info->pid, SIGKILL), 0);
    // The box's init dies with the shim (PDEATHSIG), its PID namespace with it; wait for that.
    for (int i = 0; i < 6000 && (process_alive(agent_pid) || live_mount_namespaces().contains(box_namespace)); ++i) {
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_FALSE(process_alive(agent_pid));
    EXPECT_FALSE(live_mount_namespaces().contains(box_namespace)) << "a process still holds the box's mounts";
    // And none of them was ever on the host.
    const auto host_mounts = test::read_file("/proc/self/mountinfo");
    EXPECT_EQ(host_mounts.find(shared.str()), std::string::npos) << host_mounts;
    EXPECT_EQ(host_mounts.find(box_dir(box).string()), std::string::npos) << host_mounts;
    // The box is Stopped now, and comes back with its volumes.
    ASSERT_TRUE(box.start());
    EXPECT_EQ(volume_sh(box, "grep -E -c ' /vol ro,| /anon rw,' /proc/self/mountinfo"), "2\nrc=0\n");
}

}  // namespace
