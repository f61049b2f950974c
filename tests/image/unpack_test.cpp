// Layer unpacking against hand-made tarballs: OCI semantics (whiteouts, opaque directories,
// hardlinks, symlinks, ownership, modes, xattrs) and hostile layers, which must be refused with an
// Image error and leave nothing behind — inside the target or outside it.
#include "image/unpack.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <support/support.hpp>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace boxlite::image {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

enum class Compression { None, Gzip, Zstd };

// Writes tar layers with libarchive, one entry at a time, exactly as told (no sanitizing).
class Tar {
public:
    Tar& dir(const std::string& path, mode_t mode = 0755, int uid = 0, int gid = 0) {
        entries_.push_back({path, AE_IFDIR, mode, uid, gid, "", "", "", 0, {}});
        return *this;
    }
    Tar& file(const std::string& path, const std::string& content, mode_t mode = 0644, int uid = 0, int gid = 0,
              std::vector<std::pair<std::string, std::string>> xattrs = {}) {
        entries_.push_back({path, AE_IFREG, mode, uid, gid, content, "", "", 0, std::move(xattrs)});
        return *this;
    }
    Tar& symlink(const std::string& path, const std::string& target) {
        entries_.push_back({path, AE_IFLNK, 0777, 0, 0, "", target, "", 0, {}});
        return *this;
    }
    Tar& hardlink(const std::string& path, const std::string& target) {
        entries_.push_back({path, AE_IFREG, 0644, 0, 0, "", "", target, 0, {}});
        return *this;
    }
    Tar& device(const std::string& path, mode_t type) {
        entries_.push_back({path, type, 0600, 0, 0, "", "", "", makedev(1, 3), {}});
        return *this;
    }
    Tar& fifo(const std::string& path) {
        entries_.push_back({path, AE_IFIFO, 0600, 0, 0, "", "", "", 0, {}});
        return *this;
    }

    fs::path write(const fs::path& path, Compression compression = Compression::None) const {
        archive* a = archive_write_new();
        archive_write_set_format_pax_restricted(a);
        if (compression == Compression::Gzip) archive_write_add_filter_gzip(a);
        if (compression == Compression::Zstd) archive_write_add_filter_zstd(a);
        EXPECT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
        for (const auto& e : entries_) {
            archive_entry* entry = archive_entry_new();
            archive_entry_set_pathname(entry, e.path.c_str());
            archive_entry_set_perm(entry, e.mode);
            archive_entry_set_uid(entry, e.uid);
            archive_entry_set_gid(entry, e.gid);
            archive_entry_set_mtime(entry, 1700000000, 0);
            if (!e.hardlink.empty()) {
                archive_entry_set_filetype(entry, AE_IFREG);
                archive_entry_set_hardlink(entry, e.hardlink.c_str());
                archive_entry_set_size(entry, 0);
            } else {
                archive_entry_set_filetype(entry, e.type);
                if (e.type == AE_IFLNK) archive_entry_set_symlink(entry, e.symlink.c_str());
                if (e.type == AE_IFCHR || e.type == AE_IFBLK) archive_entry_set_rdev(entry, e.rdev);
                archive_entry_set_size(entry, static_cast<la_int64_t>(e.content.size()));
            }
            for (const auto& [name, value] : e.xattrs) {
                archive_entry_xattr_add_entry(entry, name.c_str(), value.data(), value.size());
            }
            EXPECT_EQ(archive_write_header(a, entry), ARCHIVE_OK) << archive_error_string(a);
            if (!e.content.empty()) archive_write_data(a, e.content.data(), e.content.size());
            archive_entry_free(entry);
        }
        archive_write_close(a);
        archive_write_free(a);
        return path;
    }

private:
    struct Entry {
        std::string path;
        mode_t type;
        mode_t mode;
        int uid, gid;
        std::string content, symlink, hardlink;
        dev_t rdev;
        std::vector<std::pair<std::string, std::string>> xattrs;
    };
    std::vector<Entry> entries_;
};

