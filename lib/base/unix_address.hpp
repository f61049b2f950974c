// UnixAddress: a Unix socket address for a path of any length. sockaddr_un holds 107 bytes of
// path, so a home directory deep in a CI checkout would make every box unreachable. A longer path
// is reached through its directory instead: the directory is opened (O_PATH) and the address is
// "/proc/self/fd/<n>/<name>", which bind() and connect() resolve like any other path. The
// directory descriptor lives as long as the UnixAddress. Header-only: the static guest agent and
// the shims use it without linking the library.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>
#include <string>

#include "base/fd.hpp"

namespace boxlite::base {

class UnixAddress {
public:
    /// Fills `out` for `path`. On failure returns false and says why in `error`.
    static bool make(const std::string& path, UnixAddress& out, std::string& error) {
        out.directory_.reset();
        out.address_ = sockaddr_un{};
        out.address_.sun_family = AF_UNIX;
        if (path.empty() || path.find('\0') != std::string::npos) {
            error = "a Unix socket path must be a non-empty path without NUL bytes";
            return false;
        }
        if (path.size() < sizeof out.address_.sun_path) {
            std::memcpy(out.address_.sun_path, path.c_str(), path.size() + 1);
            return true;
        }
        const auto slash = path.find_last_of('/');
        const std::string directory = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
        const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
        if (name.empty()) {
            error = "Unix socket path '" + path + "' ends in '/'";
            return false;
        }
        const int fd = ::open(directory.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            error = "opening the folder of Unix socket '" + path + "': " + std::strerror(errno);
            return false;
        }
        out.directory_.reset(fd);
        const std::string short_path = "/proc/self/fd/" + std::to_string(fd) + "/" + name;
        if (short_path.size() >= sizeof out.address_.sun_path) {
            error = "the name of Unix socket '" + path + "' is longer than " +
                    std::to_string(sizeof out.address_.sun_path - 30) + " bytes";
            out.directory_.reset();
            return false;
        }
        std::memcpy(out.address_.sun_path, short_path.c_str(), short_path.size() + 1);
        return true;
    }

    [[nodiscard]] const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&address_); }
    [[nodiscard]] socklen_t size() const noexcept { return sizeof address_; }
    /// True when the path went through its directory's descriptor (it was too long to use as is).
    [[nodiscard]] bool indirect() const noexcept { return directory_.valid(); }

private:
    sockaddr_un address_{};
    OwnedFd directory_;
};

}  // namespace boxlite::base
