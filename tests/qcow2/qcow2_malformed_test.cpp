// Malformed images: every kind of damage must surface as a Storage error naming the problem —
// at open for the header and tables, at first use for L2 entries and data — never a crash.
#include "qcow2_test_util.hpp"

#include "qcow2/format.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cstdio>
#include <functional>

namespace boxlite::qcow2::test {
namespace {

class Qcow2Malformed : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have_qemu_img()) GTEST_SKIP() << "precondition: qemu-img (Debian qemu-utils) is not installed";
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
    expect_open_error("overlapping metadata");
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
// Reserved bits: QEMU's check calls them corruption; we refuse to use such an entry at all.
TEST_F(Qcow2Malformed, L1EntryWithReservedBits) {
    poke64(header.l1_table_offset, peek64(header.l1_table_offset) | (1ull << 58));
    expect_read_error(0, "reserved bits");
    EXPECT_EQ(qemu_check(path).exit_code, 2);
    auto image = Qcow2Image::open(path, read_only());
    ASSERT_TRUE(image);
    auto report = (*image)->check();
    ASSERT_TRUE(report) << report.error().to_string();
    EXPECT_GT(report->corruptions, 0u);
}
TEST_F(Qcow2Malformed, L2EntryWithReservedBits) {
    poke64(l2_offset(), peek64(l2_offset()) | (1ull << 4));
    expect_read_error(0, "reserved bits");
    EXPECT_EQ(qemu_check(path).exit_code, 2);
    auto image = Qcow2Image::open(path);
    ASSERT_TRUE(image);
    std::vector<std::uint8_t> data(512, 1);
    auto w = write_bytes(**image, 0, data);
    ASSERT_FALSE(w);
    EXPECT_NE(w.error().message().find("reserved bits"), std::string::npos) << w.error().to_string();
    auto report = (*image)->check();
    ASSERT_TRUE(report) << report.error().to_string();
    EXPECT_GT(report->corruptions, 0u);
    EXPECT_FALSE((*image)->repair());
}
TEST_F(Qcow2Malformed, RefcountTableEntryWithReservedBits) {
    poke64(header.refcount_table_offset, peek64(header.refcount_table_offset) | 1);
    EXPECT_EQ(qemu_check(path).exit_code, 2);
    auto image = Qcow2Image::open(path);
    ASSERT_TRUE(image) << image.error().to_string();  // refcount blocks load lazily
    std::vector<std::uint8_t> data(4096, 1);
    auto w = write_bytes(**image, 4 * 1024 * 1024, data);  // allocates: needs refcount block 0
    ASSERT_FALSE(w);
    EXPECT_NE(w.error().message().find("reserved bits"), std::string::npos) << w.error().to_string();
}

// The L2 tables and refcount blocks of the whole image are known at open, so a hostile data
// pointer into one that was never loaded is refused as well as into a cached one.
TEST_F(Qcow2Malformed, WriteIntoAnUnloadedL2TableIsRefused) {
    ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -P 0x33 6M 4k' '" + path + "'").exit_code, 0);
    const std::uint64_t other_l2 = peek64(header.l1_table_offset + 3 * 8) & kOffsetMask;
    ASSERT_NE(other_l2, 0u);
    poke64(l2_offset(), other_l2 | kFlagCopied);
    {
        auto image = Qcow2Image::open(path);
        ASSERT_TRUE(image) << image.error().to_string();
        std::vector<std::uint8_t> data(4096, 0xee);
        auto r = write_bytes(**image, 0, data);
        ASSERT_FALSE(r);
        EXPECT_NE(r.error().message().find("overlapping metadata"), std::string::npos) << r.error().to_string();
    }
    auto image = Qcow2Image::open(path, read_only());
    ASSERT_TRUE(image);
    auto back = read_bytes(**image, 6 * 1024 * 1024, 4096);
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_EQ((*back)[0], 0x33);
    EXPECT_EQ((*back)[4095], 0x33);
}
TEST_F(Qcow2Malformed, WriteIntoAnUnloadedRefcountBlockIsRefused) {
    const std::uint64_t refblock = peek64(header.refcount_table_offset);
    poke64(l2_offset(), refblock | kFlagCopied);
    auto image = Qcow2Image::open(path);
    ASSERT_TRUE(image) << image.error().to_string();
    std::vector<std::uint8_t> data(4096, 0xee);
    auto r = write_bytes(**image, 0, data);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("overlapping metadata"), std::string::npos) << r.error().to_string();
    EXPECT_NE(peek64(refblock), block::load_be64(data.data()));
}
TEST_F(Qcow2Malformed, DiscardThroughAPointerIntoMetadataDoesNotFreeTheTable) {
    // Freeing the cluster would let the next allocation overwrite a live L2 table.
    ASSERT_EQ(run("qemu-io -f qcow2 -c 'write -P 0x33 6M 4k' '" + path + "'").exit_code, 0);
    const std::uint64_t other_l2 = peek64(header.l1_table_offset + 3 * 8) & kOffsetMask;
    poke64(l2_offset(), other_l2 | kFlagCopied);
    {
        auto image = Qcow2Image::open(path);
        ASSERT_TRUE(image) << image.error().to_string();
        ASSERT_TRUE((*image)->discard(0, 4096));
        ASSERT_TRUE((*image)->flush());
        std::vector<std::uint8_t> data(64 * 1024, 0x44);
        ASSERT_TRUE(write_bytes(**image, 2 * 1024 * 1024, data));  // allocates several clusters
        ASSERT_TRUE((*image)->close());
    }
    auto image = Qcow2Image::open(path, read_only());
    ASSERT_TRUE(image);
    auto back = read_bytes(**image, 6 * 1024 * 1024, 4096);
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_EQ((*back)[0], 0x33);
    image->reset();
    // What is left is the leak our poke made (the data cluster entry 0 pointed to), no corruption.
    EXPECT_EQ(qemu_check(path).exit_code, 3);
    {
        auto rw = Qcow2Image::open(path);
        ASSERT_TRUE(rw);
        ASSERT_TRUE((*rw)->repair());
    }
    expect_qemu_clean_check(path);
}
TEST_F(Qcow2Malformed, TwoL1EntriesShareAnL2Table) {
    poke64(header.l1_table_offset + 8, peek64(header.l1_table_offset));
    expect_open_error("both at offset");
}
TEST_F(Qcow2Malformed, L2TableIsARefcountBlock) {
    poke64(header.l1_table_offset, peek64(header.refcount_table_offset) | kFlagCopied);
    expect_open_error("an L2 table and a refcount block are both at offset");
}

