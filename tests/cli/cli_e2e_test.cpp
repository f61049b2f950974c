// The real `boxlite` binary, end to end, on the namespace engine: every subcommand and flag,
// exit-code rules, output formats, stdin piping, a local registry (tests/image/registry_harness.sh),
// and an interactive session on a pseudo-terminal driven the way a person types. ctest runs the
// same scenarios again on the qemu engine (`qemu.CliE2E.*`, BOXLITE_E2E_ENGINE=qemu).
#include <support/support.hpp>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct Result {
    int status = -1;         ///< exit status, or 128+N when the process itself died of signal N
    bool signalled = false;  ///< it died of a signal (rather than exiting with 128+N)
    std::string out;
    std::string err;
};

std::ostream& operator<<(std::ostream& os, const Result& r) {
    return os << "status " << r.status << (r.signalled ? " (signal)" : "") << "\n--- stdout\n"
              << r.out << "\n--- stderr\n"
              << r.err;
}

/// The engine the scenarios run on: the namespace engine, or BOXLITE_E2E_ENGINE (ctest runs them
/// again as `qemu.*` with qemu, label vm: tests/cli/CMakeLists.txt).
std::string e2e_engine() {
    const char* engine = std::getenv("BOXLITE_E2E_ENGINE");
    return engine != nullptr && *engine != '\0' ? engine : "namespace";
}

/// A VM box's console log is also the guest's serial console (docs/cli.md, `logs`): the kernel's
/// messages and the agent's boot and shutdown lines, which start like this (an extended regular
/// expression, for std::regex and grep -E alike).
constexpr const char* kGuestConsoleLine = R"(^(\[ *[0-9]+\.[0-9]+\] |boxlite-agent: ))";

/// `text` without the guest's console lines, on a VM engine.
std::string without_guest_console(const std::string& text) {
    if (e2e_engine() == "namespace") return text;
    static const std::regex guest_line(kGuestConsoleLine);
    std::istringstream in(text);
    std::string line, out;
    while (std::getline(in, line)) {
        if (!std::regex_search(line, guest_line)) out += line + "\n";
    }
    return out;
}

/// The environment every CLI run gets: a private home, the scenarios' engine, and what the
/// test adds. Nothing else of the test runner's environment leaks in except PATH and HOME.
std::vector<std::string> cli_environment(const fs::path& home, const std::map<std::string, std::string>& extra) {
    std::map<std::string, std::string> env = {{"BOXLITE_HOME", home.string()}, {"BOXLITE_ENGINE", e2e_engine()}};
    for (const char* keep : {"PATH", "HOME", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"}) {
        if (const char* value = std::getenv(keep)) env[keep] = value;
    }
    for (const auto& [key, value] : extra) {
        if (value == "<unset>") env.erase(key);
        else env[key] = value;
    }
    std::vector<std::string> out;
    for (const auto& [key, value] : env) out.push_back(key + "=" + value);
    return out;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (auto& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

/// Runs `argv` (argv[0] a path) in its own process group with the CLI environment, feeding
/// `input` to its stdin (closed afterwards). Fails the test (status -1) after `timeout`, killing
/// the whole group (a shell pipeline included).
Result run_process(const fs::path& home, std::vector<std::string> argv, const std::string& input = {},
                   const std::map<std::string, std::string>& env = {}, std::chrono::seconds timeout = 60s) {
    auto envs = cli_environment(home, env);
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return {};
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::setpgid(0, 0);
        ::dup2(in[0], 0);
        ::dup2(out[1], 1);
        ::dup2(err[1], 2);
        auto c_argv = c_strings(argv);
        auto envp = c_strings(envs);
        ::execve(c_argv[0], c_argv.data(), envp.data());
        ::_exit(127);
    }
    ::setpgid(pid, pid);
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    ::fcntl(in[1], F_SETFL, O_NONBLOCK);
    ::signal(SIGPIPE, SIG_IGN);
    Result result;
    std::size_t written = 0;
    int in_fd = in[1];
    if (input.empty()) {
        ::close(in_fd);
        in_fd = -1;
    }
    bool out_open = true, err_open = true;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out_open || err_open) {
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(-pid, SIGKILL);
            ADD_FAILURE() << "timed out: " << argv[0] << " " << (argv.size() > 1 ? argv[1] : "");
            break;
        }
        pollfd fds[3] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}, {in_fd, POLLOUT, 0}};
        ::poll(fds, 3, 100);
        char buf[65536];
        for (int i = 0; i < 2; ++i) {
            if ((fds[i].revents & (POLLIN | POLLHUP)) == 0) continue;
            const auto n = ::read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                (i == 0 ? result.out : result.err).append(buf, static_cast<std::size_t>(n));
            } else {
                (i == 0 ? out_open : err_open) = false;
            }
        }
        if (in_fd >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
            const auto n = ::write(in_fd, input.data() + written, input.size() - written);
            if (n > 0) written += static_cast<std::size_t>(n);
            if (n < 0 || written == input.size()) {
                ::close(in_fd);
                in_fd = -1;
            }
        }
    }
    if (in_fd >= 0) ::close(in_fd);
    ::close(out[0]);
    ::close(err[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    result.signalled = WIFSIGNALED(status);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return result;
}

/// Runs boxlite with `args` (see run_process); no -i means the CLI never reads `input`.
Result run_cli(const fs::path& home, std::vector<std::string> args, const std::string& input = {},
               const std::map<std::string, std::string>& env = {}, std::chrono::seconds timeout = 60s) {
    args.insert(args.begin(), BOXLITE_CLI_PATH);
    return run_process(home, std::move(args), input, env, timeout);
}

/// `bash -c SCRIPT boxlite ARGS...`: $0 is the CLI, "$@" the rest (for pipelines).
Result run_shell(const fs::path& home, const std::string& script, std::vector<std::string> args = {}) {
    std::vector<std::string> argv = {"/bin/bash", "-c", script, BOXLITE_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_process(home, std::move(argv));
}

/// Polls `condition` (each check a real CLI call) until it holds or `timeout` passes.
template <class Condition>
bool eventually(Condition condition, std::chrono::seconds timeout = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) return true;
        std::this_thread::sleep_for(50ms);
    }
    return condition();
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    return s;
}

/// One home and the busybox rootfs per test process (ctest runs each test in its own); the
/// images built with umoci and a registry are made on first use, by the tests that need them.
/// Skips only where a precondition is missing (not root, busybox-static or an image tool not
/// installed); with the preconditions met, a set-up step that fails fails the test.
class CliE2E : public ::testing::Test {
protected:
    static inline std::unique_ptr<boxlite::test::TempDir> work_;
    static inline fs::path home_;
    static inline std::optional<fs::path> rootfs_;
    static inline std::string skip_reason_;
    static inline std::string setup_failure_;
    static inline std::string image_;  ///< loaded from the OCI layout: busybox, Cmd cat os-release
    static inline std::string images_failure_;
    static inline bool images_made_ = false;
    static inline int registry_port_ = 0;
    static inline std::string registry_failure_;
    static inline bool registry_made_ = false;

    static void SetUpTestSuite() {
        work_ = std::make_unique<boxlite::test::TempDir>("boxlite-cli-e2e");
        home_ = work_->path() / "home";
        if (!boxlite::test::is_root()) {
            skip_reason_ =
                "precondition: not root (these tests drive the real boxlite binary on the namespace "
                "engine, which needs namespaces, overlayfs, cgroups)";
            return;
        }
        rootfs_ = boxlite::test::busybox_rootfs();
        if (!rootfs_) {
            skip_reason_ = "precondition: busybox-static is not installed";
            return;
        }
        auto info = run_cli(home_, {"info", "--format", "json"});
        if (info.status != 0) {
            setup_failure_ = "boxlite info failed: " + info.err;
            return;
        }
        const auto data = nlohmann::json::parse(info.out, nullptr, false);
        if (data.is_discarded() || data.value("engineStatus", "") != "available") {
            // The namespace engine must run as root; a VM engine may lack its kernel or QEMU here.
            const auto why = data.is_discarded() ? info.out : data.value("engineStatus", "");
            if (e2e_engine() == "namespace")
                setup_failure_ = "as root, the namespace engine says it is not available: " + why;
            else skip_reason_ = "precondition: the " + e2e_engine() + " engine cannot run here: " + why;
        }
    }

    static void TearDownTestSuite() {
        if (!home_.empty() && fs::exists(home_)) (void)run_cli(home_, {"rm", "--all", "--force"});
        if (work_ && registry_made_) {
            try {
                boxlite::test::shell("bash " + std::string(BOXLITE_SOURCE_DIR) +
                                     "/tests/image/registry_harness.sh stop " + (work_->path() / "registry").string() +
                                     " >/dev/null 2>&1");
            } catch (...) {}
        }
        work_.reset();
    }

    void SetUp() override {
        if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
        ASSERT_EQ(setup_failure_, "") << "the CLI end-to-end set-up failed";
    }

    static std::string harness() { return std::string(BOXLITE_SOURCE_DIR) + "/tests/image/registry_harness.sh"; }

    /// The OCI layout work_/images/oci (made with umoci) loaded into home_ as image_, once per
    /// process. Callers return when IsSkipped() or HasFatalFailure().
    void require_images() {
        if (!boxlite::test::have_tool("umoci")) GTEST_SKIP() << "precondition: umoci is not installed";
        if (!images_made_) {
            images_made_ = true;
            const auto images = work_->path() / "images";
            try {
                boxlite::test::shell("bash " + harness() + " build " + images.string() + " >/dev/null 2>&1");
                // The layout holds several tagged images; each keeps its tag under localhost/<dir name>.
                auto loaded = run_cli(home_, {"load", (images / "oci").string(), "-q"});
                if (loaded.status == 0 && loaded.out.find("localhost/oci:single\n") != std::string::npos) {
                    image_ = "localhost/oci:single";
                } else {
                    images_failure_ = "boxlite load did not load localhost/oci:single: " + loaded.out + loaded.err;
                }
            } catch (const std::exception& e) {
                images_failure_ = std::string("building test images failed: ") + e.what();
            }
        }
        ASSERT_EQ(images_failure_, "");
    }

    /// require_images(), and a local registry on registry_port_ holding test/busybox:multi.
    void require_registry() {
        require_images();
        if (IsSkipped() || HasFatalFailure()) return;
        for (const char* tool : {"docker-registry", "skopeo", "curl"}) {
            if (!boxlite::test::have_tool(tool)) GTEST_SKIP() << "precondition: " << tool << " is not installed";
        }
        if (!registry_made_) {
            registry_made_ = true;
            registry_port_ = boxlite::test::free_port();
            try {
                boxlite::test::shell("bash " + harness() + " start " + (work_->path() / "registry").string() + " " +
                                     std::to_string(registry_port_) + " >/dev/null 2>&1");
                boxlite::test::shell("bash " + harness() + " push " + (work_->path() / "images" / "oci").string() +
                                     " multi " + std::to_string(registry_port_) + " test/busybox:multi");
            } catch (const std::exception& e) {
                registry_failure_ = std::string("the test registry did not start: ") + e.what();
            }
        }
        ASSERT_EQ(registry_failure_, "");
    }

