// Shared helpers for BoxLite benchmarks.
//
//   TempHome home;                         // a fresh BOXLITE_HOME, removed afterwards
//   report_peer("create", ours_ns, runc_ns);   // "create: ours 1.20 ms, peer 3.40 ms, ratio 0.35"
//
// Peer comparisons print one line per measurement in that exact form; benchmark/run collects
// them. ratio = ours / peer, so < 1 means BoxLite is faster.
#pragma once

#include <fmt/format.h>

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

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

/// "<name>: ours X, peer Y, ratio Z" on stdout (ratio = ours / peer).
inline void report_peer(std::string_view name, double ours_ns, double peer_ns) {
    fmt::print("{}: ours {}, peer {}, ratio {:.2f}\n", name, format_ns(ours_ns), format_ns(peer_ns),
               peer_ns > 0 ? ours_ns / peer_ns : 0.0);
    std::fflush(stdout);
}

/// Median wall time of `runs` calls of `fn`, after one warm-up call (nanoseconds).
[[nodiscard]] inline double median_ns(int runs, const std::function<void()>& fn) {
    fn();
    std::vector<double> samples;
    samples.reserve(static_cast<std::size_t>(runs));
    for (int i = 0; i < runs; ++i) {
        const auto start = std::chrono::steady_clock::now();
        fn();
        samples.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(samples.begin(), samples.end());
    return samples[samples.size() / 2];
}

}  // namespace boxlite::bench
