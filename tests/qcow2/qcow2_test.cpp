// QCOW2 engine tests against the real thing: qemu-img check/compare/convert judge our files, and
// images qemu-img made must read back identically through our engine.
#include "qcow2_test_util.hpp"

#include "qcow2/format.hpp"

#include <fcntl.h>

#include <fstream>

namespace boxlite::qcow2::test {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

class Qcow2Test : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have_qemu_img()) GTEST_SKIP() << "precondition: qemu-img (Debian qemu-utils) is not installed";
    }
    TempDir dir;
};

void expect_qemu_clean(const std::string& path) {
    const auto result = qemu_check(path);
    EXPECT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("No errors were found"), std::string::npos) << result.output;
    EXPECT_EQ(result.output.find("leaked"), std::string::npos) << result.output;
}

void expect_same_content(block::BlockBackend& a, block::BlockBackend& b) {
    ASSERT_EQ(a.size(), b.size());
    for (std::uint64_t off = 0; off < a.size(); off += kMiB) {
        const auto len = std::min<std::uint64_t>(kMiB, a.size() - off);
        auto x = read_bytes(a, off, len);
        auto y = read_bytes(b, off, len);
        ASSERT_TRUE(x) << x.error().to_string();
        ASSERT_TRUE(y) << y.error().to_string();
        ASSERT_TRUE(*x == *y) << "content differs in the MiB at offset " << off;
    }
}

TEST_F(Qcow2Test, CreatedImagePassesQemuCheckAndInfo) {
    const auto path = dir / "disk.qcow2";
    {
        auto image = Qcow2Image::create(path, sized(64 * kMiB));
        ASSERT_TRUE(image) << image.error().to_string();
        EXPECT_EQ((*image)->size(), 64 * kMiB);
        std::mt19937_64 rng(1);
        std::vector<std::uint8_t> data(100000);
        fill_pattern(data, rng);
        ASSERT_TRUE(write_bytes(**image, 12345, data));
        auto back = read_bytes(**image, 12345, data.size());
        ASSERT_TRUE(back);
        EXPECT_TRUE(*back == data);
        ASSERT_TRUE((*image)->close());
    }
    expect_qemu_clean(path);
    const auto info = run("qemu-img info --output=json '" + path + "'");
    EXPECT_NE(info.output.find("\"virtual-size\": 67108864"), std::string::npos) << info.output;
    EXPECT_NE(info.output.find("\"compat\": \"1.1\""), std::string::npos) << info.output;
    // And the same bytes through QEMU's reader.
    ASSERT_EQ(run("qemu-img convert -O raw '" + path + "' '" + (dir / "out.raw") + "'").exit_code, 0);
    auto raw = block::RawFile::open(dir / "out.raw", true);
    auto ours = Qcow2Image::open(path, read_only());
    ASSERT_TRUE(raw && ours);
    expect_same_content(**ours, **raw);
}

TEST_F(Qcow2Test, ReadsQemuMadeImagesIdentically) {
    // A raw source with data, zero runs and holes; every qemu-img flavour must read back equal.
    const auto source = dir / "source.raw";
    {
        auto raw = block::RawFile::create(source, 48 * kMiB + 4096 + 512);
        ASSERT_TRUE(raw);
        std::mt19937_64 rng(7);
        for (int i = 0; i < 200; ++i) {
            std::vector<std::uint8_t> data(1 + rng() % 300000);
            fill_pattern(data, rng);
            const auto off = rng() % ((*raw)->size() - data.size());
            ASSERT_TRUE(write_bytes(**raw, off, data));
        }
    }
    auto reference = block::RawFile::open(source, true);
    ASSERT_TRUE(reference);
    const std::vector<std::string> variants = {
        "-O qcow2",
        "-O qcow2 -c",
        "-O qcow2 -o compat=0.10",
        "-O qcow2 -c -o compat=0.10",
        "-O qcow2 -o cluster_size=512",
        "-O qcow2 -c -o cluster_size=4096,refcount_bits=8",
        "-O qcow2 -o cluster_size=2M",
        "-O qcow2 -o refcount_bits=1",
        "-O qcow2 -o refcount_bits=64,cluster_size=16384",
    };
    for (std::size_t i = 0; i < variants.size(); ++i) {
        SCOPED_TRACE(variants[i]);
        const auto target = dir / fmt::format("v{}.qcow2", i);
        const auto made = run("qemu-img convert -f raw " + variants[i] + " '" + source + "' '" + target + "'");
        ASSERT_EQ(made.exit_code, 0) << made.output;
        auto image = Qcow2Image::open(target, read_only());
        ASSERT_TRUE(image) << image.error().to_string();
        expect_same_content(**image, **reference);
        auto report = (*image)->check();
        ASSERT_TRUE(report) << report.error().to_string();
        EXPECT_TRUE(report->clean()) << (report->messages.empty() ? "" : report->messages.front());
    }
}

