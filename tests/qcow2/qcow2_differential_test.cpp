// Randomized differential test: thousands of random reads, writes, discards, zeroings, flushes,
// reopens and resizes applied to a Qcow2Image and to a raw-file model; every read must agree,
// and at the end qemu-img check must be clean and qemu-img compare must agree with the model.
// Seeded and reproducible: BOXLITE_QCOW2_SEED=<n> replays one seed (it is printed on failure).
#include "qcow2_test_util.hpp"

#include <cstdlib>

namespace boxlite::qcow2::test {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

struct Config {
    const char* name;
    std::uint32_t cluster_bits;
    enum class Base { None, Raw, QemuV2, QemuCompressed } base;
    std::uint64_t l2_cache_bytes;  // small values force evictions and mid-request write-outs
    int ops;
};

std::ostream& operator<<(std::ostream& os, const Config& c) { return os << c.name; }

class Qcow2Differential : public ::testing::TestWithParam<Config> {};

std::uint64_t seed_for(const Config& c) {
    if (const char* env = std::getenv("BOXLITE_QCOW2_SEED")) return std::strtoull(env, nullptr, 10);
    return 0x5eed0000ull + c.cluster_bits * 16 + static_cast<unsigned>(c.base);
}

TEST_P(Qcow2Differential, AgreesWithRawModel) {
    if (!have_qemu_img()) GTEST_SKIP() << "precondition: qemu-img (Debian qemu-utils) is not installed";
    const Config& config = GetParam();
    const std::uint64_t seed = seed_for(config);
    SCOPED_TRACE("seed " + std::to_string(seed) + " (replay with BOXLITE_QCOW2_SEED)");
    std::mt19937_64 rng(seed);
    TempDir dir;
    const std::string path = dir / "disk.qcow2";
    const std::string model_path = dir / "model.raw";
    std::uint64_t size = 24 * kMiB + 3 * 512;

    // The starting image and the matching model.
    OpenOptions open_options;
    open_options.l2_cache_bytes = config.l2_cache_bytes;
    if (config.base == Config::Base::None) {
        ASSERT_TRUE(Qcow2Image::create(path, sized(size, config.cluster_bits)));
        ASSERT_TRUE(block::RawFile::create(model_path, size));
    } else {
        const std::string base = dir / "base.raw";
        {
            auto raw = block::RawFile::create(base, size - 5 * kMiB);
            ASSERT_TRUE(raw);
            for (int i = 0; i < 60; ++i) {
                std::vector<std::uint8_t> data(1 + rng() % 400000);
                fill_pattern(data, rng);
                ASSERT_TRUE(write_bytes(**raw, rng() % ((*raw)->size() - data.size()), data));
            }
        }
        ASSERT_EQ(::system(("cp --sparse=always '" + base + "' '" + model_path + "'").c_str()), 0);
        ASSERT_EQ(::truncate(model_path.c_str(), static_cast<off_t>(size)), 0);
        if (config.base == Config::Base::Raw) {
            ASSERT_TRUE(Qcow2Image::create(path, sized(size, config.cluster_bits, "base.raw")));
        } else {
            const std::string opts = config.base == Config::Base::QemuV2 ? "-o compat=0.10,cluster_size="
                                                                         : "-c -o cluster_size=";
            const auto made = run("qemu-img convert -f raw -O qcow2 " + opts +
                                  std::to_string(1u << config.cluster_bits) + " '" + base + "' '" + path + "'");
            ASSERT_EQ(made.exit_code, 0) << made.output;
            ASSERT_EQ(run("qemu-img resize -f qcow2 '" + path + "' " + std::to_string(size)).exit_code, 0);
        }
    }

    auto image_result = Qcow2Image::open(path, open_options);
    ASSERT_TRUE(image_result) << image_result.error().to_string();
    auto image = std::move(*image_result);
    auto model_result = block::RawFile::open(model_path);
    ASSERT_TRUE(model_result);
    auto model = std::move(*model_result);

    const std::uint64_t cs = 1ull << config.cluster_bits;
    auto random_range = [&](std::uint64_t& off, std::uint64_t& len) {
        switch (rng() % 4) {
            case 0: len = 1 + rng() % 4096; break;                        // sub-cluster, unaligned
            case 1: len = 512 * (1 + rng() % 16); break;                  // sector-sized
            case 2: len = cs * (1 + rng() % 4) + rng() % 2 * 512; break;  // cluster-ish
            default: len = 1 + rng() % (600 * 1024); break;               // large, many clusters
        }
        len = std::min(len, size);
        off = rng() % (size - len + 1);
        if (rng() % 3 == 0) off &= ~(cs - 1);
    };

    for (int op = 0; op < config.ops; ++op) {
        SCOPED_TRACE("op " + std::to_string(op));
        std::uint64_t off = 0, len = 0;
        random_range(off, len);
        const auto kind = rng() % 100;
        if (kind < 45) {
            std::vector<std::uint8_t> data(len);
            fill_pattern(data, rng);
            // Scatter the buffer over up to 4 iovecs, as a guest's descriptor chain would.
            std::vector<iovec> iov;
            std::uint64_t pos = 0;
            while (pos < len) {
                const auto part = std::min<std::uint64_t>(len - pos, 1 + rng() % (len + 1));
                iov.push_back(iovec{data.data() + pos, part});
                pos += part;
            }
            auto written = image->write(off, iov);
            ASSERT_TRUE(written) << written.error().to_string();
            ASSERT_TRUE(write_bytes(*model, off, data));
        } else if (kind < 82) {
            auto ours = read_bytes(*image, off, len);
            ASSERT_TRUE(ours) << ours.error().to_string();
            auto theirs = read_bytes(*model, off, len);
            ASSERT_TRUE(theirs);
            ASSERT_TRUE(*ours == *theirs) << "read of " << len << " bytes at " << off << " differs";
        } else if (kind < 89) {
            ASSERT_TRUE(image->discard(off, len));
            ASSERT_TRUE(model->discard(off, len));
        } else if (kind < 95) {
            ASSERT_TRUE(image->write_zeroes(off, len));
            ASSERT_TRUE(model->write_zeroes(off, len));
        } else if (kind < 97) {  // flush
            ASSERT_TRUE(image->flush());
        } else if (kind < 99) {
            image.reset();  // close without flush: the destructor writes metadata out
            auto reopened = Qcow2Image::open(path, open_options);
            ASSERT_TRUE(reopened) << reopened.error().to_string();
            image = std::move(*reopened);
        } else {
            size += cs * (1 + rng() % 64) + 512;
            ASSERT_TRUE(image->resize(size));
            ASSERT_TRUE(model->resize(size));
        }
    }
    auto report = image->check();
    ASSERT_TRUE(report) << report.error().to_string();
    EXPECT_TRUE(report->clean()) << (report->messages.empty() ? "" : report->messages.front());
    ASSERT_TRUE(image->close());
    image.reset();
    const auto checked = qemu_check(path);
    EXPECT_EQ(checked.exit_code, 0) << checked.output;
    const auto compared = run("qemu-img compare -f qcow2 -F raw '" + path + "' '" + model_path + "'");
    EXPECT_EQ(compared.exit_code, 0) << compared.output;
}

INSTANTIATE_TEST_SUITE_P(
    Configs, Qcow2Differential,
    ::testing::Values(Config{"c512_tiny_cache", 9, Config::Base::None, 4 * 512, 2500},
                      Config{"c4k", 12, Config::Base::None, 32ull << 20, 2500},
                      Config{"c64k", 16, Config::Base::None, 32ull << 20, 2500},
                      Config{"c64k_raw_backing", 16, Config::Base::Raw, 32ull << 20, 3000},
                      Config{"c4k_raw_backing_tiny_cache", 12, Config::Base::Raw, 2 * 4096, 2500},
                      Config{"c16k_qemu_v2", 14, Config::Base::QemuV2, 32ull << 20, 2500},
                      Config{"c4k_qemu_compressed", 12, Config::Base::QemuCompressed, 32ull << 20, 2500},
                      Config{"c2m", 21, Config::Base::None, 32ull << 20, 300}),
    [](const ::testing::TestParamInfo<Config>& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace boxlite::qcow2::test
