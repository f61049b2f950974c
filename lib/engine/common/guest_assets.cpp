// The guest assets (guest_assets.hpp): kernel search, vmlinux out of the bzImage, the module set
// and its load order, the initramfs, and the cache under <home>/init/.
#include "engine/common/guest_assets.hpp"

#include <boxlite/guest_assets.hpp>

#include "base/fd.hpp"
#include "base/file_lock.hpp"
#include "engine/common/helper_binary.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <lz4.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>

namespace boxlite::engine {
namespace {

namespace fs = std::filesystem;

/// Bumped whenever the initramfs layout or the vmlinux extraction changes: new cache files.
constexpr std::string_view kAssetFormat = "boxlite-guest-assets 2";  // 2: modules unsigned
constexpr std::size_t kMaxKernelImage = 256U << 20;                  // a bzImage or vmlinux file
constexpr std::size_t kMaxVmlinux = 512U << 20;                      // the uncompressed kernel
constexpr std::size_t kMaxModule = 64U << 20;                        // one .ko
constexpr std::size_t kMaxAgent = 256U << 20;                        // the static agent
constexpr std::size_t kLz4LegacyBlock = 8U << 20;                    // lz4 -l: 8 MiB of output per block
constexpr std::uint32_t kLz4LegacyMagic = 0x184C2102;                // bytes 02 21 4c 18
constexpr std::string_view kDefaultKernelCache = "/var/cache/boxlite/kernel";

std::uint16_t le16(std::span<const std::byte> b, std::size_t at) {
    return static_cast<std::uint16_t>(std::to_integer<unsigned>(b[at]) | std::to_integer<unsigned>(b[at + 1]) << 8);
}
std::uint32_t le32(std::span<const std::byte> b, std::size_t at) {
    return static_cast<std::uint32_t>(le16(b, at)) | static_cast<std::uint32_t>(le16(b, at + 2)) << 16;
}
std::uint64_t le64(std::span<const std::byte> b, std::size_t at) {
    return static_cast<std::uint64_t>(le32(b, at)) | static_cast<std::uint64_t>(le32(b, at + 4)) << 32;
}
bool fits(std::size_t size, std::uint64_t offset, std::uint64_t length) {
    return offset <= size && length <= size - offset;
}

std::string normalize_module_name(std::string name) {
    std::replace(name.begin(), name.end(), '-', '_');
    return name;
}

BoxliteResult<std::vector<std::byte>> read_bytes(const fs::path& path, std::size_t max, std::string_view what) {
    base::OwnedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail_errno(ErrorKind::Config, fmt::format("opening {} {}", what, path.string()), errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
        return fail_errno(ErrorKind::Config, fmt::format("reading {} {}", what, path.string()), errno);
    if (!S_ISREG(st.st_mode)) return fail(ErrorKind::Config, "{} {} is not a regular file", what, path.string());
    if (static_cast<std::uint64_t>(st.st_size) > max)
        return fail(ErrorKind::Config, "{} {} is {} bytes, more than the {} allowed", what, path.string(), st.st_size,
                    max);
    std::vector<std::byte> bytes(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < bytes.size()) {
        const auto n = ::read(fd.get(), bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno(ErrorKind::Config, fmt::format("reading {} {}", what, path.string()), errno);
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
    }
    bytes.resize(done);
    return bytes;
}

BoxliteResult<void> write_file_atomically(const fs::path& target, std::span<const std::byte> bytes, unsigned mode) {
    std::string temp = (target.parent_path() / ("." + target.filename().string() + ".XXXXXX")).string();
    base::OwnedFd fd(::mkostemp(temp.data(), O_CLOEXEC));
    if (!fd) return fail_errno(ErrorKind::Storage, fmt::format("creating a file next to {}", target.string()), errno);
    std::size_t done = 0;
    while (done < bytes.size()) {
        const auto n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int saved = errno;
            ::unlink(temp.c_str());
            return fail_errno(ErrorKind::Storage, fmt::format("writing {}", target.string()), saved);
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fchmod(fd.get(), mode) != 0 || ::fsync(fd.get()) != 0 || ::rename(temp.c_str(), target.c_str()) != 0) {
        const int saved = errno;
        ::unlink(temp.c_str());
        return fail_errno(ErrorKind::Storage, fmt::format("writing {}", target.string()), saved);
    }
    return {};
}

// ---- liblz4 and libarchive, loaded on first use (as lib/image/dynamic_libs.hpp does, and for
// the same reason: no process that never builds an initramfs pays for loading them).
#define BOXLITE_DYNAMIC_FN(name) decltype(&::name) name
struct Lz4Api {
    BOXLITE_DYNAMIC_FN(LZ4_decompress_safe);
};
struct ArchiveWriteApi {
    BOXLITE_DYNAMIC_FN(archive_write_new);
    BOXLITE_DYNAMIC_FN(archive_write_set_format_cpio_newc);
    BOXLITE_DYNAMIC_FN(archive_write_add_filter_none);
    BOXLITE_DYNAMIC_FN(archive_write_open_filename);
    BOXLITE_DYNAMIC_FN(archive_write_header);
    BOXLITE_DYNAMIC_FN(archive_write_data);
    BOXLITE_DYNAMIC_FN(archive_write_close);
    BOXLITE_DYNAMIC_FN(archive_write_free);
    BOXLITE_DYNAMIC_FN(archive_error_string);
    BOXLITE_DYNAMIC_FN(archive_entry_new);
    BOXLITE_DYNAMIC_FN(archive_entry_free);
    BOXLITE_DYNAMIC_FN(archive_entry_set_pathname);
    BOXLITE_DYNAMIC_FN(archive_entry_set_filetype);
    BOXLITE_DYNAMIC_FN(archive_entry_set_perm);
    BOXLITE_DYNAMIC_FN(archive_entry_set_size);
    BOXLITE_DYNAMIC_FN(archive_entry_set_rdevmajor);
    BOXLITE_DYNAMIC_FN(archive_entry_set_rdevminor);
    BOXLITE_DYNAMIC_FN(archive_entry_set_nlink);
    BOXLITE_DYNAMIC_FN(archive_entry_set_ino);
};
#undef BOXLITE_DYNAMIC_FN

template <typename Fn>
void bind_symbol(void* library, const char* name, Fn& slot, std::string& missing) {
    void* symbol = ::dlsym(library, name);
    if (symbol == nullptr) missing += missing.empty() ? name : std::string(", ") + name;
    slot = reinterpret_cast<Fn>(symbol);
}

template <typename Api>
BoxliteResult<const Api*> load_api(const char* soname, const char* package,
                                   const std::function<void(void*, Api&, std::string&)>& bind_all) {
    static std::mutex mutex;
    static std::optional<BoxliteResult<const Api*>> loaded;
    std::lock_guard lock(mutex);
    if (loaded) return *loaded;
    void* library = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (library == nullptr) {
        const char* why = ::dlerror();
        loaded = fail(ErrorKind::Config,
                      "cannot load {} ({}), which BoxLite needs to build the guest's boot files; "
                      "install the Debian package {}",
                      soname, why != nullptr ? why : "not found", package);
        return *loaded;
    }
    static Api api{};
    std::string missing;
    bind_all(library, api, missing);
    if (!missing.empty())
        loaded = fail(ErrorKind::Config, "{} lacks {}: a newer version is needed (Debian package {})", soname, missing,
                      package);
    else loaded = &api;
    return *loaded;
}

BoxliteResult<const Lz4Api*> lz4_api() {
    return load_api<Lz4Api>("liblz4.so.1", "liblz4-1", [](void* lib, Lz4Api& api, std::string& missing) {
        bind_symbol(lib, "LZ4_decompress_safe", api.LZ4_decompress_safe, missing);
    });
}

BoxliteResult<const ArchiveWriteApi*> archive_api() {
    return load_api<ArchiveWriteApi>("libarchive.so.13", "libarchive13 (bookworm) or libarchive13t64 (trixie)",
                                     [](void* lib, ArchiveWriteApi& api, std::string& missing) {
#define BOXLITE_BIND(name) bind_symbol(lib, #name, api.name, missing)
                                         BOXLITE_BIND(archive_write_new);
                                         BOXLITE_BIND(archive_write_set_format_cpio_newc);
                                         BOXLITE_BIND(archive_write_add_filter_none);
                                         BOXLITE_BIND(archive_write_open_filename);
                                         BOXLITE_BIND(archive_write_header);
                                         BOXLITE_BIND(archive_write_data);
                                         BOXLITE_BIND(archive_write_close);
                                         BOXLITE_BIND(archive_write_free);
                                         BOXLITE_BIND(archive_error_string);
                                         BOXLITE_BIND(archive_entry_new);
                                         BOXLITE_BIND(archive_entry_free);
                                         BOXLITE_BIND(archive_entry_set_pathname);
                                         BOXLITE_BIND(archive_entry_set_filetype);
                                         BOXLITE_BIND(archive_entry_set_perm);
                                         BOXLITE_BIND(archive_entry_set_size);
                                         BOXLITE_BIND(archive_entry_set_rdevmajor);
                                         BOXLITE_BIND(archive_entry_set_rdevminor);
                                         BOXLITE_BIND(archive_entry_set_nlink);
                                         BOXLITE_BIND(archive_entry_set_ino);
#undef BOXLITE_BIND
                                     });
}

// ---- the kernel tree: which image, which modules

struct KernelTree {
    fs::path image;        // bzImage/vmlinuz or vmlinux
    fs::path module_root;  // lib/modules/<release>, or empty
    std::string release;
};

BoxliteResult<KernelTree> resolve_kernel_tree(const fs::path& source) {
    std::error_code ec;
    KernelTree tree;
    if (fs::is_directory(source, ec)) {
        std::vector<fs::path> images;
        for (const auto& entry : fs::directory_iterator(source / "boot", ec)) {
            if (entry.path().filename().string().rfind("vmlinuz-", 0) == 0) images.push_back(entry.path());
        }
        if (images.empty())
            return fail(ErrorKind::Config,
                        "guest kernel folder {} has no boot/vmlinuz-<release> (expected an unpacked "
                        "linux-image .deb, as scripts/setup makes)",
                        source.string());
        if (images.size() > 1)
            return fail(ErrorKind::Config, "guest kernel folder {} has {} kernels in boot/; name one of them",
                        source.string(), images.size());
        tree.image = images.front();
    } else if (fs::is_regular_file(source, ec)) {
        tree.image = source;
    } else {
        return fail(ErrorKind::Config, "guest kernel {} is neither a file nor a folder", source.string());
    }
    const std::string name = tree.image.filename().string();
    if (name.rfind("vmlinuz-", 0) == 0 && tree.image.parent_path().filename() == "boot") {
        tree.release = name.substr(8);
        const fs::path modules = tree.image.parent_path().parent_path() / "lib" / "modules" / tree.release;
        if (fs::is_directory(modules, ec)) tree.module_root = modules;
    }
    return tree;
}

struct ModuleSet {
    std::vector<std::pair<std::string, fs::path>> ordered;  // file name in the initramfs, source
    std::vector<std::string> built_in;
    std::vector<std::string> absent;
};

BoxliteResult<ModuleSet> collect_modules(const fs::path& root) {
    ModuleSet set;
    if (root.empty()) return set;
    std::set<std::string> builtin;
    {
        std::ifstream list(root / "modules.builtin");
        std::string line;
        while (std::getline(list, line)) {
            auto stem = fs::path(line).filename().string();
            if (auto dot = stem.find('.'); dot != std::string::npos) stem.resize(dot);
            builtin.insert(normalize_module_name(stem));
        }
    }
    std::map<std::string, fs::path> files;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root / "kernel", ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        const auto file = it->path().filename().string();
        const auto dot = file.find(".ko");
        if (dot == std::string::npos || !it->is_regular_file()) continue;
        if (file.size() != dot + 3)
            return fail(ErrorKind::Config,
                        "guest kernel module {} is compressed; BoxLite takes uncompressed .ko files only (Debian 12's "
                        "cloud kernel ships them so)",
                        it->path().string());
        files.emplace(normalize_module_name(file.substr(0, dot)), it->path());
    }
    if (ec) return fail(ErrorKind::Config, "reading the module tree {}: {}", (root / "kernel").string(), ec.message());

    std::vector<ModuleInfo> infos;
    std::set<std::string> read;
    std::vector<std::string> pending;
    std::vector<std::string> wanted;
    for (auto name : kGuestModules) {
        const std::string n(name);
        if (builtin.count(n)) {
            set.built_in.push_back(n);
        } else if (files.count(n)) {
            wanted.push_back(n);
            pending.push_back(n);
        } else {
            set.absent.push_back(n);
        }
    }
    while (!pending.empty()) {
        const auto name = pending.back();
        pending.pop_back();
        if (!read.insert(name).second || builtin.count(name)) continue;
        const auto file = files.find(name);
        if (file == files.end())
            return fail(ErrorKind::Config, "guest kernel module {} is needed (a dependency) but not in {}", name,
                        root.string());
        BOXLITE_TRY(auto bytes, read_bytes(file->second, kMaxModule, "kernel module"));
        auto modinfo = read_modinfo(bytes);
        if (!modinfo) return fail(modinfo.error().with_context(file->second.string()));
        ModuleInfo info{name, {}};
        for (const auto& field : *modinfo) {
            if (field.rfind("depends=", 0) != 0) continue;
            std::string_view list(field);
            list.remove_prefix(8);
            while (!list.empty()) {
                const auto comma = list.find(',');
                auto dep = normalize_module_name(std::string(list.substr(0, comma)));
                if (!dep.empty() && !builtin.count(dep)) {
                    info.depends.push_back(dep);
                    pending.push_back(dep);
                }
                if (comma == std::string_view::npos) break;
                list.remove_prefix(comma + 1);
            }
        }
        infos.push_back(std::move(info));
    }
    BOXLITE_TRY(auto order, module_load_order(infos, wanted));
    for (const auto& name : order) set.ordered.emplace_back(name + ".ko", files.at(name));
    return set;
}

/// "<dev>:<ino>:<size>:<mtime ns>" of `path`, or "" when it cannot be read (nothing is remembered).
std::string file_identity(const fs::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return {};
    return fmt::format("{}:{}:{}:{}.{}", st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

using AssetKeys = std::tuple<std::string, std::string, bool>;  // kernel key, key, ELF image

std::mutex& keys_mutex() {
    static std::mutex mutex;
    return mutex;
}
std::map<std::string, AssetKeys>& keys_memo() {
    static std::map<std::string, AssetKeys> memo;
    return memo;
}

std::optional<AssetKeys> remembered_keys(const std::string& name) {
    std::lock_guard lock(keys_mutex());
    const auto at = keys_memo().find(name);
    if (at == keys_memo().end()) return std::nullopt;
    return at->second;
}

void remember_keys(const std::string& name, AssetKeys keys) {
    std::lock_guard lock(keys_mutex());
    if (keys_memo().size() > 64) keys_memo().clear();  // bounded: kernels and agents are few
    keys_memo()[name] = std::move(keys);
}

// ---- the initramfs

struct CpioFile {
    std::string path;
    unsigned mode = 0;  // with the type bits
    std::span<const std::byte> data;
    unsigned rdev_major = 0, rdev_minor = 0;
};

BoxliteResult<void> write_cpio(const fs::path& target, const std::vector<CpioFile>& files) {
    BOXLITE_TRY(auto api, archive_api());
    std::string temp = (target.parent_path() / ("." + target.filename().string() + ".XXXXXX")).string();
    {
        base::OwnedFd reserve(::mkostemp(temp.data(), O_CLOEXEC));
        if (!reserve)
            return fail_errno(ErrorKind::Storage, fmt::format("creating a file next to {}", target.string()), errno);
    }
    archive* writer = api->archive_write_new();
    auto failed = [&](std::string what) -> tl::unexpected<BoxliteError> {
        const char* why = api->archive_error_string(writer);
        auto error = fail(ErrorKind::Storage, "writing the initramfs {}: {}: {}", target.string(), what,
                          why != nullptr ? why : "unknown error");
        api->archive_write_free(writer);
        ::unlink(temp.c_str());
        return error;
    };
    if (api->archive_write_set_format_cpio_newc(writer) != ARCHIVE_OK ||
        api->archive_write_add_filter_none(writer) != ARCHIVE_OK ||
        api->archive_write_open_filename(writer, temp.c_str()) != ARCHIVE_OK)
        return failed("opening it");
    std::int64_t ino = 1;
    for (const auto& file : files) {
        archive_entry* entry = api->archive_entry_new();
        api->archive_entry_set_pathname(entry, file.path.c_str());
        api->archive_entry_set_filetype(entry, file.mode & S_IFMT);
        api->archive_entry_set_perm(entry, file.mode & 07777);
        api->archive_entry_set_size(entry, static_cast<la_int64_t>(file.data.size()));
        api->archive_entry_set_rdevmajor(entry, file.rdev_major);
        api->archive_entry_set_rdevminor(entry, file.rdev_minor);
        api->archive_entry_set_nlink(entry, S_ISDIR(file.mode) ? 2 : 1);
        api->archive_entry_set_ino(entry, ino++);
        const bool header_ok = api->archive_write_header(writer, entry) == ARCHIVE_OK;
        api->archive_entry_free(entry);
        if (!header_ok) return failed(file.path);
        if (!file.data.empty() && api->archive_write_data(writer, file.data.data(), file.data.size()) !=
                                      static_cast<la_ssize_t>(file.data.size()))
            return failed(file.path);
    }
    if (api->archive_write_close(writer) != ARCHIVE_OK) return failed("closing it");
    api->archive_write_free(writer);
    if (::chmod(temp.c_str(), 0644) != 0 || ::rename(temp.c_str(), target.c_str()) != 0) {
        const int saved = errno;
        ::unlink(temp.c_str());
        return fail_errno(ErrorKind::Storage, fmt::format("writing the initramfs {}", target.string()), saved);
    }
    return {};
}

std::string hex64(std::uint64_t v) { return fmt::format("{:016x}", v); }

/// After a build (under the lock): other kernels' and agents' files that nobody wrote for an
/// hour go. A VM engine reads its files within seconds of prepare_guest_assets() returning, and
/// whoever still wants an old set builds it again.
void remove_stale_assets(const fs::path& dir, const std::set<std::string>& keep) {
    std::error_code ec;
    const auto cutoff = fs::file_time_type::clock::now() - std::chrono::hours(1);
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
        const auto name = entry.path().filename().string();
        const bool ours = name.rfind("vmlinux-", 0) == 0 || name.rfind("initramfs-", 0) == 0 ||
                          name.rfind("assets-", 0) == 0 || name.rfind(".vmlinux-", 0) == 0 ||
                          name.rfind(".initramfs-", 0) == 0 || name.rfind(".assets-", 0) == 0;
        if (!ours || keep.count(name)) continue;
        std::error_code time_ec;
        const auto written = entry.last_write_time(time_ec);
        if (!time_ec && written < cutoff) fs::remove(entry.path(), time_ec);
    }
}

}  // namespace

// ---- parsers

BoxliteResult<std::vector<std::byte>> decompress_lz4_legacy(std::span<const std::byte> stream, std::size_t max_output) {
    if (stream.size() < 4 || le32(stream, 0) != kLz4LegacyMagic)
        return fail(ErrorKind::Config, "not an LZ4 legacy stream (no 02 21 4c 18 magic)");
    BOXLITE_TRY(auto api, lz4_api());
    std::vector<std::byte> out;
    std::size_t at = 4;
    while (at < stream.size()) {
        if (stream.size() - at < 4)
            return fail(ErrorKind::Config, "LZ4 stream truncated at byte {} (a block header needs 4 bytes)", at);
        const std::uint32_t block = le32(stream, at);
        at += 4;
        if (block == kLz4LegacyMagic) continue;  // concatenated streams
        if (block > stream.size() - at || block > static_cast<std::uint32_t>(LZ4_COMPRESSBOUND(kLz4LegacyBlock)))
            return fail(ErrorKind::Config, "LZ4 block at byte {} claims {} bytes, past the end of the stream", at - 4,
                        block);
        const std::size_t room = std::min(kLz4LegacyBlock, max_output - out.size());
        if (room == 0) return fail(ErrorKind::Config, "LZ4 stream decompresses to more than {} bytes", max_output);
        const std::size_t before = out.size();
        out.resize(before + room);
        const int produced = api->LZ4_decompress_safe(reinterpret_cast<const char*>(stream.data() + at),
                                                      reinterpret_cast<char*>(out.data() + before),
                                                      static_cast<int>(block), static_cast<int>(room));
        if (produced < 0) return fail(ErrorKind::Config, "LZ4 block at byte {} is corrupt", at - 4);
        out.resize(before + static_cast<std::size_t>(produced));
        at += block;
    }
    return out;
}

BoxliteResult<std::vector<std::byte>> extract_vmlinux(std::span<const std::byte> image) {
    // The x86 boot protocol's setup header (Documentation/arch/x86/boot.rst).
    if (image.size() < 0x250 || std::memcmp(image.data() + 0x202, "HdrS", 4) != 0)
        return fail(ErrorKind::Config, "not a bzImage (no HdrS boot header)");
    if (le16(image, 0x206) < 0x208)
        return fail(ErrorKind::Config, "bzImage boot protocol {:#x} is older than 2.08 (no payload fields)",
                    le16(image, 0x206));
    unsigned setup_sects = std::to_integer<unsigned>(image[0x1f1]);
    if (setup_sects == 0) setup_sects = 4;
    const std::uint64_t protected_mode = (std::uint64_t{setup_sects} + 1) * 512;
    const std::uint64_t payload_at = protected_mode + le32(image, 0x248);
    const std::uint64_t payload_size = le32(image, 0x24c);
    if (!fits(image.size(), payload_at, payload_size) || payload_size < 8)
        return fail(ErrorKind::Config, "bzImage payload ({} bytes at {}) lies outside the {}-byte file", payload_size,
                    payload_at, image.size());
    const auto payload = image.subspan(payload_at, payload_size);
    if (le32(payload, 0) != kLz4LegacyMagic) {
        std::string_view kind = "an unknown format";
        if (std::to_integer<unsigned>(payload[0]) == 0x1f && std::to_integer<unsigned>(payload[1]) == 0x8b)
            kind = "gzip";
        if (std::memcmp(payload.data(),
                        "\xfd"
                        "7zXZ",
                        6) == 0)
            kind = "xz";
        if (le32(payload, 0) == 0xFD2FB528) kind = "zstd";
        return fail(ErrorKind::Config,
                    "bzImage payload is {}, not LZ4; BoxLite extracts LZ4 kernels (Debian's cloud kernel) — give "
                    "an uncompressed vmlinux instead",
                    kind);
    }
    // The build appends the uncompressed size (le32) to the compressed stream.
    const std::uint32_t expected = le32(payload, payload.size() - 4);
    if (expected == 0 || expected > kMaxVmlinux)
        return fail(ErrorKind::Config, "bzImage says its kernel is {} bytes uncompressed (allowed: 1..{})", expected,
                    kMaxVmlinux);
    auto out = decompress_lz4_legacy(payload.first(payload.size() - 4), expected);
    if (!out) return fail(out.error().with_context("bzImage payload"));
    if (out->size() != expected)
        return fail(ErrorKind::Config, "bzImage payload decompressed to {} bytes, its trailer says {}", out->size(),
                    expected);
    BOXLITE_TRY_VOID(validate_vmlinux(*out));
    return std::move(*out);
}

BoxliteResult<void> validate_vmlinux(std::span<const std::byte> elf) {
    if (elf.size() < 64 || std::memcmp(elf.data(),
                                       "\x7f"
                                       "ELF",
                                       4) != 0)
        return fail(ErrorKind::Config, "kernel is not an ELF file");
    if (std::to_integer<unsigned>(elf[4]) != 2 || std::to_integer<unsigned>(elf[5]) != 1)
        return fail(ErrorKind::Config, "kernel is not a 64-bit little-endian ELF file");
    if (le16(elf, 18) != 62)
        return fail(ErrorKind::Config, "kernel is for ELF machine {}, not x86-64 (62)", le16(elf, 18));
    if (le16(elf, 16) != 2)
        return fail(ErrorKind::Config, "kernel ELF type {} is not an executable (2)", le16(elf, 16));
    const std::uint64_t phoff = le64(elf, 32);
    const std::uint16_t phentsize = le16(elf, 54);
    const std::uint16_t phnum = le16(elf, 56);
    if (phentsize != 56 || phnum == 0 || !fits(elf.size(), phoff, std::uint64_t{phnum} * phentsize))
        return fail(ErrorKind::Config, "kernel ELF program headers ({} of {} bytes at {}) are malformed", phnum,
                    phentsize, phoff);
    for (std::uint16_t i = 0; i < phnum; ++i) {
        const std::size_t ph = phoff + std::size_t{i} * phentsize;
        if (le32(elf, ph) != 4) continue;  // PT_NOTE
        const std::uint64_t offset = le64(elf, ph + 8), size = le64(elf, ph + 32);
        if (!fits(elf.size(), offset, size))
            return fail(ErrorKind::Config, "kernel ELF note segment ({} bytes at {}) lies outside the file", size,
                        offset);
        const auto notes = elf.subspan(offset, size);
        std::size_t at = 0;
        while (notes.size() - at >= 12) {
            const std::uint64_t namesz = le32(notes, at), descsz = le32(notes, at + 4), type = le32(notes, at + 8);
            const std::uint64_t name_at = at + 12, desc_at = name_at + ((namesz + 3) & ~3ULL);
            const std::uint64_t next = desc_at + ((descsz + 3) & ~3ULL);
            if (next > notes.size()) break;
            if (type == 18 && namesz == 4 && std::memcmp(notes.data() + name_at, "Xen", 4) == 0 && descsz >= 4)
                return {};  // XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point
            at = next;
        }
    }
    return fail(ErrorKind::Config, "kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); it needs CONFIG_PVH");
}

BoxliteResult<std::span<const std::byte>> strip_module_signature(std::span<const std::byte> module) {
    constexpr std::string_view kMagic = "~Module signature appended~\n";
    constexpr std::size_t kSignatureInfo = 12;  // struct module_signature
    if (module.size() < kMagic.size() ||
        std::memcmp(module.data() + module.size() - kMagic.size(), kMagic.data(), kMagic.size()) != 0)
        return module;
    const std::size_t before_magic = module.size() - kMagic.size();
    if (before_magic < kSignatureInfo)
        return fail(ErrorKind::Config, "kernel module: a signature trailer without its signature information");
    const auto info = module.subspan(before_magic - kSignatureInfo, kSignatureInfo);
    std::uint32_t length = 0;
    for (std::size_t i = 8; i < 12; ++i) length = length << 8 | std::to_integer<std::uint32_t>(info[i]);
    const std::size_t rest = before_magic - kSignatureInfo;
    if (length == 0 || length > rest)
        return fail(ErrorKind::Config, "kernel module: its signature says it is {} bytes, {} precede it", length, rest);
    return module.first(rest - length);
}

BoxliteResult<std::vector<std::string>> read_modinfo(std::span<const std::byte> module) {
    if (module.size() < 64 ||
        std::memcmp(module.data(),
                    "\x7f"
                    "ELF",
                    4) != 0 ||
        std::to_integer<unsigned>(module[4]) != 2)
        return fail(ErrorKind::Config, "kernel module is not a 64-bit ELF file");
    const std::uint64_t shoff = le64(module, 40);
    const std::uint16_t shentsize = le16(module, 58), shnum = le16(module, 60), shstrndx = le16(module, 62);
    if (shentsize != 64 || shnum == 0 || shstrndx >= shnum ||
        !fits(module.size(), shoff, std::uint64_t{shnum} * shentsize))
        return fail(ErrorKind::Config, "kernel module section headers ({} at {}) are malformed", shnum, shoff);
    auto section = [&](std::uint16_t index) { return shoff + std::size_t{index} * shentsize; };
    const std::uint64_t strtab_at = le64(module, section(shstrndx) + 24),
                        strtab_size = le64(module, section(shstrndx) + 32);
    if (!fits(module.size(), strtab_at, strtab_size))
        return fail(ErrorKind::Config, "kernel module section names lie outside the file");
    const auto names = module.subspan(strtab_at, strtab_size);
    for (std::uint16_t i = 0; i < shnum; ++i) {
        const std::uint32_t name = le32(module, section(i));
        constexpr std::string_view kWanted = ".modinfo";
        if (name >= names.size() || names.size() - name < kWanted.size() + 1 ||
            std::memcmp(names.data() + name, kWanted.data(), kWanted.size() + 1) != 0)
            continue;
        const std::uint64_t at = le64(module, section(i) + 24), size = le64(module, section(i) + 32);
        if (!fits(module.size(), at, size))
            return fail(ErrorKind::Config, "kernel module .modinfo ({} bytes at {}) lies outside the file", size, at);
        std::vector<std::string> fields;
        const char* text = reinterpret_cast<const char*>(module.data() + at);
        std::size_t start = 0;
        for (std::size_t j = 0; j <= size; ++j) {
            if (j == size || text[j] == '\0') {
                if (j > start) fields.emplace_back(text + start, j - start);
                start = j + 1;
            }
        }
        return fields;
    }
    return fail(ErrorKind::Config, "kernel module has no .modinfo section");
}

BoxliteResult<std::vector<std::string>> module_load_order(const std::vector<ModuleInfo>& modules,
                                                          const std::vector<std::string>& wanted) {
    std::map<std::string, const ModuleInfo*> by_name;
    for (const auto& m : modules) by_name[m.name] = &m;
    std::vector<std::string> order;
    std::map<std::string, int> state;  // 1: visiting, 2: done
    std::function<BoxliteResult<void>(const std::string&, int)> visit = [&](const std::string& name,
                                                                            int depth) -> BoxliteResult<void> {
        if (state[name] == 2) return {};
        if (state[name] == 1 || depth > 64)
            return fail(ErrorKind::Config, "kernel modules depend on each other in a cycle through {}", name);
        const auto found = by_name.find(name);
        if (found == by_name.end()) return fail(ErrorKind::Config, "kernel module {} is needed but unknown", name);
        state[name] = 1;
        for (const auto& dep : found->second->depends) BOXLITE_TRY_VOID(visit(dep, depth + 1));
        state[name] = 2;
        order.push_back(name);
        return {};
    };
    for (const auto& name : wanted) BOXLITE_TRY_VOID(visit(name, 0));
    return order;
}

// ---- search and cache

BoxliteResult<KernelSource> locate_guest_kernel(const fs::path& explicit_kernel) {
    std::error_code ec;
    auto must_exist = [&](const fs::path& path, std::string origin) -> BoxliteResult<KernelSource> {
        if (!fs::exists(path, ec))
            return fail(ErrorKind::Config, "guest kernel {} (from {}) does not exist", path.string(), origin);
        return KernelSource{path, std::move(origin)};
    };
    if (!explicit_kernel.empty()) return must_exist(explicit_kernel, "the kernel option");
    if (const char* env = std::getenv("BOXLITE_KERNEL"); env != nullptr && *env != '\0')
        return must_exist(env, "BOXLITE_KERNEL");
    if (const char* cache = std::getenv("BOXLITE_KERNEL_CACHE"); cache != nullptr && *cache != '\0')
        return must_exist(fs::path(cache) / "current", "BOXLITE_KERNEL_CACHE");
    const fs::path fallback = fs::path(kDefaultKernelCache) / "current";
    if (fs::exists(fallback, ec)) return KernelSource{fallback, "the kernel cache"};
    return fail(ErrorKind::Config,
                "no guest kernel: looked at the kernel option (not set), BOXLITE_KERNEL (not set), "
                "BOXLITE_KERNEL_CACHE (not set) and {} (missing); run scripts/setup, which unpacks Debian's "
                "linux-image-cloud-amd64 there, or set BOXLITE_KERNEL to a kernel",
                fallback.string());
}

std::string guest_tsc_cmdline() {
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line)) {
        if (line.rfind("cpu MHz", 0) != 0) continue;
        const auto colon = line.find(':');
        if (colon == std::string::npos) break;
        const double mhz = std::strtod(line.c_str() + colon + 1, nullptr);
        if (!(mhz > 0 && mhz < 100000)) break;
        return fmt::format("tsc_early_khz={} tsc=reliable", static_cast<std::uint64_t>(std::llround(mhz * 1000)));
    }
    return {};
}

std::string guest_boot_cmdline() {
    const std::string tsc = guest_tsc_cmdline();
    return tsc.empty() ? std::string("cryptomgr.notests=1") : "cryptomgr.notests=1 " + tsc;
}

BoxliteResult<GuestAssets> prepare_guest_assets(const GuestAssetOptions& options) {
    BOXLITE_TRY(auto source, locate_guest_kernel(options.kernel));
    auto with_source = [&](BoxliteError error) {
        return fail(error.with_context(fmt::format("guest kernel {} (from {})", source.path.string(), source.origin)));
    };
    auto tree = resolve_kernel_tree(source.path);
    if (!tree) return with_source(tree.error());
    BOXLITE_TRY(auto agent_path, locate_helper_binary("boxlite-agent", "BOXLITE_AGENT", options.agent));

    GuestAssets assets;
    assets.kernel_source = source.path;
    assets.kernel_origin = source.origin;
    assets.kernel_release = tree->release;

    // The keys hash the kernel image (~8 MB) and the agent (~2 MB): 10 ms of every box start.
    // They are remembered per process for files whose identity (device, inode, size, mtime in
    // ns) has not changed; a file replaced or touched is hashed again.
    const std::string module_root = tree->module_root.string();
    const auto image_identity = file_identity(tree->image);
    const auto agent_identity = file_identity(agent_path);
    const bool memo_usable = !image_identity.empty() && !agent_identity.empty();
    const auto memo_name = fmt::format("{}|{}|{}|{}|{}", image_identity, agent_identity, tree->image.string(),
                                       agent_path.string(), module_root);
    std::optional<std::vector<std::byte>> image, agent;
    bool is_elf = false;
    std::string kernel_key, key;
    if (auto known = memo_usable ? remembered_keys(memo_name) : std::nullopt) {
        std::tie(kernel_key, key, is_elf) = *known;
    } else {
        auto read_image = read_bytes(tree->image, kMaxKernelImage, "guest kernel");
        if (!read_image) return with_source(read_image.error());
        image = std::move(*read_image);
        BOXLITE_TRY(auto read_agent, read_bytes(agent_path, kMaxAgent, "guest agent"));
        agent = std::move(read_agent);
        is_elf = image->size() >= 4 && std::memcmp(image->data(),
                                                   "\x7f"
                                                   "ELF",
                                                   4) == 0;
        XXH3_state_t* state = XXH3_createState();
        XXH3_64bits_reset(state);
        XXH3_64bits_update(state, kAssetFormat.data(), kAssetFormat.size());
        XXH3_64bits_update(state, image->data(), image->size());
        // The vmlinux depends on the kernel image alone (50 MB: one per kernel, not per agent build).
        kernel_key = hex64(XXH3_64bits_digest(state));
        XXH3_64bits_update(state, module_root.c_str(), module_root.size() + 1);
        XXH3_64bits_update(state, agent->data(), agent->size());
        key = hex64(XXH3_64bits_digest(state));
        XXH3_freeState(state);
        if (memo_usable) remember_keys(memo_name, {kernel_key, key, is_elf});
    }

    const fs::path dir = options.home / "init";
    std::error_code ec;
    if (options.build) fs::create_directories(dir, ec);
    if (ec) return fail(ErrorKind::Storage, "creating {}: {}", dir.string(), ec.message());
    assets.vmlinux = is_elf ? tree->image : dir / fmt::format("vmlinux-{}", kernel_key);
    assets.initramfs = dir / fmt::format("initramfs-{}.cpio", key);
    const fs::path manifest = dir / fmt::format("assets-{}.json", key);

    auto load_manifest = [&]() -> bool {
        std::ifstream in(manifest);
        if (!in || !fs::exists(assets.vmlinux, ec) || !fs::exists(assets.initramfs, ec)) return false;
        std::string line;
        while (std::getline(in, line)) {
            if (line.rfind("module ", 0) == 0) assets.modules.push_back(line.substr(7));
            if (line.rfind("builtin ", 0) == 0) assets.built_in.push_back(line.substr(8));
        }
        return true;
    };
    if (load_manifest()) {
        assets.present = true;
        return assets;
    }
    if (!options.build) return assets;

    // One builder at a time; whoever waited finds the files made.
    BOXLITE_TRY(auto lock, base::FileLock::acquire(dir / "lock", base::FileLock::Mode::Exclusive));
    assets.present = true;
    if (load_manifest()) return assets;
    if (!image) {  // the keys were remembered, the files are gone: read what the build needs
        auto read_image = read_bytes(tree->image, kMaxKernelImage, "guest kernel");
        if (!read_image) return with_source(read_image.error());
        image = std::move(*read_image);
        BOXLITE_TRY(auto read_agent, read_bytes(agent_path, kMaxAgent, "guest agent"));
        agent = std::move(read_agent);
    }

    if (is_elf) {
        if (auto valid = validate_vmlinux(*image); !valid) return with_source(valid.error());
    } else if (!fs::exists(assets.vmlinux, ec)) {
        auto vmlinux = extract_vmlinux(*image);
        if (!vmlinux) return with_source(vmlinux.error().with_context(tree->image.string()));
        BOXLITE_TRY_VOID(write_file_atomically(assets.vmlinux, *vmlinux, 0644));
    }
    auto modules = collect_modules(tree->module_root);
    if (!modules) return with_source(modules.error());
    std::vector<std::vector<std::byte>> module_bytes;
    std::string order;
    for (const auto& [name, path] : modules->ordered) {
        BOXLITE_TRY(auto bytes, read_bytes(path, kMaxModule, "kernel module"));
        auto unsigned_part = strip_module_signature(bytes);
        if (!unsigned_part) return with_source(unsigned_part.error().with_context(path.string()));
        bytes.resize(unsigned_part->size());
        module_bytes.push_back(std::move(bytes));
        order += name + "\n";
        assets.modules.push_back(name);
    }
    assets.built_in = modules->built_in;
    const auto as_bytes = [](const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); };
    std::vector<CpioFile> files = {{"dev", S_IFDIR | 0755, {}, 0, 0},
                                   {"dev/console", S_IFCHR | 0600, {}, 5, 1},
                                   {"proc", S_IFDIR | 0555, {}, 0, 0},
                                   {"sys", S_IFDIR | 0555, {}, 0, 0},
                                   {"lib", S_IFDIR | 0755, {}, 0, 0},
                                   {std::string(kInitramfsModuleDir), S_IFDIR | 0755, {}, 0, 0},
                                   {"init", S_IFREG | 0755, *agent, 0, 0}};
    for (std::size_t i = 0; i < module_bytes.size(); ++i)
        files.push_back({fmt::format("{}/{}", kInitramfsModuleDir, modules->ordered[i].first), S_IFREG | 0644,
                         module_bytes[i], 0, 0});
    files.push_back({std::string(kInitramfsModuleOrder), S_IFREG | 0644, as_bytes(order), 0, 0});
    BOXLITE_TRY_VOID(write_cpio(assets.initramfs, files));

