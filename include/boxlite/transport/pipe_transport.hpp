// PipeTransport: an in-process Transport over socketpairs, for tests and benchmarks.
//
// Endpoints are "pipe:<name>". A test plays the guest agent: it `listen(name)`s, and every
// connect("pipe:<name>") creates a socketpair, hands one end to the connecting side and queues
// the other for `accept(name)`. Copies of a PipeTransport share one hub, so the runtime's copy
// and the test's copy see each other. connect()'s socketpair is made in the library
// (lib/transport/pipe_transport.cpp).
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/transport.hpp>
#include <boxlite/transport/fd_stream.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace boxlite {

class PipeTransport {
public:
    using stream_type = FdStream;
    static constexpr std::string_view kScheme = "pipe";

    PipeTransport() : hub_(std::make_shared<Hub>()) {}

    /// "pipe:<name>" for a listener called `name`.
    [[nodiscard]] static std::string endpoint(std::string_view name) { return fmt::format("pipe:{}", name); }

    /// Starts accepting connections for `name` (idempotent).
    void listen(const std::string& name) {
        std::lock_guard lock(hub_->mutex);
        hub_->listeners.try_emplace(name);
        hub_->changed.notify_all();
    }

    /// Stops accepting: pending and future connects to `name` fail.
    void unlisten(const std::string& name) {
        std::lock_guard lock(hub_->mutex);
        if (auto it = hub_->listeners.find(name); it != hub_->listeners.end()) {
            for (int fd : it->second) FdStream closer(fd);  // connected but never accepted
            hub_->listeners.erase(it);
        }
        hub_->changed.notify_all();
    }

    /// The agent side of the next connection to `name`, waiting up to `timeout`.
    BoxliteResult<FdStream> accept(const std::string& name, std::chrono::milliseconds timeout) {
        std::unique_lock lock(hub_->mutex);
        const auto ready = hub_->changed.wait_for(lock, timeout, [&] {
            auto it = hub_->listeners.find(name);
            return it == hub_->listeners.end() || !it->second.empty();
        });
        auto it = hub_->listeners.find(name);
        if (it == hub_->listeners.end()) return fail(ErrorKind::RpcTransport, "pipe:{} is not listening", name);
        if (!ready || it->second.empty()) {
            return fail(ErrorKind::RpcTransport, "no connection to pipe:{} within {} ms", name, timeout.count());
        }
        FdStream stream(it->second.front());
        it->second.pop_front();
        return stream;
    }

    /// Waits up to `timeout` for a listener on the endpoint's name, as real transports wait
    /// for the agent, then queues the agent's end of a new socketpair for accept().
    BoxliteResult<FdStream> connect(std::string_view endpoint, std::chrono::milliseconds timeout);

private:
    struct Hub {
        std::mutex mutex;
        std::condition_variable changed;
        std::map<std::string, std::deque<int>> listeners;  // name -> agent ends not yet accepted
        ~Hub() {
            for (auto& [name, fds] : listeners) {
                for (int fd : fds) FdStream closer(fd);  // closes it
            }
        }
    };
    std::shared_ptr<Hub> hub_;
};

static_assert(Transport<PipeTransport>);

}  // namespace boxlite
