// The tar extractor against hand-made hostile archives: no metadata call may follow a symlink the
// archive planted, hard links may only alias files the same extraction created, and without
// ownership (copy_out, run as the host's root) no setuid/setgid file comes out.
#include "protocol/tar.hpp"

#include "raw_tar.hpp"
#include "support/support.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

using namespace boxlite;
using boxlite::test::extract_archive;
using boxlite::test::RawTar;
namespace fs = std::filesystem;

namespace {

struct stat lstat_of(const fs::path& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st;
}

mode_t mode_of(const fs::path& path) { return lstat_of(path).st_mode & 07777; }

/// A host file the archive must never touch: mode, owner, mtime and content recorded.
class Victim {
public:
    explicit Victim(const fs::path& path) : path_(path) {
        test::write_file(path_, "secret");
        ::chmod(path_.c_str(), 0600);
        const struct timespec times[2] = {{12345, 0}, {12345, 0}};
        ::utimensat(AT_FDCWD, path_.c_str(), times, 0);
        before_ = lstat_of(path_);
    }
    void expect_untouched() const {
        const auto now = lstat_of(path_);
        EXPECT_EQ(now.st_mode, before_.st_mode) << path_ << " mode changed";
        EXPECT_EQ(now.st_uid, before_.st_uid) << path_ << " owner changed";
        EXPECT_EQ(now.st_gid, before_.st_gid) << path_ << " group changed";
        EXPECT_EQ(now.st_mtime, before_.st_mtime) << path_ << " mtime changed";
        EXPECT_EQ(test::read_file(path_), "secret");
    }
    [[nodiscard]] const fs::path& path() const { return path_; }

private:
    fs::path path_;
    struct stat before_ {};
};

TEST(TarHostile, DirectoryModeIsNotAppliedThroughALaterSymlink) {
    // `d/` (mode 0777, applied at the end) then `d -> <victim>`: the deferred chmod used to follow
    // the symlink and chmod a file outside the target (as the host's root during copy_out).
    test::TempDir dst, outside;
    Victim victim(outside.path() / "shadow");
    const auto archive = RawTar{}.dir("d/", 0777).symlink("d", victim.path().string()).finish();
    ASSERT_TRUE(extract_archive(archive, dst.path()));
    EXPECT_TRUE(fs::is_symlink(dst.path() / "d"));
    victim.expect_untouched();
}

TEST(TarHostile, NestedDirectoryReplacedBySymlinkToADirectory) {
    test::TempDir dst, outside;
    ::chmod(outside.path().c_str(), 0700);
    const auto archive = RawTar{}.dir("p/q/", 0777).symlink("p/q", outside.path().string()).finish();
    ASSERT_TRUE(extract_archive(archive, dst.path()));
    EXPECT_EQ(mode_of(outside.path()), 0700U);
}

TEST(TarHostile, OwnerAndMtimeAreNotAppliedThroughALaterSymlink) {
    if (!test::is_root()) GTEST_SKIP() << "precondition: not root (chown of extracted entries)";
    test::TempDir dst, outside;
    Victim victim(outside.path() / "passwd");
    RawTar::Meta owned{0777, 4321, 4321, 1};
    const auto archive = RawTar{}.dir("d/", 0777, owned).symlink("d", victim.path().string(), owned).finish();
    ASSERT_TRUE(extract_archive(archive, dst.path(), {std::nullopt, true}));
    victim.expect_untouched();
    // The symlink itself did get the archive's owner and mtime.
    const auto link = lstat_of(dst.path() / "d");
    EXPECT_EQ(link.st_uid, 4321U);
    EXPECT_EQ(link.st_mtime, 1);
}

TEST(TarHostile, SymlinkMetadataNeverFollowsTheLink) {
    test::TempDir dst, outside;
    Victim victim(outside.path() / "target");
    ASSERT_TRUE(extract_archive(RawTar{}.symlink("s", victim.path().string(), {0777, 0, 0, 7}).finish(), dst.path(),
                                {std::nullopt, test::is_root()}));
    victim.expect_untouched();
    EXPECT_EQ(lstat_of(dst.path() / "s").st_mtime, 7);
}

TEST(TarHostile, DirectoryReplacedByAFileKeepsTheFilesMode) {
    test::TempDir dst;
    const auto archive = RawTar{}.dir("d/", 0777).file("d", "x", 0600).finish();
    ASSERT_TRUE(extract_archive(archive, dst.path()));
    EXPECT_TRUE(fs::is_regular_file(dst.path() / "d"));
    EXPECT_EQ(mode_of(dst.path() / "d"), 0600U);
}

TEST(TarHostile, IntermediateDirectoriesAreNotCreatedThroughASymlink) {
    test::TempDir dst, outside;
    const auto archive = RawTar{}.symlink("l", outside.path().string()).file("l/sub/file", "x").finish();
    auto result = extract_archive(archive, dst.path());
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(result.error().message().find("symlink"), std::string::npos) << result.error().to_string();
    EXPECT_FALSE(fs::exists(outside.path() / "sub"));
}

TEST(TarHostile, HardLinkToAFileThatWasThereBeforeIsRefused) {
    // A link to a file already in the destination would alias it under a name the archive
    // controls; only files this extraction wrote may be linked.
    test::TempDir dst;
    test::write_file(dst.path() / "existing", "host data");
    auto result = extract_archive(RawTar{}.hardlink("alias", "existing").finish(), dst.path());
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(result.error().message().find("extracted earlier"), std::string::npos) << result.error().to_string();
    EXPECT_FALSE(fs::exists(dst.path() / "alias"));
    EXPECT_EQ(lstat_of(dst.path() / "existing").st_nlink, 1U);
}

TEST(TarHostile, HardLinkToAnExtractedFileWorks) {
    test::TempDir dst;
    ASSERT_TRUE(
        extract_archive(RawTar{}.file("dir/a", "alpha").hardlink("dir/b", "dir/a").hardlink("c", "dir/b").finish(),
                        dst.path()));
    EXPECT_EQ(test::read_file(dst.path() / "c"), "alpha");
    EXPECT_EQ(lstat_of(dst.path() / "dir/a").st_ino, lstat_of(dst.path() / "c").st_ino);
    EXPECT_EQ(lstat_of(dst.path() / "dir/a").st_nlink, 3U);
}

TEST(TarHostile, HardLinkToAnExtractedFileReplacedBySymlinkIsRefused) {
    test::TempDir dst, outside;
    Victim victim(outside.path() / "victim");
    const auto archive = RawTar{}.file("f", "mine").symlink("f", victim.path().string()).hardlink("alias", "f").finish();
    auto result = extract_archive(archive, dst.path());
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message().find("extracted earlier"), std::string::npos) << result.error().to_string();
    EXPECT_FALSE(fs::exists(dst.path() / "alias"));
    victim.expect_untouched();
    EXPECT_EQ(lstat_of(victim.path()).st_nlink, 1U);
}

