// Image locking, compatible with QEMU's: a disk opened read-write by one process must not be
// opened read-write (or read at all, by a QCOW2 reader that caches metadata) by another, and
// `qemu-img` must refuse an image a box is running on, as it refuses one QEMU is running on.
//
// QEMU's file-posix driver expresses this with open-file-description (OFD) byte-range locks:
// for each block permission bit i it holds — CONSISTENT_READ (0), WRITE (1), RESIZE (3) — it
// takes a shared lock on byte 100 + i, and for each permission it does not let others have it
// takes a shared lock on byte 200 + i. A new opener first takes its own locks, then tests
// (F_OFD_GETLK with a write lock) that no other description holds 200 + i for a permission it
// wants, nor 100 + i for a permission it forbids; since both sides lock before testing, at
// least one of two racing openers sees the other. A read-write opener holds 100, 101, 103 and
// forbids WRITE and RESIZE (201, 203); a read-only one holds 100 and forbids the same. So any
// number of readers share an image, and a writer excludes everyone — which is exactly what
// `qemu-img info` needs `-U` (force-share) to get around.
//
// OFD locks belong to the open file description: a second open() in the same process conflicts
// like another process would, they are not lost when some other descriptor of the file closes,
// and they vanish when the last descriptor of this one closes (also at SIGKILL).
#pragma once

#include <boxlite/error.hpp>

#include <string_view>

namespace boxlite::block {

/// Takes QEMU's lock bytes on `fd` for a read-write (`writable`) or read-only opener. A conflict
/// is a Storage error "<name>: image is in use by another process ..."; a filesystem without
/// byte-range locks (ENOLCK, EOPNOTSUPP) is not an error: the image is then simply unlocked.
BoxliteResult<void> lock_image(int fd, bool writable, std::string_view name);

/// Releases every lock byte `fd` holds (the descriptor stays open).
void unlock_image(int fd) noexcept;

}  // namespace boxlite::block