TEST_F(Qcow2Test, WritesIntoCompressedClustersFreeThemExactly) {
    const auto source = dir / "source.raw";
    {
        auto raw = block::RawFile::create(source, 8 * kMiB);
        ASSERT_TRUE(raw);
        std::mt19937_64 rng(3);
        std::vector<std::uint8_t> data(8 * kMiB);
        for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>((i / 977) ^ (rng() % 4));
        ASSERT_TRUE(write_bytes(**raw, 0, data));
    }
    const auto target = dir / "c.qcow2";
    ASSERT_EQ(run("qemu-img convert -c -O qcow2 -o cluster_size=4096 '" + source + "' '" + target + "'").exit_code, 0);
    std::filesystem::copy_file(source, dir / "model.raw");
    {
        auto image = Qcow2Image::open(target);
        auto model = block::RawFile::open(dir / "model.raw");
        ASSERT_TRUE(image && model);
        std::mt19937_64 rng(4);
        for (int i = 0; i < 300; ++i) {
            std::vector<std::uint8_t> data(1 + rng() % 9000);
            fill_pattern(data, rng);
            const auto off = rng() % (8 * kMiB - data.size());
            ASSERT_TRUE(write_bytes(**image, off, data));
            ASSERT_TRUE(write_bytes(**model, off, data));
            if (i % 50 == 0) {
                ASSERT_TRUE((*image)->discard(off & ~4095ull, 12288));
                ASSERT_TRUE((*model)->write_zeroes(off & ~4095ull, 12288));
            }
        }
        ASSERT_TRUE((*image)->close());
        expect_same_content(**image, **model);
    }
    expect_qemu_clean(target);
    const auto cmp = run("qemu-img compare -f qcow2 -F raw '" + target + "' '" + (dir / "model.raw") + "'");
    EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
}

