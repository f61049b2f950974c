// GuestMemory: the guest's RAM as host mappings of one memfd, and bounds-checked access to it.
//
// The memfd (rather than anonymous memory) lets a vhost-user back end map the very same pages.
// Every address that comes from the guest goes through `slice()`/`read_obj()`/`write_obj()`,
// which refuse ranges that wrap, leave RAM or straddle two regions; nothing else in the VMM
// turns a guest address into a pointer. Usable without KVM: device tests build one directly.
//
// lib/memory is the unit both the VMM (lib/vmm) and the device models (lib/devices) build on;
// it includes neither. The types keep the boxlite::vmm namespace they had before the move.
#pragma once

#include <boxlite/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

namespace boxlite::vmm {

struct MemoryRegion {
    std::uint64_t guest_address = 0;
    std::uint64_t size = 0;
    std::byte* host = nullptr;
    std::uint64_t memfd_offset = 0;  ///< where this region starts in the memfd
    /// The mapping to undo when it does not start at `host` (map_shared() with an offset that is
    /// not page-aligned); null when `host`/`size` are the mapping itself.
    std::byte* mapping = nullptr;
    std::uint64_t mapping_size = 0;
};

/// A region of RAM someone else owns, shared with us as a file descriptor (a vhost-user
/// frontend's memfd): `size` bytes at `fd_offset` in the file appear at `guest_address`.
struct SharedRegion {
    int fd = -1;
    std::uint64_t guest_address = 0;
    std::uint64_t size = 0;
    std::uint64_t fd_offset = 0;
};

class GuestMemory {
public:
    /// RAM of `bytes` bytes (a multiple of 4 KiB, at least 64 KiB): [0, min(bytes, gap_start))
    /// and, beyond an MMIO gap, the rest from `high_start` (the VMM passes its layout's x86 MMIO
    /// gap and 4 GiB: vmm/layout.hpp).
    static BoxliteResult<GuestMemory> create(std::uint64_t bytes, std::uint64_t gap_start, std::uint64_t high_start);
    /// One region of `bytes` at guest address `base` (tests of devices, fuzzing).
    static BoxliteResult<GuestMemory> create_flat(std::uint64_t base, std::uint64_t bytes);
    /// Maps regions shared by another process (MAP_SHARED; the descriptors are not kept: the
    /// mappings hold the pages). The other side is not trusted: a region must be non-empty, must
    /// not wrap or overlap another, must lie inside its file, and the file must be sealed against
    /// shrinking (F_SEAL_SHRINK), so it cannot be truncated under us into SIGBUS. memfd() is -1.
    static BoxliteResult<GuestMemory> map_shared(std::span<const SharedRegion> regions);

    GuestMemory(GuestMemory&& other) noexcept;
    GuestMemory& operator=(GuestMemory&& other) noexcept;
    GuestMemory(const GuestMemory&) = delete;
    GuestMemory& operator=(const GuestMemory&) = delete;
    ~GuestMemory();

    [[nodiscard]] std::span<const MemoryRegion> regions() const noexcept { return regions_; }
    [[nodiscard]] int memfd() const noexcept { return memfd_; }
    [[nodiscard]] std::uint64_t total_bytes() const noexcept { return total_; }

    /// Host view of [address, address+length), or an empty optional when any byte of it is
    /// outside guest RAM (or the range wraps). A zero length at a valid address is allowed.
    [[nodiscard]] std::optional<std::span<std::byte>> slice(std::uint64_t address, std::uint64_t length) const noexcept;
    [[nodiscard]] bool contains(std::uint64_t address, std::uint64_t length) const noexcept {
        return slice(address, length).has_value();
    }

    /// Copies (never references) a trivially copyable object: the guest may change the bytes
    /// under us at any time, so every decision is taken on our own copy.
    template <class T>
    [[nodiscard]] std::optional<T> read_obj(std::uint64_t address) const noexcept {
        static_assert(std::is_trivially_copyable_v<T>);
        auto bytes = slice(address, sizeof(T));
        if (!bytes) return std::nullopt;
        T value;
        std::memcpy(&value, bytes->data(), sizeof(T));
        return value;
    }
    template <class T>
    bool write_obj(std::uint64_t address, const T& value) const noexcept {
        static_assert(std::is_trivially_copyable_v<T>);
        auto bytes = slice(address, sizeof(T));
        if (!bytes) return false;
        std::memcpy(bytes->data(), &value, sizeof(T));
        return true;
    }
    bool write_bytes(std::uint64_t address, std::span<const std::byte> data) const noexcept;
    bool read_bytes(std::uint64_t address, std::span<std::byte> out) const noexcept;

private:
    GuestMemory() = default;
    void release() noexcept;

    int memfd_ = -1;
    std::uint64_t total_ = 0;
    std::vector<MemoryRegion> regions_;
};

}  // namespace boxlite::vmm
