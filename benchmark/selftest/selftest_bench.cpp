// The regression guard's test suite (benchmark/selftest/save_compare_test.sh): one comparison,
//
//   selftest_sleep: ours sleeps 2 ms (+ an injected delay), peer sleeps 2 ms
//
// whose ratio is about 1. The injected delay, in microseconds, is read from the file
// `<this executable>.delay_us` when it exists: a file next to the executable, not an environment
// variable, so that `benchmark/run --compare` makes only the tree under test slower, while the
// saved baseline (a copy of the executable, without the file) stays as it was.
#include "harness.hpp"

#include <time.h>

#include <fstream>

namespace bench = boxlite::bench;

namespace {

void sleep_us(long us) {
    timespec ts{us / 1'000'000, (us % 1'000'000) * 1000};
    while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

long injected_delay_us() {
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) return 0;
    std::ifstream in(exe.string() + ".delay_us");
    long us = 0;
    return in >> us && us > 0 ? us : 0;
}

void compare_with_peers() {
    const std::string name = "selftest_sleep (2 ms + injected delay vs 2 ms)";
    if (!bench::selected(name)) return;
    const long delay = injected_delay_us();
    auto pairs = bench::measure_interleaved(
        bench::peer_runs(9),
        [delay] {
            sleep_us(2000 + delay);
            return std::string();
        },
        [] {
            sleep_us(2000);
            return std::string();
        });
    bench::report_comparison(name, pairs);
}

void BM_SelftestNothing(benchmark::State& state) {
    for (auto _ : state) benchmark::DoNotOptimize(state.iterations());
}
BENCHMARK(BM_SelftestNothing);

}  // namespace

int main(int argc, char** argv) { return bench::main(argc, argv, compare_with_peers); }
