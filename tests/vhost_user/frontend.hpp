// TestFrontend: plays QEMU's side of vhost-user against our Backend over a socketpair — a sealed
// memfd as guest memory (the driver's view is a GuestMemory over the same pages), eventfds for
// kicks and calls, and raw messages (well-formed or hostile).
#pragma once

#include "vhost_user/backend.hpp"
#include "vhost_user/protocol.hpp"

#include "base/fd.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

namespace boxlite::vhost_user::testing {

/// A sealed memfd of `bytes` (what QEMU's memory-backend-memfd hands out).
inline base::OwnedFd sealed_memfd(std::uint64_t bytes, bool seal = true) {
    base::OwnedFd fd(::memfd_create("test-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) throw std::runtime_error("memfd");
    if (seal && ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
        throw std::runtime_error("F_ADD_SEALS");
    return fd;
}

inline base::OwnedFd make_eventfd() { return base::OwnedFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); }

/// How many times an eventfd was written since the last call (0 if none).
inline std::uint64_t drain_eventfd(int fd) {
    std::uint64_t value = 0;
    if (::read(fd, &value, sizeof value) != sizeof value) return 0;
    return value;
}

class TestFrontend {
public:
    /// Guest RAM at guest address 0; the frontend's "virtual address" of it is kUserBase.
    static constexpr std::uint64_t kUserBase = 0x7f0000000000ULL;

    TestFrontend(std::shared_ptr<devices::virtio::VirtioDevice> device, BackendOptions options,
                 std::uint64_t ram_bytes = 1 << 20)
        : backend_(std::move(device), std::move(options)), ram_(sealed_memfd(ram_bytes)), ram_bytes_(ram_bytes) {
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) throw std::runtime_error("socketpair");
        socket_.reset(pair[0]);
        base::OwnedFd backend_end(pair[1]);
        thread_ = std::thread(
            [this, fd = std::move(backend_end)]() mutable { result_ = backend_.serve(std::move(fd)); });
        const vmm::SharedRegion region{ram_.get(), 0, ram_bytes, 0};
        auto memory = vmm::GuestMemory::map_shared(std::span(&region, 1));
        if (!memory) throw std::runtime_error(memory.error().message());
        memory_.emplace(std::move(*memory));
    }
    ~TestFrontend() {
        backend_.stop();
        if (thread_.joinable()) thread_.join();
    }

    Backend& backend() { return backend_; }
    const vmm::GuestMemory& memory() const { return *memory_; }
    int ram_fd() const { return ram_.get(); }
    int socket() const { return socket_.get(); }

    /// Sends one message; false if the socket is gone.
    bool send(Request request, const void* payload, std::uint32_t size, std::vector<int> fds = {},
              std::uint32_t flags = kVersion) {
        return send_raw(static_cast<std::uint32_t>(request), flags, payload, size, size, std::move(fds));
    }
    /// Any header, any bytes (`claimed` is the header's size field, `size` what is sent).
    bool send_raw(std::uint32_t request, std::uint32_t flags, const void* payload, std::uint32_t claimed,
                  std::uint32_t size, std::vector<int> fds = {}) {
        std::vector<std::byte> bytes(kHeaderSize + size);
        const Header header{request, flags, claimed};
        std::memcpy(bytes.data(), &header, kHeaderSize);
        if (size) std::memcpy(bytes.data() + kHeaderSize, payload, size);
        iovec iov{bytes.data(), bytes.size()};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 16)> control{};
        if (!fds.empty()) {
            msg.msg_control = control.data();
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
            cmsghdr* c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
            std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
        }
        return ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
    }
    bool send_u64(Request request, std::uint64_t value, std::vector<int> fds = {}) {
        return send(request, &value, sizeof value, std::move(fds));
    }
    bool send_state(Request request, std::uint32_t index, std::uint32_t num) {
        const VringState state{index, num};
        return send(request, &state, sizeof state);
    }

    /// Reads one reply (waits up to 5 s); nullopt on EOF or timeout.
    std::optional<std::vector<std::byte>> reply(Header* header_out = nullptr) {
        Header header{};
        if (!read_exact(&header, sizeof header)) return std::nullopt;
        if (header.size > 4096) return std::nullopt;
        std::vector<std::byte> payload(header.size);
        if (header.size && !read_exact(payload.data(), payload.size())) return std::nullopt;
        if (header_out) *header_out = header;
        return payload;
    }
    std::optional<std::uint64_t> reply_u64() {
        auto payload = reply();
        if (!payload || payload->size() != 8) return std::nullopt;
        std::uint64_t value;
        std::memcpy(&value, payload->data(), 8);
        return value;
    }

    /// The usual start-up: features, owner, protocol features (REPLY_ACK off, to keep it simple),
    /// memory table with guest RAM at 0.
    void set_up(std::uint64_t protocol_features = kProtocolConfig) {
        send(Request::GetFeatures, nullptr, 0);
        features_ = reply_u64().value_or(0);
        send(Request::SetOwner, nullptr, 0);
        send(Request::GetProtocolFeatures, nullptr, 0);
        reply_u64();
        send_u64(Request::SetProtocolFeatures, protocol_features);
        send_u64(Request::SetFeatures, features_);
        send_mem_table();
    }
    std::uint64_t offered_features() const { return features_; }

    void send_mem_table(std::uint64_t user_base = kUserBase) {
        struct {
            MemoryTableHeader header;
            MemoryRegionDesc region;
        } table{{1, 0}, {0, ram_bytes_, user_base, 0}};
        send(Request::SetMemTable, &table, sizeof table, {ram_.get()});
    }

    /// Sets up ring `index` at guest address `base` (a VirtQueueDriver layout), with fresh
    /// kick/call eventfds, and enables it.
    void start_ring(std::uint32_t index, std::uint64_t desc, std::uint64_t avail, std::uint64_t used,
                    std::uint16_t size, std::uint16_t base = 0) {
        send_state(Request::SetVringNum, index, size);
        send_state(Request::SetVringBase, index, base);
        const VringAddr addr{index, 0, kUserBase + desc, kUserBase + used, kUserBase + avail, 0};
        send(Request::SetVringAddr, &addr, sizeof addr);
        if (kicks_.size() <= index) kicks_.resize(index + 1), calls_.resize(index + 1);
        kicks_[index] = make_eventfd();
        calls_[index] = make_eventfd();
        send_u64(Request::SetVringCall, index, {calls_[index].get()});
        send_u64(Request::SetVringKick, index, {kicks_[index].get()});
        send_state(Request::SetVringEnable, index, 1);
    }
    void kick(std::uint32_t index) {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(kicks_.at(index).get(), &one, sizeof one);
    }
    /// Waits (up to 5 s) for the backend to signal ring `index`.
    bool wait_call(std::uint32_t index) {
        pollfd p{calls_.at(index).get(), POLLIN, 0};
        if (::poll(&p, 1, 5000) != 1) return false;
        return drain_eventfd(calls_[index].get()) > 0;
    }
    /// A round trip: once the backend answered, every message before it was handled.
    void sync() {
        send(Request::GetFeatures, nullptr, 0);
        reply_u64();
    }

    /// Closes our end and returns what serve() returned.
    BoxliteResult<void> finish() {
        socket_.reset();
        if (thread_.joinable()) thread_.join();
        return result_;
    }

private:
    bool read_exact(void* out, std::size_t size) {
        auto* bytes = static_cast<char*>(out);
        while (size > 0) {
            pollfd p{socket_.get(), POLLIN, 0};
            if (::poll(&p, 1, 5000) != 1) return false;
            const auto n = ::read(socket_.get(), bytes, size);
            if (n <= 0) return false;
            bytes += n;
            size -= static_cast<std::size_t>(n);
        }
        return true;
    }

    Backend backend_;
    base::OwnedFd ram_;
    std::uint64_t ram_bytes_;
    std::optional<vmm::GuestMemory> memory_;
    base::OwnedFd socket_;
    std::thread thread_;
    BoxliteResult<void> result_;
    std::uint64_t features_ = 0;
    std::vector<base::OwnedFd> kicks_, calls_;
};

}  // namespace boxlite::vhost_user::testing
