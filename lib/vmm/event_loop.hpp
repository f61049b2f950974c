// EventLoop: one epoll thread that runs a handler whenever one of its eventfds is signalled.
//
// The DeviceManager uses it for virtio queue notifications: each queue's QueueNotify address
// is an ioeventfd, so the guest's notify write is absorbed by KVM in the kernel (no exit to
// us) and the device's work — QCOW2 reads and writes, fdatasync — runs here, off the vCPU
// threads. One thread serves every device: a slow flush delays the other devices' queues but
// never a vCPU. Handlers run one at a time, on this thread only.
#pragma once

#include "vmm/kvm.hpp"

#include <boxlite/error.hpp>

#include <sys/epoll.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace boxlite::vmm {

class EventLoop {
public:
    static BoxliteResult<std::unique_ptr<EventLoop>> create();
    /// Stops and joins the thread.
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    /// Watches `event_fd` (an eventfd, taken over): each time it is signalled the counter is
    /// drained and `handler` runs once on the loop thread. Allowed while the loop runs.
    BoxliteResult<void> add(base::OwnedFd event_fd, std::function<void()> handler);
    /// Starts the thread (idempotent).
    BoxliteResult<void> start();
    /// Stops the thread (idempotent): the handler that is running, if any, returns, then every
    /// eventfd already signalled is served once more, so no notify written before stop() is lost.
    /// No handler runs after stop() returns.
    void stop();

    /// How many signals the handlers served: each eventfd's count, so two notifies that arrive
    /// before the loop reads (one wake-up, one handler run) count as two.
    [[nodiscard]] std::uint64_t dispatched() const noexcept { return dispatched_.load(std::memory_order_relaxed); }

private:
    struct Watch {
        base::OwnedFd fd;
        std::function<void()> handler;
    };
    EventLoop(base::OwnedFd epoll, base::OwnedFd wake) : epoll_(std::move(epoll)), wake_(std::move(wake)) {}
    void run();
    void serve(const epoll_event& event);

    base::OwnedFd epoll_;
    base::OwnedFd wake_;
    std::mutex mutex_;           // guards watches_ (appended to while the loop may run)
    std::deque<Watch> watches_;  // a deque: epoll's data.ptr points at elements that never move
    std::thread thread_;
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint64_t> dispatched_{0};
};

}  // namespace boxlite::vmm
