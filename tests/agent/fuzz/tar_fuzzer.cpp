// libFuzzer target: the tar extractor over arbitrary archives, really extracting them.
//
// The extractor writes files, so the fuzzer first locks itself into a scratch root (chroot; in
// a new user namespace when not root): a bug that follows a planted symlink to /etc/shadow then
// lands on the jail's own sentinel files instead of the host's. After every input it checks
// that nothing outside the extraction target changed (sentinels keep mode, mtime and content; no
// new entries beside the target) and, without preserve_owner, that no setuid/setgid file came
// out; any violation aborts, which libFuzzer reports as a crash.
//
// The jail is $BOXLITE_TAR_FUZZ_JAIL (the runner's work dir) or a fresh /tmp directory. The
// working directory is left outside the jail on purpose: libFuzzer's corpus and crash files are
// relative paths (the runner cds into its work dir), the extractor only uses absolute ones.
#include "protocol/tar.hpp"

#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <set>
#include <string>

namespace {

constexpr const char* kTarget = "/t";
constexpr const char* kSentinelFile = "/sentinel";
constexpr const char* kSentinelDir = "/sentinel-dir";
constexpr const char* kSentinelContent = "do not touch";

void die(const char* what) {
    std::fprintf(stderr, "tar_fuzzer: %s: %s\n", what, std::strerror(errno));
    std::abort();
}

void write_text(const char* path, const std::string& text) {
    const int fd = ::open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) die(path);
    ::close(fd);
}

void enter_jail() {
    std::string jail;
    if (const char* given = std::getenv("BOXLITE_TAR_FUZZ_JAIL")) {
        jail = given;
        ::mkdir(jail.c_str(), 0700);
    } else {
        char pattern[] = "/tmp/boxlite-tar-fuzz-XXXXXX";
        if (::mkdtemp(pattern) == nullptr) die("mkdtemp");
        jail = pattern;
    }
    if (::geteuid() != 0) {
        const auto uid = ::geteuid();
        const auto gid = ::getegid();
        if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            die("unshare (a user namespace is needed to confine the fuzzer)");
        write_text("/proc/self/setgroups", "deny");
        write_text("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1");
        write_text("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1");
    }
    if (::chroot(jail.c_str()) != 0) die("chroot");
    // Sentinels: what a symlink-following bug would hit ("/etc/shadow" inside the jail too).
    ::mkdir("/etc", 0755);
    for (const char* path : {kSentinelFile, "/etc/shadow"}) {
        const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (fd < 0 || ::write(fd, kSentinelContent, std::strlen(kSentinelContent)) < 0) die(path);
        ::fchmod(fd, 0640);
        const struct timespec times[2] = {{1000, 0}, {1000, 0}};
        ::futimens(fd, times);
        ::close(fd);
    }
    ::mkdir(kSentinelDir, 0750);
    ::chmod(kSentinelDir, 0750);
}

void check_untouched(const char* path, mode_t type, mode_t mode) {
    struct stat st {};
    if (::lstat(path, &st) != 0) die(path);
    if ((st.st_mode & S_IFMT) != type || (st.st_mode & 07777) != mode) {
        std::fprintf(stderr, "tar_fuzzer: %s changed: mode %o\n", path, st.st_mode);
        std::abort();
    }
    if (type == S_IFREG) {
        char buf[64] = {};
        const int fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        const auto n = fd >= 0 ? ::read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0) ::close(fd);
        if (n < 0 || std::strcmp(buf, kSentinelContent) != 0 || st.st_mtime != 1000) {
            std::fprintf(stderr, "tar_fuzzer: %s content or mtime changed\n", path);
            std::abort();
        }
    }
}

void check_outside() {
    check_untouched(kSentinelFile, S_IFREG, 0640);
    check_untouched("/etc/shadow", S_IFREG, 0640);
    check_untouched(kSentinelDir, S_IFDIR, 0750);
    static const std::set<std::string> allowed{".", "..", "t", "sentinel", "sentinel-dir", "etc"};
    for (const char* dir : {"/", "/etc", kSentinelDir}) {
        DIR* d = ::opendir(dir);
        if (d == nullptr) die(dir);
        while (auto* entry = ::readdir(d)) {
            const std::string name = entry->d_name;
            const bool ok = std::string(dir) == "/"
                                ? allowed.count(name) != 0
                                : name == "." || name == ".." || (std::string(dir) == "/etc" && name == "shadow");
            if (!ok) {
                std::fprintf(stderr, "tar_fuzzer: '%s' appeared in %s, outside the target\n", name.c_str(), dir);
                std::abort();
            }
        }
        ::closedir(d);
    }
}

bool g_preserve_owner = false;

int check_entry(const char* path, const struct stat* st, int, struct FTW*) {
    if (!g_preserve_owner && (st->st_mode & (S_ISUID | S_ISGID)) != 0) {
        std::fprintf(stderr, "tar_fuzzer: %s has setuid/setgid without preserve_owner\n", path);
        std::abort();
    }
    if (!S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode) && (st->st_mode & S_ISVTX) != 0) {
        std::fprintf(stderr, "tar_fuzzer: %s is a sticky non-directory\n", path);
        std::abort();
    }
    return 0;
}

int make_removable(const char* path, const struct stat* st, int, struct FTW*) {
    if (S_ISDIR(st->st_mode)) ::chmod(path, 0700);
    return 0;
}

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
    ::remove(path);
    return 0;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    enter_jail();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // The first byte picks the options; the rest is the archive.
    const std::uint8_t flags = size > 0 ? data[0] : 0;
    if (size > 0) {
        ++data;
        --size;
    }
    g_preserve_owner = (flags & 1U) != 0;
    std::optional<std::string> rename_top;
    if ((flags & 2U) != 0) rename_top = "renamed";

    if (::mkdir(kTarget, 0755) != 0) die("mkdir target");
    std::size_t offset = 0;
    boxlite::tar::Extractor extractor(
        [&](std::span<std::byte> buf) -> boxlite::BoxliteResult<std::size_t> {
            // Uneven reads, as a socket gives them.
            const auto n = std::min({buf.size(), size - offset, std::size_t{1} + (offset * 7919U) % 1500U});
            std::memcpy(buf.data(), data + offset, n);
            offset += n;
            return n;
        },
        boxlite::tar::ExtractOptions{rename_top, g_preserve_owner});
    (void)extractor.extract_to(kTarget);

    check_outside();
    ::nftw(kTarget, check_entry, 16, FTW_PHYS);
    ::nftw(kTarget, make_removable, 16, FTW_PHYS);
    ::nftw(kTarget, remove_entry, 16, FTW_PHYS | FTW_DEPTH);
    return 0;
}
