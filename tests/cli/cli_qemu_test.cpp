// The qemu engine end to end through the real `boxlite` binary (label `vm`; seconds per box under
// TCG): Debian's kernel boots our agent, our virtio-blk (QCOW2) and virtio-vsock serve it over
// vhost-user. The busybox image comes from tests/image/registry_harness.sh (umoci).
#include <support/support.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
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
        std::ifstream in(entry.path() / "cmdline", std::ios::binary);
        std::string cmdline((std::istreambuf_iterator<char>(in)), {});
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

}  // namespace
