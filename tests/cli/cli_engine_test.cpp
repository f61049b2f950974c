// A box keeps its engine, through the real `boxlite` binary: a box created with
// `--engine namespace` is then stopped, started, exec'd into, copied to and from, read (logs,
// inspect, stats) and removed without `--engine` — with BOXLITE_ENGINE unset and set to auto,
// the default that picks a VM engine for new boxes.
#include <support/support.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct CliRun {
    int status = -1;
    std::string out;
    std::string err;
};

std::ostream& operator<<(std::ostream& os, const CliRun& r) {
    return os << "status " << r.status << "\n--- stdout\n" << r.out << "\n--- stderr\n" << r.err;
}

/// Runs the CLI with exactly `env` (plus PATH, HOME and the sanitizers' options) and `args`;
/// stdin is /dev/null, stdout and stderr go to files that are read back.
CliRun run_boxlite(const fs::path& work, const std::map<std::string, std::string>& env, std::vector<std::string> args) {
    std::vector<std::string> envs;
    for (const char* keep : {"PATH", "HOME", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"}) {
        if (const char* value = std::getenv(keep)) envs.push_back(std::string(keep) + "=" + value);
    }
    for (const auto& [key, value] : env) envs.push_back(key + "=" + value);
    args.insert(args.begin(), BOXLITE_CLI_PATH);
    const auto out_path = work / "stdout";
    const auto err_path = work / "stderr";
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int in = ::open("/dev/null", O_RDONLY);
        const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0 || err < 0) ::_exit(126);
        ::dup2(in, 0);
        ::dup2(out, 1);
        ::dup2(err, 2);
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        std::vector<char*> envp;
        for (auto& e : envs) envp.push_back(e.data());
        envp.push_back(nullptr);
        ::execve(argv[0], argv.data(), envp.data());
        ::_exit(127);
    }
    CliRun result;
    int status = 0;
    if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return result;
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    result.out = boxlite::test::read_file(out_path);
    result.err = boxlite::test::read_file(err_path);
    return result;
}

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

class CliEngine : public ::testing::TestWithParam<std::optional<std::string>> {
protected:
    void SetUp() override {
        if (!boxlite::test::is_root()) GTEST_SKIP() << "the namespace engine needs root (namespaces, overlayfs)";
        rootfs_ = boxlite::test::busybox_rootfs();
        if (!rootfs_) GTEST_SKIP() << "busybox-static is not installed";
        work_.emplace("boxlite-cli-engine");
        home_ = work_->path() / "home";
        auto info = run_boxlite(work_->path(), {{"BOXLITE_HOME", home_.string()}},
                                {"--engine", "namespace", "info", "--format", "json"});
        if (info.out.find("\"engineStatus\": \"available\"") == std::string::npos &&
            info.out.find("\"engineStatus\":\"available\"") == std::string::npos) {
            GTEST_SKIP() << "the namespace engine cannot run here: " << info;
        }
    }
    void TearDown() override {
        if (work_) (void)run_boxlite(work_->path(), {{"BOXLITE_HOME", home_.string()}}, {"rm", "--all", "--force"});
    }

    /// The environment of a command that names no engine: BOXLITE_ENGINE as the parameter says.
    std::map<std::string, std::string> env_without_engine() const {
        std::map<std::string, std::string> env = {{"BOXLITE_HOME", home_.string()}};
        if (GetParam()) env["BOXLITE_ENGINE"] = *GetParam();
        return env;
    }
    CliRun cli(std::vector<std::string> args) {
        return run_boxlite(work_->path(), env_without_engine(), std::move(args));
    }

    std::optional<fs::path> rootfs_;
    std::optional<boxlite::test::TempDir> work_;
    fs::path home_;
};

TEST_P(CliEngine, ExistingBoxUsesItsOwnEngine) {
    auto run = run_boxlite(work_->path(), {{"BOXLITE_HOME", home_.string()}},
                           {"--engine", "namespace", "run", "-d", "--name", "web", "--rootfs", rootfs_->string(), "sh",
                            "-c", "echo hello from web; sleep 1000"});
    ASSERT_EQ(run.status, 0) << run;

    EXPECT_EQ(trimmed(cli({"inspect", "-f", "{{.State.Status}}", "web"}).out), "running");
    EXPECT_EQ(trimmed(cli({"ls", "-a", "--format", "{{.Engine}}"}).out), "namespace");

    auto stopped = cli({"stop", "-t", "2", "web"});
    ASSERT_EQ(stopped.status, 0) << stopped;
    EXPECT_EQ(trimmed(cli({"inspect", "-f", "{{.State.Status}}", "web"}).out), "stopped");

    auto started = cli({"start", "web"});
    ASSERT_EQ(started.status, 0) << started;
    EXPECT_EQ(trimmed(cli({"inspect", "-f", "{{.State.Status}}", "web"}).out), "running");

    auto exec = cli({"exec", "web", "--", "sh", "-c", "echo in-box > /tmp/f; cat /tmp/f"});
    ASSERT_EQ(exec.status, 0) << exec;
    EXPECT_EQ(exec.out, "in-box\n");

    boxlite::test::write_file(work_->path() / "host.txt", "from host\n");
    auto copy_in = cli({"cp", (work_->path() / "host.txt").string(), "web:/tmp/host.txt"});
    ASSERT_EQ(copy_in.status, 0) << copy_in;
    auto copy_out = cli({"cp", "web:/tmp/host.txt", (work_->path() / "back.txt").string()});
    ASSERT_EQ(copy_out.status, 0) << copy_out;
    EXPECT_EQ(boxlite::test::read_file(work_->path() / "back.txt"), "from host\n");

    auto logs = cli({"logs", "web"});
    EXPECT_EQ(logs.status, 0) << logs;
    auto stats = cli({"stats", "--format", "json", "web"});
    EXPECT_EQ(stats.status, 0) << stats;
    auto restarted = cli({"restart", "-t", "2", "web"});
    EXPECT_EQ(restarted.status, 0) << restarted;

    auto removed = cli({"rm", "-f", "web"});
    ASSERT_EQ(removed.status, 0) << removed;
    EXPECT_EQ(trimmed(cli({"ls", "-aq"}).out), "");
}

// BOXLITE_ENGINE unset (auto by default) and set to auto explicitly.
INSTANTIATE_TEST_SUITE_P(EngineFromEnvironment, CliEngine,
                         ::testing::Values(std::optional<std::string>{}, std::optional<std::string>{"auto"}),
                         [](const auto& test_param) {
                             return test_param.param ? "BOXLITE_ENGINE_" + *test_param.param
                                                     : std::string("BOXLITE_ENGINE_unset");
                         });

}  // namespace
