// The qemu engine end to end through the real `boxlite` binary (label `vm`; seconds per box under
// TCG): Debian's kernel boots our agent, our virtio-blk (QCOW2) and virtio-vsock serve it over
// vhost-user. The busybox image comes from tests/image/registry_harness.sh (umoci).
#include <support/http_server.hpp>
#include <support/support.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct QemuCliRun {
    int status = -1;
    std::string out;
    std::string err;
};

std::ostream& operator<<(std::ostream& os, const QemuCliRun& r) {
    return os << "status " << r.status << "\n--- stdout\n" << r.out << "\n--- stderr\n" << r.err;
}

std::string chomp(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

/// The kernel release scripts/setup unpacked (lib/modules/<release>), which `uname -r` must print.
std::string expected_kernel_release() {
    const char* cache = std::getenv("BOXLITE_KERNEL_CACHE");
    const fs::path modules = fs::path(cache && *cache ? cache : "/var/cache/boxlite/kernel") / "current/lib/modules";
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(modules, ec)) return entry.path().filename().string();
    return {};
}

/// Pids of processes whose command line mentions `needle` (QEMU names the box's files).
std::vector<pid_t> processes_mentioning(const std::string& needle) {
    std::vector<pid_t> out;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        const std::string cmdline = boxlite::test::read_proc_file(entry.path() / "cmdline");
        if (cmdline.find(needle) != std::string::npos && std::stoi(name) != ::getpid()) out.push_back(std::stoi(name));
    }
    return out;
}

class QemuCli : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        work_ = new boxlite::test::TempDir("boxlite-qemu-cli");
        home_ = work_->path() / "home";
        try {
            boxlite::test::shell("bash " + std::string(BOXLITE_SOURCE_DIR) + "/tests/image/registry_harness.sh build " +
                                 (work_->path() / "images").string() + " >/dev/null 2>&1");
        } catch (const std::exception& e) {
            setup_failure_ = std::string("building the test image (umoci): ") + e.what();
            return;
        }
        auto loaded = run({"load", (work_->path() / "images" / "oci").string(), "-q"});
        if (loaded.status != 0 || loaded.out.find("localhost/oci:single") == std::string::npos)
            setup_failure_ = "boxlite load: " + loaded.out + loaded.err;
    }
    static void TearDownTestSuite() {
        (void)run({"rm", "--all", "--force"});
        delete work_;
        work_ = nullptr;
    }
    void SetUp() override { ASSERT_EQ(setup_failure_, ""); }
    void TearDown() override { (void)run({"rm", "--all", "--force"}); }

    /// Runs `boxlite --engine qemu ARGS...` with this suite's home; `input` is its stdin.
    static QemuCliRun run(std::vector<std::string> args, const std::string& input = {},
                          const std::map<std::string, std::string>& env = {}) {
        args.insert(args.begin(), {BOXLITE_CLI_PATH, "--engine", "qemu"});
        const auto in_path = work_->path() / "stdin";
        const auto out_path = work_->path() / "stdout";
        const auto err_path = work_->path() / "stderr";
        boxlite::test::write_file(in_path, input);
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::setenv("BOXLITE_HOME", home_.c_str(), 1);
            ::unsetenv("BOXLITE_ENGINE");
            for (const auto& [key, value] : env) ::setenv(key.c_str(), value.c_str(), 1);
            const int in = ::open(in_path.c_str(), O_RDONLY);
            const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (in < 0 || out < 0 || err < 0) ::_exit(126);
            ::dup2(in, 0);
            ::dup2(out, 1);
            ::dup2(err, 2);
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        QemuCliRun result;
        int status = 0;
        if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return result;
        result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        result.out = boxlite::test::read_file(out_path);
        result.err = boxlite::test::read_file(err_path);
        return result;
    }
    static std::string image() { return "localhost/oci:single"; }
    static std::string inspect(const std::string& box, const std::string& format) {
        return chomp(run({"inspect", "-f", format, box}).out);
    }
    static void expect_disk_checks_clean(const std::string& box_dir) {
        EXPECT_NO_THROW(boxlite::test::shell("qemu-img check -q '" + box_dir + "/disk.qcow2' 2>&1")) << box_dir;
    }

    static inline boxlite::test::TempDir* work_ = nullptr;
    static inline fs::path home_;
    static inline std::string setup_failure_;
};

TEST_F(QemuCli, EchoAndTheDebianKernel) {
    auto r = run({"run", "--rm", image(), "sh", "-c", "echo hello from qemu; uname -r"});
    ASSERT_EQ(r.status, 0) << r;
    EXPECT_EQ(r.out, "hello from qemu\n" + expected_kernel_release() + "\n") << r;
}

TEST_F(QemuCli, AMissingOrCorruptKernelSaysWhichFile) {
    auto missing = run({"run", "--rm", image(), "true"}, {}, {{"BOXLITE_KERNEL", "/nonexistent/vmlinuz"}});
    EXPECT_EQ(missing.status, 1) << missing;
    EXPECT_NE(missing.err.find("/nonexistent/vmlinuz (from BOXLITE_KERNEL) does not exist"), std::string::npos)
        << missing;
    const auto corrupt = work_->path() / "corrupt-kernel";
    boxlite::test::write_file(corrupt, std::string(100000, 'x'));
    auto bad = run({"run", "--rm", image(), "true"}, {}, {{"BOXLITE_KERNEL", corrupt.string()}});
    EXPECT_EQ(bad.status, 1) << bad;
    EXPECT_NE(bad.err.find(corrupt.string()), std::string::npos) << bad;
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad;
}

