// Box roots of the image store: the image's layers unpacked into a rootfs directory (namespace
// engine), and the ext4 base disk built from that tree with mke2fs -d, owners and modes corrected
// with debugfs (VM engines).
#include "store_impl.hpp"
#include "unpack.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace boxlite::image {
namespace {

/// An ext4 image at `disk` holding the tree `tree` (mke2fs -d). Size: what the tree occupies, plus
/// room for ext4's metadata and the journal.
BoxliteResult<void> make_ext4(const fs::path& tree, const fs::path& disk) {
    std::uint64_t bytes = 0;
    std::uint64_t inodes = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(tree, fs::directory_options::none, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        struct stat entry {};
        if (::lstat(it->path().c_str(), &entry) != 0) continue;
        ++inodes;
        bytes += static_cast<std::uint64_t>(entry.st_blocks) * 512 + 4096;
    }
    if (ec) return fail(ErrorKind::Storage, "walking {}: {}", tree.string(), ec.message());
    const std::uint64_t mib = 1ull << 20;
    std::uint64_t size = bytes + bytes / 4 + inodes * 256 + 48 * mib;
    size = (size + mib - 1) / mib * mib;
    const std::uint64_t inode_count = inodes + inodes / 4 + 4096;
    return run_program({"mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-N", std::to_string(inode_count),
                        "-L", "boxlite-rootfs", "-d", tree.string(), disk.string(), fmt::format("{}k", size / 1024)},
                       ErrorKind::Storage);
}

/// fsync of the file or directory at `path`.
BoxliteResult<void> sync_file(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_errno(ErrorKind::Storage, "opening " + path.string() + " to sync it", errno);
    const int synced = ::fsync(fd);
    const int saved = errno;
    ::close(fd);
    if (synced != 0) return fail_errno(ErrorKind::Storage, "fsync " + path.string(), saved);
    return {};
}

}  // namespace

