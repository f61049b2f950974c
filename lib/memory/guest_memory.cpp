#include "memory/guest_memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

namespace boxlite::vmm {
namespace {

constexpr std::uint64_t kPage = 4096;

BoxliteResult<int> make_memfd(std::uint64_t bytes) {
    int fd = ::memfd_create("boxlite-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return fail_errno(ErrorKind::Engine, "memfd_create for guest RAM", errno);
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
        int err = errno;
        ::close(fd);
        return fail_errno(ErrorKind::Engine, fmt::format("sizing guest RAM memfd to {} bytes", bytes), err);
    }
    // Sealed against resizing, as QEMU's memory-backend-memfd is: a vhost-user back end that maps
    // it (map_shared() insists on F_SEAL_SHRINK) can never be truncated under into SIGBUS.
    if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
        int err = errno;
        ::close(fd);
        return fail_errno(ErrorKind::Engine, "sealing the guest RAM memfd", err);
    }
    return fd;
}

}  // namespace

BoxliteResult<GuestMemory> GuestMemory::create_flat(std::uint64_t base, std::uint64_t bytes) {
    if (bytes == 0 || bytes % kPage != 0)
        return fail(ErrorKind::Config, "guest memory size {} is not a positive multiple of 4096", bytes);
    if (base + bytes < base) return fail(ErrorKind::Config, "guest memory at {:#x} wraps", base);
    BOXLITE_TRY(int fd, make_memfd(bytes));
    GuestMemory memory;
    memory.memfd_ = fd;
    memory.total_ = bytes;
    void* host = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (host == MAP_FAILED) return fail_errno(ErrorKind::Engine, "mapping guest RAM", errno);
    memory.regions_.push_back({base, bytes, static_cast<std::byte*>(host), 0});
    return memory;
}

BoxliteResult<GuestMemory> GuestMemory::create(std::uint64_t bytes, std::uint64_t gap_start, std::uint64_t high_start) {
    if (bytes < 64 * 1024 || bytes % kPage != 0)
        return fail(ErrorKind::Config, "guest memory size {} must be a multiple of 4096 and at least 64 KiB", bytes);
    BOXLITE_TRY(int fd, make_memfd(bytes));
    GuestMemory memory;
    memory.memfd_ = fd;
    memory.total_ = bytes;
    const std::uint64_t low = std::min(bytes, gap_start);
    struct Piece {
        std::uint64_t gpa, size, offset;
    };
    std::vector<Piece> pieces{{0, low, 0}};
    if (bytes > low) pieces.push_back({high_start, bytes - low, low});
    for (const auto& piece : pieces) {
        void* host = ::mmap(nullptr, piece.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
                            static_cast<off_t>(piece.offset));
        if (host == MAP_FAILED) return fail_errno(ErrorKind::Engine, "mapping guest RAM", errno);
        memory.regions_.push_back({piece.gpa, piece.size, static_cast<std::byte*>(host), piece.offset});
    }
    return memory;
}

BoxliteResult<GuestMemory> GuestMemory::map_shared(std::span<const SharedRegion> regions) {
    if (regions.empty()) return fail(ErrorKind::InvalidArgument, "shared guest memory has no regions");
    for (std::size_t i = 0; i < regions.size(); ++i) {
        const auto& r = regions[i];
        if (r.size == 0) return fail(ErrorKind::InvalidArgument, "shared memory region {} is empty", i);
        if (r.guest_address + r.size < r.guest_address || r.fd_offset + r.size < r.fd_offset)
            return fail(ErrorKind::InvalidArgument, "shared memory region {} ({:#x}+{:#x}) wraps", i, r.guest_address,
                        r.size);
        for (std::size_t j = 0; j < i; ++j) {
            const auto& o = regions[j];
            if (r.guest_address < o.guest_address + o.size && o.guest_address < r.guest_address + r.size)
                return fail(ErrorKind::InvalidArgument, "shared memory regions {} and {} overlap in guest memory", j,
                            i);
        }
        struct stat st {};
        if (::fstat(r.fd, &st) != 0)
            return fail_errno(ErrorKind::InvalidArgument, fmt::format("shared memory region {}: fstat", i), errno);
        if (!S_ISREG(st.st_mode) || static_cast<std::uint64_t>(st.st_size) < r.fd_offset + r.size)
            return fail(ErrorKind::InvalidArgument,
                        "shared memory region {} ({:#x} bytes at file offset {:#x}) is not inside its file ({} bytes)",
                        i, r.size, r.fd_offset, static_cast<long long>(st.st_size));
        const int seals = ::fcntl(r.fd, F_GET_SEALS);
        if (seals < 0 || !(seals & F_SEAL_SHRINK))
            return fail(ErrorKind::InvalidArgument,
                        "shared memory region {} is not a memfd sealed against shrinking (F_SEAL_SHRINK; QEMU's "
                        "memory-backend-memfd seals by default)",
                        i);
    }
    GuestMemory memory;
    for (const auto& r : regions) {
        const std::uint64_t aligned = r.fd_offset & ~(kPage - 1);
        const std::uint64_t lead = r.fd_offset - aligned;
        void* host = ::mmap(nullptr, r.size + lead, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, r.fd,
                            static_cast<off_t>(aligned));
        if (host == MAP_FAILED) return fail_errno(ErrorKind::Engine, "mapping shared guest memory", errno);
        auto* base = static_cast<std::byte*>(host);
        memory.regions_.push_back({r.guest_address, r.size, base + lead, r.fd_offset, base, r.size + lead});
        memory.total_ += r.size;
    }
    return memory;
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : memfd_(std::exchange(other.memfd_, -1)),
      total_(std::exchange(other.total_, 0)),
      regions_(std::exchange(other.regions_, {})) {}

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept {
    if (this != &other) {
        release();
        memfd_ = std::exchange(other.memfd_, -1);
        total_ = std::exchange(other.total_, 0);
        regions_ = std::exchange(other.regions_, {});
    }
    return *this;
}

GuestMemory::~GuestMemory() { release(); }

void GuestMemory::release() noexcept {
    for (auto& region : regions_) {
        if (region.mapping) ::munmap(region.mapping, region.mapping_size);
        else ::munmap(region.host, region.size);
    }
    regions_.clear();
    if (memfd_ >= 0) ::close(memfd_);
    memfd_ = -1;
}

std::optional<std::span<std::byte>> GuestMemory::slice(std::uint64_t address, std::uint64_t length) const noexcept {
    for (const auto& region : regions_) {
        if (address < region.guest_address) continue;
        const std::uint64_t offset = address - region.guest_address;
        // Written so that no expression can overflow: offset <= size, then length <= size - offset.
        if (offset > region.size || length > region.size - offset) continue;
        if (offset == region.size && length == 0) continue;  // one-past-the-end is not "in" RAM
        return std::span<std::byte>(region.host + offset, static_cast<std::size_t>(length));
    }
    return std::nullopt;
}

bool GuestMemory::write_bytes(std::uint64_t address, std::span<const std::byte> data) const noexcept {
    auto target = slice(address, data.size());
    if (!target) return false;
    if (!data.empty()) std::memcpy(target->data(), data.data(), data.size());
    return true;
}

bool GuestMemory::read_bytes(std::uint64_t address, std::span<std::byte> out) const noexcept {
    auto source = slice(address, out.size());
    if (!source) return false;
    if (!out.empty()) std::memcpy(out.data(), source->data(), out.size());
    return true;
}

}  // namespace boxlite::vmm
