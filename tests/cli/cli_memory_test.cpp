// Flow control bounds memory (issue 14): 1 GiB through `boxlite exec` to a slow reader, in both
// directions, keeps the box's agent and the CLI each under 64 MiB of resident memory.
//
//   stdout: `boxlite exec BOX dd if=/dev/zero bs=1M count=N`, read by this test slowly (64 KiB,
//           then a pause);
//   stdin:  N MiB written by this test into `boxlite exec -i BOX sh -c '<slow reader>'`, whose
//           reader in the box takes 1 MiB at a time with a pause between.
//
// The CLI's peak is its ru_maxrss (wait4), the agent's its VmHWM, read while the box still runs.
// Not timed: the pauses only make the reader slower than the writer, so that anything unbounded
// would pile up. N is BOXLITE_TEST_STREAM_MIB (default 1024). Built without sanitizers only: ASan's
// shadow memory and quarantine are not the program's memory (tests/cli/CMakeLists.txt).
#include <support/support.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;

constexpr long kBoundKiB = 64 * 1024;

std::uint64_t stream_mib() {
    if (const char* env = std::getenv("BOXLITE_TEST_STREAM_MIB")) {
        if (const long n = std::atol(env); n > 0) return static_cast<std::uint64_t>(n);
    }
    return 1024;
}

struct Child {
    pid_t pid = -1;
    int in = -1;   ///< write end of its stdin (when asked for), else -1
    int out = -1;  ///< read end of its stdout
};

/// Starts the CLI with `env` (plus PATH and HOME), stdout to a pipe, stdin from a pipe when
/// `with_stdin`, else /dev/null; stderr to `err_path`.
Child spawn_boxlite(const std::map<std::string, std::string>& env, std::vector<std::string> args, bool with_stdin,
                    const fs::path& err_path) {
    std::vector<std::string> envs;
    for (const char* keep : {"PATH", "HOME", "BOXLITE_AGENT", "BOXLITE_SHIM"}) {
        if (const char* value = std::getenv(keep)) envs.push_back(std::string(keep) + "=" + value);
    }
    for (const auto& [key, value] : env) envs.push_back(key + "=" + value);
    args.insert(args.begin(), BOXLITE_CLI_PATH);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : envs) envp.push_back(e.data());
    envp.push_back(nullptr);
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    if (::pipe2(out, O_CLOEXEC) != 0) return {};
    // stdin is a socket, not a pipe: on the namespace engine the CLI hands a pipe to the box
    // command itself (docs/protocol.md, "Stdin as a descriptor"), and what is bounded here is the
    // frame path's memory, the one a terminal, a file, a socket or a VM box takes.
    if (with_stdin && ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) != 0) return {};
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int null_in = ::open("/dev/null", O_RDONLY);
        const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ::dup2(with_stdin ? in[0] : null_in, 0);
        ::dup2(out[1], 1);
        ::dup2(err, 2);
        ::execve(argv[0], argv.data(), envp.data());
        ::_exit(127);
    }
    ::close(out[1]);
    if (with_stdin) ::close(in[0]);
    return {pid, with_stdin ? in[1] : -1, out[0]};
}

/// Waits for `pid`: its exit status (or 128 + signal) and its peak resident set in KiB.
std::pair<int, long> wait_with_peak(pid_t pid) {
    int status = 0;
    rusage usage{};
    while (::wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {}
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return {code, usage.ru_maxrss};
}

/// A field of /proc/PID/status in KiB ("VmHWM"), or -1.
long status_kib(pid_t pid, const std::string& field) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.starts_with(field + ":")) return std::atol(line.c_str() + field.size() + 1);
    }
    return -1;
}

pid_t parent_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = stat.rfind(')');
    if (close == std::string::npos) return -1;
    char state = 0;
    int ppid = -1;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2) return -1;
    return ppid;
}

/// The box's agent: the process named boxlite-agent that is `box_pid` or descends from it.
std::optional<pid_t> agent_of(pid_t box_pid) {
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        const pid_t pid = std::atoi(name.c_str());
        std::ifstream comm(entry.path() / "comm");
        std::string command;
        std::getline(comm, command);
        if (command != "boxlite-agent") continue;
        for (pid_t p = pid; p > 1; p = parent_of(p)) {
            if (p == box_pid) return pid;
        }
    }
    return std::nullopt;
}

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

class CliMemory : public ::testing::Test {
protected:
    void SetUp() override {
        if (!boxlite::test::is_root())
            GTEST_SKIP() << "precondition: not root (the namespace engine needs namespaces and overlayfs)";
        rootfs_ = boxlite::test::busybox_rootfs();
        ASSERT_TRUE(rootfs_) << "busybox-static is not installed (scripts/setup installs it)";
        work_.emplace("boxlite-cli-memory");
        env_ = {{"BOXLITE_HOME", (work_->path() / "home").string()}, {"BOXLITE_ENGINE", "namespace"}};
        auto started = run({"run", "-d", "--name", "mem", "--rootfs", rootfs_->string(), "sleep", "100000"});
        ASSERT_EQ(started.first, 0) << "run -d failed: " << started.second;
        const auto pid = std::atoi(trimmed(run_cli({"inspect", "-f", "{{.State.Pid}}", "mem"}).second).c_str());
        ASSERT_GT(pid, 0);
        const auto agent = agent_of(pid);
        ASSERT_TRUE(agent) << "no boxlite-agent process under the box's pid " << pid;
        agent_ = *agent;
    }
    void TearDown() override {
        if (work_) (void)run_cli({"rm", "--force", "mem"});
    }

