// Small POSIX I/O helpers shared by RawFile and Qcow2Image: full-length positional reads/writes
// over iovecs (retrying short transfers and EINTR), big-endian fields,
// and a cursor that slices a guest request's iovec array into sub-ranges without copying.
#pragma once

#include "base/fd.hpp"

#include <boxlite/error.hpp>

#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace boxlite::block {

/// Total byte count of an iovec array.
[[nodiscard]] inline std::uint64_t iov_length(std::span<const iovec> iov) noexcept {
    std::uint64_t total = 0;
    for (const auto& v : iov) total += v.iov_len;
    return total;
}

/// Reads exactly iov_length(iov) bytes at `offset`. Bytes past the end of the file read as zeroes
/// (a sparse tail or a file that was cut short must not leave guest memory uninitialised).
BoxliteResult<void> pread_full(int fd, std::span<const iovec> iov, std::uint64_t offset, std::string_view what);
/// Writes exactly iov_length(iov) bytes at `offset`.
BoxliteResult<void> pwrite_full(int fd, std::span<const iovec> iov, std::uint64_t offset, std::string_view what);

inline BoxliteResult<void> pread_full(int fd, void* data, std::size_t length, std::uint64_t offset,
                                      std::string_view what) {
    iovec v{data, length};
    return pread_full(fd, std::span<const iovec>(&v, 1), offset, what);
}
inline BoxliteResult<void> pwrite_full(int fd, const void* data, std::size_t length, std::uint64_t offset,
                                       std::string_view what) {
    iovec v{const_cast<void*>(data), length};
    return pwrite_full(fd, std::span<const iovec>(&v, 1), offset, what);
}

/// Slices [offset, offset + length) of an iovec array into `out` (cleared first).
/// Precondition: offset + length <= iov_length(iov).
void iov_slice(std::span<const iovec> iov, std::uint64_t offset, std::uint64_t length, std::vector<iovec>& out);
/// Fills [offset, offset + length) of an iovec array with zeroes.
void iov_zero(std::span<const iovec> iov, std::uint64_t offset, std::uint64_t length);
/// Copies `length` bytes from `src` into the iovecs starting at `offset`.
void iov_from_buffer(std::span<const iovec> iov, std::uint64_t offset, const void* src, std::uint64_t length);
/// Copies `length` bytes out of the iovecs starting at `offset` into `dst`.
void iov_to_buffer(std::span<const iovec> iov, std::uint64_t offset, void* dst, std::uint64_t length);

// Big-endian field access (QCOW2 stores every number big-endian).
[[nodiscard]] inline std::uint64_t load_be64(const std::uint8_t* p) noexcept {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}
[[nodiscard]] inline std::uint32_t load_be32(const std::uint8_t* p) noexcept {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}
[[nodiscard]] inline std::uint16_t load_be16(const std::uint8_t* p) noexcept {
    return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
inline void store_be64(std::uint8_t* p, std::uint64_t v) noexcept {
    for (int i = 7; i >= 0; --i) {
        p[i] = static_cast<std::uint8_t>(v);
        v >>= 8;
    }
}
inline void store_be32(std::uint8_t* p, std::uint32_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v >> 24);
    p[1] = static_cast<std::uint8_t>(v >> 16);
    p[2] = static_cast<std::uint8_t>(v >> 8);
    p[3] = static_cast<std::uint8_t>(v);
}
inline void store_be16(std::uint8_t* p, std::uint16_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v >> 8);
    p[1] = static_cast<std::uint8_t>(v);
}

}  // namespace boxlite::block
