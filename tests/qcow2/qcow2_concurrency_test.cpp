// Several requests in flight on one image (Qcow2Image::Impl::submit): requests on different
// clusters overlap their data I/O, requests on the same cluster run one after the other, and
// flush, discard and the rest wait for the requests in flight. Judged by the bytes read back and
// by `qemu-img check`.
#include "qcow2_test_util.hpp"

#include <atomic>
#include <thread>

namespace boxlite::qcow2::test {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

class Qcow2ConcurrencyTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have_qemu_img()) GTEST_SKIP() << "precondition: qemu-img (Debian qemu-utils) is not installed";
    }
    TempDir dir;
};

/// The byte request `tag` writes at position `i` of its buffer: differs between tags and along
/// the buffer, so a misplaced or lost piece shows.
std::uint8_t pattern(std::uint64_t tag, std::uint64_t i) { return static_cast<std::uint8_t>(tag * 131 + i / 512 + 1); }

std::vector<std::uint8_t> patterned(std::uint64_t tag, std::size_t length) {
    std::vector<std::uint8_t> data(length);
    for (std::size_t i = 0; i < length; ++i) data[i] = pattern(tag, i);
    return data;
}

/// Runs `body(t)` on `threads` threads at once and joins them.
template <typename F>
void on_threads(unsigned threads, F body) {
    std::atomic<unsigned> ready{0};
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            ++ready;
            while (ready < threads) std::this_thread::yield();  // start together
            body(t);
        });
    }
    for (auto& thread : pool) thread.join();
}

TEST_F(Qcow2ConcurrencyTest, AllocatingWritesFromEightThreadsAllLandAndReadBackConcurrently) {
    const std::string path = dir / "seq.qcow2";
    constexpr unsigned kThreads = 8;
    constexpr std::uint64_t kPerThread = 12;
    const std::uint64_t size = kThreads * kPerThread * kMiB;
    auto image = Qcow2Image::create(path, sized(size));
    ASSERT_TRUE(image) << image.error().to_string();
    std::atomic<int> failures{0};
    // Thread t writes MiB t, t + 8, t + 16...: neighbours in the file are written at the same time.
    on_threads(kThreads, [&](unsigned t) {
        for (std::uint64_t k = 0; k < kPerThread; ++k) {
            const std::uint64_t mib = t + kThreads * k;
            auto data = patterned(mib, kMiB);
            if (!write_bytes(**image, mib * kMiB, data)) ++failures;
        }
    });
    EXPECT_EQ(failures.load(), 0);
    on_threads(kThreads, [&](unsigned t) {
        for (std::uint64_t k = 0; k < kPerThread; ++k) {
            const std::uint64_t mib = (t * 5 + k) % (kThreads * kPerThread);  // another order
            auto back = read_bytes(**image, mib * kMiB, kMiB);
            if (!back || *back != patterned(mib, kMiB)) ++failures;
        }
    });
    EXPECT_EQ(failures.load(), 0);
    ASSERT_TRUE((*image)->close());
    image->reset();
    expect_qemu_clean_check(path);
    auto reopened = Qcow2Image::open(path, read_only());
    ASSERT_TRUE(reopened) << reopened.error().to_string();
    for (std::uint64_t mib = 0; mib < kThreads * kPerThread; ++mib) {
        auto back = read_bytes(**reopened, mib * kMiB, kMiB);
        ASSERT_TRUE(back) << back.error().to_string();
        ASSERT_TRUE(*back == patterned(mib, kMiB)) << "MiB " << mib;
    }
}

