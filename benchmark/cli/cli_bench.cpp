// boxlite CLI benchmarks.
//
//   BM_ParseRunCommandLine   argv of a typical `run` -> Invocation (CLI11 + value parsers)
//   BM_RenderListTemplate    `ls --format '{{.ID}} {{.Name | upper}} {{.Status}}'` over 1000 rows
//   BM_RenderListTable       the default table over 1000 rows
// and, once, the user-visible comparison with runc (each a fresh process, as typed, run directly
// without a shell; each side is checked once, then the two alternate):
//   cli_run_echo:  ours `boxlite run --rm --rootfs R echo hi`, peer `runc run` of the same rootfs
//   cli_exec_echo: ours `boxlite exec BOX echo hi`,             peer `runc exec ID echo hi`
// Every run must exit 0 and print "hi": a failure on either side prints no ratio, and says why.
#include "cli/app.hpp"
#include "cli/output.hpp"

#include <harness.hpp>
#include <support/support.hpp>

#include <benchmark/benchmark.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <optional>

namespace {

namespace fs = std::filesystem;
using namespace boxlite;

void BM_ParseRunCommandLine(benchmark::State& state) {
    const std::vector<std::string> argv = {"boxlite", "run",  "-it",         "--rm",     "-e", "A=1",    "-e",
                                           "B=2",     "-p",   "8080:80",     "--memory", "1g", "--cpus", "2",
                                           "-w",      "/srv", "alpine:3.19", "sh",       "-c", "echo hi"};
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

const std::vector<cli::Column> kColumns = {{"ID", "BOX ID"},       {"Image", "IMAGE"},   {"Status", "STATUS"},
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

/// An OCI bundle over the same rootfs (read-only root, as our lower layer): `runc spec`'s
/// defaults with the root, the process arguments and no terminal. nullopt, and `why`, on failure.
std::optional<fs::path> runc_bundle(const fs::path& dir, const fs::path& rootfs, const std::vector<std::string>& args,
                                    std::string& why) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    fs::remove(dir / "config.json", ec);
    if (auto spec = bench::run_program({"runc", "spec", "--bundle", dir.string()}); !spec.ok()) {
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
    config["process"]["args"] = args;
    std::ofstream(dir / "config.json") << config.dump();
    return dir;
}

void compare_with_runc() {
    const std::string run_name = "cli_run_echo (boxlite run --rm vs runc run)";
    const std::string exec_name = "cli_exec_echo (boxlite exec vs runc exec)";
    const bool want_run = bench::selected(run_name), want_exec = bench::selected(exec_name);
    if (!want_run && !want_exec) return;
    auto no_ratio = [&](const std::string& why) {
        if (want_run) bench::report_no_ratio(run_name, why);
        if (want_exec) bench::report_no_ratio(exec_name, why);
    };
    if (::geteuid() != 0) return no_ratio("needs root (runc and the namespace engine)");
    if (!bench::on_path("runc")) return no_ratio("runc is not installed");
    const auto rootfs = boxlite::test::busybox_rootfs();
    if (!rootfs) return no_ratio("busybox-static is not installed");
    bench::TempHome home;
    // Our CLI as a user runs it: its own process, this home, the namespace engine. Under
    // `benchmark/run`, the CLI, shim and agent of the tree being measured (BOXLITE_BENCH_BUILD_DIR:
    // a saved baseline's copy under --compare), else the CLI this suite was built with.
    std::string cli_path = BOXLITE_CLI_PATH;
    std::vector<std::string> cli_env = {"BOXLITE_HOME=" + home.path().string(), "BOXLITE_ENGINE=namespace"};
    if (const char* build = std::getenv("BOXLITE_BENCH_BUILD_DIR")) {
        const std::filesystem::path tree(build);
        if (::access((tree / "cli/boxlite").c_str(), X_OK) == 0) {
            cli_path = (tree / "cli/boxlite").string();
            cli_env.push_back("BOXLITE_SHIM=" + (tree / "bin/boxlite-shim").string());
            cli_env.push_back("BOXLITE_AGENT=" + (tree / "bin/boxlite-agent").string());
            cli_env.push_back("LD_LIBRARY_PATH=" + tree.string());
        }
    }
    auto boxlite = [&](std::vector<std::string> args, bool capture = true) {
        args.insert(args.begin(), cli_path);
        return bench::run_program(args, bench::RunOptions{capture, cli_env});
    };
    std::string why;
    const auto bundle = runc_bundle(home.path() / "runc-run", *rootfs, {"echo", "hi"}, why);
    const auto idle = bundle ? runc_bundle(home.path() / "runc-idle", *rootfs, {"sleep", "100000"}, why) : std::nullopt;
    if (!bundle || !idle) return no_ratio("could not write an OCI bundle: " + why);
    const std::string prefix = "boxlite-cli-bench-" + std::to_string(::getpid()) + "-";

    if (want_run) {
        int n = 0;
        const auto pairs = bench::measure_interleaved(
            bench::peer_runs(15),
            [&] {
                return bench::expect_output(boxlite({"run", "--rm", "--rootfs", rootfs->string(), "echo", "hi"}),
                                            "hi\n");
            },
            [&] {
                return bench::expect_output(bench::run_program({"runc", "run", "--bundle", bundle->string(),
                                                                prefix + std::to_string(n++)}),
                                            "hi\n");
            });
        bench::report_comparison(run_name, pairs);
    }

    if (want_exec) {
        const std::string runc_id = prefix + "idle";
        if (auto started = boxlite({"run", "-d", "--name", "bench", "--rootfs", rootfs->string(), "sleep", "100000"},
                                   /*capture=*/false);  // the box would hold a pipe open
            !started.ok()) {
            bench::report_no_ratio(exec_name, "ours: `boxlite run -d` failed: " + started.describe());
        } else if (auto runc_started = bench::run_program({"runc", "run", "-d", "--bundle", idle->string(), runc_id},
                                                          bench::RunOptions{false, {}});
                   !runc_started.ok()) {
            bench::report_no_ratio(exec_name, "peer: `runc run -d` failed: " + runc_started.describe());
        } else {
            const auto pairs = bench::measure_interleaved(
                bench::peer_runs(30),
                [&] {
                    return bench::expect_output(boxlite({"exec", "bench", "echo", "hi"}), "hi\n");
                },
                [&] {
                    return bench::expect_output(bench::run_program({"runc", "exec", runc_id, "echo", "hi"}), "hi\n");
                });
            bench::report_comparison(exec_name, pairs);
        }
        (void)boxlite({"rm", "-f", "bench"});
        (void)bench::run_program({"runc", "delete", "-f", runc_id});
    }
}

}  // namespace

int main(int argc, char** argv) { return bench::main(argc, argv, compare_with_runc); }
