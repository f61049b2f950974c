#include "vm_shim.hpp"

#include "qcow2/qcow2_image.hpp"
#include "qcow2/raw_file.hpp"

#include <unistd.h>

#include <cerrno>

namespace boxlite::shim {
namespace {

constexpr std::size_t kMaxConfigBytes = 1 << 20;

}  // namespace

void say(int& fd, const std::string& line) {
    if (fd < 0) return;
    const std::string text = line + "\n";
    [[maybe_unused]] auto n = ::write(fd, text.data(), text.size());
    ::close(fd);
    fd = -1;
}

BoxliteResult<std::string> read_config(int fd) {
    std::string text;
    char buffer[4096];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof(buffer));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno(ErrorKind::Config, "reading the shim config pipe", errno);
        if (n == 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
        if (text.size() > kMaxConfigBytes)
            return fail(ErrorKind::Config, "shim config is larger than {} bytes", kMaxConfigBytes);
    }
    return text;
}

BoxliteResult<std::shared_ptr<block::BlockBackend>> open_disk(const vmm::ShimDiskConfig& disk) {
    if (disk.format == "raw") {
        BOXLITE_TRY(auto raw, block::RawFile::open(disk.path, disk.read_only));
        return std::shared_ptr<block::BlockBackend>(std::move(raw));
    }
    qcow2::OpenOptions options;
    options.read_only = disk.read_only;
    BOXLITE_TRY(auto image, qcow2::Qcow2Image::open(disk.path, options));
    return std::shared_ptr<block::BlockBackend>(std::move(image));
}

}  // namespace boxlite::shim
