// PipeTransport::connect's socketpair (include/boxlite/transport/pipe_transport.hpp).
#include <boxlite/transport/pipe_transport.hpp>

#include <sys/socket.h>

#include <cerrno>

namespace boxlite {

BoxliteResult<FdStream> PipeTransport::connect(std::string_view endpoint, std::chrono::milliseconds timeout) {
    if (!endpoint.starts_with("pipe:")) {
        return fail(ErrorKind::InvalidArgument, "endpoint '{}' is not a pipe: endpoint", endpoint);
    }
    const std::string name(endpoint.substr(5));
    std::unique_lock lock(hub_->mutex);
    // As real transports do, wait for the agent to start listening.
    if (!hub_->changed.wait_for(lock, timeout, [&] { return hub_->listeners.contains(name); })) {
        return fail(ErrorKind::RpcTransport, "connecting to {}: nobody listening after {} ms", endpoint,
                    timeout.count());
    }
    int fds[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
        return fail_errno(ErrorKind::RpcTransport, fmt::format("connecting to {}", endpoint), errno);
    }
    hub_->listeners[name].push_back(fds[1]);
    hub_->changed.notify_all();
    return FdStream(fds[0]);
}

}  // namespace boxlite
