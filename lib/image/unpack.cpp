#include "unpack.hpp"

#include "base/fd.hpp"
#include "digest.hpp"
#include "dynamic_libs.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <unordered_set>
#include <vector>

namespace boxlite::image {
namespace {

struct ArchiveDeleter {
    const dynamic::ArchiveApi* api;
    void operator()(archive* a) const { api->archive_read_free(a); }
};

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

// Removes `name` in `dir_fd` and everything below it, never following a symlink.
int remove_at(int dir_fd, const char* name) {
    struct stat st {};
    if (::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return ::unlinkat(dir_fd, name, 0);
    const int fd = ::openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    DIR* dir = ::fdopendir(fd);
    if (dir == nullptr) {
        ::close(fd);
        return -1;
    }
    std::vector<std::string> children;
    while (const dirent* e = ::readdir(dir)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) children.emplace_back(e->d_name);
    }
    int rc = 0;
    for (const auto& child : children) {
        if (remove_at(::dirfd(dir), child.c_str()) != 0) rc = -1;
    }
    ::closedir(dir);
    if (rc != 0) return rc;
    return ::unlinkat(dir_fd, name, AT_REMOVEDIR);
}

struct Resolved {
    base::OwnedFd parent;  // O_PATH fd of the parent directory, inside the root
    std::string name;      // final component
};

struct DeferredDir {
    std::vector<std::string> components;
    mode_t mode;
    std::int64_t uid, gid;
    timespec mtime;
};

class Applier {
public:
    Applier(int root_fd, const UnpackLimits& limits, UnpackStats& stats, std::string_view what)
        : root_fd_(root_fd), limits_(limits), stats_(stats), what_(what), as_root_(::geteuid() == 0) {}

    BoxliteResult<void> run(const std::filesystem::path& layer) {
        BOXLITE_TRY(ar_, dynamic::libarchive());
        std::unique_ptr<archive, ArchiveDeleter> a(ar_->archive_read_new(), ArchiveDeleter{ar_});
        if (!a) return fail(ErrorKind::Internal, "libarchive: out of memory");
        ar_->archive_read_support_filter_gzip(a.get());
        ar_->archive_read_support_filter_zstd(a.get());
        ar_->archive_read_support_filter_none(a.get());
        ar_->archive_read_support_format_tar(a.get());
        if (ar_->archive_read_open_filename(a.get(), layer.c_str(), 1 << 16) != ARCHIVE_OK) {
            return fail(ErrorKind::Image, "layer {}: cannot open as tar (plain, gzip or zstd): {}", what_,
                        ar_->archive_error_string(a.get()));
        }
        archive_entry* entry = nullptr;
        while (true) {
            const int rc = ar_->archive_read_next_header(a.get(), &entry);
            if (rc == ARCHIVE_EOF) break;
            if (rc < ARCHIVE_WARN) {
                return fail(ErrorKind::Image, "layer {}: corrupt tar stream: {}", what_,
                            ar_->archive_error_string(a.get()));
            }
            if (++stats_.entries > limits_.max_entries) {
                return fail(ErrorKind::Image, "layer {}: more than {} entries (refused as hostile)", what_,
                            limits_.max_entries);
            }
            BOXLITE_TRY_VOID(apply_entry(a.get(), entry));
        }
        for (auto it = deferred_.rbegin(); it != deferred_.rend(); ++it) BOXLITE_TRY_VOID(apply_dir_metadata(*it));
        return {};
    }

private:
    BoxliteResult<std::vector<std::string>> split(std::string_view raw, std::string_view role) {
        if (raw.size() > limits_.max_path_length) {
            return fail(ErrorKind::Image, "layer {}: {} path of {} bytes is longer than {} (refused as hostile)", what_,
                        role, raw.size(), limits_.max_path_length);
        }
        if (!raw.empty() && raw.front() == '/') {
            return fail(ErrorKind::Image,
                        "layer {}: {} '{}' is an absolute path (refused: layer paths must be relative)", what_, role,
                        raw);
        }
        std::vector<std::string> parts;
        std::size_t start = 0;
        while (start <= raw.size()) {
            auto end = raw.find('/', start);
            if (end == std::string_view::npos) end = raw.size();
            const auto part = raw.substr(start, end - start);
            if (part == "..") {
                return fail(ErrorKind::Image, "layer {}: {} '{}' contains '..' (refused: it could leave the rootfs)",
                            what_, role, raw);
            }
            if (!part.empty() && part != ".") parts.emplace_back(part);
            start = end + 1;
        }
        return parts;
    }

