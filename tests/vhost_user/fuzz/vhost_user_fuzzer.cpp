// libFuzzer target: hostile vhost-user frontends. A harness frontend first sets up a working
// session (features, a sealed memfd as guest RAM, ring 0 of a virtio-blk device with eventfds:
// the device is active), then the fuzz input goes down the socket as raw bytes — any sequence of
// headers, sizes and payloads — and a kick follows. The back end must end the session cleanly:
// no crash, no hang, no leak (ASan), whatever arrives.
#include "devices/virtio/blk/device.hpp"
#include "vhost_user/backend.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using namespace boxlite;
using namespace boxlite::vhost_user;

class NullDisk final : public block::BlockBackend {
public:
    std::uint64_t size() const noexcept override { return 1 << 20; }
    bool read_only() const noexcept override { return false; }
    BoxliteResult<void> read(std::uint64_t, std::span<const iovec>) override { return {}; }
    BoxliteResult<void> write(std::uint64_t, std::span<const iovec>) override { return {}; }
    BoxliteResult<void> flush() override { return {}; }
    BoxliteResult<void> discard(std::uint64_t, std::uint64_t) override { return {}; }
    BoxliteResult<void> write_zeroes(std::uint64_t, std::uint64_t) override { return {}; }
};

void send_message(int fd, Request request, const void* payload, std::uint32_t size, int passed_fd = -1) {
    std::vector<std::byte> bytes(kHeaderSize + size);
    const Header header{static_cast<std::uint32_t>(request), kVersion, size};
    std::memcpy(bytes.data(), &header, kHeaderSize);
    if (size) std::memcpy(bytes.data() + kHeaderSize, payload, size);
    iovec iov{bytes.data(), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
    if (passed_fd >= 0) {
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &passed_fd, sizeof(int));
    }
    (void)::sendmsg(fd, &msg, MSG_NOSIGNAL);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    constexpr std::uint64_t kRam = 1 << 20;
    int ram = ::memfd_create("fuzz-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (ram < 0 || ::ftruncate(ram, kRam) != 0) return 0;
    ::fcntl(ram, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return 0;
    Backend backend(std::make_shared<devices::virtio::BlockDevice>(std::make_shared<NullDisk>(), "fuzz"));
    std::thread server([&] { (void)backend.serve(base::OwnedFd(pair[1])); });
    const int frontend = pair[0];

    const std::uint64_t features = devices::virtio::kFeatureVersion1;
    send_message(frontend, Request::SetFeatures, &features, 8);
    struct {
        MemoryTableHeader header;
        MemoryRegionDesc region;
    } table{{1, 0}, {0, kRam, 0x7f0000000000ULL, 0}};
    send_message(frontend, Request::SetMemTable, &table, sizeof table, ram);
    const VringState num{0, 64}, base{0, 0};
    send_message(frontend, Request::SetVringNum, &num, sizeof num);
    send_message(frontend, Request::SetVringBase, &base, sizeof base);
    const VringAddr addr{0, 0, 0x7f0000000000ULL + 0x1000, 0x7f0000000000ULL + 0x3000, 0x7f0000000000ULL + 0x2000, 0};
    send_message(frontend, Request::SetVringAddr, &addr, sizeof addr);
    const int call = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), kick = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const std::uint64_t ring0 = 0;
    send_message(frontend, Request::SetVringCall, &ring0, 8, call);
    send_message(frontend, Request::SetVringKick, &ring0, 8, kick);

    // The hostile part, then a kick, then the frontend is gone.
    for (std::size_t done = 0; done < size;) {
        const auto n = ::send(frontend, data + done, size - done, MSG_NOSIGNAL);
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
    }
    const std::uint64_t one = 1;
    (void)::write(kick, &one, sizeof one);
    ::shutdown(frontend, SHUT_WR);
    // Replies may fill the socket buffer: drain them until the back end closes its end.
    std::array<char, 4096> sink;
    while (::read(frontend, sink.data(), sink.size()) > 0) {}
    server.join();
    ::close(frontend);
    ::close(call);
    ::close(kick);
    ::close(ram);
    return 0;
}