    Result cli(std::vector<std::string> args, const std::string& input = {},
               const std::map<std::string, std::string>& env = {}) {
        return run_cli(home_, std::move(args), input, env);
    }
    /// `run --rm --rootfs <busybox> ARGS...`
    Result box_run(std::vector<std::string> flags, std::vector<std::string> command, const std::string& input = {},
                   const std::map<std::string, std::string>& env = {}) {
        std::vector<std::string> args = {"run", "--rm"};
        args.insert(args.end(), flags.begin(), flags.end());
        args.push_back("--rootfs");
        args.push_back(rootfs_->string());
        args.insert(args.end(), command.begin(), command.end());
        return cli(args, input, env);
    }
};

/// A CLI process on a pseudo-terminal, driven the way a person types.
class PtySession {
public:
    PtySession(const fs::path& home, std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
        args.insert(args.begin(), BOXLITE_CLI_PATH);
        env.emplace("TERM", "dumb");
        env.emplace("PS1", "$ ");
        auto envs = cli_environment(home, env);
        struct winsize ws {};
        ws.ws_row = 24;
        ws.ws_col = 80;
        pid_ = ::forkpty(&master_, nullptr, nullptr, &ws);
        if (pid_ == 0) {
            auto argv = c_strings(args);
            auto envp = c_strings(envs);
            ::execve(argv[0], argv.data(), envp.data());
            ::_exit(127);
        }
    }
    ~PtySession() {
        if (pid_ > 0 && !exited_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (master_ >= 0) ::close(master_);
    }

    void type(const std::string& keys) {
        for (char c : keys) {  // one key at a time, as typed
            [[maybe_unused]] auto n = ::write(master_, &c, 1);
            std::this_thread::sleep_for(2ms);
        }
    }

    /// Reads until `pattern` shows up in the output since the last expect; false on timeout.
    bool expect(const std::string& pattern, std::chrono::milliseconds timeout = 10s) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (const auto at = screen_.find(pattern); at != std::string::npos) {
                screen_.erase(0, at + pattern.size());
                return true;
            }
            pollfd fd{master_, POLLIN, 0};
            if (::poll(&fd, 1, 50) > 0) {
                char buf[4096];
                const auto n = ::read(master_, buf, sizeof buf);
                if (n <= 0) break;
                screen_.append(buf, static_cast<std::size_t>(n));
                all_.append(buf, static_cast<std::size_t>(n));
            }
        }
        return screen_.find(pattern) != std::string::npos;
    }

    void resize(unsigned short rows, unsigned short cols) {
        struct winsize ws {};
        ws.ws_row = rows;
        ws.ws_col = cols;
        ::ioctl(master_, TIOCSWINSZ, &ws);  // the kernel sends SIGWINCH to the CLI
    }

    /// The CLI's exit status (128+N for a signal), or -1 on timeout.
    int wait(std::chrono::milliseconds timeout = 15s) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            (void)expect("\x01never\x01", 20ms);  // keep draining the terminal
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                exited_ = true;
                signalled_ = WIFSIGNALED(status);
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
        }
        return -1;
    }

    /// The terminal's line discipline is back to cooked mode (the master shares the slave's termios).
    bool cooked() const {
        struct termios mode {};
        ::tcgetattr(master_, &mode);
        return (mode.c_lflag & ICANON) != 0 && (mode.c_lflag & ECHO) != 0 && (mode.c_lflag & ISIG) != 0;
    }

    pid_t pid() const { return pid_; }
    /// After wait(): the CLI died of a signal rather than exiting.
    bool signalled() const { return signalled_; }
    const std::string& transcript() const { return all_; }

private:
    int master_ = -1;
    pid_t pid_ = -1;
    bool exited_ = false;
    bool signalled_ = false;
    std::string screen_;
    std::string all_;
};

// ------------------------------------------------------------------------------------------
// run: output, exit codes, flags
// ------------------------------------------------------------------------------------------

TEST_F(CliE2E, RunPrintsAndPropagatesExitCodes) {
    auto hello = box_run({}, {"echo", "hello from a box"});
    EXPECT_EQ(hello.status, 0) << hello;
    EXPECT_EQ(hello.out, "hello from a box\n");
    auto split = box_run({}, {"sh", "-c", "echo out; echo err >&2; exit 3"});
    EXPECT_EQ(split.status, 3) << split;
    EXPECT_EQ(split.out, "out\n");
    EXPECT_NE(split.err.find("err\n"), std::string::npos);
    auto killed = box_run({}, {"sh", "-c", "kill -9 $$"});
    EXPECT_EQ(killed.status, 137) << killed;  // 128 + SIGKILL
    auto terminated = box_run({}, {"sh", "-c", "kill -15 $$"});
    EXPECT_EQ(terminated.status, 143) << terminated;
    auto missing = box_run({}, {"/no/such/program"});
    EXPECT_NE(missing.status, 0) << missing;
}

TEST_F(CliE2E, RunFlagsReachTheCommand) {
    auto env = box_run({"-e", "FROM_CALLER", "-e", "SET=value=with=equals", "-e", "NOT_IN_CALLER", "-w", "/tmp", "-u",
                        "1000"},
                       {"sh", "-c", "echo $FROM_CALLER; echo $SET; echo ${NOT_IN_CALLER-unset}; pwd; id -u"}, {},
                       {{"FROM_CALLER", "caller-value"}, {"NOT_IN_CALLER", "<unset>"}});
    EXPECT_EQ(env.status, 0) << env;
    EXPECT_EQ(env.out, "caller-value\nvalue=with=equals\nunset\n/tmp\n1000\n");
    auto entry = box_run({"--entrypoint", "/bin/echo"}, {"via", "entrypoint"});
    EXPECT_EQ(entry.out, "via entrypoint\n") << entry;
    auto limits = box_run({"--cpus", "1", "--memory", "256m", "--network", "disabled"}, {"true"});
    EXPECT_EQ(limits.status, 0) << limits;
    // A host directory shared read-only, and one read-write.
    boxlite::test::TempDir shared("boxlite-cli-volume");
    boxlite::test::write_file(shared.path() / "in.txt", "from the host\n");
    auto ro = box_run({"-v", shared.str() + ":/mnt/ro:ro"}, {"sh", "-c", "cat /mnt/ro/in.txt; echo x > /mnt/ro/y"});
    EXPECT_NE(ro.out.find("from the host"), std::string::npos) << ro;
    EXPECT_NE(ro.status, 0) << "writing to a read-only volume succeeded";
    auto rw = box_run({"-v", shared.str() + ":/mnt/rw"}, {"sh", "-c", "echo written > /mnt/rw/out.txt"});
    EXPECT_EQ(rw.status, 0) << rw;
    EXPECT_EQ(boxlite::test::read_file(shared.path() / "out.txt"), "written\n");
}

TEST_F(CliE2E, VolumesAnonymousInspectAndBadSpecs) {
    boxlite::test::TempDir shared("boxlite-cli-mounts");
    boxlite::test::write_file(shared.path() / "in.txt", "shared\n");
    auto created = cli(
        {"create", "--name", "vols", "-v", shared.str() + ":/in:ro", "-v", "/scratch", "--rootfs", rootfs_->string()});
    ASSERT_EQ(created.status, 0) << created;
    auto exec = cli({"exec", "vols", "--", "sh", "-c", "cat /in/in.txt; echo anon > /scratch/f"});
    EXPECT_EQ(exec.status, 0) << exec;
    EXPECT_EQ(exec.out, "shared\n");
    // Docker's "Mounts": a bind and an anonymous volume under the box's folder.
    auto doc = nlohmann::json::parse(cli({"inspect", "vols"}).out);
    const auto& mounts = doc[0]["Mounts"];
    ASSERT_EQ(mounts.size(), 2U) << doc.dump(2);
    EXPECT_EQ(mounts[0]["Type"], "bind");
    EXPECT_EQ(mounts[0]["Source"], shared.str());
    EXPECT_EQ(mounts[0]["Destination"], "/in");
    EXPECT_EQ(mounts[0]["Mode"], "ro");
    EXPECT_EQ(mounts[0]["RW"], false);
    EXPECT_EQ(mounts[1]["Type"], "volume");
    EXPECT_EQ(mounts[1]["Destination"], "/scratch");
    EXPECT_EQ(mounts[1]["RW"], true);
    const std::filesystem::path anonymous = mounts[1]["Source"].get<std::string>();
    EXPECT_EQ(anonymous.parent_path().parent_path().string(), doc[0]["Path"].get<std::string>());
    EXPECT_EQ(boxlite::test::read_file(anonymous / "f"), "anon\n");
    ASSERT_EQ(cli({"rm", "-f", "vols"}).status, 0);
    EXPECT_FALSE(std::filesystem::exists(anonymous)) << "the anonymous volume went with the box";
    EXPECT_EQ(boxlite::test::read_file(shared.path() / "in.txt"), "shared\n") << "the bind source stays";

    // A bad spec: refused with its reason, and no box is made.
    for (const auto& [spec, reason] :
         std::vector<std::pair<std::string, std::string>>{{shared.str() + ":/proc/x", "is on /proc"},
                                                          {shared.str() + "/missing:/data", "does not exist"},
                                                          {shared.str() + ":/a/../b", "must not contain '..'"},
                                                          {"data:/data", "named volumes are not supported"}}) {
        auto refused = cli({"create", "-v", spec, "--rootfs", rootfs_->string()});
        EXPECT_NE(refused.status, 0) << spec;
        EXPECT_NE(refused.err.find(reason), std::string::npos) << refused;
    }
    auto twice = cli({"create", "-v", shared.str() + ":/x", "-v", "/x:ro", "--rootfs", rootfs_->string()});
    EXPECT_NE(twice.status, 0);
    EXPECT_NE(twice.err.find("two volumes are mounted at guest path /x"), std::string::npos) << twice;
    EXPECT_EQ(trim(cli({"ps", "-aq"}).out), "") << "a refused create left a box";
}