TEST(TarHostile, HardLinkThroughASymlinkedParentIsRefused) {
    test::TempDir dst, outside;
    Victim victim(outside.path() / "victim");
    // The link target's path goes through a planted symlink to where a same-named file waits:
    // neither the walk nor the link may reach it.
    test::write_file(outside.path() / "f", "outside");
    const auto archive =
        RawTar{}.file("d/f", "mine").symlink("e", outside.path().string()).hardlink("alias", "e/f").finish();
    auto result = extract_archive(archive, dst.path());
    ASSERT_FALSE(result);
    EXPECT_FALSE(fs::exists(dst.path() / "alias"));
    EXPECT_EQ(lstat_of(outside.path() / "f").st_nlink, 1U);
}

TEST(TarHostile, SetuidAndSetgidAreDroppedWithoutOwnership) {
    test::TempDir dst;
    const auto archive = RawTar{}
                             .file("suid", "#!/bin/sh\n", 04755)
                             .file("sgid", "x", 02755)
                             .file("sticky-file", "x", 01644)
                             .dir("sgid-dir/", 02775)
                             .dir("sticky-dir/", 01777)
                             .finish();
    ASSERT_TRUE(extract_archive(archive, dst.path(), {std::nullopt, false}));
    EXPECT_EQ(mode_of(dst.path() / "suid"), 0755U);
    EXPECT_EQ(mode_of(dst.path() / "sgid"), 0755U);
    EXPECT_EQ(mode_of(dst.path() / "sticky-file"), 0644U);
    EXPECT_EQ(mode_of(dst.path() / "sgid-dir"), 0775U);
    EXPECT_EQ(mode_of(dst.path() / "sticky-dir"), 01777U) << "sticky stays on directories (/tmp-like)";
}

TEST(TarHostile, SetuidIsKeptWhenOwnershipIsPreserved) {
    if (!test::is_root()) GTEST_SKIP() << "precondition: not root (preserving ownership)";
    test::TempDir dst;
    const auto archive = RawTar{}.file("suid", "x", 04755, {0, 1234, 1234, 5}).finish();
    ASSERT_TRUE(extract_archive(archive, dst.path(), {std::nullopt, true}));
    const auto st = lstat_of(dst.path() / "suid");
    EXPECT_EQ(st.st_mode & 07777, 04755U) << "chown before chmod, or the kernel clears the bit";
    EXPECT_EQ(st.st_uid, 1234U);
    EXPECT_EQ(st.st_mtime, 5);
}

TEST(TarHostile, DotEntryDoesNotChangeTheDestination) {
    test::TempDir dst;
    ::chmod(dst.path().c_str(), 0700);
    ASSERT_TRUE(extract_archive(RawTar{}.dir("./", 0777).dir(".", 0777).finish(), dst.path()));
    EXPECT_EQ(mode_of(dst.path()), 0700U);
}

TEST(TarHostile, MissingDestinationIsAStorageError) {
    test::TempDir dst;
    auto result = extract_archive(RawTar{}.file("f", "x").finish(), dst.path() / "missing");
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().kind(), ErrorKind::Storage);
    EXPECT_EQ(result.error().to_string().find("box not found"), std::string::npos) << result.error().to_string();
}

}  // namespace
