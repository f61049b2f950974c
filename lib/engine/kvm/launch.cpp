#include "engine/kvm/launch.hpp"

#include <boxlite/volume_spec.hpp>

#include <charconv>
#include <cstring>

namespace boxlite::vmm {
namespace {

constexpr std::string_view kNewcMagic = "070701";
constexpr std::size_t kNewcHeader = 110;  // magic + 13 fields of 8 hex digits
constexpr std::string_view kTrailer = "TRAILER!!!";
constexpr std::uint32_t kModeDirectory = 0040000, kModeRegular = 0100000;

void pad4(std::vector<std::byte>& out) {
    while (out.size() % 4 != 0) out.push_back(std::byte{0});
}

void append_entry(std::vector<std::byte>& out, std::uint32_t ino, std::string_view name, std::uint32_t mode,
                  std::uint32_t nlink, std::string_view data) {
    // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
    // namesize (with the NUL), check.
    const std::string header =
        fmt::format("{}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}", kNewcMagic, ino,
                    mode, 0, 0, nlink, 0, data.size(), 0, 0, 0, 0, name.size() + 1, 0);
    const auto* bytes = reinterpret_cast<const std::byte*>(header.data());
    out.insert(out.end(), bytes, bytes + header.size());
    const auto* name_bytes = reinterpret_cast<const std::byte*>(name.data());
    out.insert(out.end(), name_bytes, name_bytes + name.size());
    out.push_back(std::byte{0});
    pad4(out);
    const auto* data_bytes = reinterpret_cast<const std::byte*>(data.data());
    out.insert(out.end(), data_bytes, data_bytes + data.size());
    pad4(out);
}

std::optional<std::uint32_t> hex_field(std::span<const std::byte> header, std::size_t index) {
    const char* at = reinterpret_cast<const char*>(header.data()) + kNewcMagic.size() + index * 8;
    std::uint32_t value = 0;
    auto [end, ec] = std::from_chars(at, at + 8, value, 16);
    if (ec != std::errc{} || end != at + 8) return std::nullopt;
    return value;
}

constexpr std::size_t align4(std::size_t v) { return (v + 3) & ~std::size_t{3}; }

}  // namespace

nlohmann::json to_json_document(const GuestLaunchConfig& c) {
    nlohmann::json env = nlohmann::json::array();
    for (const auto& [key, value] : c.env) env.push_back(key + "=" + value);
    nlohmann::json limits = nlohmann::json::object();
    if (c.rlimits.nofile) limits["nofile"] = *c.rlimits.nofile;
    if (c.rlimits.fsize) limits["fsize"] = *c.rlimits.fsize;
    if (c.rlimits.cpu) limits["cpu"] = *c.rlimits.cpu;
    if (c.rlimits.nproc) limits["nproc"] = *c.rlimits.nproc;
    nlohmann::json document = {{"version", 1},     {"box_id", c.box_id},           {"agent_port", c.agent_port},
                               {"env", env},       {"working_dir", c.working_dir}, {"user", c.user},
                               {"rlimits", limits}};
    if (c.power_off_when_ready) document["power_off_when_ready"] = true;
    if (c.network) document["network"] = true;
    if (!c.volumes.empty()) {
        nlohmann::json volumes = nlohmann::json::array();
        for (const auto& v : c.volumes)
            volumes.push_back({{"tag", v.tag}, {"path", v.path}, {"read_only", v.read_only}});
        document["volumes"] = volumes;
    }
    return document;
}

BoxliteResult<GuestLaunchConfig> parse_guest_launch(std::string_view text) {
    try {
        const auto j = nlohmann::json::parse(text);
        if (j.value("version", 0) != 1)
            return fail(ErrorKind::Config, "guest launch document: version {} (expected 1)", j.value("version", 0));
        GuestLaunchConfig c;
        c.box_id = j.value("box_id", std::string());
        c.agent_port = j.value("agent_port", 0u);
        for (const auto& entry : j.value("env", nlohmann::json::array())) {
            const auto text_entry = entry.get<std::string>();
            const auto equals = text_entry.find('=');
            if (equals == std::string::npos || equals == 0)
                return fail(ErrorKind::Config, "guest launch document: env entry '{}' is not KEY=VALUE", text_entry);
            c.env.emplace_back(text_entry.substr(0, equals), text_entry.substr(equals + 1));
        }
        c.working_dir = j.value("working_dir", std::string("/"));
        c.user = j.value("user", std::string());
        const auto limits = j.value("rlimits", nlohmann::json::object());
        auto limit = [&](const char* name) -> std::optional<std::uint64_t> {
            if (!limits.contains(name)) return std::nullopt;
            return limits.at(name).get<std::uint64_t>();
        };
        c.rlimits = {limit("nofile"), limit("fsize"), limit("cpu"), limit("nproc")};
        c.power_off_when_ready = j.value("power_off_when_ready", false);
        c.network = j.value("network", false);
        for (const auto& entry : j.value("volumes", nlohmann::json::array())) {
            GuestVolume v{entry.at("tag").get<std::string>(), entry.at("path").get<std::string>(),
                          entry.value("read_only", false)};
            // virtio-fs tags are at most 36 bytes; paths are absolute, without "..".
            if (v.tag.empty() || v.tag.size() > 36)
                return fail(ErrorKind::Config, "guest launch document: volume tag '{}' is not 1..36 bytes", v.tag);
            if (v.path.empty() || v.path.front() != '/' || !detail::guest_path_components(v.path) ||
                v.path.find('\0') != std::string::npos)
                return fail(ErrorKind::Config,
                            "guest launch document: volume path '{}' is not an absolute path "
                            "without '..'",
                            v.path);
            c.volumes.push_back(std::move(v));
        }
        return c;
    } catch (const std::exception& e) {
        return fail(ErrorKind::Config, "guest launch document is not valid JSON of the expected shape: {}", e.what());
    }
}

std::vector<std::byte> guest_launch_archive(std::string_view document) {
    std::vector<std::byte> out;
    append_entry(out, 1, kGuestLaunchDir, kModeDirectory | 0755, 2, {});
    append_entry(out, 2, kGuestLaunchFile, kModeRegular | 0600, 1, document);
    append_entry(out, 0, kTrailer, 0, 1, {});
    return out;
}

BoxliteResult<std::vector<CpioEntry>> read_newc_archive(std::span<const std::byte> bytes) {
    std::vector<CpioEntry> entries;
    std::size_t at = 0;
    while (at < bytes.size()) {
        if (bytes[at] == std::byte{0}) {  // padding between archives
            ++at;
            continue;
        }
        const std::size_t left = bytes.size() - at;
        if (std::memcmp(bytes.data() + at, kNewcMagic.data(), std::min(left, kNewcMagic.size())) != 0)
            break;  // not (or no longer) newc: another archive format follows
        if (left < kNewcHeader) return fail(ErrorKind::Config, "cpio header at byte {} is truncated", at);
        const auto header = bytes.subspan(at, kNewcHeader);
        const auto mode = hex_field(header, 1);
        const auto file_size = hex_field(header, 6);
        const auto name_size = hex_field(header, 11);
        if (!mode || !file_size || !name_size || *name_size == 0)
            return fail(ErrorKind::Config, "cpio header at byte {} has malformed fields", at);
        const std::size_t name_at = at + kNewcHeader;
        const std::size_t data_at = align4(name_at + *name_size);
        const std::size_t next = align4(data_at + *file_size);
        if (data_at > bytes.size() || *file_size > bytes.size() - data_at)
            return fail(ErrorKind::Config, "cpio entry at byte {} runs past the end of the archive", at);
        CpioEntry entry;
        entry.name.assign(reinterpret_cast<const char*>(bytes.data() + name_at), *name_size - 1);
        entry.mode = *mode;
        entry.data.assign(reinterpret_cast<const char*>(bytes.data() + data_at), *file_size);
        at = std::min(next, bytes.size());
        if (entry.name != kTrailer) entries.push_back(std::move(entry));
    }
    return entries;
}

}  // namespace boxlite::vmm