BoxliteResult<std::pair<fs::path, bool>> ImageStore::Impl::build_rootfs(const ImageInfo& image) {
    const auto target = rootfs / std::string(digest_hex(image.manifest_digest));
    struct stat st {};
    if (::lstat(target.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return std::pair{target, false};
    BOXLITE_TRY(auto shared, store_lock(base::FileLock::Mode::Shared));
    BOXLITE_TRY(auto lock, named_lock("rootfs", image.manifest_digest));
    if (::lstat(target.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return std::pair{target, false};
    std::vector<fs::path> layers;
    for (const auto& layer : image.layers) {
        if (!has_blob(layer.digest)) {
            return fail(ErrorKind::Image, "image {}: layer {} is missing from the store (pull it again)",
                        image.reference, layer.digest);
        }
        layers.push_back(blob_path(layer.digest));
    }
    auto unpacked = unpack_image(layers, target, options.unpack);
    if (!unpacked) return fail(unpacked.error().with_context(fmt::format("unpacking image {}", image.reference)));
    return std::pair{target, true};
}

BoxliteResult<void> ImageStore::Impl::correct_disk_ownership(const ImageInfo& image, const fs::path& tree,
                                                             const fs::path& disk) {
    struct stat top {};
    if (::lstat(tree.c_str(), &top) != 0) return fail_errno(ErrorKind::Storage, "stat " + tree.string(), errno);
    if (top.st_uid == 0) return {};
    std::vector<fs::path> layers;
    for (const auto& layer : image.layers) layers.push_back(blob_path(layer.digest));
    BOXLITE_TRY(const auto declared, declared_ownership(layers, options.unpack));

    std::string script;
    std::string unquotable;
    auto correct = [&](const std::string& relative, const struct stat& st, const DeclaredOwnership& want) {
        std::string commands;
        std::string quoted = "\"/";
        for (char c : relative) {
            if (c == '"') quoted += '"';  // debugfs reads "" inside quotes as one quote
            quoted += c;
        }
        quoted += '"';
        if (st.st_uid != want.uid) commands += fmt::format("sif {} uid {}\n", quoted, want.uid);
        if (st.st_gid != want.gid) commands += fmt::format("sif {} gid {}\n", quoted, want.gid);
        if (!S_ISLNK(st.st_mode) && (st.st_mode & 07777) != want.mode) {
            commands += fmt::format("sif {} mode 0{:o}\n", quoted, (st.st_mode & S_IFMT) | want.mode);
        }
        if (commands.empty()) return;
        if (relative.find_first_of("\n\r") != std::string::npos) {
            if (unquotable.empty()) unquotable = relative;
            return;
        }
        script += commands;
    };
    // Directories no layer lists were created by unpack, as root would have: 0:0, 0755.
    const DeclaredOwnership implicit_dir{0, 0, 0755};
    correct("", top, implicit_dir);
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(tree, fs::directory_options::none, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) != 0) continue;
        const auto relative = it->path().lexically_relative(tree).string();
        if (const auto found = declared.find(relative); found != declared.end()) {
            correct(relative, st, found->second);
        } else if (S_ISDIR(st.st_mode)) {
            correct(relative, st, implicit_dir);
        }
    }
    if (ec) return fail(ErrorKind::Storage, "walking {}: {}", tree.string(), ec.message());
    if (!unquotable.empty()) {
        return fail(ErrorKind::Image,
                    "image {}: the path '{}' has a line break, which debugfs cannot address; build the disk as "
                    "root (then no correction is needed)",
                    image.reference, unquotable);
    }
    if (script.empty()) return {};
    const auto script_path = fs::path(disk.string() + ".debugfs");
    BOXLITE_TRY_VOID(write_file_atomic(script_path, script));
    std::string diagnostics;
    auto ran = run_program({"debugfs", "-w", "-f", script_path.string(), disk.string()}, ErrorKind::Storage,
                           &diagnostics);
    ::unlink(script_path.c_str());
    BOXLITE_TRY_VOID(ran);
    // debugfs exits 0 whatever its commands did; anything on stderr but its banner is a failure.
    std::string errors;
    std::size_t start = 0;
    while (start < diagnostics.size()) {
        auto end = diagnostics.find('\n', start);
        if (end == std::string::npos) end = diagnostics.size();
        const auto line = diagnostics.substr(start, end - start);
        if (!line.empty() && !line.starts_with("debugfs ")) errors += (errors.empty() ? "" : "; ") + line;
        start = end + 1;
    }
    if (!errors.empty()) {
        return fail(ErrorKind::Storage, "setting the owners and modes the layers declare in {} with debugfs: {}",
                    disk.string(), errors.substr(0, 1000));
    }
    return {};
}

BoxliteResult<std::pair<fs::path, bool>> ImageStore::Impl::build_disk(const ImageInfo& image) {
    const auto target = disks / fmt::format("{}.ext4", digest_hex(image.manifest_digest));
    struct stat st {};
    if (::lstat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return std::pair{target, false};
    BOXLITE_TRY(auto tree, build_rootfs(image));
    BOXLITE_TRY(auto shared, store_lock(base::FileLock::Mode::Shared));
    BOXLITE_TRY(auto lock, named_lock("disk", image.manifest_digest));
    if (::lstat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return std::pair{target, false};

    const auto temp = disks /
                      fmt::format(".tmp-{}-{}.ext4", digest_hex(image.manifest_digest).substr(0, 16), random_suffix());
    auto built = make_ext4(tree.first, temp);
    if (built) built = correct_disk_ownership(image, tree.first, temp);
    // On disk before the rename makes it the cache's: after a power loss, every box of this image
    // would boot whatever of it had reached the disk (mke2fs and debugfs do not sync).
    if (built) built = sync_file(temp);
    if (!built) {
        ::unlink(temp.c_str());
        return fail(built.error().with_context(fmt::format("building the ext4 disk of image {}", image.reference)));
    }
    if (::rename(temp.c_str(), target.c_str()) != 0) {
        const int saved = errno;
        ::unlink(temp.c_str());
        return fail_errno(ErrorKind::Storage, "renaming into " + target.string(), saved);
    }
    BOXLITE_TRY_VOID(sync_file(disks));  // the rename itself
    return std::pair{target, true};
}

BoxliteResult<fs::path> ImageStore::rootfs_directory(const ImageInfo& image) {
    BOXLITE_TRY(auto built, impl_->build_rootfs(image));
    return built.first;
}

BoxliteResult<fs::path> ImageStore::disk_image(const ImageInfo& image) {
    BOXLITE_TRY(auto built, impl_->build_disk(image));
    return built.first;
}

namespace {

/// Bump when make_ext4's recipe (or anything else about the disk a directory becomes) changes: a
/// cached base of an older recipe is then never used (its key differs).
constexpr int kDirectoryDiskFormat = 1;
/// An entry whose mtime or ctime is this close to the walk's start (or later) is "racily clean"
/// (git's term): it may change again within the clock's granularity without its timestamps
/// moving, so a key built from it is not trusted. 2 s covers filesystems with 1 s and 2 s
/// timestamps; ext4, xfs and tmpfs stamp with the kernel's coarse clock (a jiffy).
constexpr std::int64_t kRacyWindowNs = 2'000'000'000;
/// Cached bases no box links to any more are removed when older than this (at the next build).
constexpr std::int64_t kUnusedBaseMaxAgeS = 24 * 3600;
/// A build's temporary file this old is a build that died (builds take seconds).
constexpr std::int64_t kStaleTempAgeS = 3600;

std::int64_t ns_of(const struct timespec& t) { return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec; }

/// The cache key of the directory `tree`'s contents as mke2fs -d would copy them: a walk's
/// names, types and modes, owners, sizes, inode numbers, link counts, mtimes and ctimes, device
/// numbers and symlink targets, with the disk format and the tree's path. nullopt when any entry
/// is racily clean (changed within kRacyWindowNs of the walk) or the walk fails: then the disk is
/// built for the box alone, as without the cache. A file's contents cannot change without its
/// ctime moving, and ctime cannot be set from user space.
std::optional<std::string> directory_key(const fs::path& tree) {
    struct timespec now {};
    ::clock_gettime(CLOCK_REALTIME, &now);
    const std::int64_t trusted_before = ns_of(now) - kRacyWindowNs;
    std::vector<std::string> lines;
    auto add = [&](const fs::path& path, const std::string& relative) {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) return false;
        if (ns_of(st.st_mtim) >= trusted_before || ns_of(st.st_ctim) >= trusted_before) return false;
        std::string target;
        if (S_ISLNK(st.st_mode)) {
            std::error_code ec;
            target = fs::read_symlink(path, ec).string();
            if (ec) return false;
        }
        // Lengths first: no name or target can make two different trees print the same lines.
        lines.push_back(fmt::format("{}:{} {:o} {}:{} {} {} {} {} {}.{:09} {}.{:09} {}:{}", relative.size(), relative,
                                    st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino, st.st_nlink, st.st_rdev,
                                    st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec,
                                    target.size(), target));
        return true;
    };
    if (!add(tree, "")) return std::nullopt;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(tree, fs::directory_options::none, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (!add(it->path(), it->path().lexically_relative(tree).string())) return std::nullopt;
    }
    if (ec) return std::nullopt;
    std::sort(lines.begin(), lines.end());
    Sha256 hash;
    const auto head = fmt::format("boxlite directory disk format {}\n{}:{}\n", kDirectoryDiskFormat,
                                  tree.string().size(), tree.string());
    hash.update(head);
    for (const auto& line : lines) {
        hash.update(line);
        hash.update("\n");
    }
    return std::string(digest_hex(hash.finish()));
}

/// <home>/images/directory-disks for a box disk at <home>/boxes/<id>/<name>; nullopt elsewhere
/// (then nothing is cached).
std::optional<fs::path> directory_disk_cache(const fs::path& disk) {
    const auto box_dir = disk.lexically_normal().parent_path();
    if (box_dir.parent_path().filename() != "boxes") return std::nullopt;
    return box_dir.parent_path().parent_path() / "images" / "directory-disks";
}

/// Under the cache's lock (builds hold it from their first check to their rename): removes the
/// bases no box links to (one link: the cache's own) and the temporary files of builds that
/// died, each when older than the age given (seconds), all but `keep`; counted into `report`.
void sweep_directory_disks(const fs::path& cache, std::int64_t unused_base_age, std::int64_t temp_age,
                           const fs::path& keep, GcReport& report) {
    struct timespec now {};
    ::clock_gettime(CLOCK_REALTIME, &now);
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(cache, ec)) {
        const auto name = entry.path().filename().string();
        struct stat st {};
        if (entry.path() == keep || ::lstat(entry.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
        const auto age = now.tv_sec - st.st_mtim.tv_sec;
        const bool temp = name.starts_with(".tmp-");
        const bool unused_base = name.ends_with(".ext4") && st.st_nlink == 1;
        if (!(temp && age >= temp_age) && !(unused_base && age >= unused_base_age)) continue;
        if (::unlink(entry.path().c_str()) != 0) continue;
        report.bytes_freed += static_cast<std::uint64_t>(st.st_blocks) * 512;
        if (!temp) ++report.disk_images_removed;
    }
}

/// The uncached build: the box's own ext4 at `disk`.
BoxliteResult<std::pair<fs::path, bool>> build_directory_disk(const fs::path& tree, const fs::path& disk) {
    const auto temp = fs::path(disk.string() + fmt::format(".tmp-{}", random_suffix()));
    if (auto built = make_ext4(tree, temp); !built) {
        ::unlink(temp.c_str());
        return fail(built.error().with_context(
            fmt::format("building an ext4 disk from the rootfs directory {}", tree.string())));
    }
    if (::rename(temp.c_str(), disk.c_str()) != 0) {
        const int saved = errno;
        ::unlink(temp.c_str());
        return fail_errno(ErrorKind::Storage, "renaming into " + disk.string(), saved);
    }
    return std::pair{disk, true};
}

}  // namespace

void ImageStore::Impl::collect_directory_disks(GcReport& report) const {
    const auto cache = images / "directory-disks";
    std::error_code ec;
    if (!fs::is_directory(cache, ec)) return;
    // Whatever its age: a box that found a base before this took the lock and links it after
    // falls back to a disk of its own (directory_disk).
    auto lock = base::FileLock::acquire(cache / ".lock", base::FileLock::Mode::Exclusive);
    constexpr auto kAnyAge = std::numeric_limits<std::int64_t>::min();
    if (lock) sweep_directory_disks(cache, kAnyAge, kAnyAge, {}, report);
}

// A rootfs directory's ext4 is built once per contents and kept as a base in
// <home>/images/directory-disks/<key>.ext4, as an image's base is kept per manifest digest; each
// box's `disk` is a hard link to it (so a removed or pruned cache entry never pulls a base from
// under a box's overlay, which opens it read-only). One lock serializes the builds, so a
// concurrent first use builds once; a build is written to a temporary file, fsynced and renamed.
BoxliteResult<std::pair<fs::path, bool>> directory_disk(const fs::path& tree, const fs::path& disk) {
    struct stat st {};
    if (::lstat(disk.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return std::pair{disk, false};
    const auto cache = directory_disk_cache(disk);
    const auto key = cache ? directory_key(tree) : std::nullopt;
    if (!key) return build_directory_disk(tree, disk);
    std::error_code ec;
    fs::create_directories(*cache, ec);
    if (ec) return build_directory_disk(tree, disk);
    ::chmod(cache->c_str(), 0700);  // the bases hold copies of the users' directories
    const auto base = *cache / (*key + ".ext4");
    bool built = false;
    if (::lstat(base.c_str(), &st) != 0) {
        BOXLITE_TRY(auto lock, base::FileLock::acquire(*cache / ".lock", base::FileLock::Mode::Exclusive));
        if (::lstat(base.c_str(), &st) != 0) {
            const auto temp = *cache / fmt::format(".tmp-{}-{}.ext4", key->substr(0, 16), random_suffix());
            auto made = make_ext4(tree, temp);
            // On disk before the rename makes it the cache's (mke2fs does not sync).
            if (made) made = sync_file(temp);
            if (!made) {
                ::unlink(temp.c_str());
                return fail(made.error().with_context(
                    fmt::format("building an ext4 disk from the rootfs directory {}", tree.string())));
            }
            // The tree changed while mke2fs read it: this disk is the box's alone.
            if (directory_key(tree) != key) {
                if (::rename(temp.c_str(), disk.c_str()) != 0) {
                    ::unlink(temp.c_str());
                    return build_directory_disk(tree, disk);  // another filesystem: built beside the box
                }
                return std::pair{disk, true};
            }
            if (::rename(temp.c_str(), base.c_str()) != 0) {
                const int saved = errno;
                ::unlink(temp.c_str());
                return fail_errno(ErrorKind::Storage, "renaming into " + base.string(), saved);
            }
            BOXLITE_TRY_VOID(sync_file(*cache));  // the rename itself
            built = true;
            GcReport swept;  // a build's own sweep: nothing reports it
            sweep_directory_disks(*cache, kUnusedBaseMaxAgeS, kStaleTempAgeS, base, swept);
        }
    }
    if (::link(base.c_str(), disk.c_str()) != 0) {
        if (errno == EEXIST) return std::pair{disk, false};
        return build_directory_disk(tree, disk);  // another filesystem, or no hard links there
    }
    return std::pair{disk, built};
}

}  // namespace boxlite::image
