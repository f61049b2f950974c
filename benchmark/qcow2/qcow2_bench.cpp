// QCOW2 engine benchmarks, and the comparison with QEMU's block layer (`qemu-img bench`) on the
// same file with the same access pattern.
//
// qemu-img bench has no random mode: it walks from an offset in fixed steps, wrapping modulo
// (image size - request size). "Scattered 4 KiB" uses a step of 7 clusters + 20 KiB, so every
// request lands in a different cluster at a different in-cluster offset — the metadata-heavy
// pattern random I/O produces. Ours replays exactly the same offsets. QEMU runs with its defaults
// (writeback cache, 64 requests in flight on its thread pool); ours is synchronous, one request
// at a time. Times are the I/O loop only (QEMU's "Run completed in" figure; our loop the same),
// median of several runs.
#include "qcow2/qcow2_image.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using boxlite::qcow2::Qcow2Image;
namespace fs = std::filesystem;

constexpr std::uint64_t kImageSize = 256ull << 20;
constexpr std::uint64_t kScatterStep = 7 * 65536 + 20 * 1024;

fs::path work_dir() {
    static const fs::path dir = [] {
        std::string tmpl = (fs::temp_directory_path() / "boxlite-qcow2-bench-XXXXXX").string();
        return fs::path(::mkdtemp(tmpl.data()));
    }();
    return dir;
}

struct Scenario {
    const char* name;
    bool write;
    bool fresh;  // start from an empty image (allocating writes) instead of a full one
    std::uint64_t request;
    std::uint64_t step;
    std::uint64_t count;
};

constexpr Scenario kScenarios[] = {
    {"scattered 4 KiB reads", false, false, 4096, kScatterStep, 200000},
    {"scattered 4 KiB writes (allocating)", true, true, 4096, kScatterStep, 50000},
    {"scattered 4 KiB overwrites", true, false, 4096, kScatterStep, 100000},
    {"sequential 1 MiB reads", false, false, 1 << 20, 1 << 20, 1024},
    {"sequential 1 MiB writes (allocating)", true, true, 1 << 20, 1 << 20, 256},
};

std::string run_capture(const std::string& command) {
    std::string out;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) return out;
    char buffer[4096];
    std::size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
    ::pclose(pipe);
    return out;
}

fs::path fresh_image() {
    const fs::path path = work_dir() / "fresh.qcow2";
    auto image = Qcow2Image::create(path, [] {
        boxlite::qcow2::CreateOptions options;
        options.size = kImageSize;
        return options;
    }());
    if (!image) throw std::runtime_error(image.error().to_string());
    return path;
}

/// A fully written image (every cluster allocated), made once.
fs::path full_image() {
    static const fs::path path = [] {
        const fs::path p = work_dir() / "full.qcow2";
        boxlite::qcow2::CreateOptions options;
        options.size = kImageSize;
        auto image = Qcow2Image::create(p, options);
        if (!image) throw std::runtime_error(image.error().to_string());
        std::vector<std::uint8_t> chunk(1 << 20);
        for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<std::uint8_t>(i * 31 + 7);
        iovec v{chunk.data(), chunk.size()};
        for (std::uint64_t off = 0; off < kImageSize; off += chunk.size())
            if (!(*image)->write(off, std::span<const iovec>(&v, 1))) throw std::runtime_error("prefill");
        if (!(*image)->close()) throw std::runtime_error("prefill close");
        return p;
    }();
    return path;
}

fs::path image_for(const Scenario& s) {
    if (s.fresh) return fresh_image();
    if (s.write) {  // overwrites must not disturb the shared read image
        const fs::path p = work_dir() / "overwrite.qcow2";
        fs::copy_file(full_image(), p, fs::copy_options::overwrite_existing);
        return p;
    }
    return full_image();
}