    // Opens the parent of `parts` inside the root without following any symlink. Missing
    // directories are created (0755) when `create` is set; otherwise an empty fd means "absent".
    BoxliteResult<Resolved> resolve(const std::vector<std::string>& parts, std::string_view raw, bool create) {
        Resolved out;
        out.parent = base::OwnedFd(::fcntl(root_fd_, F_DUPFD_CLOEXEC, 0));
        if (out.parent.get() < 0) return fail_errno(ErrorKind::Storage, "dup", errno);
        for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
            const char* comp = parts[i].c_str();
            int fd = ::openat(out.parent.get(), comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0 && errno == ENOENT) {
                if (!create) return Resolved{};
                if (::mkdirat(out.parent.get(), comp, 0755) != 0 && errno != EEXIST) {
                    return fail_errno(ErrorKind::Storage,
                                      fmt::format("layer {}: creating directory for '{}'", what_, raw), errno);
                }
                fd = ::openat(out.parent.get(), comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            }
            if (fd < 0) {
                struct stat st {};
                if (::fstatat(out.parent.get(), comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
                    return fail(ErrorKind::Image,
                                "layer {}: entry '{}' goes through the symlink '{}' (refused: it could lead outside the "
                                "rootfs)",
                                what_, raw, parts[i]);
                }
                return fail(ErrorKind::Image, "layer {}: entry '{}': '{}' is not a directory", what_, raw, parts[i]);
            }
            out.parent = base::OwnedFd(fd);
        }
        out.name = parts.back();
        return out;
    }

    static std::string join(const std::vector<std::string>& parts) {
        std::string out;
        for (const auto& p : parts) {
            if (!out.empty()) out += '/';
            out += p;
        }
        return out;
    }

    BoxliteResult<void> check_id(std::int64_t id, std::string_view raw) {
        if (id < 0 || id > 0xFFFFFFFEll) {
            return fail(ErrorKind::Image, "layer {}: entry '{}' has an invalid owner id {}", what_, raw, id);
        }
        return {};
    }

    BoxliteResult<void> apply_entry(archive* a, archive_entry* entry) {
        const char* path_c = ar_->archive_entry_pathname(entry);
        if (path_c == nullptr) path_c = ar_->archive_entry_pathname_utf8(entry);
        if (path_c == nullptr) return fail(ErrorKind::Image, "layer {}: entry without a path", what_);
        const std::string raw(path_c);
        BOXLITE_TRY(auto parts, split(raw, "entry"));
        if (parts.empty()) return {};  // "./": the root itself keeps its own metadata

        const std::string& base = parts.back();
        if (base.starts_with(kWhiteoutPrefix)) return apply_whiteout(parts, raw);

        const auto size = ar_->archive_entry_size(entry);
        if (size < 0 || static_cast<std::uint64_t>(size) > limits_.max_entry_bytes) {
            return fail(ErrorKind::Image,
                        "layer {}: entry '{}' claims {} bytes (at most {} allowed; refused as hostile)", what_, raw,
                        size, limits_.max_entry_bytes);
        }
        BOXLITE_TRY_VOID(check_id(ar_->archive_entry_uid(entry), raw));
        BOXLITE_TRY_VOID(check_id(ar_->archive_entry_gid(entry), raw));

        const mode_t type = ar_->archive_entry_filetype(entry);
        if (type == AE_IFCHR || type == AE_IFBLK || type == AE_IFSOCK) {
            ++stats_.skipped_devices;
            return {};
        }
        BOXLITE_TRY(auto where, resolve(parts, raw, true));
        const int dir = where.parent.get();
        const char* name = where.name.c_str();
        written_.insert(join(parts));

        struct stat existing {};
        const bool exists = ::fstatat(dir, name, &existing, AT_SYMLINK_NOFOLLOW) == 0;
        const mode_t mode = ar_->archive_entry_perm(entry) & 07777;

        if (type == AE_IFDIR) {
            if (exists && !S_ISDIR(existing.st_mode) && remove_at(dir, name) != 0) {
                return fail_errno(ErrorKind::Storage, fmt::format("layer {}: replacing '{}'", what_, raw), errno);
            }
            if ((!exists || !S_ISDIR(existing.st_mode)) && ::mkdirat(dir, name, 0700) != 0) {
                return fail_errno(ErrorKind::Storage, fmt::format("layer {}: creating directory '{}'", what_, raw),
                                  errno);
            }
            set_xattrs_at(dir, name, entry, true);
            deferred_.push_back({parts,
                                 mode,
                                 ar_->archive_entry_uid(entry),
                                 ar_->archive_entry_gid(entry),
                                 {ar_->archive_entry_mtime(entry), ar_->archive_entry_mtime_nsec(entry)}});
            return {};
        }
        // Anything else replaces what was there: never write through an existing file, which could
        // be a hardlink shared with another path.
        if (exists && remove_at(dir, name) != 0) {
            return fail_errno(ErrorKind::Storage, fmt::format("layer {}: replacing '{}'", what_, raw), errno);
        }
        const timespec times[2] = {{ar_->archive_entry_mtime(entry), ar_->archive_entry_mtime_nsec(entry)},
                                   {ar_->archive_entry_mtime(entry), ar_->archive_entry_mtime_nsec(entry)}};

        if (const char* link = ar_->archive_entry_hardlink(entry); link != nullptr) {
            BOXLITE_TRY(auto target_parts, split(link, "hardlink target"));
            if (target_parts.empty()) {
                return fail(ErrorKind::Image, "layer {}: hardlink '{}' points at the root directory", what_, raw);
            }
            BOXLITE_TRY(auto target, resolve(target_parts, link, false));
            struct stat tst {};
            if (target.parent.get() < 0 ||
                ::fstatat(target.parent.get(), target.name.c_str(), &tst, AT_SYMLINK_NOFOLLOW) != 0) {
                return fail(ErrorKind::Image,
                            "layer {}: hardlink '{}' points at '{}', which does not exist in the rootfs", what_, raw,
                            link);
            }
            if (S_ISDIR(tst.st_mode)) {
                return fail(ErrorKind::Image, "layer {}: hardlink '{}' points at directory '{}'", what_, raw, link);
            }
            if (::linkat(target.parent.get(), target.name.c_str(), dir, name, 0) != 0) {
                return fail_errno(ErrorKind::Storage, fmt::format("layer {}: linking '{}' to '{}'", what_, raw, link),
                                  errno);
            }
            return {};
        }
        if (type == AE_IFLNK) {
            const char* target = ar_->archive_entry_symlink(entry);
            if (target == nullptr) return fail(ErrorKind::Image, "layer {}: symlink '{}' has no target", what_, raw);
            if (std::strlen(target) > limits_.max_path_length) {
                return fail(ErrorKind::Image, "layer {}: symlink '{}' has a target longer than {} bytes", what_, raw,
                            limits_.max_path_length);
            }
            if (::symlinkat(target, dir, name) != 0) {
                return fail_errno(ErrorKind::Storage, fmt::format("layer {}: creating symlink '{}'", what_, raw),
                                  errno);
            }
            if (as_root_) {
                (void)::fchownat(dir, name, static_cast<uid_t>(ar_->archive_entry_uid(entry)),
                                 static_cast<gid_t>(ar_->archive_entry_gid(entry)), AT_SYMLINK_NOFOLLOW);
            }
            set_xattrs_at(dir, name, entry, false);
            (void)::utimensat(dir, name, times, AT_SYMLINK_NOFOLLOW);
            return {};
        }
        if (type == AE_IFIFO) {
            if (::mknodat(dir, name, S_IFIFO | (mode & 0777), 0) != 0) {
                return fail_errno(ErrorKind::Storage, fmt::format("layer {}: creating fifo '{}'", what_, raw), errno);
            }
            if (as_root_) {
                (void)::fchownat(dir, name, static_cast<uid_t>(ar_->archive_entry_uid(entry)),
                                 static_cast<gid_t>(ar_->archive_entry_gid(entry)), AT_SYMLINK_NOFOLLOW);
            }
            (void)::fchmodat(dir, name, mode, 0);
            (void)::utimensat(dir, name, times, AT_SYMLINK_NOFOLLOW);
            return {};
        }
        if (type != AE_IFREG) {
            return fail(ErrorKind::Image, "layer {}: entry '{}' has an unknown file type {:o}", what_, raw, type);
        }
        base::OwnedFd file(::openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (file.get() < 0) {
            return fail_errno(ErrorKind::Storage, fmt::format("layer {}: creating '{}'", what_, raw), errno);
        }
        BOXLITE_TRY_VOID(copy_data(a, file.get(), raw, static_cast<std::uint64_t>(size)));
        if (as_root_) {
            (void)::fchown(file.get(), static_cast<uid_t>(ar_->archive_entry_uid(entry)),
                           static_cast<gid_t>(ar_->archive_entry_gid(entry)));
        }
        // After chown: chown clears setuid/setgid bits.
        if (::fchmod(file.get(), mode) != 0) {
            return fail_errno(ErrorKind::Storage, fmt::format("layer {}: chmod '{}'", what_, raw), errno);
        }
        set_xattrs_fd(file.get(), entry);
        (void)::futimens(file.get(), times);
        return {};
    }

    BoxliteResult<void> copy_data(archive* a, int fd, const std::string& raw, std::uint64_t declared) {
        const void* block = nullptr;
        std::size_t length = 0;
        la_int64_t offset = 0;
        std::uint64_t end = 0;
        while (true) {
            const int rc = ar_->archive_read_data_block(a, &block, &length, &offset);
            if (rc == ARCHIVE_EOF) break;
            if (rc < ARCHIVE_WARN) {
                return fail(ErrorKind::Image, "layer {}: reading '{}': {}", what_, raw, ar_->archive_error_string(a));
            }
            if (offset < 0 || static_cast<std::uint64_t>(offset) + length > declared) {
                return fail(ErrorKind::Image, "layer {}: entry '{}' has data beyond its declared {} bytes", what_, raw,
                            declared);
            }
            stats_.bytes += length;
            if (stats_.bytes > limits_.max_total_bytes) {
                return fail(ErrorKind::Image, "image unpacks to more than {} bytes (refused as hostile)",
                            limits_.max_total_bytes);
            }
            const auto* p = static_cast<const char*>(block);
            std::size_t done = 0;
            while (done < length) {
                const auto n = ::pwrite(fd, p + done, length - done,
                                        static_cast<off_t>(offset) + static_cast<off_t>(done));
                if (n < 0) {
                    if (errno == EINTR) continue;
                    return fail_errno(ErrorKind::Storage, fmt::format("layer {}: writing '{}'", what_, raw), errno);
                }
                done += static_cast<std::size_t>(n);
            }
            end = std::max<std::uint64_t>(end, static_cast<std::uint64_t>(offset) + length);
        }
        // Sparse files end in a hole: give the file its full declared length.
        if (end < declared && ::ftruncate(fd, static_cast<off_t>(declared)) != 0) {
            return fail_errno(ErrorKind::Storage, fmt::format("layer {}: sizing '{}'", what_, raw), errno);
        }
        return {};
    }

    bool xattr_allowed(const char* name, std::size_t size) const {
        if (size > limits_.max_xattr_bytes) return false;
        const std::string_view n(name);
        // POSIX ACLs (system.*) would need translation to the host's ids; trusted.* overlay
        // attributes could make an overlayfs mount misread the tree.
        return n.starts_with("user.") || n.starts_with("security.");
    }

    void set_xattrs_fd(int fd, archive_entry* entry) const {
        ar_->archive_entry_xattr_reset(entry);
        const char* name = nullptr;
        const void* value = nullptr;
        std::size_t size = 0;
        while (ar_->archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK) {
            if (xattr_allowed(name, size)) (void)::fsetxattr(fd, name, value, size, 0);
        }
    }

    void set_xattrs_at(int dir, const char* name, archive_entry* entry, bool is_dir) const {
        if (ar_->archive_entry_xattr_count(entry) == 0) return;
        if (!is_dir) return;  // symlink xattrs: only trusted/security, rarely meaningful; skipped
        base::OwnedFd fd(::openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (fd.get() >= 0) set_xattrs_fd(fd.get(), entry);
    }

    BoxliteResult<void> apply_dir_metadata(const DeferredDir& d) {
        BOXLITE_TRY(auto where, resolve(d.components, join(d.components), false));
        if (where.parent.get() < 0) return {};
        base::OwnedFd fd(
            ::openat(where.parent.get(), where.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (fd.get() < 0) return {};  // replaced later in the layer by a non-directory
        if (as_root_) (void)::fchown(fd.get(), static_cast<uid_t>(d.uid), static_cast<gid_t>(d.gid));
        (void)::fchmod(fd.get(), as_root_ ? d.mode : (d.mode | 0700));
        const timespec times[2] = {d.mtime, d.mtime};
        (void)::futimens(fd.get(), times);
        return {};
    }

    BoxliteResult<void> apply_whiteout(const std::vector<std::string>& parts, const std::string& raw) {
        ++stats_.whiteouts;
        const std::string& base = parts.back();
        BOXLITE_TRY(auto where, resolve(parts, raw, false));
        if (where.parent.get() < 0) return {};  // the directory is not there: nothing to hide
        if (base == kOpaqueMarker) {
            // Empty the directory of what lower layers put there; keep what this layer wrote.
            std::vector<std::string> dir_parts(parts.begin(), parts.end() - 1);
            const std::string prefix = dir_parts.empty() ? std::string() : join(dir_parts) + "/";
            const int fd = ::openat(where.parent.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("layer {}: opening '{}'", what_, raw), errno);
            DIR* dir = ::fdopendir(fd);
            if (dir == nullptr) {
                const int saved = errno;
                ::close(fd);
                return fail_errno(ErrorKind::Storage, "fdopendir", saved);
            }
            std::vector<std::string> doomed;
            while (const dirent* e = ::readdir(dir)) {
                const std::string child = e->d_name;
                if (child == "." || child == "..") continue;
                if (!written_.contains(prefix + child)) doomed.push_back(child);
            }
            int failed = 0;
            for (const auto& child : doomed) {
                if (failed == 0 && remove_at(::dirfd(dir), child.c_str()) != 0) failed = errno;
            }
            ::closedir(dir);
            if (failed != 0) {
                return fail_errno(ErrorKind::Storage, fmt::format("layer {}: opaque dir '{}'", what_, prefix), failed);
            }
            return {};
        }
        if (base.starts_with(".wh..wh.")) return {};  // aufs bookkeeping (".wh..wh.plnk"): nothing to apply
        const std::string victim = base.substr(kWhiteoutPrefix.size());
        if (victim.empty() || victim == "." || victim == "..") {
            return fail(ErrorKind::Image, "layer {}: whiteout '{}' names no file", what_, raw);
        }
        if (remove_at(where.parent.get(), victim.c_str()) != 0) {
            return fail_errno(ErrorKind::Storage, fmt::format("layer {}: whiteout '{}'", what_, raw), errno);
        }
        return {};
    }

    int root_fd_;
    const UnpackLimits& limits_;
    UnpackStats& stats_;
    std::string what_;
    bool as_root_;
    const dynamic::ArchiveApi* ar_ = nullptr;
    std::unordered_set<std::string> written_;
    std::vector<DeferredDir> deferred_;
};

}  // namespace

BoxliteResult<LayerUnpacker> LayerUnpacker::open(const std::filesystem::path& root, UnpackLimits limits) {
    const int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("opening rootfs directory {}", root.string()), errno);
    return LayerUnpacker(fd, limits);
}

LayerUnpacker::LayerUnpacker(LayerUnpacker&& other) noexcept
    : root_fd_(std::exchange(other.root_fd_, -1)), limits_(other.limits_), stats_(other.stats_) {}

LayerUnpacker::~LayerUnpacker() {
    if (root_fd_ >= 0) ::close(root_fd_);
}

BoxliteResult<void> LayerUnpacker::apply(const std::filesystem::path& layer, std::string_view what) {
    Applier applier(root_fd_, limits_, stats_, what);
    return applier.run(layer);
}

namespace {

// A layer path as unpack applies it ("./a//b/" -> "a/b"); nullopt for what unpack refuses.
std::optional<std::string> normalized_path(std::string_view raw) {
    if (!raw.empty() && raw.front() == '/') return std::nullopt;
    std::string out;
    std::size_t start = 0;
    while (start <= raw.size()) {
        auto end = raw.find('/', start);
        if (end == std::string_view::npos) end = raw.size();
        const auto part = raw.substr(start, end - start);
        if (part == "..") return std::nullopt;
        if (!part.empty() && part != ".") {
            if (!out.empty()) out += '/';
            out += part;
        }
        start = end + 1;
    }
    return out;
}

// Forgets everything below `dir` ("" = the root), except what `keep` lists.
void forget_below(std::map<std::string, DeclaredOwnership>& declared, const std::string& dir,
                  const std::unordered_set<std::string>* keep) {
    const std::string prefix = dir.empty() ? std::string() : dir + "/";
    for (auto it = declared.lower_bound(prefix); it != declared.end() && it->first.starts_with(prefix);) {
        if (keep != nullptr && keep->contains(it->first)) ++it;
        else it = declared.erase(it);
    }
}

BoxliteResult<std::unique_ptr<archive, ArchiveDeleter>> open_layer(const dynamic::ArchiveApi* ar,
                                                                   const std::filesystem::path& layer, bool raw) {
    std::unique_ptr<archive, ArchiveDeleter> a(ar->archive_read_new(), ArchiveDeleter{ar});
    if (!a) return fail(ErrorKind::Internal, "libarchive: out of memory");
    ar->archive_read_support_filter_gzip(a.get());
    ar->archive_read_support_filter_zstd(a.get());
    ar->archive_read_support_filter_none(a.get());
    if (raw) ar->archive_read_support_format_raw(a.get());
    else ar->archive_read_support_format_tar(a.get());
    if (ar->archive_read_open_filename(a.get(), layer.c_str(), 1 << 16) != ARCHIVE_OK) {
        return fail(ErrorKind::Image, "layer {}: cannot open as {} (plain, gzip or zstd): {}", layer.string(),
                    raw ? "a stream" : "tar", ar->archive_error_string(a.get()));
    }
    return a;
}

}  // namespace

BoxliteResult<std::map<std::string, DeclaredOwnership>> declared_ownership(
    std::span<const std::filesystem::path> layers, const UnpackLimits& limits) {
    BOXLITE_TRY(const auto* ar, dynamic::libarchive());
    std::map<std::string, DeclaredOwnership> declared;
    std::uint64_t entries = 0;
    for (const auto& layer : layers) {
        BOXLITE_TRY(auto a, open_layer(ar, layer, false));
        std::unordered_set<std::string> written;  // by this layer: an opaque marker keeps them
        archive_entry* entry = nullptr;
        while (true) {
            const int rc = ar->archive_read_next_header(a.get(), &entry);
            if (rc == ARCHIVE_EOF) break;
            if (rc < ARCHIVE_WARN) {
                return fail(ErrorKind::Image, "layer {}: corrupt tar stream: {}", layer.string(),
                            ar->archive_error_string(a.get()));
            }
            if (++entries > limits.max_entries) {
                return fail(ErrorKind::Image, "layer {}: more than {} entries (refused as hostile)", layer.string(),
                            limits.max_entries);
            }
            const char* path_c = ar->archive_entry_pathname(entry);
            if (path_c == nullptr) path_c = ar->archive_entry_pathname_utf8(entry);
            if (path_c == nullptr || std::strlen(path_c) > limits.max_path_length) continue;
            const auto path = normalized_path(path_c);
            if (!path || path->empty()) continue;
            const auto slash = path->rfind('/');
            const std::string dir = slash == std::string::npos ? std::string() : path->substr(0, slash);
            const std::string base = slash == std::string::npos ? *path : path->substr(slash + 1);
            if (base.starts_with(kWhiteoutPrefix)) {
                if (base == kOpaqueMarker) {
                    forget_below(declared, dir, &written);
                } else if (!base.starts_with(".wh..wh.")) {
                    const auto victim = (dir.empty() ? std::string() : dir + "/") + base.substr(kWhiteoutPrefix.size());
                    declared.erase(victim);
                    forget_below(declared, victim, nullptr);
                }
                continue;
            }
            const mode_t type = ar->archive_entry_filetype(entry);
            if (type == AE_IFCHR || type == AE_IFBLK || type == AE_IFSOCK) continue;
            written.insert(*path);
            if (const char* link = ar->archive_entry_hardlink(entry); link != nullptr) {
                // The same inode as its target: whatever the target declared.
                const auto target = normalized_path(link);
                const auto it = target ? declared.find(*target) : declared.end();
                if (it == declared.end()) {
                    declared.erase(*path);
                } else {
                    const auto same = it->second;
                    declared[*path] = same;
                }
                continue;
            }
            // A non-directory replaces whatever was there, a directory tree included.
            if (type != AE_IFDIR) forget_below(declared, *path, nullptr);
            declared[*path] = {static_cast<std::uint32_t>(ar->archive_entry_uid(entry)),
                               static_cast<std::uint32_t>(ar->archive_entry_gid(entry)),
                               static_cast<std::uint32_t>(ar->archive_entry_perm(entry) & 07777)};
        }
    }
    return declared;
}

BoxliteResult<std::string> uncompressed_sha256(const std::filesystem::path& layer) {
    BOXLITE_TRY(const auto* ar, dynamic::libarchive());
    BOXLITE_TRY(auto a, open_layer(ar, layer, true));
    Sha256 hash;
    archive_entry* entry = nullptr;
    const int rc = ar->archive_read_next_header(a.get(), &entry);
    if (rc == ARCHIVE_EOF) return hash.finish();
    if (rc < ARCHIVE_WARN) {
        return fail(ErrorKind::Image, "layer {}: cannot decompress: {}", layer.string(),
                    ar->archive_error_string(a.get()));
    }
    while (true) {
        const void* block = nullptr;
        std::size_t length = 0;
        la_int64_t offset = 0;
        const int data = ar->archive_read_data_block(a.get(), &block, &length, &offset);
        if (data == ARCHIVE_EOF) break;
        if (data < ARCHIVE_WARN) {
            return fail(ErrorKind::Image, "layer {}: corrupt compressed stream: {}", layer.string(),
                        ar->archive_error_string(a.get()));
        }
        hash.update(block, length);
    }
    return hash.finish();
}

void remove_tree(const std::filesystem::path& path) noexcept {
    const auto parent = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
    const int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)remove_at(fd, path.filename().c_str());
    ::close(fd);
}

BoxliteResult<UnpackStats> unpack_image(std::span<const std::filesystem::path> layers,
                                        const std::filesystem::path& target, const UnpackLimits& limits) {
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::symlink_status(target, ec))) {
        return fail(ErrorKind::Storage, "unpack target {} already exists", target.string());
    }
    std::random_device random;
    const auto temp = target.parent_path() /
                      fmt::format(".tmp-{}-{}-{:08x}", target.filename().string(), ::getpid(), random());
    if (::mkdir(temp.c_str(), 0755) != 0) {
        return fail_errno(ErrorKind::Storage, fmt::format("creating {}", temp.string()), errno);
    }
    auto result = [&]() -> BoxliteResult<UnpackStats> {
        BOXLITE_TRY(auto unpacker, LayerUnpacker::open(temp, limits));
        for (const auto& layer : layers) BOXLITE_TRY_VOID(unpacker.apply(layer, layer.filename().string()));
        return unpacker.stats();
    }();
    if (result && ::rename(temp.c_str(), target.c_str()) != 0) {
        result = fail_errno(ErrorKind::Storage, fmt::format("renaming {} to {}", temp.string(), target.string()),
                            errno);
    }
    if (!result) remove_tree(temp);
    return result;
}

}  // namespace boxlite::image
