// libFuzzer target over the QCOW2 header, tables and data paths. The input is a whole image
// file: it is parsed, opened read-only and read, checked, then opened read-write, written,
// discarded, flushed and checked again. Any crash, sanitizer report or hang is a bug; errors
// are the expected outcome for most inputs. Built with clang (see tests/qcow2/CMakeLists.txt).
#include "qcow2/format.hpp"
#include "qcow2/qcow2_image.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

using namespace boxlite;

namespace {

int memfd_with(const std::uint8_t* data, std::size_t size) {
    const int fd = ::memfd_create("qcow2-fuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    if (size > 0 && ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) {
        ::close(fd);
        return -1;
    }
    return fd;
}

void read_some(block::BlockBackend& disk) {
    std::vector<std::uint8_t> buffer(70000);
    const std::uint64_t size = disk.size();
    for (const std::uint64_t at : {std::uint64_t{0}, size / 2, size > 70000 ? size - 70000 : 0}) {
        const std::uint64_t len = std::min<std::uint64_t>(buffer.size(), size - std::min(size, at));
        iovec v{buffer.data(), len};
        (void)disk.read(at, std::span<const iovec>(&v, 1));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    (void)qcow2::parse_header(std::span<const std::uint8_t>(data, size), size, "fuzz.qcow2");

    qcow2::OpenOptions options;
    options.allow_backing = false;  // never follow a file name the input chose
    options.l2_cache_bytes = 1 << 20;
    options.read_only = true;
    if (const int fd = memfd_with(data, size); fd >= 0) {
        if (auto image = qcow2::Qcow2Image::open_fd(fd, "/fuzz/image.qcow2", options)) {
            read_some(**image);
            (void)(*image)->check();
        }
    }
    options.read_only = false;
    if (const int fd = memfd_with(data, size); fd >= 0) {
        if (auto image = qcow2::Qcow2Image::open_fd(fd, "/fuzz/image.qcow2", options)) {
            auto& disk = **image;
            std::vector<std::uint8_t> buffer(5000, 0x5a);
            iovec v{buffer.data(), buffer.size()};
            const std::uint64_t disk_size = disk.size();
            if (disk_size > buffer.size()) {
                (void)disk.write(disk_size / 3, std::span<const iovec>(&v, 1));
                (void)disk.write(0, std::span<const iovec>(&v, 1));
                (void)disk.discard(0, std::min<std::uint64_t>(disk_size, 1 << 16));
                (void)disk.write_zeroes(disk_size / 2, std::min<std::uint64_t>(disk_size / 2, 1 << 16));
            }
            (void)disk.flush();
            (void)disk.check();
            read_some(disk);
        }
    }
    return 0;
}
