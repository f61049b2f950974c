// FileLock: an flock(2) on a lock file, shared or exclusive, blocking or not, released when the
// FileLock goes away. flock locks belong to the open file description, so two FileLocks on one
// file conflict even inside one process, and nothing else this process opens or closes on the
// file disturbs them.
#pragma once

#include "base/fd.hpp"

#include <boxlite/error.hpp>

#include <filesystem>
#include <optional>

namespace boxlite::base {

class FileLock {
public:
    enum class Mode { Shared, Exclusive };

    /// Opens (creating it with `create_mode` when missing) `path` without locking it yet.
    [[nodiscard]] static BoxliteResult<FileLock> open(const std::filesystem::path& path, unsigned create_mode = 0644);
    /// Opens `path` and blocks until the lock is granted.
    [[nodiscard]] static BoxliteResult<FileLock> acquire(const std::filesystem::path& path, Mode mode);
    /// Opens `path` and tries once: nullopt when another holder conflicts.
    [[nodiscard]] static BoxliteResult<std::optional<FileLock>> try_acquire(const std::filesystem::path& path,
                                                                            Mode mode);

    /// Blocks until `mode` is granted (converting a lock already held).
    BoxliteResult<void> lock(Mode mode);
    /// One non-blocking attempt; false when another holder conflicts. Converting shared to
    /// exclusive is not atomic (flock(2)): when it fails, the shared lock is gone too, so the
    /// caller then holds nothing.
    BoxliteResult<bool> try_lock(Mode mode);
    void unlock() noexcept;
    /// Gives up the descriptor, and with it the lock it holds: closing it releases the lock.
    [[nodiscard]] int release() noexcept { return fd_.release(); }

    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

private:
    FileLock(OwnedFd fd, std::filesystem::path path) : fd_(std::move(fd)), path_(std::move(path)) {}
    OwnedFd fd_;
    std::filesystem::path path_;
};

}  // namespace boxlite::base