    std::string text = fmt::format("kernel {}\nrelease {}\n", tree->image.string(), tree->release);
    for (const auto& m : assets.modules) text += "module " + m + "\n";
    for (const auto& m : assets.built_in) text += "builtin " + m + "\n";
    for (const auto& m : modules->absent) text += "absent " + m + "\n";
    BOXLITE_TRY_VOID(write_file_atomically(manifest, as_bytes(text), 0644));
    assets.built = true;
    remove_stale_assets(dir, {assets.vmlinux.filename().string(), assets.initramfs.filename().string(),
                              manifest.filename().string()});
    return assets;
}

}  // namespace boxlite::engine

namespace boxlite {

BoxliteResult<GuestAssetsStatus> describe_guest_assets(const BoxliteOptions& options) {
    engine::GuestAssetOptions wanted;
    wanted.kernel = options.kernel;
    wanted.home = options.home_dir;
    wanted.build = false;
    BOXLITE_TRY(auto assets, engine::prepare_guest_assets(wanted));
    GuestAssetsStatus status;
    status.kernel_source = assets.kernel_source;
    status.kernel_origin = assets.kernel_origin;
    status.kernel_release = assets.kernel_release;
    status.vmlinux = assets.vmlinux;
    status.initramfs = assets.initramfs;
    status.cached = assets.present;
    status.modules = assets.modules;
    return status;
}

}  // namespace boxlite
