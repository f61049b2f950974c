// Whole-file reads for kernels, initrds, test guests and logs, with a size cap. POSIX reads
// rather than istreambuf_iterator, which GCC 12 at -O3 flags with false -Wnull-dereference.
#pragma once

#include "base/fd.hpp"

#include <boxlite/error.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <string>
#include <vector>

namespace boxlite::vmm {

/// The bytes of `path` from `offset` (clamped to the size) to the end; fails beyond `max` bytes.
inline BoxliteResult<std::vector<std::byte>> read_file_bytes(const std::string& path, std::uint64_t max = 1ULL << 31,
                                                             std::uint64_t offset = 0) {
    const base::OwnedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail_errno(ErrorKind::Config, "opening " + path, errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return fail_errno(ErrorKind::Config, "reading " + path, errno);
    const auto size = static_cast<std::uint64_t>(st.st_size);
    offset = std::min(offset, size);
    if (size - offset > max) {
        return fail(ErrorKind::Config, "{} is {} bytes, more than the {} allowed", path, size - offset, max);
    }
    std::vector<std::byte> bytes(static_cast<std::size_t>(size - offset));
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::pread(fd.get(), bytes.data() + done, bytes.size() - done,
                                  static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
    }
    bytes.resize(done);
    return bytes;
}

inline std::string read_file_text(const std::string& path, std::uint64_t tail_bytes = ~0ULL) {
    struct stat st {};
    const std::uint64_t size = ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
    auto bytes = read_file_bytes(path, ~0ULL, size > tail_bytes ? size - tail_bytes : 0);
    if (!bytes) return {};
    return std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size());
}

}  // namespace boxlite::vmm
