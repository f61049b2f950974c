// Shared helpers for BoxLite benchmarks.
//
//   int main(int argc, char** argv) { return bench::main(argc, argv, compare_with_peers); }
//
// runs the suite's Google Benchmarks with repetitions (5, or BOXLITE_BENCH_REPETITIONS, unless the
// command line names --benchmark_repetitions) and prints their aggregates — mean, median, stddev
// and cv for each — then the suite's peer comparisons. A comparison goes through two calls:
//
//   auto pairs = bench::measure_interleaved(bench::peer_runs(15), ours, peer);
//   bench::report_comparison("cli_exec_echo (runc exec)", pairs);
//
// `ours` and `peer` each do one run of their side and return "" when it did what it should, or
// what went wrong. Each side is run and checked once before anything is timed; then the two
// alternate, so load from elsewhere falls on both alike. report_comparison prints one line:
//
//   <name>: ours 1.20 ms [1.15–1.31], peer 3.40 ms [3.30–3.52], ratio ours/peer 0.35 [0.33–0.38]
//       (median [interquartile range] of 15 interleaved runs; < 1 is faster)
//
// (on one line). The ratio is our time over the peer's, taken per pair of runs, so < 1 means
// BoxLite is faster. When either side failed, or a sample is not a positive time, it prints
//
//   <name>: no ratio: <which side> failed on <which run>: <what>
//
// instead, and never a number. benchmark/run collects both kinds of line for its summary.
// Comparisons honour --benchmark_filter (a regex matched against their names; "-" negates).
#pragma once

#include "support/stats.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

extern char** environ;

namespace boxlite::bench {

class TempHome {
public:
    TempHome() {
        std::string pattern = (std::filesystem::temp_directory_path() / "boxlite-bench-XXXXXX").string();
        if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
    }
    ~TempHome() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempHome(const TempHome&) = delete;
    TempHome& operator=(const TempHome&) = delete;
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

private:
    std::filesystem::path path_;
};

/// Human-readable duration: "850 ns", "12.3 us", "4.56 ms", "1.20 s".
[[nodiscard]] inline std::string format_ns(double ns) {
    if (ns < 1e3) return fmt::format("{:.0f} ns", ns);
    if (ns < 1e6) return fmt::format("{:.1f} us", ns / 1e3);
    if (ns < 1e9) return fmt::format("{:.2f} ms", ns / 1e6);
    return fmt::format("{:.2f} s", ns / 1e9);
}

/// "4.56 ms [4.40–4.81]": a median and its interquartile range, all three in the median's unit.
[[nodiscard]] inline std::string format_ns_spread(const test::Summary& s, std::string_view per = {}) {
    struct Unit {
        double scale;
        const char* name;
        int decimals;
    };
    const Unit unit = s.median < 1e3   ? Unit{1, "ns", 0}
                      : s.median < 1e6 ? Unit{1e3, "us", 1}
                      : s.median < 1e9 ? Unit{1e6, "ms", 2}
                                       : Unit{1e9, "s", 2};
    return fmt::format("{:.{}f} {}{}{} [{:.{}f}–{:.{}f}]", s.median / unit.scale, unit.decimals, unit.name,
                       per.empty() ? "" : "/", per, s.q1 / unit.scale, unit.decimals, s.q3 / unit.scale, unit.decimals);
}

// ---- running peers -----------------------------------------------------------------------------

/// What a program printed and how it ended.
struct ProgramResult {
    int status = -1;  ///< exit code; -signal when killed; 127 when it could not be executed
    std::string out;
    std::string err;
    [[nodiscard]] bool ok() const { return status == 0; }
    /// "exit status 1: <stderr>" — for a failure message.
    [[nodiscard]] std::string describe() const {
        auto text = status < 0 ? fmt::format("killed by signal {}", -status) : fmt::format("exit status {}", status);
        auto e = err;
        while (!e.empty() && (e.back() == '\n' || e.back() == '\r')) e.pop_back();
        if (e.size() > 300) e = e.substr(0, 300) + "…";
        return e.empty() ? text : text + ": " + e;
    }
};

struct RunOptions {
    /// Capture stdout and stderr; false sends them to /dev/null (a detached container, such as
    /// `runc run -d`, keeps whatever it inherits open for good, so a pipe would never reach EOF).
    bool capture = true;
    /// "NAME=value" entries added to (or replacing those of) this process's environment.
    std::vector<std::string> environment;
};

/// Runs `args` directly (fork + execvpe, no shell: a /bin/sh start would be timed on one side
/// only), stdin from /dev/null. Both sides of a comparison use it, so each pays the same
/// process start.
inline ProgramResult run_program(const std::vector<std::string>& args, const RunOptions& options = {}) {
    ProgramResult result;
    if (args.empty()) return result;
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    // The child's environment, built before fork (nothing after fork may allocate).
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
        const std::string_view entry(*e);
        const auto name = entry.substr(0, entry.find('=') + 1);
        bool replaced = false;
        for (const auto& o : options.environment) replaced = replaced || o.starts_with(name);
        if (!replaced) env_strings.emplace_back(entry);
    }
    env_strings.insert(env_strings.end(), options.environment.begin(), options.environment.end());
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);

    int out[2] = {-1, -1}, err[2] = {-1, -1};
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
        ::dup2(options.capture ? out[1] : devnull, 1);
        ::dup2(options.capture ? err[1] : devnull, 2);
        ::execvpe(argv[0], argv.data(), envp.data());
        ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    if (devnull >= 0) ::close(devnull);
    // stdout to EOF, then stderr: peers write little to stderr, so the pipe never fills.
    char buf[4096];
    for (int fd : {out[0], err[0]}) {
        ssize_t n = 0;
        while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
            if (n > 0) (fd == out[0] ? result.out : result.err).append(buf, static_cast<std::size_t>(n));
        }
        ::close(fd);
    }
    if (pid < 0) {
        result.err = std::string("fork failed: ") + std::strerror(errno);
        return result;
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    if (result.status == 127 && result.err.empty()) result.err = "could not execute " + args[0];
    return result;
}

