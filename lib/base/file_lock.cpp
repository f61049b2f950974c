#include "base/file_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

namespace boxlite::base {
namespace {
int operation_of(FileLock::Mode mode) { return mode == FileLock::Mode::Exclusive ? LOCK_EX : LOCK_SH; }
}  // namespace

BoxliteResult<FileLock> FileLock::open(const std::filesystem::path& path, unsigned create_mode) {
    OwnedFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, create_mode));
    if (!fd) return fail_errno(ErrorKind::Storage, fmt::format("opening lock file {}", path.string()), errno);
    return FileLock(std::move(fd), path);
}

BoxliteResult<FileLock> FileLock::acquire(const std::filesystem::path& path, Mode mode) {
    BOXLITE_TRY(auto lock, open(path));
    BOXLITE_TRY_VOID(lock.lock(mode));
    return lock;
}

BoxliteResult<std::optional<FileLock>> FileLock::try_acquire(const std::filesystem::path& path, Mode mode) {
    BOXLITE_TRY(auto lock, open(path));
    BOXLITE_TRY(const bool locked, lock.try_lock(mode));
    if (!locked) return std::optional<FileLock>{};
    return std::optional<FileLock>{std::move(lock)};
}

BoxliteResult<void> FileLock::lock(Mode mode) {
    while (::flock(fd_.get(), operation_of(mode)) != 0) {
        if (errno != EINTR) return fail_errno(ErrorKind::Storage, fmt::format("locking {}", path_.string()), errno);
    }
    return {};
}

BoxliteResult<bool> FileLock::try_lock(Mode mode) {
    while (::flock(fd_.get(), operation_of(mode) | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            (void)::flock(fd_.get(), LOCK_UN);
            return false;
        }
        if (errno != EINTR) return fail_errno(ErrorKind::Storage, fmt::format("locking {}", path_.string()), errno);
    }
    return true;
}

void FileLock::unlock() noexcept { (void)::flock(fd_.get(), LOCK_UN); }

}  // namespace boxlite::base
