// The C API against the C++ API it wraps, on one running box of the namespace engine: the same
// work through <boxlite/c/boxlite.h> (ours) and through LiteBox / Execution (peer), interleaved.
//
//   c_api_exec_true (C++ LiteBox::run)            boxlite_execute of `true` vs LiteBox::run
//   c_api_stdout_64MiB (C++ read_some)            64 MiB of stdout through boxlite_box_exec's chunk
//                                                 callbacks (pump) vs ExecOutputStream::read_some
//   c_api_stdout_64MiB_text (C++ read_some)       the same through boxlite_execute's text callback
//
// and BM_ParseCreateOptions, the strict options JSON parse of every create.
#include "c_api/options_json.hpp"
#include "harness.hpp"
#include "support/support.hpp"

#include <boxlite/boxlite.hpp>
#include <boxlite/c/boxlite.h>

#include <poll.h>

#include <cstdlib>
#include <string>

namespace {

using namespace boxlite;
namespace fs = std::filesystem;

constexpr const char* kFullOptions = R"({
    "name": "web", "rootfs": {"Image": "alpine:3.19"}, "cpus": 2, "memory_mib": 1024,
    "env": [["A", "1"], ["B", "two"]],
    "volumes": [{"host_path": "/tmp", "guest_path": "/data", "read_only": true}],
    "network": {"mode": "enabled", "allow_net": ["example.com"]},
    "ports": [{"host_port": 8080, "guest_port": 80, "protocol": "tcp", "host_ip": "127.0.0.1"}],
    "auto_remove": false,
    "advanced": {"security": {"jailer_enabled": false, "uid": 1000, "resource_limits": {"max_processes": 10}}},
    "cmd": ["-c", "true"], "user": "1000"})";

void BM_ParseCreateOptions(benchmark::State& state) {
    for (auto _ : state) {
        auto parsed = capi::parse_create_options(kFullOptions);
        if (!parsed) return state.SkipWithError(parsed.error().to_string().c_str());
        benchmark::DoNotOptimize(parsed);
    }
}
BENCHMARK(BM_ParseCreateOptions);

/// One box, reachable both ways: a C handle and a C++ LiteBox.
struct Fixture {
    bench::TempHome home;
    CBoxliteRuntime* c_runtime = nullptr;
    CBoxHandle* c_box = nullptr;
    std::optional<BoxliteRuntime> runtime;
    std::optional<LiteBox> box;
    std::string why_not;

    Fixture() {
        if (::geteuid() != 0) {
            why_not = "needs root";
            return;
        }
        auto rootfs = test::busybox_rootfs();
        if (!rootfs) {
            why_not = "busybox-static missing";
            return;
        }
        ::setenv("BOXLITE_ENGINE", "namespace", 1);
        CBoxliteError error{BOXLITE_OK, nullptr};
        const auto options = R"({"name": "bench", "auto_remove": false, "rootfs": {"RootfsPath": ")" +
                             rootfs->string() + "\"}}";
        if (boxlite_runtime_new(home.path().c_str(), nullptr, &c_runtime, &error) != BOXLITE_OK ||
            boxlite_create_box(c_runtime, options.c_str(), &c_box, &error) != BOXLITE_OK ||
            boxlite_start_box(c_box, &error) != BOXLITE_OK) {
            why_not = error.message != nullptr ? error.message : "C API set-up failed";
            boxlite_error_free(&error);
            return;
        }
        BoxliteOptions cpp_options;
        cpp_options.home_dir = home.path();
        cpp_options.engine = EngineKind::Namespace;
        auto rt = open_runtime(cpp_options);
        if (!rt) {
            why_not = rt.error().to_string();
            return;
        }
        runtime.emplace(std::move(*rt));
        auto found = runtime->get("bench");
        if (!found) {
            why_not = found.error().to_string();
            return;
        }
        box.emplace(std::move(*found));
    }
    ~Fixture() {
        if (c_runtime != nullptr) (void)boxlite_remove(c_runtime, "bench", 1, nullptr);
        boxlite_box_free(c_box);
        boxlite_runtime_free(c_runtime);
    }
    Fixture(const Fixture&) = delete;
    Fixture& operator=(const Fixture&) = delete;

    [[nodiscard]] bool ready() const { return box.has_value(); }
};

Fixture& fixture() {
    static Fixture f;
    return f;
}

std::string c_error(CBoxliteError& error) {
    std::string text = error.message != nullptr ? error.message : "(no message)";
    boxlite_error_free(&error);
    return text;
}

constexpr std::uint64_t kStdoutBytes = std::uint64_t{64} << 20;
const char* const kDdArgs = R"(["if=/dev/zero", "bs=1M", "count=64"])";

void compare_exec_true() {
    const std::string name = "c_api_exec_true (C++ LiteBox::run)";
    if (!bench::selected(name)) return;
    auto& f = fixture();
    if (!f.ready()) return bench::report_no_ratio(name, "cannot run here: " + f.why_not);
    auto ours = [&]() -> std::string {
        CBoxliteError error{BOXLITE_OK, nullptr};
        int exit_code = -1;
        if (boxlite_execute(f.c_box, "true", nullptr, nullptr, nullptr, &exit_code, &error) != BOXLITE_OK) {
            return c_error(error);
        }
        return exit_code == 0 ? std::string() : "true exited " + std::to_string(exit_code);
    };
    auto peer = [&]() -> std::string {
        auto out = f.box->run(BoxCommand("true"));
        if (!out) return out.error().to_string();
        return out->exit_code == 0 ? std::string() : "true exited " + std::to_string(out->exit_code);
    };
    bench::report_comparison(name, bench::measure_interleaved(bench::peer_runs(25), ours, peer));
}