/// "" when `result` exited 0 and printed exactly `expected_out`, else what it did instead.
[[nodiscard]] inline std::string expect_output(const ProgramResult& result, std::string_view expected_out) {
    if (!result.ok()) return result.describe();
    if (result.out != expected_out) return fmt::format("printed {:?}, expected {:?}", result.out, expected_out);
    return {};
}

/// Whether `program` can be found on PATH.
[[nodiscard]] inline bool on_path(std::string_view program) {
    const char* path = std::getenv("PATH");
    std::string_view rest = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
    while (!rest.empty()) {
        const auto colon = rest.find(':');
        const auto dir = rest.substr(0, colon);
        if (!dir.empty() && ::access((std::filesystem::path(dir) / program).c_str(), X_OK) == 0) return true;
        rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
    return false;
}

// ---- comparisons ---------------------------------------------------------------------------------

/// One run of one side: "" when it did what it should, else what went wrong.
using Step = std::function<std::string()>;

/// Wall times of interleaved runs, pair i being ours[i] and peer[i]; `failure` says which side
/// failed, on which run, and how (then the times mean nothing).
struct Pairs {
    std::vector<double> ours_ns;
    std::vector<double> peer_ns;
    std::string failure;
};

/// One run of one side that times itself (only the part both sides share, such as an I/O loop
/// without the set-up around it): sets `ns`, and returns "" or what went wrong.
using TimedStep = std::function<std::string(double& ns)>;

/// Checks each side once (untimed: it also warms caches), then times `runs` alternating runs.
/// Stops at the first failure.
inline Pairs measure_interleaved_timed(int runs, const TimedStep& ours, const TimedStep& peer) {
    Pairs pairs;
    double ignored = 0;
    if (auto why = ours(ignored); !why.empty()) {
        pairs.failure = "ours failed its check run: " + why;
        return pairs;
    }
    if (auto why = peer(ignored); !why.empty()) {
        pairs.failure = "peer failed its check run: " + why;
        return pairs;
    }
    for (int i = 0; i < runs; ++i) {
        // Alternate which side goes first, so neither always runs right after the other.
        const bool ours_first = i % 2 == 0;
        for (int side = 0; side < 2; ++side) {
            const bool is_ours = (side == 0) == ours_first;
            double ns = 0;
            if (auto why = (is_ours ? ours : peer)(ns); !why.empty()) {
                pairs.failure = fmt::format("{} failed on timed run {} of {}: {}", is_ours ? "ours" : "peer", i + 1,
                                            runs, why);
                return pairs;
            }
            (is_ours ? pairs.ours_ns : pairs.peer_ns).push_back(ns);
        }
    }
    return pairs;
}

/// The same with wall time around each whole step.
inline Pairs measure_interleaved(int runs, const Step& ours, const Step& peer) {
    auto wall = [](const Step& step) {
        return [&step](double& ns) {
            const auto start = std::chrono::steady_clock::now();
            auto why = step();
            ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
            return why;
        };
    };
    return measure_interleaved_timed(runs, wall(ours), wall(peer));
}

struct ReportOptions {
    /// Divide every time by this before printing (a run of 20000 exits: 20000), with `per` as
    /// the unit's name ("exit"): "12.3 us/exit". Ratios do not change.
    double divisor = 1;
    std::string_view per;
    /// Printed after the ratio, for what differs between the sides ("umoci also hashes …").
    std::string_view note;
};

/// Prints the "no ratio" line: the comparison `name` could not be measured, and why.
inline void report_no_ratio(std::string_view name, std::string_view why) {
    fmt::print("{}: no ratio: {}\n", name, why);
    std::fflush(stdout);
}

/// The ratio line for `pairs` (see the top of this file), or the no-ratio line when a side failed,
/// the sides have different counts, or a time is not positive.
inline void report_comparison(std::string_view name, const Pairs& pairs, const ReportOptions& options = {}) {
    if (!pairs.failure.empty()) return report_no_ratio(name, pairs.failure);
    if (pairs.ours_ns.empty() || pairs.ours_ns.size() != pairs.peer_ns.size()) {
        return report_no_ratio(name, fmt::format("unequal or no samples (ours {}, peer {})", pairs.ours_ns.size(),
                                                 pairs.peer_ns.size()));
    }
    for (const auto* side : {&pairs.ours_ns, &pairs.peer_ns}) {
        for (double ns : *side) {
            if (!(ns > 0)) {
                return report_no_ratio(name, fmt::format("{} has a sample of {} ns, which is not a measurement",
                                                         side == &pairs.ours_ns ? "ours" : "peer", ns));
            }
        }
    }
    auto per_unit = [&](std::vector<double> samples) {
        for (auto& ns : samples) ns /= options.divisor;
        return format_ns_spread(test::summarize(std::move(samples)), options.per);
    };
    const auto ratio = test::summarize(test::ratios(pairs.ours_ns, pairs.peer_ns));
    fmt::print(
        "{}: ours {}, peer {}, ratio ours/peer {:.2f} [{:.2f}–{:.2f}] (median [interquartile range] of {} "
        "interleaved runs; < 1 is faster){}{}\n",
        name, per_unit(pairs.ours_ns), per_unit(pairs.peer_ns), ratio.median, ratio.q1, ratio.q3, ratio.count,
        options.note.empty() ? "" : "; ", options.note);
    std::fflush(stdout);
}

// ---- the suite's main ------------------------------------------------------------------------------

namespace detail {
inline std::string& comparison_filter() {
    static std::string filter;
    return filter;
}
}  // namespace detail

/// Whether the comparison `name` was asked for (--benchmark_filter: a regex searched for in the
/// name; a leading "-" negates it; empty, "all" or "." select everything).
[[nodiscard]] inline bool selected(std::string_view name) {
    std::string filter = detail::comparison_filter();
    if (filter.empty() || filter == "all" || filter == ".") return true;
    const bool negate = filter.front() == '-';
    if (negate) filter.erase(0, 1);
    try {
        return std::regex_search(name.begin(), name.end(), std::regex(filter)) != negate;
    } catch (const std::regex_error&) {
        return name.find(filter) != std::string_view::npos;
    }
}

/// How many interleaved pairs a comparison times: `default_runs`, or BOXLITE_BENCH_PEER_RUNS.
[[nodiscard]] inline int peer_runs(int default_runs) {
    if (const char* env = std::getenv("BOXLITE_BENCH_PEER_RUNS")) {
        if (const int n = std::atoi(env); n > 0) return n;
    }
    return default_runs;
}

/// Google Benchmark with repetitions and aggregates by default, then `comparisons`.
inline int main(int argc, char** argv, const std::function<void()>& comparisons = {}) {
    std::vector<std::string> args(argv, argv + argc);
    auto given = [&](std::string_view flag) {
        for (const auto& a : args) {
            if (a.starts_with(flag)) return true;
        }
        return false;
    };
    if (!given("--benchmark_repetitions")) {
        const char* env = std::getenv("BOXLITE_BENCH_REPETITIONS");
        args.push_back(fmt::format("--benchmark_repetitions={}", env != nullptr && std::atoi(env) > 0 ? env : "5"));
    }
    if (!given("--benchmark_display_aggregates_only") && !given("--benchmark_report_aggregates_only")) {
        args.emplace_back("--benchmark_display_aggregates_only=true");
    }
    for (const auto& a : args) {
        if (a.starts_with("--benchmark_filter=")) detail::comparison_filter() = a.substr(19);
    }
    std::vector<char*> new_argv;
    for (auto& a : args) new_argv.push_back(a.data());
    new_argv.push_back(nullptr);
    int new_argc = static_cast<int>(args.size());
    benchmark::Initialize(&new_argc, new_argv.data());
    if (benchmark::ReportUnrecognizedArguments(new_argc, new_argv.data())) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (comparisons) comparisons();
    return 0;
}

}  // namespace boxlite::bench