TEST_F(QemuCli, StdinAndExitCodes) {
    auto r = run({"run", "--rm", "-i", image(), "sh", "-c", "tr a-z A-Z; exit 7"}, "piped through a vm\n");
    EXPECT_EQ(r.status, 7) << r;
    EXPECT_EQ(r.out, "PIPED THROUGH A VM\n") << r;
}

TEST_F(QemuCli, FiftyMegabytesOfStdoutAndASignalledExit) {
    ASSERT_EQ(run({"run", "-d", "--name", "big", image(), "sh", "-c", "sleep 100000; true"}).status, 0);
    auto big = run({"exec", "big", "sh", "-c", "head -c 52428800 /dev/zero | tr '\\0' x"});
    EXPECT_EQ(big.status, 0) << big.err;
    EXPECT_EQ(big.out.size(), 52428800u);
    EXPECT_EQ(big.out.find_first_not_of('x'), std::string::npos);
    // A command killed by a signal exits 128 + N, as on the namespace engine.
    auto killed = run({"exec", "big", "sh", "-c", "kill -TERM $$"});
    EXPECT_EQ(killed.status, 128 + 15) << killed;
}

TEST_F(QemuCli, StopStartKeepsDataAndDfShowsTheDiskSize) {
    auto started = run({"run", "-d", "--name", "keep", "--disk-size", "2g", image(), "sh", "-c", "sleep 100000; true"});
    ASSERT_EQ(started.status, 0) << started;
    const std::string box_dir = inspect("keep", "{{.Path}}");
    auto wrote = run({"exec", "keep", "sh", "-c", "echo persistent > /root/data; sync"});
    ASSERT_EQ(wrote.status, 0) << wrote;
    // df: a 2 GiB disk (ext4 reports a little less for its own metadata).
    auto df = run({"exec", "keep", "sh", "-c", "df -k / | tail -1 | awk '{print $2}'"});
    ASSERT_EQ(df.status, 0) << df;
    const long kib = std::atol(df.out.c_str());
    EXPECT_GT(kib, 1900L * 1024) << df;
    EXPECT_LE(kib, 2048L * 1024) << df;

    auto stopped = run({"stop", "keep"});
    ASSERT_EQ(stopped.status, 0) << stopped;
    EXPECT_EQ(inspect("keep", "{{.State.Status}}"), "stopped");
    expect_disk_checks_clean(box_dir);
    auto again = run({"start", "keep"});
    ASSERT_EQ(again.status, 0) << again;
    auto read = run({"exec", "keep", "cat", "/root/data"});
    EXPECT_EQ(read.out, "persistent\n") << read;
    ASSERT_EQ(run({"stop", "keep"}).status, 0);
    expect_disk_checks_clean(box_dir);
}

TEST_F(QemuCli, TwoBoxesAtOnce) {
    ASSERT_EQ(run({"run", "-d", "--name", "one", image(), "sh", "-c", "sleep 100000; true"}).status, 0);
    ASSERT_EQ(run({"run", "-d", "--name", "two", image(), "sh", "-c", "sleep 100000; true"}).status, 0);
    EXPECT_EQ(run({"exec", "one", "sh", "-c", "echo one > /root/who; cat /root/who"}).out, "one\n");
    EXPECT_EQ(run({"exec", "two", "sh", "-c", "cat /root/who 2>/dev/null || echo not shared"}).out, "not shared\n");
    EXPECT_EQ(inspect("one", "{{.State.Status}}"), "running");
    EXPECT_EQ(inspect("two", "{{.State.Status}}"), "running");
}

TEST_F(QemuCli, StopOfAHungGuestStillEnds) {
    ASSERT_EQ(run({"run", "-d", "--name", "hung", image(), "sh", "-c", "sleep 100000; true"}).status, 0);
    const std::string box_dir = inspect("hung", "{{.Path}}");
    // Freeze QEMU itself: the guest answers nothing any more, not even the agent's Shutdown.
    const auto qemu = processes_mentioning(box_dir + "/initrd.cpio");
    ASSERT_EQ(qemu.size(), 1u);
    ASSERT_EQ(::kill(qemu[0], SIGSTOP), 0);
    auto stopped = run({"stop", "-t", "2", "hung"});
    EXPECT_EQ(stopped.status, 0) << stopped;
    EXPECT_EQ(inspect("hung", "{{.State.Status}}"), "stopped");
    EXPECT_TRUE(processes_mentioning(box_dir).empty());
}

