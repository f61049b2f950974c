#include "engine/common/volumes.hpp"

#include "engine/kvm/launch.hpp"  // the guest launch document

#include <boxlite/volume_spec.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace boxlite::engine {
namespace fs = std::filesystem;

BoxliteResult<void> add_vm_volumes(std::string_view kind, const BoxConfig& box, const fs::path& box_dir,
                                   std::string& virtiofsd, std::vector<VirtiofsShare>& shares,
                                   nlohmann::json& guest_launch) {
    const auto& volumes = box.options.volumes;
    if (volumes.empty()) return {};
    if (volumes.size() > kMaxVmVolumes)
        return fail(ErrorKind::Unsupported, "box {}: {} volumes; the {} engine serves at most {} (a virtiofsd each)",
                    box.id, volumes.size(), kind, kMaxVmVolumes);
    if (::geteuid() != 0)
        return fail(ErrorKind::Unsupported,
                    "box {}: volumes on the {} engine need root (virtiofsd's namespace sandbox and the read-only "
                    "bind need CAP_SYS_ADMIN); run as root, or use the namespace engine",
                    box.id, kind);
    const char* override_path = std::getenv("BOXLITE_VIRTIOFSD");
    virtiofsd = override_path && *override_path ? override_path : kDefaultVirtiofsd;
    if (virtiofsd.front() != '/' || ::access(virtiofsd.c_str(), X_OK) != 0)
        return fail(ErrorKind::Unsupported,
                    "box {}: volumes on the {} engine need virtiofsd, and {} is not an executable file{}; install "
                    "Debian's qemu-system-common (or set BOXLITE_VIRTIOFSD to an absolute path)",
                    box.id, kind, virtiofsd, override_path && *override_path ? " (from BOXLITE_VIRTIOFSD)" : "");
    BOXLITE_TRY(auto guest, vmm::parse_guest_launch(guest_launch.dump()));
    for (std::size_t i = 0; i < volumes.size(); ++i) {
        const auto& v = volumes[i];
        fs::path host = v.host_path;
        std::error_code ec;
        if (v.anonymous()) {
            host = anonymous_volume_path(box_dir, i);
            fs::create_directories(host, ec);
            if (ec)
                return fail(ErrorKind::Storage, "creating the anonymous volume {} of box {} for {}: {}", host.string(),
                            box.id, v.guest_path, ec.message());
        }
        if (!fs::exists(host, ec))
            return fail(ErrorKind::Config,
                        "box {}: volume host path {} (for {}) no longer exists; create it again, or remove the box",
                        box.id, host.string(), v.guest_path);
        if (!fs::is_directory(host, ec))
            return fail(ErrorKind::Unsupported,
                        "box {}: volume -v {} is not a directory; the {} engine shares folders (virtiofs), not "
                        "single files — share the folder holding it",
                        box.id, v, kind);
        const auto tag = fmt::format("vol{}", i);
        shares.push_back(VirtiofsShare{tag, host.string(), v.read_only});
        guest.volumes.push_back(vmm::GuestVolume{tag, normalized_guest_path(v.guest_path), v.read_only});
    }
    // Shallower guest paths first, as on the namespace engine: /data before /data/in, so the
    // deeper volume is mounted on top rather than hidden.
    std::stable_sort(guest.volumes.begin(), guest.volumes.end(), [](const auto& a, const auto& b) {
        return std::count(a.path.begin(), a.path.end(), '/') < std::count(b.path.begin(), b.path.end(), '/');
    });
    guest_launch = vmm::to_json_document(guest);
    return {};
}

}  // namespace boxlite::engine
