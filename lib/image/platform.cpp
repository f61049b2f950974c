#include <boxlite/image/platform.hpp>

#include <algorithm>
#include <cctype>

namespace boxlite::image {

Platform host_platform() {
#if defined(__x86_64__)
    return {"linux", "amd64", ""};
#elif defined(__aarch64__)
    return {"linux", "arm64", "v8"};
#elif defined(__riscv) && __riscv_xlen == 64
    return {"linux", "riscv64", ""};
#elif defined(__i386__)
    return {"linux", "386", ""};
#else
    return {"linux", "unknown", ""};
#endif
}

BoxliteResult<Platform> parse_platform(std::string_view text) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (true) {
        const auto slash = text.find('/', start);
        parts.emplace_back(
            text.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
        if (slash == std::string_view::npos) break;
        start = slash + 1;
    }
    const bool empty_part = std::any_of(parts.begin(), parts.end(), [](const auto& p) { return p.empty(); });
    if (parts.size() < 2 || parts.size() > 3 || empty_part) {
        return fail(ErrorKind::InvalidArgument, "platform '{}' must be os/architecture[/variant], e.g. linux/arm64/v8",
                    text);
    }
    Platform p{parts[0], parts[1], parts.size() == 3 ? parts[2] : ""};
    return p;
}

Platform normalize_platform(Platform p) {
    auto lower = [](std::string& s) {
        std::transform(s.begin(), s.end(), s.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    };
    lower(p.os);
    lower(p.architecture);
    lower(p.variant);
    if (p.architecture == "x86_64" || p.architecture == "x86-64") p.architecture = "amd64";
    if (p.architecture == "i386" || p.architecture == "i686") p.architecture = "386";
    if (p.architecture == "aarch64") p.architecture = "arm64";
    if (p.architecture == "armhf") {
        p.architecture = "arm";
        p.variant = "v7";
    }
    if (p.architecture == "armel") {
        p.architecture = "arm";
        p.variant = "v6";
    }
    if (p.architecture == "arm64" && (p.variant.empty() || p.variant == "8")) p.variant = "v8";
    if (p.architecture == "arm" && p.variant.empty()) p.variant = "v7";
    if (p.architecture == "arm" && p.variant.size() == 1) p.variant = "v" + p.variant;
    return p;
}

bool platform_matches(const Platform& wanted, const Platform& candidate) {
    const auto w = normalize_platform(wanted);
    const auto c = normalize_platform(candidate);
    if (w.os != c.os || w.architecture != c.architecture) return false;
    // amd64 has micro-architecture variants (v2, v3); a plain request accepts any of them.
    if (wanted.variant.empty() && w.architecture != "arm") return true;
    return w.variant == c.variant;
}

}  // namespace boxlite::image
