// Agent / namespace-engine benchmarks, and the runc comparison.
//
//   BM_CreateToFirstOutput   create a box, run `echo`, read its output, remove the box
//   BM_ExecRoundTrip         `true` on a running box: connect, exec, exit status
//   BM_ExecRoundTripShared   the same on one already-open agent connection
// then, in one process run, the peer lines (benchmark/run collects them):
//   create_to_first_output: ours …, peer `runc run` …, ratio ours/peer …
//   exec_round_trip:        ours …, peer `runc exec` …, ratio ours/peer …
//   exec_stdout_throughput: `busybox dd if=/dev/zero bs=1M count=256` read through exec's
//                           stdout, against the same dd on the host into a pipe this process
//                           reads (time per run: < 1 is faster)
//   exec_stdin_throughput:  1 GiB (BOXLITE_BENCH_STDIN_MIB) written to `sh -c 'cat > /dev/null'`
//                           through exec's stdin, against the same on the host from a pipe
// Both sides use the same busybox rootfs and the same namespaces (pid, mount, uts, ipc, net).
// runc is executed directly (no shell). Each side is run and checked once (exit status and
// output), then the two alternate: when either side fails, the comparison says so instead of
// printing a ratio of failures.
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
#include <span>
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

using bench::run_program;

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
    const std::string create_name = "create_to_first_output (runc run)";
    const std::string exec_name = "exec_round_trip (runc exec)";
    const bool want_create = bench::selected(create_name), want_exec = bench::selected(exec_name);
    if (!want_create && !want_exec) return;
    auto no_ratio = [&](const std::string& why) {
        if (want_create) bench::report_no_ratio(create_name, why);
        if (want_exec) bench::report_no_ratio(exec_name, why);
    };
    auto& f = fixture();
    if (!f.runtime) return no_ratio("ours cannot run here: " + f.why_not);
    if (!bench::on_path("runc")) return no_ratio("runc is not installed");
    const auto dir = f.home.path() / "runc";
    std::string why;
    auto run_bundle = runc_bundle(dir / "run", f.rootfs, "[\"echo\",\"hi\"]", why);
    auto exec_bundle = run_bundle ? runc_bundle(dir / "exec", f.rootfs, "[\"sleep\",\"100000\"]", why) : std::nullopt;
    if (!run_bundle || !exec_bundle) return no_ratio("could not write an OCI bundle: " + why);
    const int runs = bench::peer_runs(15);

    if (want_create) {
        int counter = 0;
        const auto pairs = bench::measure_interleaved(
            runs, [&] { return f.create_to_first_output() ? std::string() : "create -> `echo hi` -> remove failed"; },
            [&] {
                const auto id = "boxlite-bench-run-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
                return bench::expect_output(run_program({"runc", "run", "--bundle", run_bundle->string(), id}), "hi\n");
            });
        bench::report_comparison(create_name, pairs,
                                 {1,
                                  {},
                                  "ours is a library call in this process, runc a new process each time "
                                  "(cli_run_echo in boxlite_cli_bench is process against process)"});
    }

    if (!want_exec) return;
    auto box = f.runtime->create(f.box_options());
    if (!box) return bench::report_no_ratio(exec_name, "ours: create failed: " + box.error().to_string());
    if (auto started = box->start(); !started) {
        (void)f.runtime->remove(box->id().str(), true);
        return bench::report_no_ratio(exec_name, "ours: start failed: " + started.error().to_string());
    }
    const auto id = "boxlite-bench-exec-" + std::to_string(::getpid());
    if (auto started = run_program({"runc", "run", "-d", "--bundle", exec_bundle->string(), id},
                                   bench::RunOptions{false, {}});
        !started.ok()) {
        (void)f.runtime->remove(box->id().str(), true);
        return bench::report_no_ratio(exec_name, "peer: `runc run -d` failed (" + started.describe() + ")");
    }
    const auto pairs = bench::measure_interleaved(
        runs * 2,
        [&] {
            auto out = box->run(BoxCommand("true"));
            if (!out) return "exec of `true` failed: " + out.error().to_string();
            return out->exit_code == 0 ? std::string() : fmt::format("`true` exited {}", out->exit_code);
        },
        [&] {
            auto r = run_program({"runc", "exec", id, "true"});
            return r.ok() ? std::string() : "`runc exec` " + r.describe();
        });
    (void)run_program({"runc", "delete", "-f", id});
    (void)f.runtime->remove(box->id().str(), true);
    bench::report_comparison(exec_name, pairs,
                             {1,
                              {},
                              "ours is a library call in this process, runc a new process each time "
                              "(cli_exec_echo in boxlite_cli_bench is process against process)"});
}

