// Malformed images: every kind of damage must surface as a Storage error naming the problem —
// at open for the header and tables, at first use for L2 entries and data — never a crash.
#include "qcow2_test_util.hpp"

#include "qcow2/format.hpp"

#include <fcntl.h>

namespace boxlite::qcow2::test {
namespace {

class Qcow2Malformed : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have_qemu_img()) GTEST_SKIP() << "qemu-img (Debian qemu-utils) is not installed";
        path = dir / "bad.qcow2";
        ASSERT_EQ(run("qemu-img create -f qcow2 -o cluster_size=4096 '" + path + "' 8M").exit_code, 0);
        ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -P 7 0 64k' -c 'write -P 9 1M 8k' '" + path + "'").exit_code, 0);
        header = read_header();
    }

    Header read_header() {
        std::vector<std::uint8_t> buf(4096);
        const int fd = ::open(path.c_str(), O_RDONLY);
        EXPECT_EQ(::pread(fd, buf.data(), buf.size(), 0), 4096);
        ::close(fd);
        auto parsed = parse_header(buf, std::filesystem::file_size(path), path);
        EXPECT_TRUE(parsed);
        return parsed ? *parsed : Header{};
    }

    void poke(std::uint64_t offset, std::vector<std::uint8_t> bytes) {
        const int fd = ::open(path.c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
                  static_cast<ssize_t>(bytes.size()));
        ::close(fd);
    }
    void poke32(std::uint64_t offset, std::uint32_t v) {
        std::vector<std::uint8_t> b(4);
        block::store_be32(b.data(), v);
        poke(offset, b);
    }
    void poke64(std::uint64_t offset, std::uint64_t v) {
        std::vector<std::uint8_t> b(8);
        block::store_be64(b.data(), v);
        poke(offset, b);
    }
    std::uint64_t peek64(std::uint64_t offset) {
        std::uint8_t b[8];
        const int fd = ::open(path.c_str(), O_RDONLY);
        EXPECT_EQ(::pread(fd, b, 8, static_cast<off_t>(offset)), 8);
        ::close(fd);
        return block::load_be64(b);
    }

    void expect_open_error(const std::string& fragment) {
        for (bool ro : {true, false}) {
            OpenOptions options;
            options.read_only = ro;
            auto image = Qcow2Image::open(path, options);
            ASSERT_FALSE(image) << "opened despite: " << fragment;
            EXPECT_EQ(image.error().kind(), ErrorKind::Storage);
            EXPECT_NE(image.error().message().find(fragment), std::string::npos) << image.error().to_string();
        }
    }

    void expect_read_error(std::uint64_t offset, const std::string& fragment) {
        auto image = Qcow2Image::open(path, read_only());
        ASSERT_TRUE(image) << image.error().to_string();
        auto data = read_bytes(**image, offset, 4096);
        ASSERT_FALSE(data) << "read succeeded despite: " << fragment;
        EXPECT_EQ(data.error().kind(), ErrorKind::Storage);
        EXPECT_NE(data.error().message().find(fragment), std::string::npos) << data.error().to_string();
    }

    std::uint64_t l2_offset() { return peek64(header.l1_table_offset) & kOffsetMask; }

    TempDir dir;
    std::string path;
    Header header;
};