TEST_F(CliE2E, InteractivePipesStdin) {
    auto cat = box_run({"-i"}, {"cat"}, "hi\n");
    EXPECT_EQ(cat.status, 0) << cat;
    EXPECT_EQ(cat.out, "hi\n");
    std::string big(3 << 20, 'x');
    for (std::size_t i = 0; i < big.size(); i += 97) big[i] = '\n';
    auto wc = box_run({"-i"}, {"wc", "-c"}, big);
    EXPECT_EQ(trim(wc.out), std::to_string(big.size())) << wc.err;
    // Without -i the command reads EOF at once.
    auto no_stdin = box_run({}, {"cat"}, "ignored\n");
    EXPECT_EQ(no_stdin.status, 0) << no_stdin;
    EXPECT_EQ(no_stdin.out, "");
    // -it without a terminal is refused, as Docker does.
    auto not_tty = box_run({"-it"}, {"sh"}, "exit\n");
    EXPECT_EQ(not_tty.status, 1);
    EXPECT_NE(not_tty.err.find("not a TTY"), std::string::npos) << not_tty;
}

TEST_F(CliE2E, RunWithoutRmKeepsAStoppedBox) {
    auto run = cli({"run", "--name", "kept", "--rootfs", rootfs_->string(), "true"});
    ASSERT_EQ(run.status, 0) << run;
    auto listed = cli({"ls", "-a", "--format", "{{.Name}} {{.Status}}"});
    EXPECT_NE(listed.out.find("kept stopped"), std::string::npos) << listed;
    EXPECT_EQ(cli({"ls", "--format", "{{.Name}}"}).out.find("kept"), std::string::npos);  // not running
    EXPECT_EQ(cli({"rm", "kept"}).status, 0);
    auto gone = cli({"inspect", "kept"});
    EXPECT_EQ(gone.status, 1);
    EXPECT_NE(gone.err.find("box not found"), std::string::npos) << gone;
    // --rm leaves nothing.
    ASSERT_EQ(cli({"run", "--rm", "--name", "temporary", "--rootfs", rootfs_->string(), "true"}).status, 0);
    EXPECT_EQ(cli({"ls", "-aq"}).out.find("temporary"), std::string::npos);
    EXPECT_EQ(cli({"inspect", "temporary"}).status, 1);
}

// ------------------------------------------------------------------------------------------
// Lifecycle: create, start, exec, stop, restart, rm; list and inspect formats
// ------------------------------------------------------------------------------------------

TEST_F(CliE2E, LifecycleAndFormats) {
    auto created = cli({"create", "--name", "life", "-e", "A=1", "--rootfs", rootfs_->string()});
    ASSERT_EQ(created.status, 0) << created;
    const auto id = trim(created.out);
    EXPECT_EQ(id.size(), 26U);
    EXPECT_EQ(trim(cli({"inspect", "-f", "{{.State.Status}}", "life"}).out), "configured");

    ASSERT_EQ(cli({"start", "life"}).status, 0);
    EXPECT_EQ(trim(cli({"inspect", "-f", "{{.State.Status}} {{.State.Running}}", id}).out), "running true");
    auto exec = cli({"exec", "life", "--", "sh", "-c", "echo $A; hostname"});
    EXPECT_EQ(exec.status, 0) << exec;
    EXPECT_EQ(exec.out.substr(0, 2), "1\n");
    auto exit_code = cli({"exec", "life", "sh", "-c", "exit 42"});
    EXPECT_EQ(exit_code.status, 42) << exit_code;
    auto piped = cli({"exec", "-i", "-e", "B=2", "-w", "/tmp", "life", "--", "sh", "-c", "cat; echo $B; pwd"}, "in\n");
    EXPECT_EQ(piped.out, "in\n2\n/tmp\n") << piped;

    // A file written in the box survives stop/start (overlay upper layer in the box dir).
    ASSERT_EQ(cli({"exec", "life", "--", "sh", "-c", "echo kept > /root/state"}).status, 0);
    ASSERT_EQ(cli({"stop", "life"}).status, 0);
    EXPECT_EQ(trim(cli({"inspect", "-f", "{{.State.Status}}", "life"}).out), "stopped");
    ASSERT_EQ(cli({"restart", "life"}).status, 0);
    EXPECT_EQ(cli({"exec", "life", "cat", "/root/state"}).out, "kept\n");

    // list: table, -q, json, template with functions, table template.
    auto table = cli({"ls"});
    EXPECT_EQ(table.status, 0);
    EXPECT_TRUE(table.out.starts_with("BOX ID")) << table.out;
    EXPECT_NE(table.out.find(id.substr(0, 12)), std::string::npos);
    EXPECT_EQ(trim(cli({"ps", "-q"}).out), id.substr(0, 12));
    auto json = nlohmann::json::parse(cli({"list", "--format", "json"}).out);
    ASSERT_EQ(json.size(), 1U);
    EXPECT_EQ(json[0]["ID"], id);
    EXPECT_EQ(json[0]["Name"], "life");
    EXPECT_EQ(json[0]["Status"], "running");
    EXPECT_EQ(trim(cli({"ls", "--format", "{{.Name | upper}} {{truncate .ID 4}}"}).out), "LIFE " + id.substr(0, 4));
    auto custom = cli({"ls", "--format", "table {{.Name}}\\t{{.Status}}"});
    EXPECT_TRUE(custom.out.starts_with("NAME")) << custom.out;

    // inspect: json (an array), yaml, template with json, --latest.
    auto doc = nlohmann::json::parse(cli({"inspect", "life"}).out);
    ASSERT_TRUE(doc.is_array());
    EXPECT_EQ(doc[0]["Id"], id);
    EXPECT_EQ(doc[0]["Config"]["Env"], nlohmann::json::array({"A=1"}));
    // The start's stages, measured by the process that started the box and read from storage here.
    const auto& stages = doc[0]["State"]["Stages"];
    EXPECT_TRUE(stages.contains("TotalCreateMs")) << stages.dump();
    EXPECT_TRUE(stages.contains("BoxSpawnMs")) << stages.dump();
    EXPECT_NE(cli({"inspect", "-f", "yaml", "life"}).out.find("Status: running"), std::string::npos);
    EXPECT_EQ(trim(cli({"inspect", "-f", "{{json .Config.Env}}", "life"}).out), R"(["A=1"])");
    EXPECT_EQ(trim(cli({"inspect", "-l", "-f", "{{.Name}}"}).out), "life");
    auto bad_field = cli({"inspect", "-f", "{{.Nope}}", "life"});
    EXPECT_EQ(bad_field.status, 1);
    EXPECT_NE(bad_field.err.find(".Nope"), std::string::npos);

    // stats once (json) and logs (may be empty, never an error).
    auto stats = cli({"stats", "--format", "json", "life"});
    ASSERT_EQ(stats.status, 0) << stats;
    EXPECT_EQ(nlohmann::json::parse(stats.out)["Name"], "life");
    EXPECT_EQ(cli({"stats", "life"}).out.substr(0, 6), "BOX ID");
    EXPECT_EQ(cli({"logs", "-n", "5", "life"}).status, 0);

    // rm refuses a running box without -f, then removes it with -f.
    auto refused = cli({"rm", "life"});
    EXPECT_EQ(refused.status, 1);
    EXPECT_NE(refused.err.find("invalid state"), std::string::npos) << refused;
    EXPECT_EQ(cli({"rm", "-f", "life"}).status, 0);
    EXPECT_EQ(trim(cli({"ls", "-aq"}).out), "");
}

TEST_F(CliE2E, DetachedRunAndExecDetach) {
    auto run = cli(
        {"run", "-d", "--name", "bg", "--rootfs", rootfs_->string(), "sh", "-c", "echo started > /tmp/mark"});
    ASSERT_EQ(run.status, 0) << run;
    EXPECT_EQ(trim(run.out).size(), 26U);
    EXPECT_EQ(trim(cli({"inspect", "-f", "{{.State.Status}}", "bg"}).out), "running");
    EXPECT_EQ(cli({"exec", "-d", "bg", "--", "sh", "-c", "echo detached > /tmp/d"}).status, 0);
    std::string seen;
    for (int i = 0; i < 50 && seen != "started\ndetached\n"; ++i) {
        seen = cli({"exec", "bg", "--", "sh", "-c", "cat /tmp/mark /tmp/d 2>/dev/null"}).out;
        std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(seen, "started\ndetached\n");
    EXPECT_EQ(cli({"stop", "-t", "2", "bg"}).status, 0);
    EXPECT_EQ(cli({"rm", "bg"}).status, 0);
}

TEST_F(CliE2E, CopyInAndOut) {
    ASSERT_EQ(cli({"create", "--name", "files", "--rootfs", rootfs_->string()}).status, 0);
    boxlite::test::TempDir dir("boxlite-cli-cp");
    fs::create_directories(dir.path() / "tree/sub");
    boxlite::test::write_file(dir.path() / "tree/a.txt", "alpha\n");
    boxlite::test::write_file(dir.path() / "tree/sub/b.txt", "beta\n");
    auto in = cli({"cp", (dir.path() / "tree").string(), "files:/srv"});
    ASSERT_EQ(in.status, 0) << in;
    EXPECT_EQ(cli({"exec", "files", "cat", "/srv/sub/b.txt"}).out, "beta\n");
    auto out = cli({"cp", "files:/srv", (dir.path() / "back").string()});
    ASSERT_EQ(out.status, 0) << out;
    EXPECT_EQ(boxlite::test::read_file(dir.path() / "back/a.txt"), "alpha\n");
    auto both = cli({"cp", "files:/a", "files:/b"});
    EXPECT_EQ(both.status, 2);
    EXPECT_EQ(cli({"rm", "-f", "files"}).status, 0);
}

// ------------------------------------------------------------------------------------------
// Errors and exit codes
// ------------------------------------------------------------------------------------------

TEST_F(CliE2E, UsageErrorsExitTwo) {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {},
             {"nonsense"},
             {"run"},
             {"run", "--memory", "1x", "alpine"},
             {"run", "-p", "0", "alpine"},
             {"run", "-v", "relative:/x", "alpine"},
             {"exec", "box"},
             {"ls", "--format", "{{.ID"},
             {"cp", "/a", "/b"},
             {"--engine", "xen", "ls"},
             {"logs"},
             // Values only the runtime used to refuse (exit 1) are usage errors too.
             {"run", "--allow-net", "not a host", "alpine"},
             {"create", "--allow-net", "*.*.example.com", "alpine"},
             {"run", "--cpus", std::to_string(std::thread::hardware_concurrency() + 1), "alpine"},
             {"run", "-p", "8080:80", "-p", "8080:81", "alpine"},
             {"create", "-p", "127.0.0.1:53:53/udp", "-p", "53:5353/udp", "alpine"},
             {"run", "--entrypoint", "", "alpine"},
         }) {
        auto result = cli(args);
        EXPECT_EQ(result.status, 2) << result;
        EXPECT_TRUE(result.out.empty()) << result;
    }
    auto one_line = cli({"run", "--cpus", "many", "alpine"});
    EXPECT_EQ(one_line.err,
              "Error: invalid argument: --cpus 'many': expected a whole number of CPUs in 1..255 (see "
              "'boxlite run --help')\n");
    EXPECT_EQ(cli({"--help"}).status, 0);
    EXPECT_EQ(cli({"run", "--help"}).status, 0);
    EXPECT_EQ(trim(cli({"--version"}).out), "boxlite version 0.1.0");
    EXPECT_EQ(trim(cli({"version"}).out), "boxlite version 0.1.0");
    EXPECT_EQ(nlohmann::json::parse(cli({"version", "--format", "json"}).out)["Version"], "0.1.0");
}