TEST_F(Qcow2Test, OverlayOverRawAndQcow2BackingChain) {
    // base.raw <- mid.qcow2 (qemu-made, with data) <- top.qcow2 (ours)
    const auto base = dir / "base.raw";
    std::mt19937_64 rng(11);
    {
        auto raw = block::RawFile::create(base, 20 * kMiB);
        ASSERT_TRUE(raw);
        std::vector<std::uint8_t> data(20 * kMiB);
        fill_pattern(data, rng);
        ASSERT_TRUE(write_bytes(**raw, 0, data));
    }
    const auto mid = dir / "mid.qcow2";
    ASSERT_EQ(run("qemu-img create -f qcow2 -b base.raw -F raw '" + mid + "'").exit_code, 0);
    ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -P 0x5a 1M 3M' -c 'write -z 8M 1M' '" + mid + "'").exit_code, 0);
    // Our overlay is bigger than its backing: the tail reads as zeroes.
    auto top = Qcow2Image::create(dir / "top.qcow2", sized(24 * kMiB, 16, "mid.qcow2"));
    ASSERT_TRUE(top) << top.error().to_string();
    EXPECT_EQ((*top)->info().backing_format, "qcow2");
    // The model: QEMU's own flattening of the chain, then the same writes.
    ASSERT_EQ(run("qemu-img convert -O raw '" + mid + "' '" + (dir / "model.raw") + "'").exit_code, 0);
    ASSERT_EQ(::truncate((dir / "model.raw").c_str(), 24 * kMiB), 0);
    auto model = block::RawFile::open(dir / "model.raw");
    ASSERT_TRUE(model);
    expect_same_content(**top, **model);
    for (int i = 0; i < 400; ++i) {
        std::vector<std::uint8_t> data(1 + rng() % 200000);
        fill_pattern(data, rng);
        const auto off = rng() % (24 * kMiB - data.size());
        const int op = static_cast<int>(rng() % 10);
        if (op < 7) {
            ASSERT_TRUE(write_bytes(**top, off, data));
            ASSERT_TRUE(write_bytes(**model, off, data));
        } else {
            ASSERT_TRUE((*top)->write_zeroes(off, data.size()));
            ASSERT_TRUE((*model)->write_zeroes(off, data.size()));
        }
    }
    expect_same_content(**top, **model);
    ASSERT_TRUE((*top)->close());
    top->reset();
    expect_qemu_clean(dir / "top.qcow2");
    const auto cmp = run("qemu-img compare -F raw '" + (dir / "top.qcow2") + "' '" + (dir / "model.raw") + "'");
    EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
    // A qemu-made overlay over ours (four images deep now), written by qemu-io, reads through
    // our engine exactly as QEMU flattens it.
    const auto overlay = dir / "overlay.qcow2";
    ASSERT_EQ(run("qemu-img create -q -f qcow2 -b top.qcow2 -F qcow2 '" + overlay + "'").exit_code, 0);
    const auto wrote = run(
        "qemu-io -f qcow2 -c 'write -P 0x6b 2M 1M' -c 'write -z 5M 64k' -c "
        "'write -P 0x21 23M 300k' '" +
        overlay + "'");
    ASSERT_EQ(wrote.exit_code, 0) << wrote.output;
    std::vector<std::uint8_t> a(1 << 20, 0x6b), b(300 << 10, 0x21);
    ASSERT_TRUE(write_bytes(**model, 2 * kMiB, a));
    ASSERT_TRUE((*model)->write_zeroes(5 * kMiB, 64 << 10));
    ASSERT_TRUE(write_bytes(**model, 23 * kMiB, b));
    auto reopened = Qcow2Image::open(overlay, read_only());
    ASSERT_TRUE(reopened) << reopened.error().to_string();
    EXPECT_EQ((*reopened)->info().backing_file, "top.qcow2");
    expect_same_content(**reopened, **model);
    model->reset();
    const auto cmp_overlay = run("qemu-img compare -F raw '" + overlay + "' '" + (dir / "model.raw") + "'");
    EXPECT_EQ(cmp_overlay.exit_code, 0) << cmp_overlay.output;
}

