// The POSIX plumbing behind the public headers' declarations: process identity and signals
// (detail/process.hpp) and the box lock file (detail/lock_file.hpp). Kept here so that no public
// header includes a system header.
#include "base/file_lock.hpp"

#include <boxlite/detail/lock_file.hpp>
#include <boxlite/detail/process.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace boxlite {
namespace detail {

std::int32_t current_process_id() noexcept { return static_cast<std::int32_t>(::getpid()); }

std::optional<std::uint64_t> process_start_time(std::int32_t pid) {
    if (pid <= 0) return std::nullopt;
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(in, line)) return std::nullopt;
    // The command name (field 2) is in parentheses and may contain spaces or ')': skip past
    // the last ')'.
    const auto close = line.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream rest(line.substr(close + 1));
    std::string field;
    // After ')': field 3 (state) is the first token; the start time is field 22.
    for (int index = 3; index <= 22; ++index) {
        if (!(rest >> field)) return std::nullopt;
        if (index == 3 && (field == "Z" || field == "X")) return std::nullopt;
    }
    try {
        return static_cast<std::uint64_t>(std::stoull(field));
    } catch (...) {
        return std::nullopt;
    }
}

bool process_alive(std::int32_t pid, std::uint64_t start_time) {
    const auto actual = process_start_time(pid);
    if (!actual) return false;
    return start_time == 0 || *actual == start_time;
}

bool wait_for_exit(std::int32_t pid, std::uint64_t start_time, std::chrono::steady_clock::time_point deadline) {
    using Clock = std::chrono::steady_clock;
    if (pid <= 0) return true;
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    // Identity is checked after the pidfd is open: if the pid had been reused before, the start
    // time differs and the (wrong) process is never waited for.
    if (!process_alive(pid, start_time)) {
        if (fd >= 0) ::close(fd);
        return true;
    }
    if (fd >= 0) {
        while (Clock::now() < deadline) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            pollfd p{fd, POLLIN, 0};
            const int r = ::poll(&p, 1, static_cast<int>(std::clamp<long long>(left, 1, 60'000)));
            if (r > 0 || (r < 0 && errno != EINTR)) break;
        }
        ::close(fd);
    }
    // Exited but not yet reaped counts as gone (a zombie has no start time above).
    while (process_alive(pid, start_time)) {
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(fd >= 0 ? 1 : 2));
    }
    return true;
}

BoxliteResult<void> kill_process(std::int32_t pid, std::uint64_t start_time) {
    if (!process_alive(pid, start_time)) return {};
    if (::kill(pid, SIGKILL) != 0 && errno != ESRCH) {
        return fail_errno(ErrorKind::Engine, fmt::format("killing pid {}", pid), errno);
    }
    return {};
}

BoxliteResult<std::optional<LockFile>> LockFile::acquire(const std::filesystem::path& path, bool wait) {
    BOXLITE_TRY(auto lock, base::FileLock::open(path, 0600));
    if (wait) {
        BOXLITE_TRY_VOID(lock.lock(base::FileLock::Mode::Exclusive));
    } else {
        BOXLITE_TRY(const bool locked, lock.try_lock(base::FileLock::Mode::Exclusive));
        if (!locked) return std::optional<LockFile>();
    }
    return std::optional<LockFile>(LockFile(lock.release()));
}

void LockFile::release() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

}  // namespace detail
}  // namespace boxlite