TEST_F(Qcow2ConcurrencyTest, WritesToTheSameClustersAtOnceKeepEveryByte) {
    // 16 threads each own one slice of every cluster and write it while the others write theirs,
    // all on the same cluster at the same step: the first write to a cluster allocates it (the
    // rest of the cluster reads as zero), so two such writes at once would each allocate and one
    // would lose the other's bytes unless they run one after the other.
    const std::string path = dir / "same.qcow2";
    constexpr unsigned kThreads = 16;
    constexpr std::uint32_t kBits = 21;  // 2 MiB clusters: long writes, wide windows
    constexpr std::uint64_t kBig = 1ull << kBits;
    constexpr std::uint64_t kClusters = 24;
    constexpr std::uint64_t kSlice = kBig / kThreads;
    auto image = Qcow2Image::create(path, sized(kClusters * kBig, kBits));
    ASSERT_TRUE(image) << image.error().to_string();
    std::atomic<int> failures{0};
    on_threads(kThreads, [&](unsigned t) {
        for (std::uint64_t cluster = 0; cluster < kClusters; ++cluster) {
            auto data = patterned(cluster * kThreads + t, kSlice);
            if (!write_bytes(**image, cluster * kBig + t * kSlice, data)) ++failures;
        }
    });
    EXPECT_EQ(failures.load(), 0);
    for (std::uint64_t cluster = 0; cluster < kClusters; ++cluster) {
        for (unsigned t = 0; t < kThreads; ++t) {
            auto back = read_bytes(**image, cluster * kBig + t * kSlice, kSlice);
            ASSERT_TRUE(back) << back.error().to_string();
            ASSERT_TRUE(*back == patterned(cluster * kThreads + t, kSlice)) << "cluster " << cluster << " slice " << t;
        }
    }
    ASSERT_TRUE((*image)->close());
    image->reset();
    expect_qemu_clean_check(path);
}

TEST_F(Qcow2ConcurrencyTest, FlushAndDiscardWaitForRequestsInFlightAndTheImageStaysClean) {
    const std::string path = dir / "mixed.qcow2";
    constexpr unsigned kWriters = 4;
    constexpr std::uint64_t kRounds = 16;
    // Writers own MiB 0-3; the discarding thread owns MiB 4-5 and writes, flushes and discards it.
    auto image = Qcow2Image::create(path, sized(6 * kMiB));
    ASSERT_TRUE(image) << image.error().to_string();
    std::atomic<int> failures{0};
    on_threads(kWriters + 1, [&](unsigned t) {
        for (std::uint64_t round = 0; round < kRounds; ++round) {
            if (t == kWriters) {
                auto data = patterned(1000 + round, 2 * kMiB);
                if (!write_bytes(**image, 4 * kMiB, data)) ++failures;
                if (!(*image)->flush()) ++failures;
                if (!(*image)->discard(4 * kMiB, kMiB)) ++failures;  // MiB 4 reads as zero again
            } else {
                auto data = patterned(t * 100 + round, kMiB);
                if (!write_bytes(**image, t * kMiB, data)) ++failures;
            }
        }
    });
    EXPECT_EQ(failures.load(), 0);
    for (unsigned t = 0; t < kWriters; ++t) {
        auto back = read_bytes(**image, t * kMiB, kMiB);
        ASSERT_TRUE(back) << back.error().to_string();
        EXPECT_TRUE(*back == patterned(t * 100 + kRounds - 1, kMiB)) << "MiB " << t;
    }
    auto zeroes = read_bytes(**image, 4 * kMiB, kMiB);
    ASSERT_TRUE(zeroes);
    EXPECT_TRUE(*zeroes == std::vector<std::uint8_t>(kMiB, 0));
    auto last = read_bytes(**image, 5 * kMiB, kMiB);
    ASSERT_TRUE(last);
    auto expected = patterned(1000 + kRounds - 1, 2 * kMiB);
    EXPECT_TRUE(std::equal(last->begin(), last->end(), expected.begin() + kMiB));
    auto report = (*image)->check();
    ASSERT_TRUE(report) << report.error().to_string();
    EXPECT_TRUE(report->clean()) << (report->messages.empty() ? "" : report->messages.front());
    ASSERT_TRUE((*image)->close());
    image->reset();
    expect_qemu_clean_check(path);
}

}  // namespace
}  // namespace boxlite::qcow2::test