TEST_F(Qcow2Test, SizesMustBeWholeSectors) {
    auto odd = Qcow2Image::create(dir / "odd.qcow2", sized(kMiB + 100));
    ASSERT_FALSE(odd);
    EXPECT_EQ(odd.error().kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(odd.error().message().find("multiple of 512"), std::string::npos) << odd.error().to_string();
    auto image = Qcow2Image::create(dir / "even.qcow2", sized(kMiB + 512));
    ASSERT_TRUE(image) << image.error().to_string();
    auto grown = (*image)->resize(2 * kMiB + 1);
    ASSERT_FALSE(grown);
    EXPECT_EQ(grown.error().kind(), ErrorKind::InvalidArgument);
    EXPECT_TRUE((*image)->resize(2 * kMiB));
}

TEST_F(Qcow2Test, ResizeGrowsL1AndRefcountTable) {
    // 512-byte clusters: each L2 maps 32 KiB and each refcount block 256 clusters, so a few MiB
    // of writes move the refcount table several times and the resize moves the L1 table.
    const auto path = dir / "small.qcow2";
    auto image = Qcow2Image::create(path, sized(1 * kMiB, 9));
    ASSERT_TRUE(image) << image.error().to_string();
    auto model = block::RawFile::create(dir / "model.raw", 1 * kMiB);
    ASSERT_TRUE(model);
    std::mt19937_64 rng(5);
    auto scribble = [&](std::uint64_t size, int count) {
        for (int i = 0; i < count; ++i) {
            std::vector<std::uint8_t> data(1 + rng() % 20000);
            fill_pattern(data, rng);
            const auto off = rng() % (size - data.size());
            ASSERT_TRUE(write_bytes(**image, off, data));
            ASSERT_TRUE(write_bytes(**model, off, data));
        }
    };
    scribble(1 * kMiB, 100);
    ASSERT_TRUE((*image)->resize(40 * kMiB));
    ASSERT_TRUE((*model)->resize(40 * kMiB));
    EXPECT_EQ((*image)->size(), 40 * kMiB);
    scribble(40 * kMiB, 600);
    ASSERT_TRUE((*image)->flush());
    auto report = (*image)->check();
    ASSERT_TRUE(report);
    EXPECT_TRUE(report->clean()) << (report->messages.empty() ? "" : report->messages.front());
    EXPECT_EQ((*image)->resize(1 * kMiB).error().kind(), ErrorKind::Unsupported);
    ASSERT_TRUE((*image)->close());
    image->reset();
    expect_qemu_clean(path);
    const auto cmp = run("qemu-img compare -f qcow2 -F raw '" + path + "' '" + (dir / "model.raw") + "'");
    EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
}

TEST_F(Qcow2Test, QemuV2ImageWritableAndStaysClean) {
    const auto path = dir / "v2.qcow2";
    ASSERT_EQ(run("qemu-img create -f qcow2 -o compat=0.10,cluster_size=4096 '" + path + "' 16M").exit_code, 0);
    auto model = block::RawFile::create(dir / "model.raw", 16 * kMiB);
    ASSERT_TRUE(model);
    {
        auto image = Qcow2Image::open(path);
        ASSERT_TRUE(image) << image.error().to_string();
        EXPECT_EQ((*image)->info().version, 2u);
        std::mt19937_64 rng(9);
        for (int i = 0; i < 500; ++i) {
            std::vector<std::uint8_t> data(1 + rng() % 30000);
            fill_pattern(data, rng);
            const auto off = rng() % (16 * kMiB - data.size());
            if (rng() % 5 == 0) {
                ASSERT_TRUE((*image)->discard(off, data.size()));
                ASSERT_TRUE((*model)->discard(off, data.size()));
            } else {
                ASSERT_TRUE(write_bytes(**image, off, data));
                ASSERT_TRUE(write_bytes(**model, off, data));
            }
        }
        expect_same_content(**image, **model);
    }
    expect_qemu_clean(path);
    EXPECT_EQ(run("qemu-img compare -f qcow2 -F raw '" + path + "' '" + (dir / "model.raw") + "'").exit_code, 0);
}

TEST_F(Qcow2Test, IovecScatterAndUnalignedRequests) {
    auto image = Qcow2Image::create(dir / "iov.qcow2", sized(4 * kMiB, 12));
    ASSERT_TRUE(image);
    std::vector<std::uint8_t> a(3000, 1), b(5000, 2), c(17, 3);
    iovec parts[] = {iov_of(a), iov_of(b), iov_of(c)};
    ASSERT_TRUE((*image)->write(4095, parts));
    std::vector<std::uint8_t> whole(8017);
    iovec v = iov_of(whole);
    ASSERT_TRUE((*image)->read(4095, std::span<const iovec>(&v, 1)));
    EXPECT_EQ(whole[0], 1);
    EXPECT_EQ(whole[2999], 1);
    EXPECT_EQ(whole[3000], 2);
    EXPECT_EQ(whole[7999], 2);
    EXPECT_EQ(whole[8000], 3);
    auto before = read_bytes(**image, 4094, 1);
    ASSERT_TRUE(before);
    EXPECT_EQ((*before)[0], 0);
    // Out of range is an InvalidArgument error, not a crash.
    auto past = read_bytes(**image, 4 * kMiB - 10, 11);
    ASSERT_FALSE(past);
    EXPECT_EQ(past.error().kind(), ErrorKind::InvalidArgument);
    // submit() completes through the same paths.
    bool done = false;
    block::Request request;
    request.type = block::RequestType::Flush;
    (*image)->submit(request, [&](BoxliteResult<void> r) { done = r.has_value(); });
    EXPECT_TRUE(done);
}

TEST_F(Qcow2Test, ReadOnlyRefusesWrites) {
    ASSERT_EQ(run("qemu-img create -f qcow2 '" + (dir / "ro.qcow2") + "' 1M").exit_code, 0);
    auto image = Qcow2Image::open(dir / "ro.qcow2", read_only());
    ASSERT_TRUE(image);
    std::vector<std::uint8_t> data(512, 1);
    auto r = write_bytes(**image, 0, data);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::Storage);
    EXPECT_NE(r.error().message().find("read-only"), std::string::npos);
}