TEST_F(QemuCli, KillingTheShimOrQemuLeavesAStoppedBoxThatRmRemoves) {
    for (const std::string victim : {"shim", "qemu"}) {
        SCOPED_TRACE(victim);
        ASSERT_EQ(run({"run", "-d", "--name", "victim", image(), "sh", "-c", "sleep 100000; true"}).status, 0);
        const std::string box_dir = inspect("victim", "{{.Path}}");
        const auto shim = std::atoi(inspect("victim", "{{.State.Pid}}").c_str());
        ASSERT_GT(shim, 0);
        const auto qemu = processes_mentioning(box_dir + "/initrd.cpio");
        ASSERT_EQ(qemu.size(), 1u);
        ASSERT_EQ(::kill(victim == "shim" ? shim : qemu[0], SIGKILL), 0);
        // Its partner follows by itself (parent-death signal, or the shim seeing QEMU exit).
        for (int i = 0; i < 300 && !processes_mentioning(box_dir).empty(); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        EXPECT_TRUE(processes_mentioning(box_dir).empty());
        EXPECT_EQ(inspect("victim", "{{.State.Status}}"), "stopped");
        auto removed = run({"rm", "victim"});
        EXPECT_EQ(removed.status, 0) << removed;
        EXPECT_FALSE(fs::exists(box_dir));
    }
}

// ---- volumes: virtiofsd per volume (docs/volumes.md)

/// Pids of running virtiofsd processes whose command line mentions `needle`.
std::vector<pid_t> virtiofsd_serving(const std::string& needle) {
    std::vector<pid_t> out;
    for (const pid_t pid : processes_mentioning(needle)) {
        const std::string cmdline = boxlite::test::read_proc_file("/proc/" + std::to_string(pid) + "/cmdline");
        if (cmdline.find("virtiofsd") != std::string::npos) out.push_back(pid);
    }
    return out;
}

/// virtiofsd (qemu-system-common, installed by scripts/setup) needs root for its sandbox.
bool virtiofs_preconditions(std::string& why) {
    if (::geteuid() != 0) why = "precondition: not root (virtiofsd needs CAP_SYS_ADMIN)";
    return why.empty();
}

TEST_F(QemuCli, VolumesReadWriteReadOnlySymlinksAnonymousAndRestart) {
    if (std::string why; !virtiofs_preconditions(why)) GTEST_SKIP() << why;
    const auto dir = work_->path() / "volumes";
    const auto shared = dir / "shared";
    const auto readonly = dir / "readonly";
    fs::create_directories(shared);
    fs::create_directories(readonly);
    boxlite::test::write_file(shared / "hello.txt", "from the host\n");
    boxlite::test::write_file(readonly / "kept.txt", "read only\n");
    boxlite::test::write_file(dir / "secret.txt", "host secret\n");
    // Symlinks in the volume pointing out of it, at a host file.
    fs::create_symlink(dir / "secret.txt", shared / "absolute");
    fs::create_symlink("../secret.txt", shared / "relative");

    auto started = run({"run", "-d", "--name", "vols", "-v", shared.string() + ":/data", "-v",
                        readonly.string() + ":/mnt/ro:ro", "-v", "/scratch", image(), "sh", "-c",
                        "sleep 100000; true"});
    ASSERT_EQ(started.status, 0) << started;
    const std::string box_dir = inspect("vols", "{{.Path}}");

    auto read = run({"exec", "vols", "cat", "/data/hello.txt", "/mnt/ro/kept.txt"});
    EXPECT_EQ(read.status, 0) << read;
    EXPECT_EQ(read.out, "from the host\nread only\n") << read;

    auto wrote = run({"exec", "vols", "sh", "-c", "echo from the box > /data/out.txt; echo anon > /scratch/a"});
    EXPECT_EQ(wrote.status, 0) << wrote;
    EXPECT_EQ(boxlite::test::read_file(shared / "out.txt"), "from the box\n");
    EXPECT_EQ(boxlite::test::read_file(fs::path(box_dir) / "volumes" / "2" / "a"), "anon\n");
    // Ownership (docs/volumes.md): virtiofsd creates files as the box user's numeric uid/gid.
    struct stat st {};
    ASSERT_EQ(::stat((shared / "out.txt").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
    fs::create_directories(shared / "open");
    fs::permissions(shared / "open", fs::perms::all);
    auto as_user = run({"exec", "-u", "1000:1000", "vols", "sh", "-c", "echo u > /data/open/u.txt"});
    EXPECT_EQ(as_user.status, 0) << as_user;
    ASSERT_EQ(::stat((shared / "open" / "u.txt").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1000u);
    EXPECT_EQ(st.st_gid, 1000u);

    // Read-only on the host: root in the box cannot write, not even after remounting rw.
    auto refused = run({"exec", "vols", "sh", "-c", "echo x > /mnt/ro/new"});
    EXPECT_NE(refused.status, 0) << refused;
    auto remounted = run({"exec", "vols", "sh", "-c",
                          "mount -o remount,rw /mnt/ro; echo x > /mnt/ro/new; echo y >> /mnt/ro/kept.txt; "
                          "rm -f /mnt/ro/kept.txt; touch /mnt/ro/made"});
    EXPECT_NE(remounted.status, 0) << remounted;
    EXPECT_FALSE(fs::exists(readonly / "new"));
    EXPECT_FALSE(fs::exists(readonly / "made"));
    EXPECT_EQ(boxlite::test::read_file(readonly / "kept.txt"), "read only\n");

    // The symlinks resolve in the box, never to the host's file.
    auto links = run({"exec", "vols", "sh", "-c", "cat /data/absolute /data/relative 2>&1; true"});
    EXPECT_EQ(links.out.find("host secret"), std::string::npos) << links;

    // inspect: Docker's Mounts.
    const auto doc = nlohmann::json::parse(run({"inspect", "vols"}).out);
    const auto& mounts = doc[0]["Mounts"];
    ASSERT_EQ(mounts.size(), 3u) << doc.dump(2);
    EXPECT_EQ(mounts[0]["Source"], shared.string());
    EXPECT_EQ(mounts[0]["Destination"], "/data");
    EXPECT_EQ(mounts[1]["Mode"], "ro");
    EXPECT_EQ(mounts[2]["Type"], "volume");

    // Nothing is mounted on the host: the read-only bind lives in virtiofsd's own namespaces.
    EXPECT_EQ(boxlite::test::read_file("/proc/self/mountinfo").find(readonly.string()), std::string::npos);

    // Stop and start: the volumes come back.
    // virtiofsd and its sandboxed child (its own pid namespace).
    EXPECT_EQ(virtiofsd_serving(shared.string()).size(), 2u);
    ASSERT_EQ(run({"stop", "vols"}).status, 0);
    EXPECT_TRUE(virtiofsd_serving(shared.string()).empty()) << "virtiofsd outlived a stopped box";
    auto again = run({"start", "vols"});
    ASSERT_EQ(again.status, 0) << again;
    auto after = run({"exec", "vols", "cat", "/data/out.txt", "/scratch/a"});
    EXPECT_EQ(after.out, "from the box\nanon\n") << after;

    // kill -9 of the shim: no virtiofsd (nor anything else of the box) is left.
    const auto shim = std::atoi(inspect("vols", "{{.State.Pid}}").c_str());
    ASSERT_GT(shim, 0);
    ASSERT_EQ(::kill(shim, SIGKILL), 0);
    for (int i = 0; i < 300 && !(processes_mentioning(box_dir).empty() && virtiofsd_serving(dir.string()).empty()); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(virtiofsd_serving(dir.string()).empty());
    EXPECT_TRUE(processes_mentioning(box_dir).empty());

    // rm: the anonymous volume goes with the box; the shared folder stays.
    ASSERT_EQ(run({"rm", "vols"}).status, 0);
    EXPECT_FALSE(fs::exists(fs::path(box_dir) / "volumes"));
    EXPECT_EQ(boxlite::test::read_file(shared / "hello.txt"), "from the host\n");
}

TEST_F(QemuCli, ANestedVolumeIsMountedOnTopWhateverTheOrderGiven) {
    if (std::string why; !virtiofs_preconditions(why)) GTEST_SKIP() << why;
    const auto outer = work_->path() / "outer";
    const auto inner = work_->path() / "inner";
    fs::create_directories(outer);
    fs::create_directories(inner);
    boxlite::test::write_file(outer / "o.txt", "outer\n");
    boxlite::test::write_file(inner / "i.txt", "inner\n");
    auto r = run({"run", "--rm", "-v", inner.string() + ":/n/in:ro", "-v", outer.string() + ":/n", image(), "cat",
                  "/n/o.txt", "/n/in/i.txt"});
    EXPECT_EQ(r.status, 0) << r;
    EXPECT_EQ(r.out, "outer\ninner\n") << r;
}

TEST_F(QemuCli, AVirtiofsdThatDiesEndsTheBoxInsteadOfHangingIt) {
    if (std::string why; !virtiofs_preconditions(why)) GTEST_SKIP() << why;
    const auto shared = work_->path() / "dies";
    fs::create_directories(shared);
    ASSERT_EQ(run({"run", "-d", "--name", "orphan", "-v", shared.string() + ":/data", image(), "sh", "-c",
                   "sleep 100000; true"})
                  .status,
              0);
    const std::string box_dir = inspect("orphan", "{{.Path}}");
    const auto daemons = virtiofsd_serving(shared.string());
    ASSERT_FALSE(daemons.empty());
    for (const pid_t pid : daemons) ::kill(pid, SIGKILL);
    // QEMU and the daemons name the box's folder on their command lines; the shim (its config
    // comes on a pipe) does not, and it may still be ending a moment after them: the box counts
    // as running until it has exited. Both within the same bound, so a hang still fails.
    for (int i = 0;
         i < 300 && (!processes_mentioning(box_dir).empty() || inspect("orphan", "{{.State.Status}}") != "stopped");
         ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(processes_mentioning(box_dir).empty());
    EXPECT_EQ(inspect("orphan", "{{.State.Status}}"), "stopped");
    // It starts again with a new virtiofsd.
    auto again = run({"start", "orphan"});
    ASSERT_EQ(again.status, 0) << again;
    EXPECT_EQ(run({"exec", "orphan", "sh", "-c", "echo back > /data/f"}).status, 0);
    EXPECT_EQ(boxlite::test::read_file(shared / "f"), "back\n");
}

TEST_F(QemuCli, AFileVolumeIsRefusedWithItsReason) {
    if (std::string why; !virtiofs_preconditions(why)) GTEST_SKIP() << why;
    const auto file = work_->path() / "single-file";
    boxlite::test::write_file(file, "x");
    auto r = run({"run", "--rm", "-v", file.string() + ":/f", image(), "true"});
    EXPECT_NE(r.status, 0) << r;
    EXPECT_NE(r.err.find("shares folders (virtiofs), not single files"), std::string::npos) << r;
}

// ---- a rootfs directory on the qemu engine: its ext4 is built like an image's

TEST_F(QemuCli, ARootfsDirectoryBootsFromItsOwnExt4) {
    const auto rootfs = boxlite::test::busybox_rootfs();
    ASSERT_TRUE(rootfs) << "busybox-static (scripts/setup installs it) is missing";
    auto created = run({"create", "--name", "dir", "--rootfs", rootfs->string(), "sh", "-c", "sleep 100000; true"});
    ASSERT_EQ(created.status, 0) << created;
    ASSERT_EQ(run({"start", "dir"}).status, 0);
    const std::string box_dir = inspect("dir", "{{.Path}}");
    EXPECT_TRUE(fs::is_regular_file(fs::path(box_dir) / "rootfs.ext4"));
    auto r = run({"exec", "dir", "sh", "-c", "cat /etc/hostname; uname -r; echo kept > /root/data; sync"});
    EXPECT_EQ(r.status, 0) << r;
    EXPECT_EQ(r.out, "busybox\n" + expected_kernel_release() + "\n") << r;
    // The box writes its own disk, never the directory.
    EXPECT_FALSE(fs::exists(*rootfs / "root" / "data"));
    ASSERT_EQ(run({"stop", "dir"}).status, 0);
    ASSERT_EQ(run({"start", "dir"}).status, 0);
    EXPECT_EQ(run({"exec", "dir", "cat", "/root/data"}).out, "kept\n");
    ASSERT_EQ(run({"rm", "-f", "dir"}).status, 0);
    EXPECT_FALSE(fs::exists(box_dir));
}

// ---- the namespace engine's CLI scenarios (tests/cli/cli_e2e_test.cpp), a bounded subset on qemu

TEST_F(QemuCli, ScenarioRunExitCodesAndSignals) {
    const auto rootfs = boxlite::test::busybox_rootfs();
    ASSERT_TRUE(rootfs) << "busybox-static (scripts/setup installs it) is missing";
    auto split = run({"run", "--rm", "--rootfs", rootfs->string(), "sh", "-c", "echo out; echo err >&2; kill -9 $$"});
    EXPECT_EQ(split.status, 137) << split;  // 128 + SIGKILL
    EXPECT_EQ(split.out, "out\n") << split;
    EXPECT_NE(split.err.find("err\n"), std::string::npos) << split;
    auto missing = run({"run", "--rm", "--rootfs", rootfs->string(), "/no/such/program"});
    EXPECT_NE(missing.status, 0) << missing;
}

TEST_F(QemuCli, ScenarioRunFlagsReachTheCommand) {
    const auto rootfs = boxlite::test::busybox_rootfs();
    ASSERT_TRUE(rootfs) << "busybox-static (scripts/setup installs it) is missing";
    auto env = run({"run", "--rm", "--rootfs", rootfs->string(), "-e", "FROM_CALLER", "-e", "SET=value=with=equals",
                    "-e", "NOT_IN_CALLER", "-w", "/tmp", "-u", "1000", "sh", "-c",
                    "echo $FROM_CALLER; echo $SET; echo ${NOT_IN_CALLER-unset}; pwd; id -u"},
                   {}, {{"FROM_CALLER", "caller-value"}});
    EXPECT_EQ(env.status, 0) << env;
    EXPECT_EQ(env.out, "caller-value\nvalue=with=equals\nunset\n/tmp\n1000\n") << env;
    auto entry = run({"run", "--rm", "--rootfs", rootfs->string(), "--entrypoint", "/bin/echo", "via", "entrypoint"});
    EXPECT_EQ(entry.out, "via entrypoint\n") << entry;
}

TEST_F(QemuCli, ScenarioDetachedRunExecDetachAndCopyInAndOut) {
    const auto rootfs = boxlite::test::busybox_rootfs();
    ASSERT_TRUE(rootfs) << "busybox-static (scripts/setup installs it) is missing";
    auto started = run({"run", "-d", "--name", "bg", "--rootfs", rootfs->string(), "sh", "-c",
                        "echo started > /tmp/mark; sleep 100000"});
    ASSERT_EQ(started.status, 0) << started;
    EXPECT_EQ(chomp(started.out).size(), 26u);
    EXPECT_EQ(inspect("bg", "{{.State.Status}}"), "running");
    EXPECT_EQ(run({"exec", "-d", "bg", "--", "sh", "-c", "echo detached > /tmp/d"}).status, 0);
    std::string seen;
    for (int i = 0; i < 100 && seen != "started\ndetached\n"; ++i) {
        seen = run({"exec", "bg", "--", "sh", "-c", "cat /tmp/mark /tmp/d 2>/dev/null"}).out;
        if (seen != "started\ndetached\n") std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(seen, "started\ndetached\n");

    const auto dir = work_->path() / "cp";
    fs::create_directories(dir / "tree/sub");
    boxlite::test::write_file(dir / "tree/a.txt", "alpha\n");
    boxlite::test::write_file(dir / "tree/sub/b.txt", "beta\n");
    auto in = run({"cp", (dir / "tree").string(), "bg:/srv"});
    ASSERT_EQ(in.status, 0) << in;
    EXPECT_EQ(run({"exec", "bg", "cat", "/srv/sub/b.txt"}).out, "beta\n");
    auto out = run({"cp", "bg:/srv", (dir / "back").string()});
    ASSERT_EQ(out.status, 0) << out;
    EXPECT_EQ(boxlite::test::read_file(dir / "back/a.txt"), "alpha\n");
    EXPECT_EQ(boxlite::test::read_file(dir / "back/sub/b.txt"), "beta\n");
    EXPECT_EQ(run({"stop", "-t", "5", "bg"}).status, 0);
    EXPECT_EQ(inspect("bg", "{{.State.Status}}"), "stopped");
    EXPECT_EQ(run({"rm", "bg"}).status, 0);
}

TEST_F(QemuCli, ScenarioRunWithoutRmKeepsAStoppedBox) {
    const auto rootfs = boxlite::test::busybox_rootfs();
    ASSERT_TRUE(rootfs) << "busybox-static (scripts/setup installs it) is missing";
    auto kept = run({"run", "--name", "kept", "--rootfs", rootfs->string(), "true"});
    ASSERT_EQ(kept.status, 0) << kept;
    auto listed = run({"ls", "-a", "--format", "{{.Name}} {{.Status}}"});
    EXPECT_NE(listed.out.find("kept stopped"), std::string::npos) << listed;
    EXPECT_EQ(run({"ls", "--format", "{{.Name}}"}).out.find("kept"), std::string::npos);  // not running
    EXPECT_EQ(run({"rm", "kept"}).status, 0);
    auto gone = run({"inspect", "kept"});
    EXPECT_EQ(gone.status, 1);
    EXPECT_NE(gone.err.find("box not found"), std::string::npos) << gone;
}

TEST_F(QemuCli, ScenarioLifecycleAndFormats) {
    const auto rootfs = boxlite::test::busybox_rootfs();
    ASSERT_TRUE(rootfs) << "busybox-static (scripts/setup installs it) is missing";
    auto created = run({"create", "--name", "life", "-e", "A=1", "--rootfs", rootfs->string()});
    ASSERT_EQ(created.status, 0) << created;
    const auto id = chomp(created.out);
    EXPECT_EQ(id.size(), 26u);
    EXPECT_EQ(inspect("life", "{{.State.Status}}"), "configured");
    ASSERT_EQ(run({"start", "life"}).status, 0);
    EXPECT_EQ(inspect(id, "{{.State.Status}} {{.State.Running}}"), "running true");
    auto exec = run({"exec", "life", "--", "sh", "-c", "echo $A"});
    EXPECT_EQ(exec.out, "1\n") << exec;
    EXPECT_EQ(run({"exec", "life", "sh", "-c", "exit 42"}).status, 42);
    auto piped = run({"exec", "-i", "-e", "B=2", "-w", "/tmp", "life", "--", "sh", "-c", "cat; echo $B; pwd"}, "in\n");
    EXPECT_EQ(piped.out, "in\n2\n/tmp\n") << piped;
    ASSERT_EQ(run({"exec", "life", "--", "sh", "-c", "echo kept > /root/state"}).status, 0);
    ASSERT_EQ(run({"stop", "life"}).status, 0);
    EXPECT_EQ(inspect("life", "{{.State.Status}}"), "stopped");
    ASSERT_EQ(run({"restart", "life"}).status, 0);
    EXPECT_EQ(run({"exec", "life", "cat", "/root/state"}).out, "kept\n");

    EXPECT_EQ(chomp(run({"ps", "-q"}).out), id.substr(0, 12));
    auto json = nlohmann::json::parse(run({"list", "--format", "json"}).out);
    ASSERT_EQ(json.size(), 1u);
    EXPECT_EQ(json[0]["ID"], id);
    EXPECT_EQ(json[0]["Status"], "running");
    auto doc = nlohmann::json::parse(run({"inspect", "life"}).out);
    EXPECT_EQ(doc[0]["Config"]["Env"], nlohmann::json::array({"A=1"}));
    auto stats = run({"stats", "--format", "json", "life"});
    ASSERT_EQ(stats.status, 0) << stats;
    EXPECT_EQ(nlohmann::json::parse(stats.out)["Name"], "life");
    EXPECT_EQ(run({"logs", "-n", "5", "life"}).status, 0);
    auto refused = run({"rm", "life"});
    EXPECT_EQ(refused.status, 1);
    EXPECT_NE(refused.err.find("invalid state"), std::string::npos) << refused;
    EXPECT_EQ(run({"rm", "-f", "life"}).status, 0);
    EXPECT_EQ(chomp(run({"ls", "-aq"}).out), "");
}

// ---- the box network: our virtio-net over vhost-user, the shim's pump and firewall, passt
// (docs/networking.md). No packet leaves this machine: each test moves its process (and so the
// CLI, the shim, QEMU and passt it starts) into a network namespace of its own, with loopback and
// a dummy interface holding TEST-NET addresses; the default route ends in that interface.

/// The parent pid of `pid`, or 0.
pid_t parent_of(pid_t pid) {
    const std::string stat = boxlite::test::read_proc_file("/proc/" + std::to_string(pid) + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream fields(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    fields >> state >> ppid;
    return ppid;
}

/// Pids of running passt processes started by the shim `shim` (its keeper's PID namespace:
/// shim, keeper, the namespace's init, passt). Other passt processes on this machine (other
/// boxes, other test runs) do not count.
std::vector<pid_t> passt_of(pid_t shim) {
    std::vector<pid_t> out;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream in(entry.path() / "comm");
        std::string comm;
        std::getline(in, comm);
        if (comm.rfind("passt", 0) != 0) continue;
        const pid_t pid = std::stoi(name);
        pid_t up = pid;
        for (int level = 0; level < 4 && up > 1; ++level) {
            up = parent_of(up);
            if (up == shim) {
                out.push_back(pid);
                break;
            }
        }
    }
    return out;
}

/// Whether process `pid` is still there (a zombie counts as gone).
bool process_running(pid_t pid) {
    const std::string stat = boxlite::test::read_proc_file("/proc/" + std::to_string(pid) + "/stat");
    const auto close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

class QemuNetwork : public QemuCli {
protected:
    void SetUp() override {
        QemuCli::SetUp();
        if (::geteuid() != 0) GTEST_SKIP() << "precondition: not root (network namespaces)";
        if (::access("/usr/bin/passt", X_OK) != 0)
            GTEST_SKIP() << "precondition: passt is not installed (apt-get install passt)";
        ASSERT_EQ(::unshare(CLONE_NEWNET), 0) << std::strerror(errno);
        ASSERT_EQ(std::system(
                      "ip link set lo up && (ip link add t0 type dummy 2>/dev/null || ip tuntap add t0 mode tap) "
                      "&& ip addr add 198.51.100.1/24 dev t0 && ip addr add 203.0.113.1/24 dev t0 && "
                      "ip link set t0 up && ip route add default dev t0"),
                  0);
    }
    /// passt forwards the box's DNS to the namespace's loopback, where nothing answers.
    static std::map<std::string, std::string> net_env() { return {{"BOXLITE_NET_DNS", "127.0.0.1"}}; }
    /// `script` in a fresh box (run --rm, extra run flags first): its output, then "rc=<code>".
    static QemuCliRun sh(const std::vector<std::string>& flags, const std::string& script) {
        std::vector<std::string> args = {"run", "--rm"};
        args.insert(args.end(), flags.begin(), flags.end());
        args.insert(args.end(), {image(), "sh", "-c", "(" + script + ") 2>&1; echo rc=$?"});
        return run(args, {}, net_env());
    }
    /// An HTTP GET with busybox nc; stdin stays open a while (this passt never sends its FIN to a
    /// guest that half-closed first).
    static std::string fetch(const std::string& host, std::uint16_t port) {
        return "{ printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 2; } | nc -w 5 " + host + " " + std::to_string(port);
    }
    static bool answered(const std::string& out, const std::string& body) {
        return out.find(body) != std::string::npos && out.find("rc=0\n") != std::string::npos;
    }
};

TEST_F(QemuNetwork, TheBoxReachesTheHostLoopbackThroughTheAliasOnly) {
    boxlite::test::HttpServer host("127.0.0.1", "hello from the host");
    ASSERT_TRUE(host.ok());
    const auto out = sh({}, fetch("host.boxlite.internal", host.port()) + "; echo; cat /etc/hosts /etc/resolv.conf; " +
                                fetch("192.168.127.1", host.port()) + " || echo gateway-refused");
    EXPECT_EQ(out.status, 0) << out;
    EXPECT_NE(out.out.find("hello from the host"), std::string::npos) << out;
    EXPECT_NE(out.out.find("192.168.127.254\thost.boxlite.internal"), std::string::npos) << out;
    EXPECT_NE(out.out.find("nameserver 192.168.127.1"), std::string::npos) << out;
    // The gateway is passt's mapping of the host's loopback too: kept for DNS alone.
    EXPECT_NE(out.out.find("gateway-refused"), std::string::npos) << out;
}

// The guest brings eth0 up on a thread while the agent already serves (docs/guest.md): the box's
// very first command, run right after start, must still find it configured, with no retry.
TEST_F(QemuNetwork, TheFirstCommandFindsEth0UpWithItsAddressRouteAndHostsFile) {
    const auto out = sh({}, "ip -4 addr show dev eth0; cat /proc/net/route /etc/hosts /etc/resolv.conf");
    EXPECT_EQ(out.status, 0) << out;
    EXPECT_NE(out.out.find("inet 192.168.127.2/24"), std::string::npos) << out;
    EXPECT_NE(out.out.find(",UP"), std::string::npos) << out;
    // The default route via 192.168.127.1 (/proc/net/route's little-endian hex).
    EXPECT_NE(out.out.find("eth0\t00000000\t017FA8C0"), std::string::npos) << out;
    EXPECT_NE(out.out.find("192.168.127.2\t"), std::string::npos) << out;
    EXPECT_NE(out.out.find("nameserver 192.168.127.1"), std::string::npos) << out;
    EXPECT_NE(out.out.find("rc=0"), std::string::npos) << out;
}

TEST_F(QemuNetwork, APublishedTcpPortReachesAServerInTheBox) {
    ASSERT_EQ(run({"run", "-d", "--name", "web", "-p", "127.0.0.1:18093:8000", image(), "sh", "-c",
                   "while true; do echo hello-from-the-box | nc -l -p 8000; done"},
                  {}, net_env())
                  .status,
              0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(18093);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    {
        // The box is reported started only once passt listens on its published ports (as on the
        // namespace engine): the first connection, right after `run -d`, is taken.
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0)
            << "nothing listens on the published port when run -d returned: " << std::strerror(errno);
        ::close(fd);
    }
    std::string got;
    for (int attempt = 0; attempt < 100 && got.find("hello-from-the-box") == std::string::npos; ++attempt) {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0) {
            timeval timeout{5, 0};
            ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
            char buffer[256];
            const auto n = ::read(fd, buffer, sizeof buffer);
            if (n > 0) got.assign(buffer, static_cast<std::size_t>(n));
        }
        ::close(fd);
        if (got.find("hello-from-the-box") == std::string::npos)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_NE(got.find("hello-from-the-box"), std::string::npos) << got;
    EXPECT_NE(inspect("web", "{{json .NetworkSettings.Ports}}").find("18093"), std::string::npos);
}

TEST_F(QemuNetwork, APublishedUdpPortEchoesADatagram) {
    // The echo server comes in through a read-only volume (it is static); it answers one datagram
    // "box got <message>" and exits.
    const auto probe = boxlite::test::built_binary("netprobe/boxlite_udp_echo_probe");
    ASSERT_TRUE(fs::exists(probe)) << probe;
    const auto started = run({"run", "-d", "--name", "udp", "-p", "127.0.0.1:15363:5353/udp", "-v",
                              probe.parent_path().string() + ":/netprobe:ro", image(),
                              "/netprobe/boxlite_udp_echo_probe", "5353"},
                             {}, net_env());
    ASSERT_EQ(started.status, 0) << started;
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    timeval wait{1, 0};  // per attempt: datagrams sent before the server binds are lost
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(15363);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
    std::string got;
    for (int attempt = 0; attempt < 120 && got.empty(); ++attempt) {
        (void)::send(fd, "ping over udp", 13, MSG_NOSIGNAL);
        char buffer[256];
        const auto n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n > 0) got.assign(buffer, static_cast<std::size_t>(n));
    }
    ::close(fd);
    EXPECT_EQ(got, "box got ping over udp");
}

TEST_F(QemuNetwork, AnAllowListLetsAListedAddressThroughAndRefusesTheRest) {
    boxlite::test::HttpServer allowed("198.51.100.1", "allowed");
    boxlite::test::HttpServer refused("203.0.113.1", "not allowed");
    ASSERT_TRUE(allowed.ok() && refused.ok());
    const auto out = sh({"--allow-net", "198.51.100.1"},
                        fetch("198.51.100.1", allowed.port()) + "; echo; " + fetch("203.0.113.1", refused.port()));
    EXPECT_NE(out.out.find("allowed"), std::string::npos) << out;
    EXPECT_EQ(out.out.find("not allowed"), std::string::npos) << out;
}

TEST_F(QemuNetwork, RootInTheVmCannotUndoTheFirewall) {
    boxlite::test::HttpServer refused("203.0.113.1", "not allowed");
    ASSERT_TRUE(refused.ok());
    // Root owns the guest kernel: it can change addresses, routes and use raw sockets. The
    // firewall is in the shim, on the host, so none of it gets a frame past it.
    const auto out = sh({"--allow-net", "198.51.100.0/24"},
                        "ip addr add 203.0.113.7/24 dev eth0 && ip route replace default via 192.168.127.1 dev eth0 "
                        "&& echo root-changed-the-network; " +
                            fetch("203.0.113.1", refused.port()) +
                            "; echo; ping -c 1 -W 2 203.0.113.1 && echo ping-got-through");
    EXPECT_NE(out.out.find("root-changed-the-network"), std::string::npos) << out;
    EXPECT_EQ(out.out.find("not allowed"), std::string::npos) << out;
    EXPECT_EQ(out.out.find("ping-got-through"), std::string::npos) << out;
}

TEST_F(QemuNetwork, DisabledMeansLoopbackOnlyAndNoPasst) {
    const auto started = run({"run", "-d", "--name", "off", "--network", "disabled", image(), "sh", "-c",
                              "sleep 100000; true"},
                             {}, net_env());
    ASSERT_EQ(started.status, 0) << started;
    const auto out = run({"exec", "off", "ls", "/sys/class/net"});
    EXPECT_EQ(out.status, 0) << out;
    EXPECT_EQ(out.out, "lo\n") << out;
    const auto shim = std::atoi(inspect("off", "{{.State.Pid}}").c_str());
    ASSERT_GT(shim, 0);
    EXPECT_TRUE(passt_of(shim).empty());
}

TEST_F(QemuNetwork, KillingTheShimLeavesNoPasstBehind) {
    const auto started = run({"run", "-d", "--name", "net", "-p", "127.0.0.1:18094:8000", image(), "sh", "-c",
                              "sleep 100000; true"},
                             {}, net_env());
    ASSERT_EQ(started.status, 0) << started;
    const auto shim = std::atoi(inspect("net", "{{.State.Pid}}").c_str());
    ASSERT_GT(shim, 0);
    const auto passt = passt_of(shim);
    ASSERT_EQ(passt.size(), 1u);
    ASSERT_EQ(::kill(shim, SIGKILL), 0);
    for (int i = 0; i < 500 && process_running(passt[0]); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_FALSE(process_running(passt[0]));
    // The published port is free again: a new listener binds it.
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(18094);
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&in), sizeof in), 0) << std::strerror(errno);
    ::close(fd);
}

}  // namespace
