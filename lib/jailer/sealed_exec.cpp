// See sealed_exec.hpp.
#include "jailer/sealed_exec.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace boxlite::jailer {
namespace {

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

/// The escaped form of one layer for overlayfs's "lowerdir" list (':' separates layers).
std::string escape_layer(const std::string& path) {
    std::string out;
    for (char c : path) {
        if (c == ':' || c == '\\') out += '\\';
        out += c;
    }
    return out;
}

/// What the overlay's file system context said when it refused (overlayfs writes its reason
/// there, as "e overlay: ..."), else strerror.
std::string context_error(int fs, const std::string& what) {
    const int saved = errno;
    char text[256];
    const auto n = ::read(fs, text, sizeof text - 1);
    if (n > 2) return what + ": " + std::string(text + 2, static_cast<std::size_t>(n - 2));
    return what + ": " + std::strerror(saved);
}

base::OwnedFd open_overlay(const std::string& binary, const std::string& spare_dir, std::string& why) {
    const auto slash = binary.rfind('/');
    if (slash == std::string::npos || slash + 1 == binary.size()) {
        why = "not an absolute file path: " + binary;
        return {};
    }
    const std::string dir = slash == 0 ? "/" : binary.substr(0, slash);
    const std::string name = binary.substr(slash + 1);
    base::OwnedFd fs(static_cast<int>(::syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC)));
    if (!fs) {
        why = errno_text("fsopen(overlay)");
        return {};
    }
    // "lowerdir+" (Linux 6.8) takes one layer per call, unescaped; older kernels take the list.
    bool layered = ::syscall(SYS_fsconfig, fs.get(), FSCONFIG_SET_STRING, "lowerdir+", dir.c_str(), 0) == 0 &&
                   ::syscall(SYS_fsconfig, fs.get(), FSCONFIG_SET_STRING, "lowerdir+", spare_dir.c_str(), 0) == 0;
    if (!layered) {
        fs = base::OwnedFd(static_cast<int>(::syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC)));
        const auto list = escape_layer(dir) + ":" + escape_layer(spare_dir);
        if (!fs || ::syscall(SYS_fsconfig, fs.get(), FSCONFIG_SET_STRING, "lowerdir", list.c_str(), 0) != 0) {
            why = fs ? context_error(fs.get(), "overlay lowerdir") : errno_text("fsopen(overlay)");
            return {};
        }
    }
    if (::syscall(SYS_fsconfig, fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
        why = context_error(fs.get(), "creating the overlay");
        return {};
    }
    base::OwnedFd mount(static_cast<int>(
        ::syscall(SYS_fsmount, fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)));
    if (!mount) {
        why = errno_text("fsmount");
        return {};
    }
    base::OwnedFd file(::openat(mount.get(), name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!file) {
        why = errno_text("opening " + name + " in the overlay");
        return {};
    }
    // The same bytes as the binary asked for: a regular file of the same size.
    struct stat in {
    }, out{};
    if (::stat(binary.c_str(), &in) != 0 || ::fstat(file.get(), &out) != 0 || !S_ISREG(out.st_mode) ||
        in.st_size != out.st_size) {
        why = "the overlay's " + name + " is not " + binary;
        return {};
    }
    return file;
}

base::OwnedFd copy_to_memfd(const std::string& binary, std::string& error) {
    base::OwnedFd in(::open(binary.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) {
        error = errno_text("opening " + binary);
        return {};
    }
    base::OwnedFd fd(static_cast<int>(::syscall(SYS_memfd_create, "boxlite-agent", MFD_CLOEXEC | MFD_ALLOW_SEALING)));
    if (!fd) {
        error = errno_text("memfd_create");
        return {};
    }
    // In-kernel copy (page cache to shmem); no bounce through a user buffer.
    while (true) {
        const auto n = ::sendfile(fd.get(), in.get(), nullptr, 1 << 30);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error = errno_text("copying " + binary);
            return {};
        }
        if (n == 0) break;
    }
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0) {
        error = errno_text("sealing the copy of " + binary);
        return {};
    }
    return fd;
}

}  // namespace

SealedExecutable open_sealed_executable(const std::string& binary, const std::string& spare_dir, std::string& error,
                                        SealMethod prefer) {
    SealedExecutable out;
    if (prefer == SealMethod::ReadOnlyOverlay) {
        out.fd = open_overlay(binary, spare_dir, out.fallback);
        if (out.fd) {
            out.method = SealMethod::ReadOnlyOverlay;
            return out;
        }
    }
    out.method = SealMethod::MemfdCopy;
    out.fd = copy_to_memfd(binary, error);
    return out;
}

}  // namespace boxlite::jailer