TEST_F(CliE2E, RuntimeErrorsExitOneWithOneLine) {
    auto missing = cli({"start", "no-such-box"});
    EXPECT_EQ(missing.status, 1);
    EXPECT_EQ(missing.err, "Error: box not found: no-such-box\n");
    auto debug = cli({"--debug", "inspect", "no-such-box"});
    EXPECT_EQ(debug.status, 1);
    EXPECT_NE(debug.err.find("debug: error kind: not_found"), std::string::npos) << debug;
    // `auto` never silently becomes namespace isolation: without a VM engine it says why; with
    // one (kvm or qemu), the rootfs directory becomes the box's own ext4 disk and the VM runs it.
    auto vm = cli({"--engine", "auto", "run", "--rm", "--rootfs", rootfs_->string(), "true"});
    if (vm.status != 0) {
        EXPECT_EQ(vm.status, 1);
        EXPECT_TRUE(vm.err.find("unsupported engine") != std::string::npos ||
                    vm.err.find("engine boots from a disk image") != std::string::npos)
            << vm;
        EXPECT_EQ(vm.err.find("namespace engine boots"), std::string::npos) << vm;
        EXPECT_EQ(std::count(vm.err.begin(), vm.err.end(), '\n'), 1) << vm;
    }
}

// ------------------------------------------------------------------------------------------
// Images: load, pull from the local registry, images, rm, prune, run from an image
// ------------------------------------------------------------------------------------------

TEST_F(CliE2E, ImagesFromLayoutAndRegistry) {
    require_registry();
    if (IsSkipped() || HasFatalFailure()) return;
    // The loaded image's own command (cat /etc/os-release) runs when none is given.
    auto defaults = cli({"run", "--rm", image_});
    EXPECT_EQ(defaults.status, 0) << defaults;
    EXPECT_NE(defaults.out.find("BoxLite Test Linux"), std::string::npos) << defaults;
    auto env = cli({"run", "--rm", image_, "sh", "-c", "echo $FOO; pwd"});
    EXPECT_EQ(env.out, "bar\n/data\n") << env;

    // Pull into a home of its own, so no layer is already there from the layout loaded above.
    const auto pull_home = work_->path() / "pull-home";
    auto in_pull_home = [&](std::vector<std::string> args) { return run_cli(pull_home, std::move(args)); };
    const std::string remote = "127.0.0.1:" + std::to_string(registry_port_) + "/test/busybox:multi";
    auto pull = in_pull_home({"pull", remote});
    ASSERT_EQ(pull.status, 0) << pull;
    EXPECT_NE(pull.out.find("Pull complete"), std::string::npos) << pull.out;  // plain lines: not a TTY
    EXPECT_EQ(pull.out.find("\x1b["), std::string::npos) << "escape codes on a pipe";
    EXPECT_NE(pull.out.find("Status: Downloaded newer image for"), std::string::npos) << pull.out;
    auto again = in_pull_home({"pull", remote});
    EXPECT_NE(again.out.find("Already exists"), std::string::npos) << again.out;
    EXPECT_NE(again.out.find("Status: Image is up to date"), std::string::npos) << again.out;
    // --registry: an unqualified name is looked up there first.
    auto via_registry = in_pull_home(
        {"--registry", "127.0.0.1:" + std::to_string(registry_port_), "pull", "-q", "test/busybox:multi"});
    EXPECT_EQ(via_registry.status, 0) << via_registry;
    auto quiet = in_pull_home({"pull", "-q", remote});
    EXPECT_EQ(quiet.status, 0);
    EXPECT_TRUE(trim(quiet.out).starts_with("sha256:")) << quiet;
    EXPECT_EQ(std::count(quiet.out.begin(), quiet.out.end(), '\n'), 1);

    // On a terminal: one progress bar per layer, redrawn in place.
    {
        const auto tty_home = work_->path() / "tty-pull-home";
        PtySession tty_pull(tty_home, {"pull", remote});
        EXPECT_EQ(tty_pull.wait(), 0) << tty_pull.transcript();
        EXPECT_NE(tty_pull.transcript().find("\x1b[2K"), std::string::npos) << tty_pull.transcript();
        EXPECT_NE(tty_pull.transcript().find("Pull complete"), std::string::npos) << tty_pull.transcript();
    }
    auto table = in_pull_home({"images"});
    EXPECT_TRUE(table.out.starts_with("REPOSITORY")) << table;
    EXPECT_NE(table.out.find("test/busybox"), std::string::npos);
    auto images = nlohmann::json::parse(cli({"images", "--format", "json"}).out);
    EXPECT_GE(images.size(), 2U);
    EXPECT_FALSE(trim(in_pull_home({"images", "-q"}).out).empty());
    auto motd = in_pull_home({"run", "--rm", remote, "cat", "/etc/motd"});
    EXPECT_EQ(motd.out, "welcome\n") << motd;

    // A box pins its image: rm of it is refused, naming the box; -f untags, yet the box still
    // starts from its image after a prune, which frees it only once the box is gone.
    auto created = in_pull_home({"create", "--name", "pinned", remote, "true"});
    ASSERT_EQ(created.status, 0) << created;
    auto refused = in_pull_home({"images", "rm", remote});
    EXPECT_EQ(refused.status, 1) << refused;
    EXPECT_NE(refused.err.find(trim(created.out)), std::string::npos) << refused;
    EXPECT_EQ(in_pull_home({"images", "rm", "-f", remote}).status, 0);
    EXPECT_EQ(in_pull_home({"images", "prune"}).status, 0);
    auto pinned = in_pull_home({"exec", "pinned", "cat", "/etc/motd"});
    EXPECT_EQ(pinned.out, "welcome\n") << pinned;
    EXPECT_EQ(in_pull_home({"rm", "-f", "pinned"}).status, 0);
    ASSERT_EQ(in_pull_home({"pull", "-q", remote}).status, 0);

    EXPECT_EQ(in_pull_home({"images", "rm", remote}).status, 0);
    EXPECT_EQ(in_pull_home({"images", "--format", "{{.Reference}}"}).out.find("test/busybox"), std::string::npos);
    auto prune = in_pull_home({"images", "prune"});
    EXPECT_EQ(prune.status, 0) << prune;
    EXPECT_NE(prune.out.find("Total reclaimed space"), std::string::npos);
    EXPECT_EQ(prune.out.find("Deleted 0 blobs"), std::string::npos) << prune;
    auto unknown = in_pull_home({"pull", "127.0.0.1:" + std::to_string(registry_port_) + "/test/none:1"});
    EXPECT_EQ(unknown.status, 1);
    EXPECT_EQ(std::count(unknown.err.begin(), unknown.err.end(), '\n'), 1) << unknown;

    auto info = nlohmann::json::parse(cli({"info", "--format", "json"}).out);
    EXPECT_GE(info["imagesCount"].get<int>(), 1);
    EXPECT_EQ(info["homeDir"], home_.string());
}

// ------------------------------------------------------------------------------------------
// A person at a terminal: run -it on a pseudo-terminal
// ------------------------------------------------------------------------------------------

TEST_F(CliE2E, InteractiveTerminalSession) {
    PtySession session(home_, {"run", "-it", "--rm", "--rootfs", rootfs_->string(), "sh"});
    ASSERT_GT(session.pid(), 0);
    session.type("echo hello-$((40+2))\r");
    ASSERT_TRUE(session.expect("hello-42")) << session.transcript();
    EXPECT_FALSE(session.cooked()) << "the CLI did not put the terminal in raw mode";
    session.type("tty\r");
    EXPECT_TRUE(session.expect("/dev/pts/")) << session.transcript();

    // A window-size change reaches the box. It arrives asynchronously (SIGWINCH, then a frame to
    // the agent), so ask until the new size shows; only a size that never arrives fails.
    session.resize(40, 100);
    bool resized = false;
    for (int attempt = 0; attempt < 100 && !resized; ++attempt) {
        session.type("stty size\r");
        resized = session.expect("40 100", 1s);
    }
    EXPECT_TRUE(resized) << session.transcript();

    // Ctrl-C interrupts the box's foreground command, not the CLI: a shell that traps SIGINT,
    // armed (its trap set) before the key is pressed. The arithmetic shows up only in output.
    session.type(
        "sh -c 'trap \"echo int-\\$((6+6)); exit 0\" INT; echo armed-$((2*3)); "
        "while true; do sleep 1; done'\r");
    ASSERT_TRUE(session.expect("armed-6")) << session.transcript();
    session.type("\x03");
    EXPECT_TRUE(session.expect("int-12", 10s)) << "Ctrl-C did not reach the box: " << session.transcript();
    session.type("echo after-$((1+1))\r");
    EXPECT_TRUE(session.expect("after-2", 5s)) << "the shell is not back after Ctrl-C: " << session.transcript();

    session.type("exit 7\r");
    EXPECT_EQ(session.wait(), 7) << session.transcript();
    EXPECT_TRUE(session.cooked()) << "terminal left in raw mode";
}

TEST_F(CliE2E, TerminalRestoredWhenTheCliIsSignalled) {
    PtySession session(home_, {"run", "-it", "--rm", "--rootfs", rootfs_->string(), "sh"});
    ASSERT_GT(session.pid(), 0);
    session.type("echo ready-$((2*3))\r");
    ASSERT_TRUE(session.expect("ready-6")) << session.transcript();
    // A hang-up is passed on to the box's shell, which exits from it; the CLI reports 128+1.
    ::kill(session.pid(), SIGHUP);
    EXPECT_EQ(session.wait(), 129) << session.transcript();
    EXPECT_TRUE(session.cooked()) << "terminal left in raw mode after SIGHUP";
}

TEST_F(CliE2E, ExecInteractiveTerminal) {
    ASSERT_EQ(cli({"run", "-d", "--name", "ttybox", "--rootfs", rootfs_->string(), "true"}).status, 0);
    {
        PtySession session(home_, {"exec", "-it", "ttybox", "--", "sh"});
        session.type("echo exec-$((3+4))\r");
        EXPECT_TRUE(session.expect("exec-7")) << session.transcript();
        session.type("exit\r");
        EXPECT_EQ(session.wait(), 0) << session.transcript();
        EXPECT_TRUE(session.cooked());
    }
    EXPECT_EQ(cli({"rm", "-f", "ttybox"}).status, 0);
}

