// Agent / namespace-engine benchmarks, and the runc comparison.
//
//   BM_CreateToFirstOutput   create a box, run `echo`, read its output, remove the box
//   BM_ExecRoundTrip         `true` on a running box: connect, exec, exit status
//   BM_ExecRoundTripShared   the same on one already-open agent connection
// then, in one process run, the peer lines (benchmark/run collects them):
//   create_to_first_output: ours …, peer `runc run` …, ratio …
//   exec_round_trip:        ours …, peer `runc exec` …, ratio …
// Both sides use the same busybox rootfs and the same namespaces (pid, mount, uts, ipc, net).
#include <boxlite/boxlite.hpp>
#include <boxlite/engine/select.hpp>

#include "harness.hpp"
#include "support/support.hpp"

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <optional>

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

int sh(const std::string& command) { return std::system(command.c_str()); }

/// An OCI bundle over the same rootfs (read-only root, as our lower layer).
std::optional<fs::path> runc_bundle(const fs::path& dir, const fs::path& rootfs, const std::string& args_json) {
    fs::create_directories(dir);
    if (sh("cd '" + dir.string() + "' && rm -f config.json && runc spec >/dev/null 2>&1") != 0) return std::nullopt;
    const std::string script =
        "import json,sys\n"
        "p=sys.argv[1]; c=json.load(open(p))\n"
        "c['root']={'path':sys.argv[2],'readonly':True}\n"
        "c['process']['terminal']=False\n"
        "c['process']['args']=json.loads(sys.argv[3])\n"
        "json.dump(c,open(p,'w'))\n";
    std::ofstream(dir / "edit.py") << script;
    if (sh("python3 '" + (dir / "edit.py").string() + "' '" + (dir / "config.json").string() + "' '" + rootfs.string() +
           "' '" + args_json + "'") != 0) {
        return std::nullopt;
    }
    return dir;
}

void compare_with_runc() {
    auto& f = fixture();
    if (!f.runtime) {
        fmt::print("runc comparison skipped: {}\n", f.why_not);
        return;
    }
    if (sh("command -v runc >/dev/null 2>&1") != 0) {
        fmt::print("runc comparison skipped: runc is not installed\n");
        return;
    }
    const auto dir = f.home.path() / "runc";
    auto run_bundle = runc_bundle(dir / "run", f.rootfs, "[\"echo\",\"hi\"]");
    auto exec_bundle = runc_bundle(dir / "exec", f.rootfs, "[\"sleep\",\"100000\"]");
    if (!run_bundle || !exec_bundle) {
        fmt::print("runc comparison skipped: could not write an OCI bundle\n");
        return;
    }
    constexpr int kRuns = 15;
    int counter = 0;
    const double ours_create = bench::median_ns(kRuns, [&] { (void)f.create_to_first_output(); });
    const double runc_run = bench::median_ns(kRuns, [&] {
        const auto id = "boxlite-bench-run-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
        (void)sh("runc run --bundle '" + run_bundle->string() + "' " + id + " >/dev/null 2>&1");
    });
    bench::report_peer("create_to_first_output (runc run)", ours_create, runc_run);

    auto box = f.runtime->create(f.box_options());
    if (!box || !box->start()) return;
    const double ours_exec = bench::median_ns(kRuns * 2, [&] { (void)box->run(BoxCommand("true")); });
    const auto id = "boxlite-bench-exec-" + std::to_string(::getpid());
    if (sh("runc run -d --bundle '" + exec_bundle->string() + "' " + id + " >/dev/null 2>&1 </dev/null") != 0) {
        fmt::print("runc comparison skipped: `runc run -d` failed\n");
        return;
    }
    const double runc_exec = bench::median_ns(kRuns * 2, [&] { (void)sh("runc exec " + id + " true >/dev/null 2>&1"); });
    (void)sh("runc delete -f " + id + " >/dev/null 2>&1");
    bench::report_peer("exec_round_trip (runc exec)", ours_exec, runc_exec);
    (void)f.runtime->remove(box->id().str(), true);
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