std::string peer_read_stdout(LiteBox& box) {
    auto execution = box.exec(BoxCommand("dd").args({"if=/dev/zero", "bs=1M", "count=64"}));
    if (!execution) return execution.error().to_string();
    auto out = execution->stdout();
    static std::vector<std::byte> buffer(64 * 1024);
    std::uint64_t total = 0;
    while (true) {
        auto n = out->read_some(buffer);
        if (!n) return n.error().to_string();
        if (*n == 0) break;
        total += *n;
    }
    auto result = execution->wait();
    if (!result || result->exit_code != 0) return "dd did not succeed";
    return total == kStdoutBytes ? std::string() : "read " + std::to_string(total) + " bytes";
}

void count_chunk(const std::uint8_t*, std::size_t len, void* user_data) {
    *static_cast<std::uint64_t*>(user_data) += len;
}
void count_text(const char* text, int is_stderr, void* user_data) {
    if (is_stderr == 0) *static_cast<std::uint64_t*>(user_data) += std::strlen(text);
}

void compare_stdout() {
    const std::string name = "c_api_stdout_64MiB (C++ read_some)";
    const std::string text_name = "c_api_stdout_64MiB_text (C++ read_some)";
    auto& f = fixture();
    if (bench::selected(name)) {
        if (!f.ready()) {
            bench::report_no_ratio(name, "cannot run here: " + f.why_not);
        } else {
            auto ours = [&]() -> std::string {
                CBoxliteError error{BOXLITE_OK, nullptr};
                BoxliteCommand command{};
                command.command = "dd";
                command.args_json = kDdArgs;
                CExecutionHandle* execution = nullptr;
                if (boxlite_box_exec(f.c_box, &command, &execution, &error) != BOXLITE_OK) return c_error(error);
                std::uint64_t total = 0;
                int fd = -1;
                int finished = 0;
                boxlite_execution_on_stdout(execution, count_chunk, &total, &error);
                boxlite_execution_fd(execution, &fd, &error);
                while (finished == 0) {
                    pollfd pfd{fd, POLLIN, 0};
                    (void)::poll(&pfd, 1, -1);
                    if (boxlite_execution_pump(execution, 0, &finished, &error) != BOXLITE_OK) {
                        boxlite_execution_free(execution);
                        return c_error(error);
                    }
                }
                int exit_code = -1;
                int exited = 0;
                const auto waited = boxlite_execution_wait(execution, -1, &exit_code, &exited, &error);
                boxlite_execution_free(execution);
                if (waited != BOXLITE_OK) return c_error(error);
                if (exit_code != 0) return "dd exited " + std::to_string(exit_code);
                return total == kStdoutBytes ? std::string() : "read " + std::to_string(total) + " bytes";
            };
            auto peer = [&] { return peer_read_stdout(*f.box); };
            bench::report_comparison(name, bench::measure_interleaved(bench::peer_runs(15), ours, peer));
        }
    }
    if (bench::selected(text_name)) {
        if (!f.ready()) return bench::report_no_ratio(text_name, "cannot run here: " + f.why_not);
        auto ours = [&]() -> std::string {
            CBoxliteError error{BOXLITE_OK, nullptr};
            std::uint64_t total = 0;
            int exit_code = -1;
            // /dev/zero's bytes are NULs, which a text chunk cannot carry: count 'a's instead.
            if (boxlite_execute(f.c_box, "sh", R"(["-c", "dd if=/dev/zero bs=1M count=64 | tr '\\0' a"])", count_text,
                                &total, &exit_code, &error) != BOXLITE_OK) {
                return c_error(error);
            }
            if (exit_code != 0) return "dd exited " + std::to_string(exit_code);
            return total == kStdoutBytes ? std::string() : "read " + std::to_string(total) + " bytes";
        };
        auto peer = [&]() -> std::string {
            auto execution = f.box->exec(BoxCommand("sh").args({"-c", "dd if=/dev/zero bs=1M count=64 | tr '\\0' a"}));
            if (!execution) return execution.error().to_string();
            auto out = execution->stdout();
            static std::vector<std::byte> buffer(64 * 1024);
            std::uint64_t total = 0;
            while (true) {
                auto n = out->read_some(buffer);
                if (!n) return n.error().to_string();
                if (*n == 0) break;
                total += *n;
            }
            auto result = execution->wait();
            if (!result || result->exit_code != 0) return "dd did not succeed";
            return total == kStdoutBytes ? std::string() : "read " + std::to_string(total) + " bytes";
        };
        bench::report_comparison(text_name, bench::measure_interleaved(bench::peer_runs(15), ours, peer));
    }
}

}  // namespace

int main(int argc, char** argv) {
    return bench::main(argc, argv, [] {
        compare_exec_true();
        compare_stdout();
    });
}
