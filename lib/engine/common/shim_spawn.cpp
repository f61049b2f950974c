#include "engine/common/shim_spawn.hpp"

#include "base/fd.hpp"
#include "base/spawn.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace boxlite::engine {
namespace {

using Clock = std::chrono::steady_clock;

/// Writes all of `data` to a stream socket before `deadline`; false if the peer went away or
/// the time ran out. MSG_NOSIGNAL: a shim that died must not SIGPIPE the caller.
bool send_all(int fd, std::string_view data, Clock::time_point deadline) {
    while (!data.empty()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

}  // namespace

std::optional<std::string> read_line(int fd, std::chrono::milliseconds timeout) {
    std::string line;
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        pollfd p{fd, POLLIN, 0};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (::poll(&p, 1, static_cast<int>(std::max<long>(left.count(), 1))) <= 0) continue;
        char c;
        const ssize_t n = ::read(fd, &c, 1);
        if (n <= 0) return std::nullopt;
        if (c == '\n') return line;
        if (line.size() > 4096) return line;
        line.push_back(c);
    }
    return std::nullopt;
}

BoxliteResult<ShimProcess> spawn_shim_process(const ShimProcessSpawn& spawn) {
    base::OwnedFd watchdog(spawn.watchdog_read_fd);
    const std::string name = spawn.shim.filename().string();
    // The config goes over a socket, not a pipe, so writing to a shim that died is EPIPE, not SIGPIPE.
    base::OwnedFd config_parent, config_child;
    if (spawn.config) {
        int config[2] = {-1, -1};
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, config) != 0)
            return fail_errno(ErrorKind::Engine, "socketpair for the shim config", errno);
        config_parent.reset(config[0]);
        config_child.reset(config[1]);
    }
    // A socket rather than a pipe: a shim may wait on it for an answer (keep_ready_channel).
    int ready[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ready) != 0)
        return fail_errno(ErrorKind::Engine, "socketpair for the shim's ready line", errno);
    base::OwnedFd ready_read(ready[0]), ready_write(ready[1]);
    const std::string log = spawn.log.string();
    base::OwnedFd log_fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, spawn.log_mode));
    if (!log_fd) return fail_errno(ErrorKind::Engine, fmt::format("opening the shim log {}", log), errno);
    base::OwnedFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!devnull) return fail_errno(ErrorKind::Engine, "opening /dev/null", errno);

    base::SpawnOptions options;
    options.argv.push_back(spawn.shim.string());
    options.argv.insert(options.argv.end(), spawn.args.begin(), spawn.args.end());
    options.fds = {devnull.get(), log_fd.get(), log_fd.get()};
    if (config_child) {
        options.argv.insert(options.argv.end(), {"--config-fd", std::to_string(options.fds.size())});
        options.fds.push_back(config_child.get());
    }
    const int ready_target = static_cast<int>(options.fds.size());
    options.argv.insert(options.argv.end(), {"--ready-fd", std::to_string(ready_target)});
    options.fds.push_back(ready_write.get());
    if (watchdog) {
        options.argv.insert(options.argv.end(), {"--watchdog-fd", std::to_string(options.fds.size())});
        options.fds.push_back(watchdog.get());
    }
    for (const auto& [option, fd] : spawn.extra_fds) {
        options.argv.insert(options.argv.end(), {"--" + option, std::to_string(options.fds.size())});
        options.fds.push_back(fd);
    }
    options.detach = spawn.detach;
    options.exec_failure_fd = ready_target;
    options.exec_failure_line = "error cannot execute " + name + "\n";
    BOXLITE_TRY(const auto pid, base::spawn(options));
    // Only the shim holds these now: its exit is EOF on the ready pipe.
    config_child.reset();
    ready_write.reset();
    watchdog.reset();
    log_fd.reset();
    devnull.reset();

    const auto deadline = Clock::now() + spawn.ready_timeout;
    if (config_parent) {
        // A shim that could not be executed, or died before reading its config, refuses the
        // send (EPIPE); its ready line, read next either way, says why (the exec failure line).
        send_all(config_parent.get(), *spawn.config, deadline);
        config_parent.reset();  // EOF: the shim reads the config to the end
    }
    ShimProcess process;
    process.pid = pid;
    process.ready = read_line(ready_read.get(), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                    std::max(deadline - Clock::now(), Clock::duration::zero())));
    if (spawn.keep_ready_channel) process.ready_channel = std::move(ready_read);
    return process;
}

}  // namespace boxlite::engine