/// Reads `fd` to its end into a reused buffer; the byte count.
std::uint64_t drain(int fd) {
    static std::vector<char> buffer(1 << 20);
    std::uint64_t total = 0;
    while (true) {
        const auto n = ::read(fd, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return total;
        total += static_cast<std::uint64_t>(n);
    }
}

void compare_stdout_throughput() {
    const std::string name = "exec_stdout_throughput (dd into a host pipe)";
    if (!bench::selected(name)) return;
    auto& f = fixture();
    if (!f.runtime) return bench::report_no_ratio(name, "ours cannot run here: " + f.why_not);
    constexpr std::uint64_t kMiB = 256;
    const std::vector<std::string> dd = {"dd", "if=/dev/zero", "bs=1M", "count=" + std::to_string(kMiB)};
    auto box = f.runtime->create(f.box_options());
    if (!box) return bench::report_no_ratio(name, "ours: create failed: " + box.error().to_string());
    if (auto started = box->start(); !started) {
        (void)f.runtime->remove(box->id().str(), true);
        return bench::report_no_ratio(name, "ours: start failed: " + started.error().to_string());
    }
    const auto busybox = f.rootfs / "bin/busybox";
    auto ours = [&]() -> std::string {
        auto execution = box->exec(BoxCommand(dd[0]).args({dd[1], dd[2], dd[3]}));
        if (!execution) return "exec failed: " + execution.error().to_string();
        auto out = execution->stdout();
        if (!out) return "no stdout stream";
        static std::vector<std::byte> buffer(1 << 20);
        std::uint64_t total = 0;
        while (true) {
            auto n = out->read_some(buffer);
            if (!n) return "reading stdout: " + n.error().to_string();
            if (*n == 0) break;
            total += *n;
        }
        auto result = execution->wait();
        if (!result || result->exit_code != 0) return "dd did not succeed";
        return total == (kMiB << 20) ? std::string() : fmt::format("read {} bytes, not {}", total, kMiB << 20);
    };
    auto peer = [&]() -> std::string {
        int pipe_fds[2];
        if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return "pipe failed";
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::dup2(pipe_fds[1], 1);
            const int null_fd = ::open("/dev/null", O_WRONLY);
            ::dup2(null_fd, 2);
            ::execl(busybox.c_str(), "dd", dd[1].c_str(), dd[2].c_str(), dd[3].c_str(), nullptr);
            ::_exit(127);
        }
        ::close(pipe_fds[1]);
        const auto total = drain(pipe_fds[0]);
        ::close(pipe_fds[0]);
        int status = 0;
        ::waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "host dd did not succeed";
        return total == (kMiB << 20) ? std::string() : fmt::format("read {} bytes, not {}", total, kMiB << 20);
    };
    const auto pairs = bench::measure_interleaved(bench::peer_runs(7), ours, peer);
    (void)f.runtime->remove(box->id().str(), true);
    bench::report_comparison(name, pairs,
                             {1, {}, "the same static busybox dd; ours crosses the agent protocol, peer a bare pipe"});
}

/// MiB written by exec_stdin_throughput: BOXLITE_BENCH_STDIN_MIB, else 1024 (the 1 GB).
std::uint64_t stdin_mib() {
    if (const char* env = std::getenv("BOXLITE_BENCH_STDIN_MIB")) {
        if (const long n = std::atol(env); n > 0) return static_cast<std::uint64_t>(n);
    }
    return 1024;
}

/// Writes all of `data` to `fd`; false on an error.
bool write_all(int fd, std::span<const std::byte> data) {
    while (!data.empty()) {
        const auto n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data = data.subspan(static_cast<std::size_t>(n));
    }
    return true;
}

// stdin the other way: N MiB written to `sh -c 'cat > /dev/null'` in the box through exec's stdin,
// against the same busybox sh and cat on the host reading a pipe this process writes.
void compare_stdin_throughput() {
    const auto mib = stdin_mib();
    const std::string name = fmt::format("exec_stdin_throughput ({} MiB into cat > /dev/null, vs a host pipe)", mib);
    if (!bench::selected(name)) return;
    auto& f = fixture();
    if (!f.runtime) return bench::report_no_ratio(name, "ours cannot run here: " + f.why_not);
    const std::vector<std::string> sh = {"sh", "-c", "cat > /dev/null"};
    auto box = f.runtime->create(f.box_options());
    if (!box) return bench::report_no_ratio(name, "ours: create failed: " + box.error().to_string());
    if (auto started = box->start(); !started) {
        (void)f.runtime->remove(box->id().str(), true);
        return bench::report_no_ratio(name, "ours: start failed: " + started.error().to_string());
    }
    static const std::vector<std::byte> chunk(1 << 20);
    const auto busybox = f.rootfs / "bin/busybox";
    auto ours = [&]() -> std::string {
        auto execution = box->exec(BoxCommand(sh[0]).args({sh[1], sh[2]}));
        if (!execution) return "exec failed: " + execution.error().to_string();
        auto in = execution->stdin();
        if (!in) return "no stdin stream";
        for (std::uint64_t i = 0; i < mib; ++i) {
            if (auto w = in->write(chunk); !w) return "writing stdin: " + w.error().to_string();
        }
        if (auto c = in->close(); !c) return "closing stdin: " + c.error().to_string();
        auto result = execution->wait();
        if (!result) return "wait failed: " + result.error().to_string();
        return result->exit_code == 0 ? std::string() : fmt::format("cat exited {}", result->exit_code);
    };
    auto peer = [&]() -> std::string {
        int pipe_fds[2];
        if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return "pipe failed";
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::dup2(pipe_fds[0], 0);
            ::execl(busybox.c_str(), "sh", sh[1].c_str(), sh[2].c_str(), nullptr);
            ::_exit(127);
        }
        ::close(pipe_fds[0]);
        bool ok = true;
        for (std::uint64_t i = 0; ok && i < mib; ++i) ok = write_all(pipe_fds[1], chunk);
        ::close(pipe_fds[1]);
        int status = 0;
        ::waitpid(pid, &status, 0);
        if (!ok) return "writing the host pipe failed";
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? std::string() : "host cat did not succeed";
    };
    const auto pairs = bench::measure_interleaved(bench::peer_runs(5), ours, peer);
    (void)f.runtime->remove(box->id().str(), true);
    bench::report_comparison(
        name, pairs, {1, {}, "the same static busybox sh and cat; ours crosses the agent protocol, peer a bare pipe"});
}

}  // namespace

int main(int argc, char** argv) {
    return bench::main(argc, argv, [] {
        compare_with_runc();
        compare_stdout_throughput();
        compare_stdin_throughput();
    });
}