// `exec -i` with a pipe on fd 0: the box command reads that host pipe itself (the same pipe
// inode on both sides); from a file or a terminal, stdin streams as frames as before.
TEST_F(CliE2E, InteractiveStdinPipeIsPassedFileAndTerminalStream) {
    ASSERT_EQ(cli({"run", "-d", "--name", "stdinbox", "--rootfs", rootfs_->string(), "sleep", "1000"}).status, 0);
    const auto data = work_->path() / "stdin-data";
    boxlite::test::shell("head -c 25165824 /dev/urandom > '" + data.string() + "'");
    const auto expected = trim(boxlite::test::shell("sha256sum < '" + data.string() + "' | cut -d' ' -f1"));
    ASSERT_EQ(expected.size(), 64U);
    const std::string box_script = "cat | sha256sum | cut -d' ' -f1; readlink /proc/self/fd/0; exit 7";

    auto piped =
        run_shell(home_, R"(cat "$1" | { readlink /proc/self/fd/0; "$0" exec -i stdinbox sh -c "$2"; echo "cli=$?"; })",
                  {data.string(), box_script});
    std::istringstream lines(piped.out);
    std::string host_pipe, sum, box_stdin, status;
    std::getline(lines, host_pipe);
    std::getline(lines, sum);
    std::getline(lines, box_stdin);
    std::getline(lines, status);
    EXPECT_EQ(sum, expected) << piped;
    EXPECT_TRUE(host_pipe.starts_with("pipe:[")) << piped;
    if (e2e_engine() == "namespace") {
        EXPECT_EQ(box_stdin, host_pipe) << "the command did not read the host pipe itself: " << piped;
    } else {
        // A VM's command cannot share a host pipe: stdin streams as frames into the agent's pipe.
        EXPECT_TRUE(box_stdin.starts_with("pipe:[")) << piped;
    }
    EXPECT_EQ(status, "cli=7") << piped;

    auto from_file = run_shell(home_, R"("$0" exec -i stdinbox sh -c "$2" < "$1"; echo "cli=$?")",
                               {data.string(), box_script});
    std::istringstream file_lines(from_file.out);
    std::getline(file_lines, sum);
    std::getline(file_lines, box_stdin);
    std::getline(file_lines, status);
    EXPECT_EQ(sum, expected) << from_file;
    EXPECT_TRUE(box_stdin.starts_with("pipe:[")) << "a file must stream as frames into the agent's pipe: " << from_file;
    EXPECT_EQ(status, "cli=7") << from_file;

    // Signals still reach the command (the CLI relays them; it reads nothing itself): `yes` keeps
    // the pipe full until the box's readers are gone. (fd 3: an asynchronous command's stdin
    // would be /dev/null.)
    const auto marker = work_->path() / "stdin-started";
    auto signalled = run_shell(
        home_,
        R"(yes | { "$0" exec -i stdinbox sh -c 'trap "exit 9" TERM; exec 3<&0; echo started; cat <&3 >/dev/null & wait' > "$1" & pid=$!
        until grep -q started "$1" 2>/dev/null; do sleep 0.05; done; kill -TERM $pid; wait $pid; echo "cli=$?"; })",
        {marker.string()});
    EXPECT_EQ(trim(signalled.out), "cli=9") << signalled;

    {
        PtySession session(home_, {"exec", "-i", "stdinbox", "--", "sh", "-c", "read x; echo got-$x; exit 3"});
        session.type("typed\r");
        EXPECT_TRUE(session.expect("got-typed")) << session.transcript();
        EXPECT_EQ(session.wait(), 3) << session.transcript();
    }
    EXPECT_EQ(cli({"rm", "-f", "stdinbox"}).status, 0);
}

}  // namespace

namespace {

TEST_F(CliE2E, MoreFlagsAndGlobalOptions) {
    auto flags = box_run({"--disk-size", "2", "--cpus", "2", "--memory", "256m"}, {"echo", "ok"});
    EXPECT_EQ(flags.status, 0) << flags;
    EXPECT_EQ(flags.out, "ok\n");
    // Published ports and an allow list run on the namespace engine (docs/networking.md); --rm
    // leaves nothing behind.
    auto ported = box_run({"--name", "ported", "-p", "127.0.0.1::80/tcp"}, {"echo", "ok"});
    EXPECT_EQ(ported.status, 0) << ported;
    EXPECT_EQ(ported.out, "ok\n");
    // An allow list is the firewall's (docs/networking.md): the box runs.
    auto allowed = box_run({"--name", "allowed", "--allow-net", "198.51.100.0/24"}, {"echo", "ok"});
    EXPECT_EQ(allowed.status, 0) << allowed;
    EXPECT_EQ(allowed.out, "ok\n");
    EXPECT_EQ(trim(cli({"ls", "-aq"}).out), "") << "a --rm box was left behind";
    // A box with ports can be created and inspected without starting it.
    ASSERT_EQ(cli({"create", "--name", "ports", "-p", "8080:80", "--rootfs", rootfs_->string()}).status, 0);
    EXPECT_EQ(nlohmann::json::parse(cli({"inspect", "ports"}).out)[0]["Config"]["Ports"][0], "0.0.0.0:8080->80/tcp");
    // Nothing bound while it is not running: ls shows no ports, NetworkSettings.Ports is empty.
    EXPECT_EQ(nlohmann::json::parse(cli({"inspect", "ports"}).out)[0]["NetworkSettings"]["Ports"],
              nlohmann::json::object());
    EXPECT_EQ(cli({"rm", "ports"}).status, 0);
    // A running box shows its bindings as bound, a picked host port included (Docker's notation).
    ASSERT_EQ(cli({"run", "-d", "--name", "bound", "-p", "127.0.0.1::80", "-p", "127.0.0.1::53/udp", "--rootfs",
                   rootfs_->string(), "sleep", "300"})
                  .status,
              0);
    const auto bound = nlohmann::json::parse(cli({"inspect", "bound"}).out)[0]["NetworkSettings"]["Ports"];
    ASSERT_EQ(bound.size(), 2U) << bound;
    const std::string tcp_port = bound["80/tcp"][0]["HostPort"];
    const std::string udp_port = bound["53/udp"][0]["HostPort"];
    EXPECT_EQ(bound["80/tcp"][0]["HostIp"], "127.0.0.1");
    EXPECT_GT(std::stoi(tcp_port), 0) << bound;
    EXPECT_GT(std::stoi(udp_port), 0) << bound;
    const auto table = cli({"ls"}).out;
    EXPECT_NE(table.find("PORTS"), std::string::npos) << table;
    EXPECT_NE(table.find("127.0.0.1:" + tcp_port + "->80/tcp, 127.0.0.1:" + udp_port + "->53/udp"), std::string::npos)
        << table;
    EXPECT_EQ(cli({"rm", "-f", "bound"}).status, 0);
    // --home wins over BOXLITE_HOME.
    const auto other = work_->path() / "other-home";
    ASSERT_EQ(cli({"--home", other.string(), "create", "--name", "elsewhere", "--rootfs", rootfs_->string()}).status,
              0);
    EXPECT_EQ(cli({"ls", "-a", "--format", "{{.Name}}"}).out.find("elsewhere"), std::string::npos);
    EXPECT_NE(cli({"--home", other.string(), "ls", "-a", "--format", "{{.Name}}"}).out.find("elsewhere"),
              std::string::npos);
    // Several boxes at once: start/stop/inspect/rm report per box; rm -a removes them all.
    ASSERT_EQ(cli({"--home", other.string(), "create", "--name", "second", "--rootfs", rootfs_->string()}).status, 0);
    auto started = cli({"--home", other.string(), "start", "elsewhere", "second", "missing"});
    EXPECT_EQ(started.status, 1);  // one failed, the others still started
    EXPECT_EQ(started.out, "elsewhere\nsecond\n");
    EXPECT_EQ(started.err, "Error: box not found: missing\n");
    auto both = nlohmann::json::parse(cli({"--home", other.string(), "inspect", "elsewhere", "second"}).out);
    EXPECT_EQ(both.size(), 2U);
    EXPECT_EQ(trim(cli({"--home", other.string(), "ls", "-q"}).out).size(), 12U * 2 + 1);
    auto removed = cli({"--home", other.string(), "rm", "-a", "-f"});
    EXPECT_EQ(removed.status, 0) << removed;
    EXPECT_EQ(trim(cli({"--home", other.string(), "ls", "-aq"}).out), "");
}

TEST_F(CliE2E, StreamingCommandsEndCleanly) {
    ASSERT_EQ(cli({"run", "-d", "--name", "streamer", "--rootfs", rootfs_->string(), "sh", "-c",
                   "echo first; sleep 0.2; echo second"})
                  .status,
              0);
    {
        PtySession stats(home_, {"stats", "--stream", "--format", "{{.Name}} pids={{.Pids}}", "streamer"});
        EXPECT_TRUE(stats.expect("streamer pids=")) << stats.transcript();
        ::kill(stats.pid(), SIGINT);  // Ctrl-C ends the stream normally
        EXPECT_EQ(stats.wait(), 0) << stats.transcript();
    }
    {
        PtySession logs(home_, {"logs", "-f", "streamer"});
        EXPECT_TRUE(logs.expect("second")) << logs.transcript();
        // Following ends when the box stops.
        ASSERT_EQ(cli({"stop", "streamer"}).status, 0);
        EXPECT_EQ(logs.wait(), 0) << logs.transcript();
    }
    if (e2e_engine() == "namespace") {
        auto tail = cli({"logs", "-n", "1", "streamer"});
        EXPECT_EQ(tail.out, "second\n") << tail;
    } else {
        // The guest's shutdown lines come last in a VM's console log.
        auto all = cli({"logs", "streamer"});
        EXPECT_EQ(without_guest_console(all.out), "first\nsecond\n") << all;
    }
    EXPECT_EQ(cli({"rm", "streamer"}).status, 0);
}

}  // namespace

namespace {

TEST_F(CliE2E, SignalsToTheCliReachTheBoxCommand) {
    // Without -t, Ctrl-C (SIGINT to the CLI) is passed on to the box command: 128 + SIGINT.
    PtySession run(home_, {"run", "--rm", "--rootfs", rootfs_->string(), "sh", "-c", "echo started; sleep 30"});
    ASSERT_TRUE(run.expect("started")) << run.transcript();
    ::kill(run.pid(), SIGINT);
    EXPECT_EQ(run.wait(), 130) << run.transcript();
    // A command that handles the signal decides its own exit status.
    PtySession trapped(home_, {"run", "--rm", "--rootfs", rootfs_->string(), "sh", "-c",
                               "trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.1; done"});
    ASSERT_TRUE(trapped.expect("ready")) << trapped.transcript();
    ::kill(trapped.pid(), SIGTERM);
    EXPECT_TRUE(trapped.expect("got-term")) << trapped.transcript();
    EXPECT_EQ(trapped.wait(), 9) << trapped.transcript();
}

}  // namespace

