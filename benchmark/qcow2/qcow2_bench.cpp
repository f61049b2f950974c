// QCOW2 engine benchmarks, and the comparison with QEMU's block layer (`qemu-img bench`) on the
// same file with the same access pattern.
//
// The sequential 1 MiB rows run at queue depths 1 and 8 on both sides: qemu-img bench -d N, and
// ours N threads each taking the next request of the same sequence (Qcow2Image overlaps the data
// I/O of requests on different clusters; qcow2_image_impl.hpp, submit).
//
// qemu-img bench has no random mode: it walks from an offset in fixed steps, wrapping modulo
// (image size - request size). "Scattered 4 KiB" uses a step of 7 clusters + 20 KiB, so every
// request lands in a different cluster at a different in-cluster offset — the metadata-heavy
// pattern random I/O produces. Ours replays exactly the same offsets. QEMU runs with its defaults
// (writeback cache, 64 requests in flight on its thread pool) on the scattered rows, where ours
// runs one request at a time. Times are the I/O loop only (QEMU's "Run completed in" figure; our loop the same),
// interleaved runs; the ratio is our time over QEMU's (< 1: ours faster), printed with the
// throughput of each side.
#include "qcow2/qcow2_image.hpp"

#include "harness.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
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
    unsigned depth = 0;  // requests in flight; 0: qemu-img's default against ours one at a time
};

constexpr Scenario kScenarios[] = {
    {"scattered 4 KiB reads", false, false, 4096, kScatterStep, 200000},
    {"scattered 4 KiB writes (allocating)", true, true, 4096, kScatterStep, 50000},
    {"scattered 4 KiB overwrites", true, false, 4096, kScatterStep, 100000},
    {"sequential 1 MiB reads, queue depth 1", false, false, 1 << 20, 1 << 20, 1024, 1},
    {"sequential 1 MiB reads, queue depth 8", false, false, 1 << 20, 1 << 20, 1024, 8},
    {"sequential 1 MiB writes (allocating), queue depth 1", true, true, 1 << 20, 1 << 20, 256, 1},
    {"sequential 1 MiB writes (allocating), queue depth 8", true, true, 1 << 20, 1 << 20, 256, 8},
};

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

/// Our engine: the same offsets as qemu-img bench, one synchronous request at a time. `ns`: the
/// I/O loop alone.
std::string run_ours(const Scenario& s, double& ns) {
    const fs::path path = image_for(s);
    auto image = Qcow2Image::open(path);
    if (!image) return "open " + path.string() + ": " + image.error().to_string();
    // Request i goes to offset_of(i), as qemu-img bench walks; with depth > 1 each thread takes
    // the next i, so up to `depth` requests are in flight.
    auto offset_of = [&](std::uint64_t i) {
        const std::uint64_t modulus = kImageSize - s.request;  // small: no overflow below
        return (i % modulus) * (s.step % modulus) % modulus;
    };
    const unsigned threads = std::max(1u, s.depth);
    std::atomic<std::uint64_t> next{0};
    std::mutex failure_mutex;
    std::string failure;
    // One buffer for all requests in flight, as qemu-img bench allocates its own (one aligned
    // block of depth x request size), so both sides copy in and out of the same kind of memory.
    const std::size_t slice = static_cast<std::size_t>(s.request);
    const std::size_t whole = (slice * threads + (2u << 20) - 1) / (2u << 20) * (2u << 20);
    std::unique_ptr<std::uint8_t, decltype(&std::free)> buffers(static_cast<std::uint8_t*>(
                                                                    std::aligned_alloc(2u << 20, whole)),
                                                                &std::free);
    if (!buffers) return "out of memory for the request buffers";
    std::memset(buffers.get(), 0xa5, whole);
    std::atomic<unsigned> worker_index{0};
    auto worker = [&] {
        iovec v{buffers.get() + slice * worker_index++, slice};
        const std::span<const iovec> iov(&v, 1);
        for (std::uint64_t i = next++; i < s.count; i = next++) {
            const std::uint64_t offset = offset_of(i);
            auto r = s.write ? (*image)->write(offset, iov) : (*image)->read(offset, iov);
            if (!r) {
                std::lock_guard lock(failure_mutex);
                failure = fmt::format("{} at offset {}: {}", s.write ? "write" : "read", offset, r.error().to_string());
                next = s.count;
                return;
            }
        }
    };
    const auto start = std::chrono::steady_clock::now();
    if (threads == 1) {
        worker();
    } else {
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker);
        for (auto& t : pool) t.join();
    }
    ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    if (!failure.empty()) return failure;
    if (auto closed = (*image)->close(); !closed) return "close: " + closed.error().to_string();
    return {};
}