std::string read(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

struct stat lstat_of(const fs::path& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st;
}

std::vector<std::string> listing(const fs::path& dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); ++it) {
        out.push_back(fs::relative(it->path(), dir).string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

class Unpack : public ::testing::Test {
protected:
    fs::path layer(const Tar& tar, Compression c = Compression::None) {
        return tar.write(work_.path() / fmt::format("layer{}.tar", counter_++), c);
    }
    BoxliteResult<UnpackStats> unpack(std::vector<fs::path> layers, UnpackLimits limits = {}) {
        return unpack_image(layers, target(), limits);
    }
    fs::path target() const { return work_.path() / "rootfs"; }

    // A hostile layer: Image error naming `needle`, no rootfs, no temporary directory, and the
    // sentinel directory outside the target untouched.
    void expect_refused(std::vector<fs::path> layers, std::string_view needle, UnpackLimits limits = {}) {
        const auto before = listing(outside_.path());
        auto result = unpack(std::move(layers), limits);
        ASSERT_FALSE(result) << "hostile layer was accepted";
        EXPECT_EQ(result.error().kind(), ErrorKind::Image) << result.error().message();
        EXPECT_NE(result.error().message().find(needle), std::string::npos) << result.error().message();
        EXPECT_FALSE(fs::exists(target()));
        for (const auto& entry : fs::directory_iterator(work_.path())) {
            EXPECT_FALSE(entry.path().filename().string().starts_with(".tmp-")) << entry.path();
        }
        EXPECT_EQ(listing(outside_.path()), before);
        EXPECT_EQ(read(outside_.path() / "sentinel"), "untouched");
    }

    void SetUp() override { std::ofstream(outside_.path() / "sentinel") << "untouched"; }

    TempDir work_;
    TempDir outside_;
    int counter_ = 0;
};

TEST_F(Unpack, BuildsTheTreeWithModesOwnersLinksAndXattrs) {
    Tar tar;
    tar.dir("./").dir("./bin").file("./bin/tool", "#!/bin/sh\n", 04755).dir("etc", 0750, 0, 42);
    tar.file("etc/conf", "x=1\n", 0600, 1000, 1001, {{"user.boxlite", "tagged"}});
    tar.symlink("etc/abs-link", "/etc/passwd").symlink("etc/rel-link", "../bin/tool");
    tar.hardlink("bin/tool-hard", "bin/tool");
    tar.device("dev-null", AE_IFCHR).device("dev-sda", AE_IFBLK).fifo("pipe");
    tar.dir("readonly", 0555).file("readonly/inside", "ro");
    auto stats = unpack({layer(tar)});
    ASSERT_TRUE(stats) << stats.error().message();
    EXPECT_EQ(stats->skipped_devices, 2u);

    const auto root = target();
    EXPECT_EQ(read(root / "bin/tool"), "#!/bin/sh\n");
    EXPECT_EQ(read(root / "etc/conf"), "x=1\n");
    EXPECT_EQ(read(root / "readonly/inside"), "ro");
    EXPECT_EQ(lstat_of(root / "readonly").st_mode & 07777, 0555u);
    EXPECT_EQ(lstat_of(root / "etc").st_mode & 07777, 0750u);
    EXPECT_EQ(lstat_of(root / "etc/conf").st_mode & 07777, 0600u);
    EXPECT_EQ(lstat_of(root / "etc").st_mtime, 1700000000);
    if (::geteuid() == 0) {
        EXPECT_EQ(lstat_of(root / "bin/tool").st_mode & 07777, 04755u);
        EXPECT_EQ(lstat_of(root / "etc/conf").st_uid, 1000u);
        EXPECT_EQ(lstat_of(root / "etc/conf").st_gid, 1001u);
        EXPECT_EQ(lstat_of(root / "etc").st_gid, 42u);
    }
    EXPECT_EQ(fs::read_symlink(root / "etc/abs-link"), "/etc/passwd");
    EXPECT_EQ(fs::read_symlink(root / "etc/rel-link"), "../bin/tool");
    EXPECT_EQ(lstat_of(root / "bin/tool-hard").st_ino, lstat_of(root / "bin/tool").st_ino);
    EXPECT_TRUE(S_ISFIFO(lstat_of(root / "pipe").st_mode));
    EXPECT_FALSE(fs::exists(fs::symlink_status(root / "dev-null")));
    EXPECT_FALSE(fs::exists(fs::symlink_status(root / "dev-sda")));

    // user.* xattrs need filesystem support (tmpfs has it since Linux 6.6).
    char value[64] = {0};
    const auto n = ::lgetxattr((root / "etc/conf").c_str(), "user.boxlite", value, sizeof value);
    if (n >= 0) {
        EXPECT_EQ(std::string(value, static_cast<std::size_t>(n)), "tagged");
    } else {
        EXPECT_EQ(errno, ENOTSUP);
    }
}

TEST_F(Unpack, CompressedLayersGiveTheSameTree) {
    Tar tar;
    tar.dir("a").file("a/b", std::string(100000, 'z')).symlink("a/c", "b");
    for (auto c : {Compression::Gzip, Compression::Zstd}) {
        auto stats = unpack({layer(tar, c)});
        ASSERT_TRUE(stats) << stats.error().message();
        EXPECT_EQ(read(target() / "a/b"), std::string(100000, 'z'));
        EXPECT_EQ(stats->bytes, 100000u);
        fs::remove_all(target());
    }
}

TEST_F(Unpack, WhiteoutsAndOpaqueDirectories) {
    Tar base;
    base.dir("data").file("data/keep", "k").file("data/gone", "g").dir("data/gonedir").file("data/gonedir/x", "x");
    base.dir("opq").file("opq/old", "o").dir("opq/sub").file("opq/sub/deep", "d");
    base.file("replaced-by-dir", "f").dir("replaced-by-file").file("replaced-by-file/x", "x");
    base.file("shared", "original").hardlink("shared-link", "shared");
    Tar upper;
    upper.file("data/.wh.gone", "").file("data/.wh.gonedir", "").file("data/.wh.never-existed", "");
    // The opaque marker may come after entries of the same layer: those stay.
    upper.dir("opq").file("opq/early", "e").file("opq/.wh..wh..opq", "").file("opq/late", "l");
    upper.dir("replaced-by-dir").file("replaced-by-dir/y", "y").file("replaced-by-file", "now a file");
    upper.file("shared", "rewritten");
    upper.file(".wh..wh.plnk", "");  // aufs bookkeeping: ignored
    auto stats = unpack({layer(base), layer(upper)});
    ASSERT_TRUE(stats) << stats.error().message();
    const auto root = target();
    EXPECT_EQ(read(root / "data/keep"), "k");
    EXPECT_FALSE(fs::exists(root / "data/gone"));
    EXPECT_FALSE(fs::exists(root / "data/gonedir"));
    EXPECT_FALSE(fs::exists(root / "data/.wh.gone"));
    EXPECT_EQ(listing(root / "opq"), (std::vector<std::string>{"early", "late"}));
    EXPECT_EQ(read(root / "replaced-by-dir/y"), "y");
    EXPECT_EQ(read(root / "replaced-by-file"), "now a file");
    // Writing a path never writes through a hardlink shared with another path.
    EXPECT_EQ(read(root / "shared"), "rewritten");
    EXPECT_EQ(read(root / "shared-link"), "original");
    EXPECT_FALSE(fs::exists(root / ".wh..wh.plnk"));
    EXPECT_EQ(stats->whiteouts, 5u);
}

TEST_F(Unpack, RefusesParentDirectoryPaths) {
    expect_refused({layer(Tar().file("../escaped", "x"))}, "contains '..'");
    expect_refused({layer(Tar().dir("a").file("a/../../escaped", "x"))}, "contains '..'");
}

TEST_F(Unpack, RefusesAbsolutePaths) {
    expect_refused({layer(Tar().file((outside_.path() / "abs").string(), "x"))}, "absolute path");
}

TEST_F(Unpack, RefusesWritingThroughSymlinks) {
    // An absolute symlink to a host directory, then a file "inside" it.
    expect_refused({layer(Tar().symlink("evil", outside_.path().string()).file("evil/pwned", "x"))}, "symlink 'evil'");
    // A relative one climbing out.
    expect_refused({layer(Tar().symlink("up", "../../../../../../..").file("up/tmp/pwned", "x"))}, "symlink 'up'");
    // Across layers: the symlink comes from a lower layer.
    expect_refused({layer(Tar().symlink("lower", outside_.path().string())), layer(Tar().file("lower/pwned", "x"))},
                   "symlink 'lower'");
    // Whiteouts and opaque markers through a symlink must not delete outside files.
    expect_refused({layer(Tar().symlink("wh", outside_.path().string()).file("wh/.wh.sentinel", ""))}, "symlink 'wh'");
    expect_refused({layer(Tar().symlink("op", outside_.path().string()).file("op/.wh..wh..opq", ""))}, "symlink 'op'");
    // A directory entry through a symlink.
    expect_refused({layer(Tar().symlink("d", outside_.path().string()).dir("d/newdir"))}, "symlink 'd'");
}

TEST_F(Unpack, ReplacingASymlinkDoesNotFollowIt) {
    // A file entry at the path of an existing symlink replaces the link, never its target.
    auto ok = unpack(
        {layer(Tar().symlink("link", (outside_.path() / "sentinel").string())), layer(Tar().file("link", "replaced"))});
    ASSERT_TRUE(ok) << ok.error().message();
    EXPECT_EQ(read(target() / "link"), "replaced");
    EXPECT_FALSE(fs::is_symlink(target() / "link"));
    EXPECT_EQ(read(outside_.path() / "sentinel"), "untouched");
}

TEST_F(Unpack, RefusesHardlinksLeadingOutside) {
    expect_refused({layer(Tar().hardlink("stolen", "../../../../etc/passwd"))}, "contains '..'");
    expect_refused({layer(Tar().hardlink("stolen", (outside_.path() / "sentinel").string()))}, "absolute path");
    expect_refused({layer(Tar().symlink("s", outside_.path().string()).hardlink("stolen", "s/sentinel"))},
                   "symlink 's'");
    expect_refused({layer(Tar().hardlink("dangling", "does/not/exist"))}, "does not exist");
}

TEST_F(Unpack, RefusesAbsurdSizes) {
    UnpackLimits small;
    small.max_entry_bytes = 1000;
    expect_refused({layer(Tar().file("big", std::string(2000, 'x')))}, "claims 2000 bytes", small);
    UnpackLimits total;
    total.max_total_bytes = 3000;
    expect_refused({layer(Tar().file("a", std::string(2000, 'x')).file("b", std::string(2000, 'x')))},
                   "more than 3000 bytes", total);
    UnpackLimits entries;
    entries.max_entries = 3;
    expect_refused({layer(Tar().dir("a").dir("b").dir("c").dir("d"))}, "more than 3 entries", entries);
    UnpackLimits path_limit;
    path_limit.max_path_length = 64;
    expect_refused({layer(Tar().file(std::string(100, 'p'), "x"))}, "longer than 64", path_limit);

    // A hand-written ustar header claiming 1 TiB of data that is not there.
    std::string header(512, '\0');
    std::memcpy(header.data(), "huge", 4);
    std::memcpy(header.data() + 100, "0000644", 7);
    std::memcpy(header.data() + 108, "0000000", 7);
    std::memcpy(header.data() + 116, "0000000", 7);
    // Size in GNU base-256 form: 0x80 flag, then big-endian 2^40 (1 TiB).
    header[124] = static_cast<char>(0x80);
    header[135 - 5] = 1;
    std::memcpy(header.data() + 136, "00000000000", 11);
    header[156] = '0';
    std::memcpy(header.data() + 257, "ustar", 6);
    std::memcpy(header.data() + 263, "00", 2);
    std::memset(header.data() + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : header) sum += c;
    std::snprintf(header.data() + 148, 8, "%06o", sum);
    const auto path = work_.path() / "absurd.tar";
    std::ofstream(path, std::ios::binary) << header << std::string(1024, '\0');
    expect_refused({path}, "refused as hostile");
}

TEST_F(Unpack, FailureLeavesNothingBehind) {
    // The first layer is fine, the second hostile: the partly built tree must vanish.
    expect_refused({layer(Tar().dir("ok").file("ok/file", "fine")), layer(Tar().file("../bad", "x"))}, "contains '..'");
    expect_refused({work_.path() / "missing.tar"}, "cannot open");
    std::ofstream(work_.path() / "garbage.tar") << std::string(4096, 'G');
    expect_refused({work_.path() / "garbage.tar"}, "layer");
}

}  // namespace
}  // namespace boxlite::image