TEST_F(Qcow2Malformed, BadMagic) {
    poke32(0, 0x12345678);
    expect_open_error("bad magic");
}
TEST_F(Qcow2Malformed, TooShort) {
    ASSERT_EQ(::truncate(path.c_str(), 40), 0);
    expect_open_error("shorter than a QCOW2 header");
}
TEST_F(Qcow2Malformed, UnknownVersion) {
    poke32(4, 4);
    expect_open_error("unsupported QCOW2 version 4");
}
TEST_F(Qcow2Malformed, ClusterBitsOutOfRange) {
    poke32(20, 40);
    expect_open_error("cluster_bits 40");
}
TEST_F(Qcow2Malformed, UnknownIncompatibleFeature) {
    poke64(72, 1ull << 9);
    expect_open_error("unsupported incompatible QCOW2 features");
}
TEST_F(Qcow2Malformed, ExternalDataFileIsNamed) {
    poke64(72, 1ull << 2);
    expect_open_error("external data file");
}
TEST_F(Qcow2Malformed, Encrypted) {
    poke32(32, 1);
    expect_open_error("encrypted");
}
TEST_F(Qcow2Malformed, AbsurdVirtualSize) {
    poke64(24, 1ull << 62);
    expect_open_error("absurd");
}
TEST_F(Qcow2Malformed, L1TooSmallForSize) {
    poke64(24, 1ull << 40);
    expect_open_error("needs");
}
TEST_F(Qcow2Malformed, HugeL1Table) {
    poke32(36, 0x10000000);
    expect_open_error("too large");
}
TEST_F(Qcow2Malformed, L1TableOutsideFile) {
    poke64(40, 1ull << 40);
    expect_open_error("outside the file");
}
TEST_F(Qcow2Malformed, L1TableUnaligned) {
    poke64(40, header.l1_table_offset + 8);
    expect_open_error("not aligned");
}
TEST_F(Qcow2Malformed, RefcountTableOverlapsL1) {
    poke64(48, header.l1_table_offset);
    expect_open_error("overlapping metadata");
}
TEST_F(Qcow2Malformed, RefcountTableOverlapsHeader) {
    poke64(48, 0);
    expect_open_error("overlaps the header");
}
TEST_F(Qcow2Malformed, ZeroRefcountTableClusters) {
    poke32(56, 0);
    expect_open_error("refcount table of 0 clusters");
}
TEST_F(Qcow2Malformed, HeaderLengthTooShort) {
    poke32(100, 50);
    expect_open_error("header_length 50");
}
TEST_F(Qcow2Malformed, BackingNameTooLong) {
    poke64(8, 512);
    poke32(16, 5000);
    expect_open_error("backing file name length 5000");
}
TEST_F(Qcow2Malformed, HeaderExtensionPastCluster) {
    poke32(header.header_length, 0x12345678);
    poke32(header.header_length + 4, 100000);
    expect_open_error("runs past the first cluster");
}
TEST_F(Qcow2Malformed, BackingChainLoop) {
    // The image names itself as its backing file: the depth limit stops the loop.
    const std::string name = "bad.qcow2";
    poke64(8, 1024);
    poke32(16, static_cast<std::uint32_t>(name.size()));
    poke(1024, std::vector<std::uint8_t>(name.begin(), name.end()));
    auto image = Qcow2Image::open(path, read_only());
    ASSERT_FALSE(image);
    EXPECT_NE(image.error().message().find("deeper than"), std::string::npos) << image.error().to_string();
}
TEST_F(Qcow2Malformed, L2TableOutsideFile) {
    poke64(header.l1_table_offset, (1ull << 40) | kFlagCopied);
    expect_read_error(0, "outside the file");
}
TEST_F(Qcow2Malformed, L2TableOverlapsRefcountTable) {
    poke64(header.l1_table_offset, header.refcount_table_offset | kFlagCopied);
    expect_read_error(0, "overlapping metadata");
}
TEST_F(Qcow2Malformed, DataClusterPastEndOfFile) {
    poke64(l2_offset(), (1ull << 40) | kFlagCopied);
    expect_read_error(0, "past the end of the file");
}
TEST_F(Qcow2Malformed, DataClusterUnaligned) {
    poke64(l2_offset(), (header.l1_table_offset + 512) | kFlagCopied);
    expect_read_error(0, "invalid host offset");
}
TEST_F(Qcow2Malformed, WriteIntoMetadataIsRefused) {
    // A data cluster that claims to be the L1 table: writing there would destroy metadata.
    poke64(l2_offset(), header.l1_table_offset | kFlagCopied);
    auto image = Qcow2Image::open(path);
    ASSERT_TRUE(image);
    std::vector<std::uint8_t> data(512, 1);
    auto r = write_bytes(**image, 0, data);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("overlapping metadata"), std::string::npos) << r.error().to_string();
}
TEST_F(Qcow2Malformed, CorruptCompressedCluster) {
    // Turn the first data cluster into a "compressed" one over garbage.
    const std::uint64_t data = peek64(l2_offset()) & kOffsetMask;
    poke64(l2_offset(), kFlagCompressed | data);
    poke(data, std::vector<std::uint8_t>(512, 0xff));
    expect_read_error(0, "compressed cluster");
}
TEST_F(Qcow2Malformed, CorruptBitRefusesWrites) {
    poke64(72, 1ull << 1);
    auto rw = Qcow2Image::open(path);
    ASSERT_FALSE(rw);
    EXPECT_NE(rw.error().message().find("marked corrupt"), std::string::npos);
    auto ro = Qcow2Image::open(path, read_only());
    ASSERT_TRUE(ro) << ro.error().to_string();
}
TEST_F(Qcow2Malformed, RefcountBlockOutsideFile) {
    poke64(header.refcount_table_offset, 1ull << 40);
    auto image = Qcow2Image::open(path);
    ASSERT_TRUE(image);  // refcount blocks load lazily
    auto report = (*image)->check();
    ASSERT_FALSE(report);
    EXPECT_NE(report.error().message().find("refcount block 0"), std::string::npos) << report.error().to_string();
}
TEST_F(Qcow2Malformed, RefcountOverflowIsReported) {
    // 1-bit refcounts and two L2 entries sharing one cluster: it needs refcount 2.
    ASSERT_EQ(run("qemu-img create -f qcow2 -o cluster_size=4096,refcount_bits=1 '" + path + "' 8M").exit_code, 0);
    ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -P 7 0 8k' '" + path + "'").exit_code, 0);
    header = read_header();
    poke64(l2_offset() + 8, peek64(l2_offset()));
    auto image = Qcow2Image::open(path);
    ASSERT_TRUE(image);
    auto report = (*image)->check();
    ASSERT_TRUE(report);
    EXPECT_GT(report->corruptions, 0u);
    auto repaired = (*image)->repair();
    ASSERT_FALSE(repaired);
    EXPECT_NE(repaired.error().message().find("refcount overflow"), std::string::npos) << repaired.error().to_string();
}
TEST_F(Qcow2Malformed, RandomByteFlipsNeverCrash) {
    // Blind damage anywhere in the metadata: errors are fine, crashes and hangs are not.
    const auto pristine = dir / "pristine.qcow2";
    std::filesystem::copy_file(path, pristine);
    const auto file_size = std::filesystem::file_size(path);
    std::mt19937_64 rng(99);
    for (int i = 0; i < 300; ++i) {
        std::filesystem::copy_file(pristine, path, std::filesystem::copy_options::overwrite_existing);
        for (int flips = 0; flips < 4; ++flips) {
            const std::uint64_t where = rng() % 3 == 0 ? rng() % 128 : rng() % std::min<std::uint64_t>(file_size, 8 * 4096);
            poke(where, {static_cast<std::uint8_t>(rng())});
        }
        auto image = Qcow2Image::open(path);
        if (!image) continue;
        std::vector<std::uint8_t> data(3000, 5);
        (void)read_bytes(**image, 0, 70000);
        (void)write_bytes(**image, rng() % (1 << 20), data);
        (void)(*image)->discard(0, 8192);
        (void)(*image)->check();
    }
}

}  // namespace
}  // namespace boxlite::qcow2::test
