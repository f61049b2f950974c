#include "engine/common/watchdog.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace boxlite::engine {

BoxliteResult<WatchdogPipe> make_watchdog_pipe() {
    int fds[2] = {-1, -1};
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno(ErrorKind::Engine, "creating the box's watchdog pipe", errno);
    return WatchdogPipe{fds[0], fds[1]};
}

WatchdogRegistry& WatchdogRegistry::instance() {
    static WatchdogRegistry registry;
    return registry;
}

void WatchdogRegistry::add(std::int32_t pid, int write_end) {
    std::lock_guard lock(mutex_);
    if (auto it = fds_.find(pid); it != fds_.end()) ::close(it->second);
    fds_[pid] = write_end;
}

void WatchdogRegistry::release(std::int32_t pid) {
    std::lock_guard lock(mutex_);
    if (auto it = fds_.find(pid); it != fds_.end()) {
        ::close(it->second);
        fds_.erase(it);
    }
}

}  // namespace boxlite::engine
