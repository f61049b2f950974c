// A log file that never grows past a cap: when the next write would take `path` over
// `max_bytes`, it is renamed to `path.1` (replacing the previous one) and a new `path` begins.
// So a box that floods its log costs the host at most twice the cap. Used for agent.log (the
// agent's stdout and stderr reach it only through a pipe the shim reads) and console.log.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace boxlite::shim {

class CappedLog {
public:
    /// The default cap (BoxliteOptions has none yet: the engines pass --log-max-bytes).
    static constexpr std::uint64_t kDefaultMaxBytes = 4ULL << 20;

    CappedLog() = default;
    CappedLog(const CappedLog&) = delete;
    CappedLog& operator=(const CappedLog&) = delete;
    ~CappedLog() { close(); }

    /// Opens (appends to) `path`; false with errno set if it cannot be opened.
    bool open(std::string path, std::uint64_t max_bytes, mode_t mode = 0600) {
        path_ = std::move(path);
        max_bytes_ = max_bytes == 0 ? 1 : max_bytes;
        mode_ = mode;
        return reopen();
    }

    [[nodiscard]] bool is_open() const noexcept { return fd_ >= 0; }
    [[nodiscard]] int fd() const noexcept { return fd_; }

    /// Appends `data`, rotating first where it would not fit. Errors are dropped: a full host
    /// disk must not stop the box.
    void write(const char* data, std::size_t size) {
        while (size > 0 && fd_ >= 0) {
            if (size_ >= max_bytes_) rotate();
            if (fd_ < 0) return;
            const auto room = static_cast<std::size_t>(max_bytes_ - size_);
            const auto chunk = size < room ? size : room;
            const auto n = ::write(fd_, data, chunk);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return;
            size_ += static_cast<std::uint64_t>(n);
            data += n;
            size -= static_cast<std::size_t>(n);
        }
    }

    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    bool reopen() {
        close();
        fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, mode_);
        if (fd_ < 0) return false;
        struct stat st {};
        size_ = ::fstat(fd_, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
        return true;
    }

    void rotate() {
        close();
        (void)std::rename(path_.c_str(), (path_ + ".1").c_str());
        (void)reopen();
    }

    std::string path_;
    std::uint64_t max_bytes_ = kDefaultMaxBytes;
    mode_t mode_ = 0600;
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

}  // namespace boxlite::shim