TEST_F(Qcow2Test, DirtyImageIsRepairedOnOpen) {
    const auto path = dir / "dirty.qcow2";
    std::vector<std::uint8_t> data(300000, 0x77);
    {
        auto image = Qcow2Image::create(path, sized(8 * kMiB, 12));
        ASSERT_TRUE(image);
        ASSERT_TRUE(write_bytes(**image, 1000, data));
        ASSERT_TRUE((*image)->close());
    }
    // Simulate a lazy-refcount writer that died: zero the whole refcount block, set dirty.
    {
        const int fd = ::open(path.c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        std::uint8_t rt[8];
        ASSERT_EQ(::pread(fd, rt, 8, 4096), 8);  // refcount table at cluster 1
        std::vector<std::uint8_t> zeros(4096, 0);
        ASSERT_EQ(::pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(block::load_be64(rt))), 4096);
        std::uint8_t incompat[8] = {0, 0, 0, 0, 0, 0, 0, 1};
        ASSERT_EQ(::pwrite(fd, incompat, 8, 72), 8);
        ::close(fd);
    }
    EXPECT_NE(qemu_check(path).exit_code, 0);
    {
        auto image = Qcow2Image::open(path);
        ASSERT_TRUE(image) << image.error().to_string();
        EXPECT_FALSE((*image)->info().dirty);
        auto back = read_bytes(**image, 1000, data.size());
        ASSERT_TRUE(back);
        EXPECT_TRUE(*back == data);
    }
    expect_qemu_clean(path);
}