/// Our engine: the same offsets as qemu-img bench, one synchronous request at a time.
double run_ours(const Scenario& s) {
    const fs::path path = image_for(s);
    auto image = Qcow2Image::open(path);
    if (!image) throw std::runtime_error(image.error().to_string());
    std::vector<std::uint8_t> buffer(s.request, 0xa5);
    iovec v{buffer.data(), buffer.size()};
    const std::span<const iovec> iov(&v, 1);
    std::uint64_t offset = 0;
    const auto start = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < s.count; ++i) {
        auto r = s.write ? (*image)->write(offset, iov) : (*image)->read(offset, iov);
        if (!r) throw std::runtime_error(r.error().to_string());
        offset = (offset + s.step) % (kImageSize - s.request);
    }
    const auto end = std::chrono::steady_clock::now();
    (void)(*image)->close();
    return std::chrono::duration<double>(end - start).count();
}

/// QEMU's block layer on the same file; its own "Run completed in X seconds" figure.
double run_qemu(const Scenario& s) {
    const fs::path path = image_for(s);
    const std::string command = fmt::format(
        "qemu-img bench -f qcow2 -c {} -s {} -S {} {} --pattern=165 '{}'", s.count, s.request,
        s.step, s.write ? "-w" : "", path.string());
    const std::string out = run_capture(command);
    const auto at = out.find("Run completed in ");
    if (at == std::string::npos) throw std::runtime_error("qemu-img bench failed: " + out);
    return std::stod(out.substr(at + 17));
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void compare_with_qemu(const std::string& only) {
    if (run_capture("qemu-img --version").find("qemu-img version") == std::string::npos) {
        std::printf("qemu-img not installed: peer comparison skipped\n");
        return;
    }
    constexpr int kRuns = 3;
    std::printf("\nQCOW2 engine vs qemu-img bench (same file, same offsets, median of %d runs, "
                "higher ratio = ours faster)\n", kRuns);
    for (const Scenario& s : kScenarios) {
        if (!only.empty() && std::string(s.name).find(only) == std::string::npos) continue;
        std::vector<double> ours, peer;
        for (int r = 0; r < kRuns; ++r) {
            ours.push_back(run_ours(s));
            peer.push_back(run_qemu(s));
        }
        const double ours_s = median(ours), peer_s = median(peer);
        const double bytes = static_cast<double>(s.count * s.request);
        if (s.request >= (1 << 20)) {
            std::printf("qcow2 %s: ours %.0f MiB/s, peer %.0f MiB/s, ratio %.2f\n", s.name,
                        bytes / ours_s / (1 << 20), bytes / peer_s / (1 << 20), peer_s / ours_s);
        } else {
            std::printf("qcow2 %s: ours %.0f IOPS, peer %.0f IOPS, ratio %.2f\n", s.name,
                        static_cast<double>(s.count) / ours_s, static_cast<double>(s.count) / peer_s,
                        peer_s / ours_s);
        }
        std::fflush(stdout);
    }
}

// Google Benchmark microbenchmarks of our engine alone (per-request latency).
void BM_ScatteredRead4K(benchmark::State& state) {
    auto image = Qcow2Image::open(full_image());
    std::vector<std::uint8_t> buffer(4096);
    iovec v{buffer.data(), buffer.size()};
    std::uint64_t offset = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize((*image)->read(offset, std::span<const iovec>(&v, 1)));
        offset = (offset + kScatterStep) % (kImageSize - 4096);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * 4096);
}
BENCHMARK(BM_ScatteredRead4K)->Repetitions(3)->ReportAggregatesOnly(true);

void BM_SequentialWrite1M(benchmark::State& state) {
    auto image = Qcow2Image::open(fresh_image());
    std::vector<std::uint8_t> buffer(1 << 20, 0xa5);
    iovec v{buffer.data(), buffer.size()};
    std::uint64_t offset = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize((*image)->write(offset, std::span<const iovec>(&v, 1)));
        offset = (offset + buffer.size()) % kImageSize;
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) << 20);
}
BENCHMARK(BM_SequentialWrite1M)->Repetitions(3)->ReportAggregatesOnly(true);

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    // --scenario=<text>: only the peer comparisons whose name contains it ("1 MiB writes").
    std::string only;
    for (int i = 1; i < argc; ++i)
        if (std::string_view arg(argv[i]); arg.rfind("--scenario=", 0) == 0) only = arg.substr(11);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    int rc = 0;
    try {
        compare_with_qemu(only);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qcow2 benchmark failed: %s\n", e.what());
        rc = 1;
    }
    std::error_code ec;
    fs::remove_all(work_dir(), ec);
    return rc;
}
