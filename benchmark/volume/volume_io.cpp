// The workload of benchmark/volume: one operation on one path, timed from its first system call
// to its last, printed as "<nanoseconds> <amount>". Static, so a busybox box can run it.
//
//   volume_io write FILE MIB    write MIB MiB in 1 MiB blocks, then fdatasync
//   volume_io read FILE         drop the file's cached pages (posix_fadvise), read it in 1 MiB blocks
//   volume_io populate DIR N    N files of 512 bytes in folders of 100 (untimed set-up)
//   volume_io walk DIR          every entry below DIR, each fstatat'ed (what `find -ls` does)
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

int fail(const std::string& what) {
    std::fprintf(stderr, "volume_io: %s: %s\n", what.c_str(), std::strerror(errno));
    return 1;
}

long long now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

constexpr std::size_t kBlock = 1 << 20;

int write_file(const char* path, long long mib) {
    std::vector<char> block(kBlock, 'v');
    const long long t0 = now_ns();
    const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return fail(std::string("open ") + path);
    for (long long i = 0; i < mib; ++i) {
        std::size_t done = 0;
        while (done < kBlock) {
            const auto n = ::write(fd, block.data() + done, kBlock - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return fail(std::string("write ") + path);
            done += static_cast<std::size_t>(n);
        }
    }
    if (::fdatasync(fd) != 0) return fail(std::string("fdatasync ") + path);
    ::close(fd);
    std::printf("%lld %lld\n", now_ns() - t0, mib << 20);
    return 0;
}

int read_file(const char* path) {
    std::vector<char> block(kBlock);
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(std::string("open ") + path);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // from the disk, not the page cache
    const long long t0 = now_ns();
    long long total = 0;
    while (true) {
        const auto n = ::read(fd, block.data(), kBlock);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(std::string("read ") + path);
        if (n == 0) break;
        total += n;
    }
    ::close(fd);
    std::printf("%lld %lld\n", now_ns() - t0, total);
    return 0;
}

int populate(const std::string& dir, long long count) {
    std::string content(512, 'f');
    for (long long i = 0; i < count; ++i) {
        const auto sub = dir + "/d" + std::to_string(i / 100);
        if (i % 100 == 0 && ::mkdir(sub.c_str(), 0755) != 0 && errno != EEXIST) return fail("mkdir " + sub);
        const auto file = sub + "/f" + std::to_string(i);
        const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size()))
            return fail("writing " + file);
        ::close(fd);
    }
    std::printf("0 %lld\n", count);
    return 0;
}

/// Entries below the open folder `fd` (closed here), each fstatat'ed; -1 on error.
long long walk(int fd) {
    DIR* dir = ::fdopendir(fd);
    if (dir == nullptr) return -1;
    long long count = 0;
    while (const dirent* entry = ::readdir(dir)) {
        if (std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0) continue;
        struct stat st {};
        if (::fstatat(::dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            ::closedir(dir);
            return -1;
        }
        ++count;
        if (S_ISDIR(st.st_mode)) {
            const int child = ::openat(::dirfd(dir), entry->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            const long long below = child < 0 ? -1 : walk(child);
            if (below < 0) {
                ::closedir(dir);
                return -1;
            }
            count += below;
        }
    }
    ::closedir(dir);
    return count;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string op = argc > 1 ? argv[1] : "";
    if (op == "write" && argc == 4) return write_file(argv[2], std::atoll(argv[3]));
    if (op == "read" && argc == 3) return read_file(argv[2]);
    if (op == "populate" && argc == 4) return populate(argv[2], std::atoll(argv[3]));
    if (op == "walk" && argc == 3) {
        const long long t0 = now_ns();
        const int fd = ::open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        const long long count = fd < 0 ? -1 : walk(fd);
        if (count < 0) return fail(std::string("walking ") + argv[2]);
        std::printf("%lld %lld\n", now_ns() - t0, count);
        return 0;
    }
    std::fprintf(stderr, "usage: volume_io write FILE MIB | read FILE | populate DIR N | walk DIR\n");
    return 2;
}