TEST_F(Qcow2Test, LeaksAreFoundAndRepaired) {
    const auto path = dir / "leak.qcow2";
    ASSERT_EQ(run("qemu-img create -f qcow2 '" + path + "' 8M").exit_code, 0);
    ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -P 1 0 1M' '" + path + "'").exit_code, 0);
    // Append a cluster and give it refcount 1 with nothing pointing at it: exactly what a crash
    // between our phases 3 and 4 leaves behind.
    {
        const int fd = ::open(path.c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        const auto size = std::filesystem::file_size(path);
        const auto cluster = (size + 65535) / 65536;
        ASSERT_EQ(::ftruncate(fd, static_cast<off_t>((cluster + 1) * 65536)), 0);
        std::uint8_t header[64];
        ASSERT_EQ(::pread(fd, header, sizeof header, 0), 64);
        std::uint8_t entry[8];
        ASSERT_EQ(::pread(fd, entry, 8, static_cast<off_t>(block::load_be64(header + 48))), 8);
        const std::uint8_t one[2] = {0, 1};
        ASSERT_EQ(::pwrite(fd, one, 2, static_cast<off_t>(block::load_be64(entry) + 2 * cluster)), 2);
        ::close(fd);
    }
    EXPECT_EQ(qemu_check(path).exit_code, 3);  // leaks only
    auto image = Qcow2Image::open(path);
    ASSERT_TRUE(image);
    auto before = (*image)->check();
    ASSERT_TRUE(before);
    EXPECT_EQ(before->leaks, 1u);
    EXPECT_EQ(before->corruptions, 0u);
    ASSERT_TRUE((*image)->repair());
    auto after = (*image)->check();
    ASSERT_TRUE(after);
    EXPECT_TRUE(after->clean());
    ASSERT_TRUE((*image)->close());
    expect_qemu_clean(path);
    auto data = read_bytes(**image, 0, 1 << 20);
    ASSERT_TRUE(data);
    EXPECT_EQ((*data)[0], 1);
    EXPECT_EQ((*data)[(1 << 20) - 1], 1);
}

TEST(RawFileTest, ReadWriteZeroResizeAndBounds) {
    TempDir dir;
    auto raw = block::RawFile::create(dir / "disk.raw", 1 << 20);
    ASSERT_TRUE(raw) << raw.error().to_string();
    EXPECT_EQ((*raw)->size(), 1u << 20);
    std::vector<std::uint8_t> data(10000, 0x3c);
    ASSERT_TRUE(write_bytes(**raw, 4097, data));
    auto back = read_bytes(**raw, 4097, data.size());
    ASSERT_TRUE(back);
    EXPECT_TRUE(*back == data);
    ASSERT_TRUE((*raw)->write_zeroes(4096, 8192));
    back = read_bytes(**raw, 4097, data.size());
    ASSERT_TRUE(back);
    EXPECT_EQ((*back)[0], 0);
    EXPECT_EQ((*back)[8190], 0);
    EXPECT_EQ((*back)[8191], 0x3c);
    ASSERT_TRUE((*raw)->flush());
    auto past = read_bytes(**raw, (1 << 20) - 1, 2);
    ASSERT_FALSE(past);
    EXPECT_EQ(past.error().kind(), ErrorKind::InvalidArgument);
    ASSERT_TRUE((*raw)->resize(2 << 20));
    EXPECT_EQ((*raw)->size(), 2u << 20);
    auto tail = read_bytes(**raw, (2 << 20) - 4096, 4096);
    ASSERT_TRUE(tail);
    EXPECT_EQ((*tail)[4095], 0);
    // While it is open read-write, even a reader is turned away (QEMU's locking rules).
    auto busy = block::RawFile::open(dir / "disk.raw", true);
    ASSERT_FALSE(busy);
    EXPECT_NE(busy.error().message().find("in use by another process"), std::string::npos) << busy.error().to_string();
    raw->reset();
    auto ro = block::RawFile::open(dir / "disk.raw", true);
    ASSERT_TRUE(ro) << ro.error().to_string();
    EXPECT_TRUE((*ro)->read_only());
    EXPECT_FALSE(write_bytes(**ro, 0, data));
    auto missing = block::RawFile::open(dir / "missing.raw");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().kind(), ErrorKind::Storage);
    EXPECT_NE(missing.error().message().find("missing.raw"), std::string::npos);
}

TEST(OpenDiskTest, ProbesFormat) {
    TempDir dir;
    ASSERT_TRUE(block::RawFile::create(dir / "a.raw", 65536));
    ASSERT_TRUE(Qcow2Image::create(dir / "b.qcow2", sized(1 << 20)));
    auto raw = open_disk(dir / "a.raw", true);
    ASSERT_TRUE(raw);
    EXPECT_EQ((*raw)->size(), 65536u);
    EXPECT_NE(dynamic_cast<block::RawFile*>(raw->get()), nullptr);
    auto q = open_disk(dir / "b.qcow2", false);
    ASSERT_TRUE(q);
    EXPECT_NE(dynamic_cast<Qcow2Image*>(q->get()), nullptr);
    EXPECT_EQ((*q)->size(), 1u << 20);
    auto bad = open_disk(dir / "a.raw", true, "vmdk");
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message().find("vmdk"), std::string::npos);
}

}  // namespace
}  // namespace boxlite::qcow2::test