/// Runs `body` in a child process and returns its exit code and peak RSS in bytes: a hostile
/// image must neither crash the process nor make it allocate memory its length suggests.
std::pair<int, std::uint64_t> in_child(const std::function<int()>& body) {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(body());
    int status = 0;
    struct rusage usage {};
    ::wait4(pid, &status, 0, &usage);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
            static_cast<std::uint64_t>(usage.ru_maxrss) * 1024};
}

std::uint64_t current_rss() {
    long pages = 0, resident = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        std::fclose(f);
    }
    return static_cast<std::uint64_t>(resident) * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

class HugeSparseImage : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have_qemu_img()) GTEST_SKIP() << "precondition: qemu-img (Debian qemu-utils) is not installed";
    }
    /// Our image with some data, then made a sparse file of `length` bytes with the dirty bit
    /// set, as a lazy-refcount writer that crashed might leave it: opening it read-write runs
    /// repair().
    void make(std::uint32_t cluster_bits, std::uint64_t length) {
        auto image = Qcow2Image::create(path, sized(1ull << 30, cluster_bits));
        ASSERT_TRUE(image) << image.error().to_string();
        std::vector<std::uint8_t> data(1 << 20, 0x5c);
        ASSERT_TRUE(write_bytes(**image, 0, data));
        ASSERT_TRUE(write_bytes(**image, 512ull << 20, data));
        ASSERT_TRUE((*image)->close());
        image->reset();
        const int fd = ::open(path.c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(length)), 0)
            << "this filesystem cannot hold a sparse file that long";
        std::uint8_t dirty[8] = {0, 0, 0, 0, 0, 0, 0, 1};
        ASSERT_EQ(::pwrite(fd, dirty, 8, 72), 8);
        ::close(fd);
    }
    TempDir dir;
    std::string path = dir / "huge.qcow2";
};

TEST_F(HugeSparseImage, EightTiBWithDirtyBitIsRepairedInLittleMemory) {
    ASSERT_NO_FATAL_FAILURE(make(16, 8ull << 40));
    const std::uint64_t before = current_rss();
    const auto [code, peak] = in_child([&] {
        auto image = Qcow2Image::open(path);  // the dirty bit: repair() runs here
        if (!image) return 2;
        if ((*image)->info().dirty) return 3;
        auto back = read_bytes(**image, 512ull << 20, 1 << 20);
        if (!back || (*back)[0] != 0x5c || back->back() != 0x5c) return 4;
        auto report = (*image)->check();
        if (!report || !report->clean()) return 5;
        return (*image)->close() ? 0 : 6;
    });
    EXPECT_EQ(code, 0);
    // One 4-byte counter per cluster of the file's length would be 512 MiB here.
    EXPECT_LT(peak, before + (128ull << 20)) << "peak RSS " << (peak >> 20) << " MiB";
    expect_qemu_clean_check(path);
}

TEST_F(HugeSparseImage, TwoTiBOf512ByteClustersIsAnErrorNotACrash) {
    // 2^32 clusters: the dense counter array of the past (16 GiB) threw bad_alloc here.
    ASSERT_NO_FATAL_FAILURE(make(9, 2ull << 40));
    const std::uint64_t before = current_rss();
    const auto [code, peak] = in_child([&] {
        auto image = Qcow2Image::open(path);
        if (image) return 2;  // the refcounts of a 2 TiB file do not fit a refcount table here
        if (image.error().kind() != ErrorKind::Storage ||
            image.error().message().find("refcount table") == std::string::npos)
            return 3;
        auto reader = Qcow2Image::open(path, read_only());
        if (!reader) return 4;
        auto report = (*reader)->check();
        return report && report->clean() ? 0 : 5;
    });
    EXPECT_EQ(code, 0);
    EXPECT_LT(peak, before + (128ull << 20)) << "peak RSS " << (peak >> 20) << " MiB";
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
            const std::uint64_t where = rng() % 3 == 0 ? rng() % 128
                                                       : rng() % std::min<std::uint64_t>(file_size, 8 * 4096);
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
