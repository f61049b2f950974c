#include "io.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <climits>

namespace boxlite::block {
namespace {

// preadv/pwritev take at most IOV_MAX vectors; a short transfer leaves the array half consumed.
// Both loops keep a private copy of the array and advance it in place.
void advance(std::vector<iovec>& iov, std::size_t& first, std::uint64_t bytes) {
    while (bytes > 0 && first < iov.size()) {
        auto& v = iov[first];
        const auto step = std::min<std::uint64_t>(bytes, v.iov_len);
        v.iov_base = static_cast<std::uint8_t*>(v.iov_base) + step;
        v.iov_len -= step;
        bytes -= step;
        if (v.iov_len == 0) ++first;
    }
    while (first < iov.size() && iov[first].iov_len == 0) ++first;
}

}  // namespace

BoxliteResult<void> pread_full(int fd, std::span<const iovec> iov_in, std::uint64_t offset, std::string_view what) {
    std::vector<iovec> iov(iov_in.begin(), iov_in.end());
    std::size_t first = 0;
    advance(iov, first, 0);
    while (first < iov.size()) {
        const int count = static_cast<int>(std::min<std::size_t>(iov.size() - first, IOV_MAX));
        const ssize_t n = ::preadv(fd, iov.data() + first, count, static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            return fail_errno(ErrorKind::Storage, fmt::format("reading {} at offset {}", what, offset), errno);
        }
        if (n == 0) {
            // End of file: the rest reads as zeroes, as a sparse tail would.
            for (std::size_t i = first; i < iov.size(); ++i) std::memset(iov[i].iov_base, 0, iov[i].iov_len);
            return {};
        }
        offset += static_cast<std::uint64_t>(n);
        advance(iov, first, static_cast<std::uint64_t>(n));
    }
    return {};
}

BoxliteResult<void> pwrite_full(int fd, std::span<const iovec> iov_in, std::uint64_t offset, std::string_view what) {
    std::vector<iovec> iov(iov_in.begin(), iov_in.end());
    std::size_t first = 0;
    advance(iov, first, 0);
    while (first < iov.size()) {
        const int count = static_cast<int>(std::min<std::size_t>(iov.size() - first, IOV_MAX));
        const ssize_t n = ::pwritev(fd, iov.data() + first, count, static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            return fail_errno(ErrorKind::Storage, fmt::format("writing {} at offset {}", what, offset), errno);
        }
        if (n == 0) return fail(ErrorKind::Storage, "writing {} at offset {}: no progress (disk full?)", what, offset);
        offset += static_cast<std::uint64_t>(n);
        advance(iov, first, static_cast<std::uint64_t>(n));
    }
    return {};
}

void iov_slice(std::span<const iovec> iov, std::uint64_t offset, std::uint64_t length, std::vector<iovec>& out) {
    out.clear();
    for (const auto& v : iov) {
        if (length == 0) break;
        if (offset >= v.iov_len) {
            offset -= v.iov_len;
            continue;
        }
        const auto take = std::min<std::uint64_t>(v.iov_len - offset, length);
        out.push_back(iovec{static_cast<std::uint8_t*>(v.iov_base) + offset, take});
        length -= take;
        offset = 0;
    }
}

void iov_zero(std::span<const iovec> iov, std::uint64_t offset, std::uint64_t length) {
    for (const auto& v : iov) {
        if (length == 0) break;
        if (offset >= v.iov_len) {
            offset -= v.iov_len;
            continue;
        }
        const auto take = std::min<std::uint64_t>(v.iov_len - offset, length);
        std::memset(static_cast<std::uint8_t*>(v.iov_base) + offset, 0, take);
        length -= take;
        offset = 0;
    }
}

void iov_from_buffer(std::span<const iovec> iov, std::uint64_t offset, const void* src, std::uint64_t length) {
    const auto* in = static_cast<const std::uint8_t*>(src);
    for (const auto& v : iov) {
        if (length == 0) break;
        if (offset >= v.iov_len) {
            offset -= v.iov_len;
            continue;
        }
        const auto take = std::min<std::uint64_t>(v.iov_len - offset, length);
        std::memcpy(static_cast<std::uint8_t*>(v.iov_base) + offset, in, take);
        in += take;
        length -= take;
        offset = 0;
    }
}

void iov_to_buffer(std::span<const iovec> iov, std::uint64_t offset, void* dst, std::uint64_t length) {
    auto* out = static_cast<std::uint8_t*>(dst);
    for (const auto& v : iov) {
        if (length == 0) break;
        if (offset >= v.iov_len) {
            offset -= v.iov_len;
            continue;
        }
        const auto take = std::min<std::uint64_t>(v.iov_len - offset, length);
        std::memcpy(out, static_cast<const std::uint8_t*>(v.iov_base) + offset, take);
        out += take;
        length -= take;
        offset = 0;
    }
}

}  // namespace boxlite::block
