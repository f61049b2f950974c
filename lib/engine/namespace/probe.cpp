// NamespaceEngine::available(): what this host lacks to run namespace boxes.
#include <boxlite/engine/namespace_engine.hpp>

#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

namespace boxlite {

BoxliteResult<void> NamespaceEngine::available() const {
    std::vector<std::string> missing;
    if (::geteuid() != 0)
        missing.emplace_back("root privileges (namespaces, overlayfs and cgroups need CAP_SYS_ADMIN)");
    {
        std::ifstream filesystems("/proc/filesystems");
        std::string line;
        bool overlay = false;
        while (std::getline(filesystems, line)) overlay = overlay || line.find("overlay") != std::string::npos;
        if (!overlay) missing.emplace_back("overlayfs support in the kernel");
    }
    if (::access("/proc/self/ns/pid", F_OK) != 0) missing.emplace_back("PID namespaces");
    if (!missing_helpers_.empty()) missing.push_back(missing_helpers_);
    if (missing.empty()) return {};
    std::string text;
    for (const auto& m : missing) text += (text.empty() ? "" : "; ") + m;
    return fail(ErrorKind::UnsupportedEngine, "namespace engine needs {}", text);
}

}  // namespace boxlite
