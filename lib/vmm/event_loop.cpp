#include "vmm/event_loop.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace boxlite::vmm {

BoxliteResult<std::unique_ptr<EventLoop>> EventLoop::create() {
    base::OwnedFd epoll(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll.valid()) return fail_errno(ErrorKind::Engine, "epoll_create1 for the device event loop", errno);
    base::OwnedFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake.valid()) return fail_errno(ErrorKind::Engine, "eventfd to stop the device event loop", errno);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.ptr = nullptr;  // nullptr = the stop request
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wake.get(), &event) != 0)
        return fail_errno(ErrorKind::Engine, "epoll_ctl for the device event loop", errno);
    return std::unique_ptr<EventLoop>(new EventLoop(std::move(epoll), std::move(wake)));
}

EventLoop::~EventLoop() { stop(); }

BoxliteResult<void> EventLoop::add(base::OwnedFd event_fd, std::function<void()> handler) {
    std::lock_guard lock(mutex_);
    Watch& watch = watches_.emplace_back(Watch{std::move(event_fd), std::move(handler)});
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.ptr = &watch;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, watch.fd.get(), &event) != 0) {
        const int error = errno;
        watches_.pop_back();
        return fail_errno(ErrorKind::Engine, "epoll_ctl adding a queue notification eventfd", error);
    }
    return {};
}

BoxliteResult<void> EventLoop::start() {
    std::lock_guard lock(mutex_);
    if (thread_.joinable() || stopping_) return {};
    try {
        thread_ = std::thread([this] { run(); });
    } catch (const std::system_error& e) {
        return fail(ErrorKind::Engine, "starting the device event loop thread: {}", e.what());
    }
    return {};
}

void EventLoop::stop() {
    stopping_ = true;
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof(one));
    std::thread thread;
    {
        std::lock_guard lock(mutex_);
        thread = std::move(thread_);
    }
    if (thread.joinable()) thread.join();
}

void EventLoop::serve(const epoll_event& event) {
    auto* watch = static_cast<Watch*>(event.data.ptr);
    if (watch == nullptr) return;  // the stop eventfd: the loop condition decides
    std::uint64_t count;
    // Drain first: a notify that arrives while the handler runs signals again.
    if (::read(watch->fd.get(), &count, sizeof(count)) != sizeof(count)) return;
    watch->handler();
    dispatched_.fetch_add(count, std::memory_order_relaxed);
}

void EventLoop::run() {
    epoll_event events[16];
    while (!stopping_.load(std::memory_order_relaxed)) {
        const int n = ::epoll_wait(epoll_.get(), events, 16, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  // only EBADF/EINVAL: our own fds are broken, nothing can be served
        }
        for (int i = 0; i < n && !stopping_.load(std::memory_order_relaxed); ++i) serve(events[i]);
    }
    // Notifies the vCPUs wrote before the stop are served, not dropped: a handler that ran for an
    // earlier notify may already have taken their requests off the ring, but the count (and any
    // request it did not take) is still owed. The vCPUs have stopped, so this ends; the bound is
    // for a caller that stops the loop while a vCPU still runs.
    for (int pass = 0; pass < 4; ++pass) {
        const int n = ::epoll_wait(epoll_.get(), events, 16, 0);
        if (n <= 0) return;
        bool served = false;
        for (int i = 0; i < n; ++i) {
            if (events[i].data.ptr == nullptr) continue;
            serve(events[i]);
            served = true;
        }
        if (!served) return;
    }
}

}  // namespace boxlite::vmm
