// RawFile: a BlockBackend over a plain file (or a block device): guest offset == file offset.
// Used for raw disks, as the raw backing file of a QCOW2 overlay (an image's cached ext4 base),
// and as the differential model in the QCOW2 tests.
//
// Thread safety: every method may be called from any thread, concurrently with any other, with
// no lock: each request is positional I/O (preadv/pwritev, fallocate, fdatasync) that the kernel
// makes atomic per call, and the size is atomic. Concurrent requests on overlapping ranges land
// in some order, as on a real disk. The file is locked like QEMU locks it (image_lock.hpp).
#pragma once

#include "block_backend.hpp"
#include "io.hpp"

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>

namespace boxlite::block {

class RawFile final : public BlockBackend {
public:
    /// Opens an existing file; read_only opens it O_RDONLY and refuses writes. The file is locked
    /// (shared when read-only): an image another process writes is refused, and vice versa.
    static BoxliteResult<std::unique_ptr<RawFile>> open(const std::filesystem::path& path, bool read_only = false);
    /// Creates (or truncates) a sparse file of `size` bytes, open read-write. A file another
    /// process has open is refused before anything is truncated.
    static BoxliteResult<std::unique_ptr<RawFile>> create(const std::filesystem::path& path, std::uint64_t size);

    [[nodiscard]] std::uint64_t size() const noexcept override { return size_.load(); }
    [[nodiscard]] bool read_only() const noexcept override { return read_only_; }
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

    BoxliteResult<void> read(std::uint64_t offset, std::span<const iovec> buffers) override;
    BoxliteResult<void> write(std::uint64_t offset, std::span<const iovec> buffers) override;
    BoxliteResult<void> flush() override;
    BoxliteResult<void> discard(std::uint64_t offset, std::uint64_t length) override;
    BoxliteResult<void> write_zeroes(std::uint64_t offset, std::uint64_t length) override;
    /// Grows (or shrinks) the file to `new_size` bytes; the new tail reads as zeroes.
    BoxliteResult<void> resize(std::uint64_t new_size);

private:
    RawFile(base::OwnedFd fd, std::filesystem::path path, std::uint64_t size, bool read_only)
        : fd_(std::move(fd)), path_(std::move(path)), size_(size), read_only_(read_only) {}
    BoxliteResult<void> check_range(std::uint64_t offset, std::uint64_t length, std::string_view op) const;

    base::OwnedFd fd_;
    std::filesystem::path path_;
    std::atomic<std::uint64_t> size_;
    const bool read_only_;
};

}  // namespace boxlite::block
