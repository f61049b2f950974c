#include "raw_file.hpp"

#include "image_lock.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>

#include <cerrno>
#include <vector>

namespace boxlite::block {

BoxliteResult<std::unique_ptr<RawFile>> RawFile::open(const std::filesystem::path& path, bool read_only) {
    const int fd = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("opening raw disk {}", path.string()), errno);
    base::OwnedFd owned(fd);
    BOXLITE_TRY_VOID(lock_image(fd, !read_only, path.string()));
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        return fail_errno(ErrorKind::Storage, fmt::format("stat of raw disk {}", path.string()), errno);
    std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
    if (S_ISBLK(st.st_mode)) {
        if (::ioctl(fd, BLKGETSIZE64, &size) != 0)
            return fail_errno(ErrorKind::Storage, fmt::format("size of block device {}", path.string()), errno);
    } else if (!S_ISREG(st.st_mode)) {
        return fail(ErrorKind::Storage, "raw disk {} is neither a regular file nor a block device", path.string());
    }
    return std::unique_ptr<RawFile>(new RawFile(std::move(owned), path, size, read_only));
}

BoxliteResult<std::unique_ptr<RawFile>> RawFile::create(const std::filesystem::path& path, std::uint64_t size) {
    // Not O_TRUNC: a file in use must be refused before it is emptied.
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("creating raw disk {}", path.string()), errno);
    base::OwnedFd owned(fd);
    BOXLITE_TRY_VOID(lock_image(fd, true, path.string()));
    if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0)
        return fail_errno(ErrorKind::Storage, fmt::format("sizing raw disk {} to {} bytes", path.string(), size),
                          errno);
    return std::unique_ptr<RawFile>(new RawFile(std::move(owned), path, size, false));
}

BoxliteResult<void> RawFile::check_range(std::uint64_t offset, std::uint64_t length, std::string_view op) const {
    const std::uint64_t size = size_.load();
    if (offset > size || length > size - offset)
        return fail(ErrorKind::InvalidArgument, "{} of {} bytes at offset {} is past the end of {} ({} bytes)", op,
                    length, offset, path_.string(), size);
    if (op != "read" && read_only_)
        return fail(ErrorKind::Storage, "{} on {}: the disk is open read-only", op, path_.string());
    return {};
}

BoxliteResult<void> RawFile::read(std::uint64_t offset, std::span<const iovec> buffers) {
    BOXLITE_TRY_VOID(check_range(offset, iov_length(buffers), "read"));
    return pread_full(fd_.get(), buffers, offset, path_.string());
}

BoxliteResult<void> RawFile::write(std::uint64_t offset, std::span<const iovec> buffers) {
    BOXLITE_TRY_VOID(check_range(offset, iov_length(buffers), "write"));
    return pwrite_full(fd_.get(), buffers, offset, path_.string());
}

BoxliteResult<void> RawFile::flush() {
    if (read_only_) return {};
    if (::fdatasync(fd_.get()) != 0)
        return fail_errno(ErrorKind::Storage, fmt::format("flushing {}", path_.string()), errno);
    return {};
}

BoxliteResult<void> RawFile::discard(std::uint64_t offset, std::uint64_t length) {
    // Punching a hole frees the space and reads back as zeroes, which also satisfies discard.
    return write_zeroes(offset, length);
}

BoxliteResult<void> RawFile::write_zeroes(std::uint64_t offset, std::uint64_t length) {
    BOXLITE_TRY_VOID(check_range(offset, length, "write_zeroes"));
    if (length == 0) return {};
    if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(length)) == 0)
        return {};
    // No hole punching here (block device, old filesystem): write the zeroes.
    std::vector<std::uint8_t> zeroes(std::min<std::uint64_t>(length, 1 << 20), 0);
    while (length > 0) {
        const auto chunk = std::min<std::uint64_t>(length, zeroes.size());
        BOXLITE_TRY_VOID(pwrite_full(fd_.get(), zeroes.data(), chunk, offset, path_.string()));
        offset += chunk;
        length -= chunk;
    }
    return {};
}

BoxliteResult<void> RawFile::resize(std::uint64_t new_size) {
    if (read_only_) return fail(ErrorKind::Storage, "resize of {}: the disk is open read-only", path_.string());
    if (::ftruncate(fd_.get(), static_cast<off_t>(new_size)) != 0)
        return fail_errno(ErrorKind::Storage, fmt::format("resizing {} to {} bytes", path_.string(), new_size), errno);
    size_.store(new_size);
    return {};
}

}  // namespace boxlite::block