// ------------------------------------------------------------------------------------------
// A reader that leaves, and signals before the command runs: no box is ever left behind
// ------------------------------------------------------------------------------------------

namespace {

/// The state letter of /proc/<pid>/stat ('Z' for a zombie), or 0 when there is no such process.
char process_state(pid_t pid) {
    const std::string text = boxlite::test::read_proc_file("/proc/" + std::to_string(pid) + "/stat");
    const auto close = text.rfind(')');
    return close == std::string::npos || close + 2 >= text.size() ? '\0' : text[close + 2];
}

TEST_F(CliE2E, ReaderThatLeavesEndsTheCommandAndTheBoxGoes) {
    // `boxlite run --rm … yes | head -1`: the CLI is not killed by SIGPIPE; `yes` gets it in the
    // box, as a local `yes` would, the CLI reports its status (128+13) and removes the box.
    const auto home = work_->path() / "pipe-home";
    for (const auto& flags : std::vector<std::vector<std::string>>{{}, {"-t"}}) {
        std::vector<std::string> args = flags;
        args.insert(args.end(), {"--rootfs", rootfs_->string()});
        auto piped = run_shell(home, R"("$0" run --rm "$@" yes | head -1; echo "cli=${PIPESTATUS[0]}")", args);
        EXPECT_EQ(piped.status, 0) << piped;
        EXPECT_TRUE(piped.out.starts_with("y")) << piped;
        EXPECT_NE(piped.out.find("cli=141\n"), std::string::npos) << piped;
        EXPECT_EQ(trim(run_cli(home, {"ls", "-aq"}).out), "") << "the --rm box was left behind";
    }
    // Without --rm the box is kept, stopped.
    auto kept = run_shell(home,
                          R"("$0" run --name kept-after-pipe --rootfs "$1" yes | head -1; echo "cli=${PIPESTATUS[0]}")",
                          {rootfs_->string()});
    EXPECT_EQ(kept.out, "y\ncli=141\n") << kept;
    EXPECT_EQ(trim(run_cli(home, {"inspect", "-f", "{{.State.Status}}", "kept-after-pipe"}).out), "stopped");
    EXPECT_EQ(run_cli(home, {"rm", "kept-after-pipe"}).status, 0);

    // exec: the box is not the CLI's to stop; it keeps running.
    ASSERT_EQ(run_cli(home, {"run", "-d", "--name", "reader", "--rootfs", rootfs_->string(), "sh", "-c",
                             "while true; do echo tick; sleep 0.05; done"})
                  .status,
              0);
    auto exec = run_shell(home, R"("$0" exec reader yes | head -1; echo "cli=${PIPESTATUS[0]}")");
    EXPECT_EQ(exec.out, "y\ncli=141\n") << exec;
    EXPECT_EQ(trim(run_cli(home, {"inspect", "-f", "{{.State.Status}}", "reader"}).out), "running");
    // logs -f stops following once its reader has gone, with the status SIGPIPE would give.
    // (On a VM the guest's boot lines come first in the console log: skipped by grep.)
    const std::string guest_lines = e2e_engine() == "namespace" ? "^$" : kGuestConsoleLine;
    auto logs = run_shell(
        home, R"("$0" logs -f reader | grep --line-buffered -v -E "$1" | head -1; echo "cli=${PIPESTATUS[0]}")",
        {guest_lines});
    EXPECT_EQ(logs.out, "tick\ncli=141\n") << logs;
    EXPECT_EQ(run_cli(home, {"rm", "-f", "reader"}).status, 0);
    EXPECT_EQ(trim(run_cli(home, {"ls", "-aq"}).out), "");
}

TEST_F(CliE2E, SignalWhileSettingUpRemovesTheBox) {
#ifndef BOXLITE_SHIM_PATH
    GTEST_SKIP() << "precondition: this build has no boxlite-shim target to hold at a gate";
#else
    // The shim is held at a gate (a FIFO) so the CLI is, deterministically, inside box.start()
    // (after the create) when the signal arrives; then the gate opens and start completes.
    boxlite::test::TempDir dir("boxlite-cli-gate");
    const auto started = dir.path() / "started";
    const auto gate = dir.path() / "gate";
    ASSERT_EQ(::mkfifo(started.c_str(), 0600), 0);
    ASSERT_EQ(::mkfifo(gate.c_str(), 0600), 0);
    const auto shim = dir.path() / "gated-shim";
    // The shim of the scenarios' engine, and the variable that names another one for it.
    const bool qemu = e2e_engine() == "qemu";
    const std::string real_shim = qemu ? (fs::path(BOXLITE_SHIM_PATH).parent_path() / "boxlite-shim-qemu").string()
                                       : std::string(BOXLITE_SHIM_PATH);
    const std::string shim_variable = qemu ? "BOXLITE_SHIM_QEMU" : "BOXLITE_SHIM";
    boxlite::test::write_file(shim, "#!/bin/sh\necho $$ > '" + started.string() + "'\nread _ < '" + gate.string() +
                                        "'\nexec '" + real_shim + "' \"$@\"\n");
    fs::permissions(shim, fs::perms::owner_all);
    const auto home = work_->path() / "setup-home";
    struct Case {
        std::vector<std::string> flags;
        int signal_number;
    };
    for (const auto& c : {Case{{"--rm"}, SIGINT}, Case{{"-d"}, SIGTERM}, Case{{}, SIGHUP}}) {
        SCOPED_TRACE("signal " + std::to_string(c.signal_number));
        const int started_fd = ::open(started.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        ASSERT_GE(started_fd, 0);
        std::vector<std::string> args = {"run", "--name", "interrupted"};
        args.insert(args.end(), c.flags.begin(), c.flags.end());
        args.insert(args.end(), {"--rootfs", rootfs_->string(), "echo", "never"});
        PtySession session(home, args, {{shim_variable, shim.string()}});
        // The gated shim's pid, once it runs (the CLI is then waiting in start).
        std::string pid_text;
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (pid_text.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
            pollfd fd{started_fd, POLLIN, 0};
            if (::poll(&fd, 1, 100) <= 0) continue;
            char buf[64];
            const auto n = ::read(started_fd, buf, sizeof buf);
            if (n > 0) pid_text.append(buf, static_cast<std::size_t>(n));
        }
        ::close(started_fd);
        ASSERT_NE(pid_text.find('\n'), std::string::npos) << "the shim never started: " << session.transcript();
        const pid_t shim_pid = std::stoi(pid_text);
        EXPECT_EQ(trim(run_cli(home, {"ls", "-a", "--format", "{{.Name}}"}).out), "interrupted");
        ::kill(session.pid(), c.signal_number);
        // Open the gate (its reader may still be on its way to the open).
        int gate_fd = -1;
        while (gate_fd < 0 && std::chrono::steady_clock::now() < deadline) {
            gate_fd = ::open(gate.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
            if (gate_fd < 0) std::this_thread::sleep_for(10ms);
        }
        ASSERT_GE(gate_fd, 0);
        ASSERT_EQ(::write(gate_fd, "\n", 1), 1);
        ::close(gate_fd);
        EXPECT_EQ(session.wait(30s), 128 + c.signal_number) << session.transcript();
        EXPECT_FALSE(session.signalled()) << "the signal killed the CLI before it cleaned up";
        EXPECT_EQ(session.transcript().find("never"), std::string::npos) << session.transcript();
        EXPECT_EQ(trim(run_cli(home, {"ls", "-aq"}).out), "") << "the box was left behind";
        const char state = process_state(shim_pid);
        EXPECT_TRUE(state == '\0' || state == 'Z') << "the box's shim is still running (state " << state << ")";
    }
#endif
}

// ------------------------------------------------------------------------------------------
// create -u/-i/-t; run -d --rm, run -d -t; logs -f before the log exists
// ------------------------------------------------------------------------------------------

TEST_F(CliE2E, CreateTakesUserAndRecordsStdinAndTty) {
    auto created = cli({"create", "--name", "created-user", "-u", "1000", "-i", "-t", "--rootfs", rootfs_->string()});
    ASSERT_EQ(created.status, 0) << created;
    EXPECT_EQ(trim(
                  cli({"inspect", "-f", "{{.Config.User}} {{.Config.OpenStdin}} {{.Config.Tty}}", "created-user"}).out),
              "1000 true true");
    ASSERT_EQ(cli({"start", "created-user"}).status, 0);
    // -u is the box's default user; exec -u overrides it.
    EXPECT_EQ(cli({"exec", "created-user", "id", "-u"}).out, "1000\n");
    EXPECT_EQ(cli({"exec", "-u", "0", "created-user", "id", "-u"}).out, "0\n");
    EXPECT_EQ(cli({"rm", "-f", "created-user"}).status, 0);
    auto plain = cli({"create", "--name", "created-plain", "--rootfs", rootfs_->string()});
    ASSERT_EQ(plain.status, 0) << plain;
    EXPECT_EQ(trim(cli({"inspect", "-f", "{{.Config.OpenStdin}} {{.Config.Tty}}", "created-plain"}).out),
              "false false");
    EXPECT_EQ(cli({"rm", "created-plain"}).status, 0);
}

TEST_F(CliE2E, DetachedRunWithRmAndTty) {
    // -d --rm: the box goes when its command ends...
    auto quick = cli(
        {"run", "-d", "--rm", "--name", "detached-rm", "--rootfs", rootfs_->string(), "sh", "-c", "echo bye"});
    ASSERT_EQ(quick.status, 0) << quick;
    EXPECT_TRUE(eventually([&] {
        return cli({"inspect", "detached-rm"}).status == 1;
    })) << "the -d --rm box outlived its command";
    // ...also when `boxlite stop` ends the command.
    ASSERT_EQ(
        cli({"run", "-d", "--rm", "--name", "detached-stop", "--rootfs", rootfs_->string(), "sleep", "300"}).status, 0);
    EXPECT_EQ(trim(cli({"inspect", "-f", "{{.State.Status}}", "detached-stop"}).out), "running");
    auto stopped = cli({"stop", "detached-stop"});
    EXPECT_EQ(stopped.status, 0) << stopped;
    EXPECT_TRUE(eventually([&] {
        return cli({"inspect", "detached-stop"}).status == 1;
    })) << "the -d --rm box was not removed after stop";

    // -d -t: the command has a terminal in the box; its output lands in the log.
    ASSERT_EQ(cli({"run", "-d", "-t", "--name", "detached-tty", "--rootfs", rootfs_->string(), "sh", "-c",
                   "tty; echo to-stderr >&2"})
                  .status,
              0);
    std::string log;
    EXPECT_TRUE(eventually([&] {
        log = cli({"logs", "detached-tty"}).out;
        return log.find("to-stderr") != std::string::npos;
    })) << log;
    EXPECT_NE(log.find("/dev/pts/"), std::string::npos) << log;
    EXPECT_EQ(cli({"rm", "-f", "detached-tty"}).status, 0);
    // exec -d -t likewise.
    ASSERT_EQ(cli({"run", "-d", "--name", "exec-detached-tty", "--rootfs", rootfs_->string(), "sleep", "300"}).status,
              0);
    ASSERT_EQ(cli({"exec", "-d", "-t", "exec-detached-tty", "--", "sh", "-c", "tty > /tmp/tty"}).status, 0);
    std::string tty;
    EXPECT_TRUE(eventually([&] {
        tty = cli({"exec", "exec-detached-tty", "cat", "/tmp/tty"}).out;
        return !tty.empty();
    }));
    EXPECT_TRUE(tty.starts_with("/dev/pts/")) << tty;
    EXPECT_EQ(cli({"rm", "-f", "exec-detached-tty"}).status, 0);
}

TEST_F(CliE2E, LogsFollowWaitsForTheLogOfARunningBox) {
    ASSERT_EQ(cli({"create", "--name", "no-log-yet", "--rootfs", rootfs_->string()}).status, 0);
    // Not running: nothing to wait for.
    auto configured = cli({"logs", "-f", "no-log-yet"});
    EXPECT_EQ(configured.status, 0) << configured;
    EXPECT_NE(configured.err.find("No logs for box no-log-yet yet"), std::string::npos) << configured;
    ASSERT_EQ(cli({"start", "no-log-yet"}).status, 0);
    PtySession logs(home_, {"logs", "-f", "no-log-yet"});
    ASSERT_EQ(cli({"exec", "-d", "no-log-yet", "--", "sh", "-c", "echo written-later"}).status, 0);
    EXPECT_TRUE(logs.expect("written-later")) << logs.transcript();
    EXPECT_EQ(logs.transcript().find("No logs"), std::string::npos) << logs.transcript();
    ASSERT_EQ(cli({"stop", "no-log-yet"}).status, 0);
    EXPECT_EQ(logs.wait(), 0) << logs.transcript();
    EXPECT_EQ(cli({"rm", "no-log-yet"}).status, 0);
}

// ------------------------------------------------------------------------------------------
// Flags and formats not covered above
// ------------------------------------------------------------------------------------------

TEST_F(CliE2E, TerminalWithoutStdinAndExecFlags) {
    // -t without -i: a terminal in the box, stdout and stderr merged, no raw mode needed here.
    auto run_tty = box_run({"-t"}, {"sh", "-c", "tty; echo to-stderr >&2; exit 4"});
    EXPECT_EQ(run_tty.status, 4) << run_tty;
    EXPECT_NE(run_tty.out.find("/dev/pts/"), std::string::npos) << run_tty;
    EXPECT_NE(run_tty.out.find("to-stderr"), std::string::npos) << run_tty;
    EXPECT_EQ(run_tty.err, "") << run_tty;

    ASSERT_EQ(cli({"run", "-d", "--name", "exec-flags", "--rootfs", rootfs_->string(), "sleep", "300"}).status, 0);
    auto exec_tty = cli({"exec", "-t", "exec-flags", "--", "sh", "-c", "tty; echo to-stderr >&2"});
    EXPECT_EQ(exec_tty.status, 0) << exec_tty;
    EXPECT_TRUE(exec_tty.out.starts_with("/dev/pts/")) << exec_tty;
    EXPECT_NE(exec_tty.out.find("to-stderr"), std::string::npos) << exec_tty;
    EXPECT_EQ(cli({"exec", "-u", "1000", "exec-flags", "id", "-u"}).out, "1000\n");
    EXPECT_EQ(cli({"exec", "-u", "1000:2000", "exec-flags", "id", "-g"}).out, "2000\n");
    auto env = cli({"exec", "-e", "FROM_CALLER", "-e", "NOT_IN_CALLER", "exec-flags", "--", "sh", "-c",
                    "echo $FROM_CALLER ${NOT_IN_CALLER-unset}"},
                   {}, {{"FROM_CALLER", "caller-value"}, {"NOT_IN_CALLER", "<unset>"}});
    EXPECT_EQ(env.out, "caller-value unset\n") << env;
    EXPECT_EQ(cli({"rm", "-f", "exec-flags"}).status, 0);
}

TEST_F(CliE2E, EmptyEntrypointClearsTheImages) {
    auto rootfs = box_run({"--entrypoint", ""}, {"echo", "cleared"});
    EXPECT_EQ(rootfs.status, 0) << rootfs;
    EXPECT_EQ(rootfs.out, "cleared\n");
    auto nothing = box_run({"--entrypoint", ""}, {});
    EXPECT_EQ(nothing.status, 2) << nothing;
    EXPECT_NE(nothing.err.find("--entrypoint ''"), std::string::npos) << nothing;
    require_images();
    if (IsSkipped() || HasFatalFailure()) return;
    // The image's CMD (cat /etc/os-release) is dropped with its entrypoint; its Env stays.
    auto image = cli({"run", "--rm", "--entrypoint", "", image_, "sh", "-c", "echo $FOO"});
    EXPECT_EQ(image.out, "bar\n") << image;
    EXPECT_EQ(cli({"run", "--rm", "--entrypoint", "", image_}).status, 2);
}

TEST_F(CliE2E, LimitsAreRecordedAndApplied) {
    auto run = cli({"run", "-d", "--name", "limited", "--cpus", "1", "--memory", "256m", "--rootfs", rootfs_->string(),
                    "sleep", "300"});
    ASSERT_EQ(run.status, 0) << run;
    EXPECT_EQ(trim(cli({"inspect", "-f", "{{.Config.Cpus}} {{.Config.MemoryMib}}", "limited"}).out), "1 256");
    EXPECT_EQ(trim(cli({"ls", "--format", "{{.Name}} {{.Cpus}} {{.MemoryMib}}"}).out), "limited 1 256");
    if (e2e_engine() != "namespace") {
        // A VM's limits are its own size: one vCPU, 256 MiB of guest RAM (the kernel keeps some).
        EXPECT_EQ(trim(cli({"exec", "limited", "nproc"}).out), "1");
        const auto total = cli(
            {"exec", "limited", "sh", "-c", "grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2"});
        const auto kib = std::stol("0" + trim(total.out));
        EXPECT_GT(kib, 150L * 1024) << total;
        EXPECT_LE(kib, 256L * 1024) << total;
        EXPECT_EQ(cli({"rm", "-f", "limited"}).status, 0);
        return;
    }
    // The namespace engine writes what it applied (or why not) to cgroup.info in the box dir.
    // Whether it can apply them is the host's to say (its cgroup mounts), not the engine's.
    const auto dir = trim(cli({"inspect", "-f", "{{.Path}}", "limited"}).out);
    const auto info = boxlite::test::read_file(fs::path(dir) / "cgroup.info");
    const auto cgroups_missing = boxlite::test::cgroup_limits_unsupported_reason();
    if (cgroups_missing.empty()) {
        EXPECT_NE(info.find("applied memory=268435456\n"), std::string::npos) << info;
        EXPECT_NE(info.find("applied cpu=1\n"), std::string::npos) << info;
        // The limit is the kernel's, and what runs in the box is inside that cgroup.
        const auto id = trim(cli({"inspect", "-f", "{{.Id}}", "limited"}).out);
        std::smatch dir_line;
        ASSERT_TRUE(std::regex_search(info, dir_line, std::regex("memory (\\S+)\n"))) << info;
        const bool v2 = fs::exists("/sys/fs/cgroup/cgroup.controllers");
        EXPECT_EQ(trim(boxlite::test::read_file(fs::path(dir_line[1].str()) /
                                                (v2 ? "memory.max" : "memory.limit_in_bytes"))),
                  "268435456");
        auto cgroup = cli({"exec", "limited", "cat", "/proc/self/cgroup"});
        EXPECT_NE(cgroup.out.find("/boxlite/" + id + "\n"), std::string::npos) << cgroup;
    } else {
        EXPECT_NE(info.find("skipped memory"), std::string::npos) << info;
    }
    // restart -t: the stop waits at most that long; the box comes back with the same limits.
    auto restarted = cli({"restart", "-t", "1", "limited"});
    EXPECT_EQ(restarted.status, 0) << restarted;
    EXPECT_EQ(restarted.out, "limited\n");
    EXPECT_EQ(trim(cli({"inspect", "-f", "{{.State.Status}} {{.Config.Cpus}} {{.Config.MemoryMib}}", "limited"}).out),
              "running 1 256");
    EXPECT_EQ(cli({"rm", "-f", "limited"}).status, 0);
    if (!cgroups_missing.empty()) GTEST_SKIP() << cgroups_missing << " (limits recorded; applying them not checked)";
}

TEST_F(CliE2E, RemoveAllRefusesRunningBoxesWithoutForce) {
    const auto home = work_->path() / "rm-all-home";
    auto idle = run_cli(home, {"create", "--name", "idle", "--rootfs", rootfs_->string()});
    ASSERT_EQ(idle.status, 0) << idle;
    ASSERT_EQ(run_cli(home, {"run", "-d", "--name", "busy", "--rootfs", rootfs_->string(), "sleep", "300"}).status, 0);
    auto refused = run_cli(home, {"rm", "-a"});
    EXPECT_EQ(refused.status, 1) << refused;
    EXPECT_EQ(refused.out, idle.out) << "the configured box is removed";
    EXPECT_NE(refused.err.find("cannot remove running box"), std::string::npos) << refused;
    EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << refused;
    EXPECT_EQ(trim(run_cli(home, {"ls", "-a", "--format", "{{.Name}}"}).out), "busy");
    EXPECT_EQ(run_cli(home, {"rm", "-a", "-f"}).status, 0);
    EXPECT_EQ(trim(run_cli(home, {"ls", "-aq"}).out), "");
}

TEST_F(CliE2E, EngineFlagAndEnvironment) {
    // The flag alone (no BOXLITE_ENGINE), and the flag over the variable.
    auto flag = cli({"--engine", "namespace", "run", "--rm", "--rootfs", rootfs_->string(), "echo", "by-flag"}, {},
                    {{"BOXLITE_ENGINE", "<unset>"}});
    EXPECT_EQ(flag.status, 0) << flag;
    EXPECT_EQ(flag.out, "by-flag\n");
    auto info = nlohmann::json::parse(
        cli({"--engine", "namespace", "info", "--format", "json"}, {}, {{"BOXLITE_ENGINE", "qemu"}}).out);
    EXPECT_EQ(info["engine"], "namespace");
    // A bad BOXLITE_ENGINE is a usage error naming the variable.
    auto bad = cli({"ls"}, {}, {{"BOXLITE_ENGINE", "bogus"}});
    EXPECT_EQ(bad.status, 2) << bad;
    EXPECT_NE(bad.err.find("BOXLITE_ENGINE 'bogus'"), std::string::npos) << bad;
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad;
    // The log cap: an out-of-range size names the range, by flag or by variable.
    auto small = cli({"--log-max-bytes", "100", "ls"});
    EXPECT_NE(small.status, 0) << small;
    EXPECT_NE(small.err.find("log_max_bytes 100 is out of range (allowed: 65536 to 1073741824 bytes)"),
              std::string::npos)
        << small;
    auto env_small = cli({"ls"}, {}, {{"BOXLITE_LOG_MAX_BYTES", "100"}});
    EXPECT_NE(env_small.status, 0) << env_small;
    EXPECT_EQ(cli({"--log-max-bytes", "65536", "ls"}).status, 0);
}

// info: every engine's status once, in one line, and the guest kernel and initramfs VMs boot.
TEST_F(CliE2E, InfoShowsEachEngineOnceAndTheGuestAssets) {
    auto out = cli({"info", "--format", "json"}).out;
    auto info = nlohmann::json::parse(out);
    for (const char* engine : {"kvm", "qemu", "namespace"}) {
        ASSERT_TRUE(info["engines"].contains(engine)) << out;
        const auto status = info["engines"][engine].get<std::string>();
        EXPECT_EQ(status.find('\n'), std::string::npos) << status;
        if (status != "available") {
            EXPECT_EQ(out.find(status), out.rfind(status)) << "said twice: " << status;
        }
    }
    // scripts/setup unpacks Debian's cloud kernel: the guest section names it.
    ASSERT_TRUE(info["guest"].contains("kernelRelease")) << out;
    EXPECT_NE(info["guest"]["kernelRelease"].get<std::string>().find("cloud-amd64"), std::string::npos) << out;
    EXPECT_EQ(info["guest"]["initramfs"].get<std::string>().rfind(home_.string() + "/init/initramfs-", 0), 0U) << out;
    auto missing = nlohmann::json::parse(
        cli({"info", "--format", "json"}, {}, {{"BOXLITE_KERNEL", "/nonexistent/vmlinuz"}}).out);
    EXPECT_NE(missing["guest"]["error"].get<std::string>().find("/nonexistent/vmlinuz"), std::string::npos)
        << missing.dump();
}

TEST_F(CliE2E, MoreFormats) {
    // info: YAML by default.
    auto info = cli({"info"});
    EXPECT_EQ(info.status, 0) << info;
    EXPECT_NE(info.out.find("homeDir: " + home_.string() + "\n"), std::string::npos) << info.out;
    EXPECT_NE(info.out.find("engine: " + e2e_engine() + "\n"), std::string::npos) << info.out;
    EXPECT_EQ(info.out.find('{'), std::string::npos) << "not YAML: " << info.out;
    // version: yaml and a template.
    auto version_yaml = cli({"version", "--format", "yaml"});
    EXPECT_NE(version_yaml.out.find("Version: \"0.1.0\"\n"), std::string::npos) << version_yaml;  // a string, quoted
    EXPECT_NE(version_yaml.out.find("Os: Linux\n"), std::string::npos) << version_yaml;
    EXPECT_EQ(cli({"version", "--format", "{{.Version}} on {{.Os}}"}).out, "0.1.0 on Linux\n");
    // ls and images in YAML.
    ASSERT_EQ(cli({"create", "--name", "yaml-box", "--rootfs", rootfs_->string()}).status, 0);
    auto ls = cli({"ls", "-a", "--format", "yaml"});
    EXPECT_EQ(ls.status, 0) << ls;
    EXPECT_NE(ls.out.find("Name: yaml-box\n"), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("Status: configured\n"), std::string::npos) << ls.out;
    {
        require_images();
        if (IsSkipped() || HasFatalFailure()) return;
        auto images = cli({"images", "--format", "yaml"});
        EXPECT_EQ(images.status, 0) << images;
        EXPECT_NE(images.out.find("Reference: " + image_ + "\n"), std::string::npos) << images.out;
    }
    // stats --stream in table mode on a terminal: the table is redrawn until Ctrl-C.
    ASSERT_EQ(cli({"start", "yaml-box"}).status, 0);
    {
        PtySession stats(home_, {"stats", "--stream", "yaml-box"});
        EXPECT_TRUE(stats.expect("BOX ID")) << stats.transcript();
        EXPECT_TRUE(stats.expect("yaml-box")) << stats.transcript();
        EXPECT_TRUE(stats.expect("\x1b[2J")) << "not redrawn: " << stats.transcript();
        EXPECT_TRUE(stats.expect("BOX ID")) << stats.transcript();
        ::kill(stats.pid(), SIGINT);
        EXPECT_EQ(stats.wait(), 0) << stats.transcript();
    }
    EXPECT_EQ(cli({"rm", "-f", "yaml-box"}).status, 0);
}

TEST_F(CliE2E, ExecInteractiveResizeAndCtrlC) {
    ASSERT_EQ(cli({"run", "-d", "--name", "exec-tty", "--rootfs", rootfs_->string(), "sleep", "300"}).status, 0);
    {
        PtySession session(home_, {"exec", "-it", "exec-tty", "--", "sh"});
        session.type("echo ready-$((5+5))\r");
        ASSERT_TRUE(session.expect("ready-10")) << session.transcript();
        session.type("stty size\r");
        EXPECT_TRUE(session.expect("24 80")) << session.transcript();
        session.resize(33, 120);
        // The new size arrives asynchronously (SIGWINCH, then a frame to the agent): ask until it shows.
        bool resized = false;
        for (int i = 0; i < 50 && !resized; ++i) {
            session.type("stty size\r");
            resized = session.expect("33 120", 200ms);
        }
        EXPECT_TRUE(resized) << session.transcript();
        // Ctrl-C reaches the foreground job in the box: a shell that traps SIGINT, typed in, and
        // armed (its trap set) before the key is pressed. The arithmetic shows up only in output.
        session.type(
            "sh -c 'trap \"echo int-\\$((4+4)); exit 0\" INT; echo armed-$((3*3)); "
            "while true; do sleep 1; done'\r");
        ASSERT_TRUE(session.expect("armed-9")) << session.transcript();
        session.type("\x03");
        EXPECT_TRUE(session.expect("int-8", 10s)) << "Ctrl-C did not reach the box: " << session.transcript();
        session.type("echo after-$((2+2))\r");
        EXPECT_TRUE(session.expect("after-4")) << session.transcript();
        session.type("exit 3\r");
        EXPECT_EQ(session.wait(), 3) << session.transcript();
        EXPECT_TRUE(session.cooked());
    }
    EXPECT_EQ(trim(cli({"inspect", "-f", "{{.State.Status}}", "exec-tty"}).out), "running");
    EXPECT_EQ(cli({"rm", "-f", "exec-tty"}).status, 0);
}

TEST_F(CliE2E, LoadPruneAndRegistryOrder) {
    require_registry();
    if (IsSkipped() || HasFatalFailure()) return;
    const auto layout = work_->path() / "images" / "oci";
    // load -i PATH, into a home of its own.
    const auto load_home = work_->path() / "load-home";
    auto loaded = run_cli(load_home, {"load", "-i", layout.string(), "-q"});
    ASSERT_EQ(loaded.status, 0) << loaded;
    EXPECT_NE(loaded.out.find("localhost/oci:single\n"), std::string::npos) << loaded;
    // load --tag names an image the layout does not: a copy of the layout with only `single`,
    // its name annotation dropped.
    const auto untagged = work_->path() / "untagged";
    boxlite::test::shell("rm -rf '" + untagged.string() + "' && cp -a '" + layout.string() + "' '" + untagged.string() +
                         "' && python3 -c \"import json,sys; p=sys.argv[1]+'/index.json'; "
                         "i=json.load(open(p)); m=[x for x in i['manifests'] if x.get('annotations',{})"
                         ".get('org.opencontainers.image.ref.name')=='single'][0]; m.pop('annotations'); "
                         "i['manifests']=[m]; json.dump(i,open(p,'w'))\" '" +
                         untagged.string() + "'");
    auto tagged = run_cli(load_home, {"load", "--tag", "test/tagged:v1", "-q", untagged.string()});
    ASSERT_EQ(tagged.status, 0) << tagged;
    EXPECT_NE(tagged.out.find("test/tagged:v1"), std::string::npos) << tagged;
    auto from_tag = run_cli(load_home, {"run", "--rm", trim(tagged.out), "cat", "/etc/os-release"});
    EXPECT_NE(from_tag.out.find("BoxLite Test Linux"), std::string::npos) << from_tag;

    // images prune -a: every image no box uses goes; one a box uses stays until the box does.
    auto pinned = run_cli(load_home, {"create", "--name", "pin", trim(tagged.out)});
    ASSERT_EQ(pinned.status, 0) << pinned;
    auto prune = run_cli(load_home, {"images", "prune", "-a"});
    EXPECT_EQ(prune.status, 0) << prune;
    EXPECT_NE(prune.out.find("Total reclaimed space"), std::string::npos) << prune;
    auto left = run_cli(load_home, {"images", "--format", "{{.Reference}}"});
    EXPECT_NE(left.out.find("test/tagged:v1"), std::string::npos) << left;
    EXPECT_EQ(left.out.find("localhost/oci:multi"), std::string::npos) << left;
    EXPECT_EQ(run_cli(load_home, {"rm", "pin"}).status, 0);
    EXPECT_EQ(run_cli(load_home, {"images", "prune", "-a"}).status, 0);
    EXPECT_EQ(trim(run_cli(load_home, {"images", "-q"}).out), "");

    // Two --registry flags: searched in the order given (an unreachable first one is an error,
    // not skipped), and listed in that order before docker.io.
    const std::string good = "127.0.0.1:" + std::to_string(registry_port_);
    const std::string dead = "127.0.0.1:1";
    const auto order_home = work_->path() / "registry-order-home";
    auto listed = nlohmann::json::parse(
        run_cli(order_home, {"--registry", dead, "--registry", good, "info", "--format", "json"}).out);
    EXPECT_EQ(listed["registries"], nlohmann::json::array({dead, good, "docker.io"}));
    auto dead_first = run_cli(order_home, {"--registry", dead, "--registry", good, "pull", "-q", "test/busybox:multi"});
    EXPECT_EQ(dead_first.status, 1) << dead_first;
    EXPECT_NE(dead_first.err.find(dead), std::string::npos) << dead_first;
    auto good_first = run_cli(order_home, {"--registry", good, "--registry", dead, "pull", "-q", "test/busybox:multi"});
    EXPECT_EQ(good_first.status, 0) << good_first;
}

}  // namespace
