// Crash consistency: a forked writer runs random writes, discards, zeroings and flushes on an
// overlay until SIGKILL lands at a random moment. Afterwards `qemu-img check` must find no
// corruption (leaks are the one allowed leftover of the ordering), our open and check must agree,
// every write completed before the writer's last finished flush must read back exactly, and
// what came after it must read back as old or new data, never anything else.
#include "qcow2_test_util.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace boxlite::qcow2::test {
namespace {

constexpr std::uint64_t kSize = 24ull << 20;
constexpr std::uint32_t kFlushMark = 0x80000000u;

struct Op {
    enum Kind { Write, Discard, Zero, Flush } kind;
    std::uint64_t offset;
    std::uint64_t length;
    std::uint64_t data_seed;
};

/// The op stream, identical in writer and checker: op i depends only on (seed, i).
Op make_op(std::uint64_t seed, std::uint32_t index) {
    std::mt19937_64 rng(seed * 1000003 + index);
    Op op{};
    const auto k = rng() % 100;
    op.kind = k < 60 ? Op::Write : k < 70 ? Op::Discard : k < 80 ? Op::Zero : Op::Flush;
    op.length = rng() % 2 ? 1 + rng() % 8192 : 4096 * (1 + rng() % 40);
    op.offset = rng() % (kSize - op.length);
    op.data_seed = rng();
    return op;
}

std::vector<std::uint8_t> op_data(const Op& op) {
    std::vector<std::uint8_t> data(op.length);
    std::mt19937_64 rng(op.data_seed);
    fill_pattern(data, rng);
    return data;
}

BoxliteResult<void> apply(block::BlockBackend& disk, const Op& op) {
    switch (op.kind) {
        case Op::Write: {
            auto data = op_data(op);
            return write_bytes(disk, op.offset, data);
        }
        case Op::Discard: return disk.discard(op.offset, op.length);
        case Op::Zero: return disk.write_zeroes(op.offset, op.length);
        case Op::Flush: return disk.flush();
    }
    return {};
}

[[noreturn]] void writer(const std::string& path, std::uint64_t seed, int report_fd) {
    OpenOptions options;
    options.l2_cache_bytes = 8 * 4096;  // small: metadata is also written out between flushes
    auto image = Qcow2Image::open(path, options);
    if (!image) _exit(10);
    for (std::uint32_t i = 0;; ++i) {
        if (::write(report_fd, &i, sizeof i) != sizeof i) _exit(11);
        const Op op = make_op(seed, i);
        if (!apply(**image, op)) _exit(12);
        if (op.kind == Op::Flush) {
            const std::uint32_t mark = i | kFlushMark;
            if (::write(report_fd, &mark, sizeof mark) != sizeof mark) _exit(13);
        }
    }
}

TEST(Qcow2Crash, SigkillAtRandomPointsLeavesConsistentImage) {
    if (!have_qemu_img()) GTEST_SKIP() << "precondition: qemu-img (Debian qemu-utils) is not installed";
    TempDir dir;
    const std::string path = dir / "disk.qcow2";
    const std::string model_path = dir / "model.raw";
    std::mt19937_64 rng(42);
    {
        auto base = block::RawFile::create(dir / "base.raw", kSize - (2 << 20));
        ASSERT_TRUE(base);
        for (int i = 0; i < 40; ++i) {
            std::vector<std::uint8_t> data(1 + rng() % 300000);
            fill_pattern(data, rng);
            ASSERT_TRUE(write_bytes(**base, rng() % ((*base)->size() - data.size()), data));
        }
    }
    ASSERT_EQ(::system(("cp '" + (dir / "base.raw") + "' '" + model_path + "'").c_str()), 0);
    ASSERT_EQ(::truncate(model_path.c_str(), kSize), 0);
    ASSERT_TRUE(Qcow2Image::create(path, sized(kSize, 12, "base.raw")));
    auto model = block::RawFile::open(model_path);
    ASSERT_TRUE(model);

    for (int round = 0; round < 30; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        const std::uint64_t seed = 1000 + static_cast<std::uint64_t>(round);
        int fds[2];
        ASSERT_EQ(::pipe(fds), 0);
        const pid_t child = ::fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            ::close(fds[0]);
            writer(path, seed, fds[1]);
        }
        ::close(fds[1]);
        std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 120));
        ::kill(child, SIGKILL);
        int status = 0;
        ::waitpid(child, &status, 0);
        ASSERT_TRUE(WIFSIGNALED(status)) << "writer exited on its own with " << WEXITSTATUS(status);
        // What the writer started, and the last flush it completed.
        std::int64_t last_started = -1, last_flushed = -1;
        std::uint32_t value;
        while (::read(fds[0], &value, sizeof value) == sizeof value) {
            if (value & kFlushMark) last_flushed = value & ~kFlushMark;
            else last_started = value;
        }
        ::close(fds[0]);
        if (std::getenv("BOXLITE_QCOW2_VERBOSE") != nullptr)
            std::printf("round %d: killed after op %lld, last flush at op %lld\n", round,
                        static_cast<long long>(last_started), static_cast<long long>(last_flushed));

        const auto checked = qemu_check(path);
        EXPECT_TRUE(checked.exit_code == 0 || checked.exit_code == 3) << checked.output;
        EXPECT_EQ(checked.output.find("ERROR"), std::string::npos) << checked.output;

        auto image = Qcow2Image::open(path);
        ASSERT_TRUE(image) << image.error().to_string();
        auto report = (*image)->check();
        ASSERT_TRUE(report) << report.error().to_string();
        EXPECT_EQ(report->corruptions, 0u) << (report->messages.empty() ? "" : report->messages.front());

        // Durability: replay into the model. A range an op touched after the last completed
        // flush may hold, byte by byte, only a value it had from that flush on: its data at the
        // flush, or what a later op left there (a crash can keep any subset of those ops, in
        // any order). The model snapshots every such range before the first of those ops and
        // after each, and each byte of the image must equal that byte in one of the snapshots.
        std::vector<std::pair<std::uint64_t, std::uint64_t>> uncertain;
        for (std::int64_t i = last_flushed + 1; i <= last_started; ++i) {
            const Op op = make_op(seed, static_cast<std::uint32_t>(i));
            if (op.kind != Op::Flush) uncertain.emplace_back(op.offset, op.length);
        }
        std::vector<std::vector<std::vector<std::uint8_t>>> states;  // [snapshot][range] bytes
        auto snapshot = [&] {
            auto& state = states.emplace_back();
            for (const auto& [offset, length] : uncertain) {
                auto bytes = read_bytes(**model, offset, length);
                ASSERT_TRUE(bytes);
                state.push_back(std::move(*bytes));
            }
        };
        for (std::int64_t i = 0; i <= last_started; ++i) {
            const Op op = make_op(seed, static_cast<std::uint32_t>(i));
            if (i == last_flushed + 1) {
                ASSERT_NO_FATAL_FAILURE(snapshot());
            }
            ASSERT_TRUE(apply(**model, op));
            if (i > last_flushed) {
                ASSERT_NO_FATAL_FAILURE(snapshot());
            }
        }
        for (std::size_t r = 0; r < uncertain.size(); ++r) {
            const auto [offset, length] = uncertain[r];
            auto actual = read_bytes(**image, offset, length);
            ASSERT_TRUE(actual);
            for (std::uint64_t b = 0; b < length; ++b) {
                const auto byte = (*actual)[b];
                const bool possible = std::any_of(states.rbegin(), states.rend(),
                                                  [&](const auto& state) { return state[r][b] == byte; });
                ASSERT_TRUE(possible) << "byte " << offset + b << " holds " << int{byte}
                                      << ": neither its data at the last flush nor any later op's (started "
                                      << last_started << ", flushed " << last_flushed << ")";
            }
            ASSERT_TRUE(write_bytes(**model, offset, *actual));
        }
        for (std::uint64_t off = 0; off < kSize; off += 1 << 20) {
            auto ours = read_bytes(**image, off, 1 << 20);
            auto theirs = read_bytes(**model, off, 1 << 20);
            ASSERT_TRUE(ours && theirs);
            ASSERT_TRUE(*ours == *theirs) << "flushed data lost in the MiB at " << off << " (started " << last_started
                                          << ", flushed " << last_flushed << ")";
        }
        if (round % 4 == 3) {
            ASSERT_TRUE((*image)->repair());
        }
        ASSERT_TRUE((*image)->close());
    }
    auto image = Qcow2Image::open(path);
    ASSERT_TRUE(image);
    ASSERT_TRUE((*image)->repair());
    ASSERT_TRUE((*image)->close());
    const auto final_check = qemu_check(path);
    EXPECT_EQ(final_check.exit_code, 0) << final_check.output;
    const auto compared = run("qemu-img compare -f qcow2 -F raw '" + path + "' '" + model_path + "'");
    EXPECT_EQ(compared.exit_code, 0) << compared.output;
}

}  // namespace
}  // namespace boxlite::qcow2::test
