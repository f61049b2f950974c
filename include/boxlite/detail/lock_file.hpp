// An exclusive advisory lock (flock) on a file, held while the object lives: how processes that
// share a home serialize lifecycle operations on one box. Compiled in the library
// (lib/core/process.cpp).
#pragma once

#include <boxlite/error.hpp>

#include <filesystem>
#include <optional>
#include <utility>

namespace boxlite::detail {

class LockFile {
public:
    /// Opens (creating it 0600 when missing) and locks `path`. Waits for the lock when `wait`;
    /// otherwise nullopt when another process or open file description holds it.
    [[nodiscard]] static BoxliteResult<std::optional<LockFile>> acquire(const std::filesystem::path& path, bool wait);

    LockFile(LockFile&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    LockFile& operator=(LockFile&& other) noexcept {
        if (this != &other) {
            release();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    LockFile(const LockFile&) = delete;
    LockFile& operator=(const LockFile&) = delete;
    ~LockFile() { release(); }

    /// The locked file's descriptor: a process that inherits it shares the lock, which then
    /// lasts until every holder has closed it or died.
    [[nodiscard]] int fd() const noexcept { return fd_; }

private:
    explicit LockFile(int fd) noexcept : fd_(fd) {}
    void release() noexcept;  // closes the file, which drops the lock
    int fd_ = -1;
};

}  // namespace boxlite::detail