/// QEMU's block layer on the same file, run directly (no shell); `ns`: its own "Run completed
/// in X seconds" figure, the I/O loop alone.
std::string run_qemu(const Scenario& s, double& ns) {
    const fs::path path = image_for(s);
    std::vector<std::string> args = {"qemu-img",     "bench",
                                     "-f",           "qcow2",
                                     "-c",           std::to_string(s.count),
                                     "-s",           std::to_string(s.request),
                                     "-S",           std::to_string(s.step),
                                     "--pattern=165"};
    if (s.depth > 0) args.insert(args.end(), {"-d", std::to_string(s.depth)});
    if (s.write) args.emplace_back("-w");
    args.push_back(path.string());
    const auto result = boxlite::bench::run_program(args);
    if (!result.ok()) return "qemu-img bench: " + result.describe();
    const auto at = result.out.find("Run completed in ");
    if (at == std::string::npos) return "qemu-img bench printed no \"Run completed in\": " + result.out;
    try {
        ns = std::stod(result.out.substr(at + 17)) * 1e9;
    } catch (const std::exception&) {
        return "qemu-img bench printed an unreadable time: " + result.out.substr(at);
    }
    return {};
}

void compare_with_qemu() {
    if (!boxlite::bench::on_path("qemu-img")) {
        boxlite::bench::report_no_ratio("qcow2 vs qemu-img bench", "qemu-img is not installed");
        return;
    }
    const int runs = boxlite::bench::peer_runs(3);
    for (const Scenario& s : kScenarios) {
        const std::string name = fmt::format("qcow2 {} (peer: qemu-img bench, same file and offsets)", s.name);
        if (!boxlite::bench::selected(name)) continue;
        try {
            (void)image_for(s);  // a failure to make the images is neither side's
        } catch (const std::exception& e) {
            boxlite::bench::report_no_ratio(name, std::string("could not prepare the image: ") + e.what());
            continue;
        }
        const auto pairs = boxlite::bench::measure_interleaved_timed(
            runs, [&](double& ns) { return run_ours(s, ns); }, [&](double& ns) { return run_qemu(s, ns); });
        boxlite::bench::report_comparison(name, pairs, {static_cast<double>(s.count), "request", {}});
        if (pairs.failure.empty() && !pairs.ours_ns.empty()) {
            // Throughput for the same medians: requests (or MiB) per second, higher is faster.
            const double ours_s = boxlite::test::median(pairs.ours_ns) / 1e9;
            const double peer_s = boxlite::test::median(pairs.peer_ns) / 1e9;
            const double bytes = static_cast<double>(s.count * s.request);
            if (s.request >= (1 << 20)) {
                fmt::print("  throughput (medians; higher is faster): ours {:.0f} MiB/s, peer {:.0f} MiB/s\n",
                           bytes / ours_s / (1 << 20), bytes / peer_s / (1 << 20));
            } else {
                fmt::print("  throughput (medians; higher is faster): ours {:.0f} IOPS, peer {:.0f} IOPS\n",
                           static_cast<double>(s.count) / ours_s, static_cast<double>(s.count) / peer_s);
            }
            std::fflush(stdout);
        }
    }
}

// Google Benchmark microbenchmarks of our engine alone (per-request latency).
void BM_ScatteredRead4K(benchmark::State& state) {
    auto image = Qcow2Image::open(full_image());
    if (!image) return state.SkipWithError(image.error().to_string().c_str());
    std::vector<std::uint8_t> buffer(4096);
    iovec v{buffer.data(), buffer.size()};
    std::uint64_t offset = 0;
    for (auto _ : state) {
        auto done = (*image)->read(offset, std::span<const iovec>(&v, 1));
        if (!done) return state.SkipWithError(done.error().to_string().c_str());
        offset = (offset + kScatterStep) % (kImageSize - 4096);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * 4096);
}
BENCHMARK(BM_ScatteredRead4K);

void BM_SequentialWrite1M(benchmark::State& state) {
    auto image = Qcow2Image::open(fresh_image());
    if (!image) return state.SkipWithError(image.error().to_string().c_str());
    std::vector<std::uint8_t> buffer(1 << 20, 0xa5);
    iovec v{buffer.data(), buffer.size()};
    std::uint64_t offset = 0;
    for (auto _ : state) {
        auto done = (*image)->write(offset, std::span<const iovec>(&v, 1));
        if (!done) return state.SkipWithError(done.error().to_string().c_str());
        offset = (offset + buffer.size()) % kImageSize;
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) << 20);
}
BENCHMARK(BM_SequentialWrite1M);

}  // namespace

int main(int argc, char** argv) {
    int rc = 1;
    try {
        rc = boxlite::bench::main(argc, argv, compare_with_qemu);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qcow2 benchmark failed: %s\n", e.what());
    }
    std::error_code ec;
    fs::remove_all(work_dir(), ec);
    return rc;
}