    /// Runs the CLI to its end: exit status and stdout (stderr appended on failure).
    std::pair<int, std::string> run_cli(std::vector<std::string> args) {
        const auto err_path = work_->path() / "stderr";
        auto child = spawn_boxlite(env_, std::move(args), false, err_path);
        std::string out;
        char buf[4096];
        ssize_t n = 0;
        while ((n = ::read(child.out, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
            if (n > 0) out.append(buf, static_cast<std::size_t>(n));
        }
        ::close(child.out);
        const auto [status, peak] = wait_with_peak(child.pid);
        if (status != 0) out += boxlite::test::read_file(err_path);
        return {status, out};
    }
    std::pair<int, std::string> run(std::vector<std::string> args) { return run_cli(std::move(args)); }

    std::optional<fs::path> rootfs_;
    std::optional<boxlite::test::TempDir> work_;
    std::map<std::string, std::string> env_;
    pid_t agent_ = -1;
};

TEST_F(CliMemory, StdoutToSlowReaderStaysBounded) {
    const auto mib = stream_mib();
    const auto err_path = work_->path() / "exec-stderr";
    auto child = spawn_boxlite(env_,
                               {"exec", "mem", "--", "dd", "if=/dev/zero", "bs=1M", "count=" + std::to_string(mib)},
                               false, err_path);
    ASSERT_GT(child.pid, 0);
    std::vector<char> buf(64 * 1024);
    std::uint64_t total = 0;
    std::uint64_t reads = 0;
    while (true) {
        const auto n = ::read(child.out, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        total += static_cast<std::uint64_t>(n);
        // A pause every 256 KiB: slower than dd, so an unbounded buffer anywhere would grow.
        if (++reads % 4 == 0) ::usleep(200);
    }
    ::close(child.out);
    const auto [status, cli_peak_kib] = wait_with_peak(child.pid);
    const long agent_peak_kib = status_kib(agent_, "VmHWM");
    ASSERT_EQ(status, 0) << boxlite::test::read_file(err_path);
    EXPECT_EQ(total, mib << 20);
    ASSERT_GT(agent_peak_kib, 0) << "cannot read the agent's VmHWM";
    RecordProperty("cli_peak_kib", std::to_string(cli_peak_kib));
    RecordProperty("agent_peak_kib", std::to_string(agent_peak_kib));
    std::printf("%llu MiB to a slow reader: CLI peak %ld KiB, agent peak %ld KiB\n",
                static_cast<unsigned long long>(mib), cli_peak_kib, agent_peak_kib);
    EXPECT_LT(cli_peak_kib, kBoundKiB) << "the CLI's peak resident memory";
    EXPECT_LT(agent_peak_kib, kBoundKiB) << "the agent's peak resident memory";
}

TEST_F(CliMemory, StdinToSlowReaderStaysBounded) {
    const auto mib = stream_mib();
    const auto err_path = work_->path() / "exec-stderr";
    // Takes 1 MiB (at most) at a time, with a pause between; "0+0 records in" is EOF.
    const std::string reader =
        "while :; do dd bs=65536 count=16 of=/dev/null 2>/tmp/e || exit 1; "
        "grep -q '^0+0 records in' /tmp/e && exit 0; usleep 500; done";
    auto child = spawn_boxlite(env_, {"exec", "-i", "mem", "--", "sh", "-c", reader}, true, err_path);
    ASSERT_GT(child.pid, 0);
    ::signal(SIGPIPE, SIG_IGN);
    std::thread drain([fd = child.out] {
        char b[4096];
        while (::read(fd, b, sizeof b) > 0 || errno == EINTR) {}
    });
    const std::vector<char> chunk(1 << 20);
    bool wrote_all = true;
    for (std::uint64_t i = 0; i < mib && wrote_all; ++i) {
        std::size_t off = 0;
        while (off < chunk.size()) {
            const auto n = ::write(child.in, chunk.data() + off, chunk.size() - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                wrote_all = false;
                break;
            }
            off += static_cast<std::size_t>(n);
        }
    }
    ::close(child.in);
    const auto [status, cli_peak_kib] = wait_with_peak(child.pid);
    drain.join();
    ::close(child.out);
    const long agent_peak_kib = status_kib(agent_, "VmHWM");
    ASSERT_TRUE(wrote_all) << "the CLI stopped reading its stdin: " << boxlite::test::read_file(err_path);
    ASSERT_EQ(status, 0) << boxlite::test::read_file(err_path);
    ASSERT_GT(agent_peak_kib, 0) << "cannot read the agent's VmHWM";
    std::printf("%llu MiB from a fast writer to a slow reader: CLI peak %ld KiB, agent peak %ld KiB\n",
                static_cast<unsigned long long>(mib), cli_peak_kib, agent_peak_kib);
    EXPECT_LT(cli_peak_kib, kBoundKiB) << "the CLI's peak resident memory";
    EXPECT_LT(agent_peak_kib, kBoundKiB) << "the agent's peak resident memory";
}

}  // namespace
