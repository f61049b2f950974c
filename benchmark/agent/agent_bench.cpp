// Agent / namespace-engine benchmarks, and the runc comparison.
//
//   BM_CreateToFirstOutput   create a box, run `echo`, read its output, remove the box
//   BM_ExecRoundTrip         `true` on a running box: connect, exec, exit status
//   BM_ExecRoundTripShared   the same on one already-open agent connection
// then, in one process run, the peer lines (benchmark/run collects them):
//   create_to_first_output: ours …, peer `runc run` …, ratio …
//   exec_round_trip:        ours …, peer `runc exec` …, ratio …
// Both sides use the same busybox rootfs and the same namespaces (pid, mount, uts, ipc, net).
// runc is executed directly (no shell), and its exit status and output are checked: when either
// side fails, the comparison says so instead of printing a ratio of failures.
#include <boxlite/boxlite.hpp>
#include <boxlite/engine/select.hpp>

#include "harness.hpp"
#include "support/support.hpp"

#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

using namespace boxlite;
namespace fs = std::filesystem;

namespace {

struct Fixture {
    bench::TempHome home;
    std::optional<BoxliteRuntime> runtime;
    fs::path rootfs;
    std::string why_not;

    Fixture() {
        if (::geteuid() != 0) {
            why_not = "needs root";
            return;
        }
        auto rootfs_dir = test::busybox_rootfs();
        if (!rootfs_dir) {
            why_not = "busybox-static missing";
            return;
        }
        rootfs = *rootfs_dir;
        if (const char* build = std::getenv("BOXLITE_BENCH_BUILD_DIR")) {
            ::setenv("BOXLITE_SHIM", (fs::path(build) / "bin/boxlite-shim").c_str(), 0);
            ::setenv("BOXLITE_AGENT", (fs::path(build) / "bin/boxlite-agent").c_str(), 0);
        }
        BoxliteOptions options;
        options.home_dir = home.path();
        options.engine = EngineKind::Namespace;
        auto rt = open_runtime(options);
        if (!rt || !rt->engine().available()) {
            why_not = rt ? rt->engine().available().error().to_string() : rt.error().to_string();
            return;
        }
        runtime.emplace(std::move(*rt));
    }

    BoxOptions box_options() const {
        BoxOptions o;
        o.rootfs = RootfsSpec::path(rootfs);
        return o;
    }

    /// create -> first output -> remove; false on any error.
    bool create_to_first_output() {
        auto box = runtime->create(box_options());
        if (!box) return false;
        auto out = box->run(BoxCommand("echo").arg("hi"));
        const bool ok = out && out->stdout_text == "hi\n";
        (void)runtime->remove(box->id().str(), true);
        return ok;
    }
};

Fixture& fixture() {
    static Fixture f;
    return f;
}

void BM_CreateToFirstOutput(benchmark::State& state) {
    auto& f = fixture();
    if (!f.runtime) return state.SkipWithError(f.why_not.c_str());
    for (auto _ : state) {
        if (!f.create_to_first_output()) return state.SkipWithError("create/exec failed");
    }
}
BENCHMARK(BM_CreateToFirstOutput)->Unit(benchmark::kMillisecond)->Iterations(20);

void BM_ExecRoundTrip(benchmark::State& state) {
    auto& f = fixture();
    if (!f.runtime) return state.SkipWithError(f.why_not.c_str());
    auto box = f.runtime->create(f.box_options());
    if (!box || !box->start()) return state.SkipWithError("box start failed");
    for (auto _ : state) {
        auto out = box->run(BoxCommand("true"));
        if (!out || out->exit_code != 0) return state.SkipWithError("exec failed");
    }
    (void)f.runtime->remove(box->id().str(), true);
}
BENCHMARK(BM_ExecRoundTrip)->Unit(benchmark::kMicrosecond);

void BM_ExecRoundTripShared(benchmark::State& state) {
    auto& f = fixture();
    if (!f.runtime) return state.SkipWithError(f.why_not.c_str());
    auto box = f.runtime->create(f.box_options());
    if (!box || !box->start()) return state.SkipWithError("box start failed");
    auto agent = box->open_agent();
    if (!agent) return state.SkipWithError("agent connect failed");
    for (auto _ : state) {
        auto out = agent->run(BoxCommand("true"));
        if (!out || out->exit_code != 0) return state.SkipWithError("exec failed");
    }
    (void)f.runtime->remove(box->id().str(), true);
}
BENCHMARK(BM_ExecRoundTripShared)->Unit(benchmark::kMicrosecond);

// ---- runc ------------------------------------------------------------------------------------

/// What a program printed and how it ended (exit code, or -signal; 127: could not be executed).
struct ProgramResult {
    int status = -1;
    std::string out;
    std::string err;
    [[nodiscard]] bool ok() const { return status == 0; }
    [[nodiscard]] std::string describe() const {
        auto text = status < 0 ? fmt::format("killed by signal {}", -status) : fmt::format("exit status {}", status);
        auto e = err;
        while (!e.empty() && e.back() == '\n') e.pop_back();
        return e.empty() ? text : text + ": " + e;
    }
};

/// Runs `argv` directly (fork + execvp, no shell: a /bin/sh start would be timed on runc's side
/// only), stdin from /dev/null, stdout and stderr captured — or, with `capture` false, sent to
/// /dev/null: a detached container (`runc run -d`) keeps whatever it inherits open for good.
ProgramResult run_program(const std::vector<std::string>& args, bool capture = true) {
    ProgramResult result;
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return result;
    if (::pipe2(err, O_CLOEXEC) != 0) {
        ::close(out[0]);
        ::close(out[1]);
        return result;
    }
    const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(devnull, 0);
        ::dup2(capture ? out[1] : devnull, 1);
        ::dup2(capture ? err[1] : devnull, 2);
        ::execvp(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    if (devnull >= 0) ::close(devnull);
    // Both pipes to EOF (stderr is small; runc writes little), then the status.
    char buf[4096];
    for (int fd : {out[0], err[0]}) {
        ssize_t n = 0;
        while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
            if (n > 0) (fd == out[0] ? result.out : result.err).append(buf, static_cast<std::size_t>(n));
        }
        ::close(fd);
    }
    int status = 0;
    if (pid < 0) return result;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    return result;
}

/// An OCI bundle over the same rootfs (read-only root, as our lower layer): `runc spec`'s
/// defaults with the root, the process arguments and no terminal.
std::optional<fs::path> runc_bundle(const fs::path& dir, const fs::path& rootfs, const std::string& args_json,
                                    std::string& why) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    fs::remove(dir / "config.json", ec);
    if (auto spec = run_program({"runc", "spec", "--bundle", dir.string()}); !spec.ok()) {
        why = "runc spec: " + spec.describe();
        return std::nullopt;
    }
    auto config = nlohmann::json::parse(std::ifstream(dir / "config.json"), nullptr, false);
    if (config.is_discarded()) {
        why = "runc spec wrote no valid config.json";
        return std::nullopt;
    }
    config["root"] = {{"path", rootfs.string()}, {"readonly", true}};
    config["process"]["terminal"] = false;
    config["process"]["args"] = nlohmann::json::parse(args_json);
    std::ofstream(dir / "config.json") << config.dump();
    return dir;
}

