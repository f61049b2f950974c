#include "image_lock.hpp"

#include <fmt/format.h>

#include <fcntl.h>

#include <cerrno>
#include <array>
#include <span>

namespace boxlite::block {
namespace {

// QEMU's lock byte offsets and permission bits (block/file-posix.c, include/block/block-common.h).
constexpr off_t kPermBase = 100;
constexpr off_t kSharedBase = 200;
constexpr unsigned kConsistentRead = 0;
constexpr unsigned kWrite = 1;
constexpr unsigned kResize = 3;
constexpr unsigned kPermissionCount = 4;

const char* permission_name(unsigned bit) {
    switch (bit) {
        case kConsistentRead: return "consistent read";
        case kWrite: return "write";
        case kResize: return "resize";
        default: return "write unchanged";
    }
}

struct flock one_byte(short type, off_t offset) {
    struct flock lock {};
    lock.l_type = type;
    lock.l_whence = SEEK_SET;
    lock.l_start = offset;
    lock.l_len = 1;
    return lock;
}

bool unsupported(int error) { return error == ENOLCK || error == EOPNOTSUPP || error == EINVAL; }

}  // namespace

void unlock_image(int fd) noexcept {
    struct flock lock {};
    lock.l_type = F_UNLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = kPermBase;
    lock.l_len = kSharedBase + kPermissionCount - kPermBase;
    (void)::fcntl(fd, F_OFD_SETLK, &lock);
}

BoxliteResult<void> lock_image(int fd, bool writable, std::string_view name) {
    static constexpr std::array<unsigned, 3> kWriterHolds = {kConsistentRead, kWrite, kResize};
    const std::span<const unsigned> held(kWriterHolds.data(), writable ? 3 : 1);
    // Even a reader forbids writers: a QCOW2 reader caches L1/L2 tables that a writer would
    // change underneath it, and a raw base under many overlays must stay what they were made on.
    static constexpr std::array<unsigned, 2> forbidden = {kWrite, kResize};

    auto take = [&](off_t offset) -> BoxliteResult<bool> {
        struct flock lock = one_byte(F_RDLCK, offset);
        if (::fcntl(fd, F_OFD_SETLK, &lock) == 0) return true;
        const int error = errno;
        if (unsupported(error)) return false;
        if (error == EAGAIN || error == EACCES) {
            unlock_image(fd);
            return fail(ErrorKind::Storage, "{}: image is in use by another process (lock byte {} is held exclusively)",
                        name, offset);
        }
        unlock_image(fd);
        return fail_errno(ErrorKind::Storage, fmt::format("locking {} (byte {})", name, offset), error);
    };
    for (const unsigned bit : held) {
        BOXLITE_TRY(const bool locked, take(kPermBase + bit));
        if (!locked) return {};  // no byte-range locks on this filesystem
    }
    for (const unsigned bit : forbidden) BOXLITE_TRY_VOID(take(kSharedBase + bit));

    // Another description's shared lock on a byte conflicts with a test for a write lock there.
    auto taken_by_other = [&](off_t offset) -> BoxliteResult<bool> {
        struct flock lock = one_byte(F_WRLCK, offset);
        if (::fcntl(fd, F_OFD_GETLK, &lock) != 0) {
            const int error = errno;
            unlock_image(fd);
            return fail_errno(ErrorKind::Storage, fmt::format("testing the lock of {}", name), error);
        }
        return lock.l_type != F_UNLCK;
    };
    for (const unsigned bit : held) {
        BOXLITE_TRY(const bool conflict, taken_by_other(kSharedBase + bit));
        if (conflict) {
            unlock_image(fd);
            return fail(ErrorKind::Storage,
                        "{}: image is in use by another process, which does not allow {} access "
                        "while it has the image open; close it there first",
                        name, permission_name(bit));
        }
    }
    for (const unsigned bit : forbidden) {
        BOXLITE_TRY(const bool conflict, taken_by_other(kPermBase + bit));
        if (conflict) {
            unlock_image(fd);
            return fail(ErrorKind::Storage,
                        "{}: image is in use by another process, which has it open with {} access; "
                        "close it there first (qemu-img needs -U to read an image in use)",
                        name, permission_name(bit));
        }
    }
    return {};
}

}  // namespace boxlite::block
