// boxlite CLI benchmarks.
//
//   BM_ParseRunCommandLine   argv of a typical `run` -> Invocation (CLI11 + value parsers)
//   BM_RenderListTemplate    `ls --format '{{.ID}} {{.Name | upper}} {{.Status}}'` over 1000 rows
//   BM_RenderListTable       the default table over 1000 rows
// and, once, the user-visible comparison with runc (each a fresh process, as typed):
//   cli_run_true:  ours `boxlite run --rm --rootfs R true`, peer `runc run` of the same rootfs
//   cli_exec_true: ours `boxlite exec BOX true`,             peer `runc exec ID true`
#include "cli/app.hpp"
#include "cli/output.hpp"

#include <harness.hpp>
#include <support/support.hpp>

#include <benchmark/benchmark.h>

#include <fstream>

namespace {

namespace fs = std::filesystem;
using namespace boxlite;

void BM_ParseRunCommandLine(benchmark::State& state) {
    const std::vector<std::string> argv = {"boxlite", "run", "-it", "--rm", "-e", "A=1", "-e", "B=2", "-p",
                                           "8080:80", "--memory", "1g", "--cpus", "2", "-w", "/srv",
                                           "alpine:3.19", "sh", "-c", "echo hi"};
    for (auto _ : state) {
        auto invocation = cli::parse_command_line(argv);
        benchmark::DoNotOptimize(invocation);
    }
}
BENCHMARK(BM_ParseRunCommandLine)->Unit(benchmark::kMicrosecond);

nlohmann::json rows(int count) {
    nlohmann::json out = nlohmann::json::array();
    for (int i = 0; i < count; ++i) {
        out.push_back({{"ID", fmt::format("01JJNH8ABCDEFGHJKM{:08}", i)},
                       {"Name", fmt::format("box-{}", i)},
                       {"Image", "alpine:latest"},
                       {"Status", i % 2 ? "running" : "stopped"},
                       {"Created", "5 minutes ago"},
                       {"Engine", "namespace"}});
    }
    return out;
}

const std::vector<cli::Column> kColumns = {{"ID", "BOX ID"}, {"Image", "IMAGE"}, {"Status", "STATUS"},
                                           {"Created", "CREATED"}, {"Engine", "ENGINE"}, {"Name", "NAME"}};

void BM_RenderListTemplate(benchmark::State& state) {
    const auto data = rows(1000);
    for (auto _ : state) {
        auto text = cli::render_rows(data, "{{.ID}} {{.Name | upper}} {{.Status}}", kColumns);
        benchmark::DoNotOptimize(text);
    }
    state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_RenderListTemplate)->Unit(benchmark::kMicrosecond);

void BM_RenderListTable(benchmark::State& state) {
    const auto data = rows(1000);
    for (auto _ : state) {
        auto text = cli::render_rows(data, "table", kColumns);
        benchmark::DoNotOptimize(text);
    }
    state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_RenderListTable)->Unit(benchmark::kMicrosecond);

int sh(const std::string& command) { return std::system(command.c_str()); }

std::optional<fs::path> runc_bundle(const fs::path& dir, const fs::path& rootfs, const std::string& args_json) {
    fs::create_directories(dir);
    if (sh("cd '" + dir.string() + "' && rm -f config.json && runc spec >/dev/null 2>&1") != 0) return std::nullopt;
    std::ofstream(dir / "edit.py") << "import json,sys\n"
                                      "p=sys.argv[1]; c=json.load(open(p))\n"
                                      "c['root']={'path':sys.argv[2],'readonly':True}\n"
                                      "c['process']['terminal']=False\n"
                                      "c['process']['args']=json.loads(sys.argv[3])\n"
                                      "json.dump(c,open(p,'w'))\n";
    if (sh("python3 '" + (dir / "edit.py").string() + "' '" + (dir / "config.json").string() + "' '" + rootfs.string() +
           "' '" + args_json + "'") != 0) {
        return std::nullopt;
    }
    return dir;
}

void compare_with_runc() {
    if (::geteuid() != 0) return (void)fmt::print("cli runc comparison skipped: needs root\n");
    if (sh("command -v runc >/dev/null 2>&1") != 0) return (void)fmt::print("cli runc comparison skipped: no runc\n");
    const auto rootfs = boxlite::test::busybox_rootfs();
    if (!rootfs) return (void)fmt::print("cli runc comparison skipped: no busybox-static\n");
    bench::TempHome home;
    const std::string cli = std::string("BOXLITE_HOME='") + home.path().string() +
                            "' BOXLITE_ENGINE=namespace " + BOXLITE_CLI_PATH;
    if (sh(cli + " run --rm --rootfs '" + rootfs->string() + "' true >/dev/null 2>&1") != 0) {
        return (void)fmt::print("cli runc comparison skipped: `boxlite run` does not work here\n");
    }
    constexpr int kRuns = 15;
    const double ours_run =
        bench::median_ns(kRuns, [&] { (void)sh(cli + " run --rm --rootfs '" + rootfs->string() + "' true >/dev/null"); });
    const auto bundle = runc_bundle(home.path() / "runc-run", *rootfs, "[\"true\"]");
    const auto idle = runc_bundle(home.path() / "runc-idle", *rootfs, "[\"sleep\",\"100000\"]");
    if (!bundle || !idle) return (void)fmt::print("cli runc comparison skipped: could not write an OCI bundle\n");
    int n = 0;
    const double runc_run = bench::median_ns(kRuns, [&] {
        (void)sh("runc run --bundle '" + bundle->string() + "' boxlite-cli-bench-" + std::to_string(n++) +
                 " >/dev/null 2>&1");
    });
    bench::report_peer("cli_run_true (boxlite run --rm vs runc run)", ours_run, runc_run);

    if (sh(cli + " run -d --name bench --rootfs '" + rootfs->string() + "' sleep 100000 >/dev/null") != 0 ||
        sh("runc run -d --bundle '" + idle->string() + "' boxlite-cli-bench-idle >/dev/null 2>&1 </dev/null") != 0) {
        (void)sh(cli + " rm -f bench >/dev/null 2>&1");
        return (void)fmt::print("cli exec comparison skipped: could not start the long-running boxes\n");
    }
    const double ours_exec = bench::median_ns(kRuns * 2, [&] { (void)sh(cli + " exec bench true"); });
    const double runc_exec =
        bench::median_ns(kRuns * 2, [&] { (void)sh("runc exec boxlite-cli-bench-idle true >/dev/null 2>&1"); });
    bench::report_peer("cli_exec_true (boxlite exec vs runc exec)", ours_exec, runc_exec);
    (void)sh(cli + " rm -f bench >/dev/null 2>&1");
    (void)sh("runc delete -f boxlite-cli-bench-idle >/dev/null 2>&1");
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