void compare_with_runc() {
    auto& f = fixture();
    if (!f.runtime) {
        fmt::print("runc comparison skipped: {}\n", f.why_not);
        return;
    }
    if (auto version = run_program({"runc", "--version"}); !version.ok()) {
        fmt::print("runc comparison skipped: runc is not usable ({})\n", version.describe());
        return;
    }
    const auto dir = f.home.path() / "runc";
    std::string why;
    auto run_bundle = runc_bundle(dir / "run", f.rootfs, "[\"echo\",\"hi\"]", why);
    auto exec_bundle = run_bundle ? runc_bundle(dir / "exec", f.rootfs, "[\"sleep\",\"100000\"]", why) : std::nullopt;
    if (!run_bundle || !exec_bundle) {
        fmt::print("runc comparison skipped: could not write an OCI bundle ({})\n", why);
        return;
    }
    constexpr int kRuns = 15;
    // The first failure of either side; a failing side's time means nothing, so no ratio then.
    std::string failure;
    auto note = [&](const std::string& what) {
        if (failure.empty()) failure = what;
    };

    int counter = 0;
    const double ours_create = bench::median_ns(kRuns, [&] {
        if (!f.create_to_first_output()) note("our create -> first output failed");
    });
    const double runc_run = bench::median_ns(kRuns, [&] {
        const auto id = "boxlite-bench-run-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
        const auto r = run_program({"runc", "run", "--bundle", run_bundle->string(), id});
        if (!r.ok() || r.out != "hi\n") note(fmt::format("`runc run` printed {:?} ({})", r.out, r.describe()));
    });
    if (!failure.empty()) {
        fmt::print("create_to_first_output comparison skipped: {}\n", failure);
    } else {
        bench::report_peer("create_to_first_output (runc run)", ours_create, runc_run);
    }

    failure.clear();
    auto box = f.runtime->create(f.box_options());
    if (!box || !box->start()) {
        fmt::print("exec_round_trip comparison skipped: our box did not start\n");
        return;
    }
    const double ours_exec = bench::median_ns(kRuns * 2, [&] {
        auto out = box->run(BoxCommand("true"));
        if (!out || out->exit_code != 0) note("our exec of `true` failed");
    });
    const auto id = "boxlite-bench-exec-" + std::to_string(::getpid());
    if (auto started = run_program({"runc", "run", "-d", "--bundle", exec_bundle->string(), id}, /*capture=*/false);
        !started.ok()) {
        fmt::print("exec_round_trip comparison skipped: `runc run -d` failed ({})\n", started.describe());
        (void)f.runtime->remove(box->id().str(), true);
        return;
    }
    const double runc_exec = bench::median_ns(kRuns * 2, [&] {
        if (auto r = run_program({"runc", "exec", id, "true"}); !r.ok()) note("`runc exec` failed (" + r.describe() + ")");
    });
    (void)run_program({"runc", "delete", "-f", id});
    (void)f.runtime->remove(box->id().str(), true);
    if (!failure.empty()) {
        fmt::print("exec_round_trip comparison skipped: {}\n", failure);
        return;
    }
    bench::report_peer("exec_round_trip (runc exec)", ours_exec, runc_exec);
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    compare_with_runc();
    return 0;
}
