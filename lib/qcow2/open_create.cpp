// Opening QCOW2 images (header, L1 and refcount tables, backing chain, dirty-image repair) and
// creating them, plus open_disk(), which opens raw or QCOW2 disks by format. Every number read
// here is checked as the primer at the top of qcow2_image.cpp asks.
#include "image_lock.hpp"
#include "io.hpp"
#include "qcow2_image_impl.hpp"
#include "raw_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace boxlite::qcow2 {
namespace {

BoxliteResult<std::string> probe_format(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("opening disk {}", path.string()), errno);
    base::OwnedFd owned(fd);
    std::uint8_t magic[4] = {};
    const ssize_t n = ::pread(fd, magic, sizeof magic, 0);
    if (n == 4 && block::load_be32(magic) == kMagic) return std::string("qcow2");
    return std::string("raw");
}

BoxliteResult<std::unique_ptr<block::BlockBackend>> open_disk_at_depth(const std::filesystem::path& path,
                                                                       bool read_only, const std::string& format,
                                                                       const OpenOptions& options, unsigned depth);

BoxliteResult<std::unique_ptr<Qcow2Image::Impl>> open_impl(base::OwnedFd fd, const std::string& name,
                                                           const OpenOptions& options, unsigned depth) {
    auto impl = std::make_unique<Qcow2Image::Impl>();
    impl->fd = std::move(fd);
    impl->name = name;
    impl->directory = std::filesystem::path(name).parent_path();
    impl->options = options;
    impl->depth = depth;
    // Before anything is read: what we read must not change underneath us.
    BOXLITE_TRY_VOID(block::lock_image(impl->fd.get(), !options.read_only, name));
    struct stat st {};
    if (::fstat(impl->fd.get(), &st) != 0)
        return fail_errno(ErrorKind::Storage, fmt::format("stat of {}", name), errno);
    impl->file_size = static_cast<std::uint64_t>(st.st_size);

    // The header: a peek at the fixed part for cluster_bits, then the whole first cluster.
    std::vector<std::uint8_t> first(std::min<std::uint64_t>(impl->file_size, 4096));
    BOXLITE_TRY_VOID(block::pread_full(impl->fd.get(), first.data(), first.size(), 0, name));
    if (first.size() >= 24 && block::load_be32(first.data()) == kMagic) {
        const std::uint32_t bits = block::load_be32(first.data() + 20);
        if (bits >= kMinClusterBits && bits <= kMaxClusterBits) {
            first.resize(std::min<std::uint64_t>(impl->file_size, 1ull << bits));
            BOXLITE_TRY_VOID(block::pread_full(impl->fd.get(), first.data(), first.size(), 0, name));
        }
    }
    BOXLITE_TRY(impl->header, parse_header(first, impl->file_size, name));
    Header& header = impl->header;
    impl->cluster_bits = header.cluster_bits;
    impl->cluster_size = header.cluster_size();
    impl->l2_entries = header.l2_entries();
    impl->refs_per_block = header.refcounts_per_block();
    impl->refcount_max = header.refcount_order == 6 ? std::numeric_limits<std::uint64_t>::max()
                                                    : (1ull << header.refcount_bits()) - 1;
    if (!options.read_only) {
        if (header.incompatible_features & kIncompatCorrupt)
            return fail(ErrorKind::Storage,
                        "{} is marked corrupt; open it read-only, or repair it with `qemu-img check "
                        "-r all`",
                        name);
        if (header.nb_snapshots > 0)
            return fail(ErrorKind::Storage, "{} has {} internal snapshots; such images can only be opened read-only",
                        name, header.nb_snapshots);
    }

    // L1 and refcount tables (bounded by parse_header).
    std::vector<std::uint8_t> raw(std::uint64_t{header.l1_size} * 8);
    BOXLITE_TRY_VOID(block::pread_full(impl->fd.get(), raw.data(), raw.size(), header.l1_table_offset, name));
    impl->l1.resize(header.l1_size);
    for (std::uint64_t i = 0; i < header.l1_size; ++i) impl->l1[i] = block::load_be64(raw.data() + 8 * i);
    raw.resize(std::uint64_t{header.refcount_table_clusters} * impl->cluster_size);
    BOXLITE_TRY_VOID(block::pread_full(impl->fd.get(), raw.data(), raw.size(), header.refcount_table_offset, name));
    impl->reftable.resize(raw.size() / 8);
    for (std::uint64_t i = 0; i < impl->reftable.size(); ++i) impl->reftable[i] = block::load_be64(raw.data() + 8 * i);
    impl->reftable_offset = header.refcount_table_offset;
    impl->reftable_clusters = header.refcount_table_clusters;
    impl->alloc_end = align_up(impl->file_size, impl->cluster_size);
    impl->fresh_from = impl->alloc_end;
    impl->refblock_budget = std::max(options.refcount_cache_bytes, 4 * impl->cluster_size);
    BOXLITE_TRY_VOID(impl->index_metadata());

    if (!header.backing_file.empty()) {
        if (!options.allow_backing)
            return fail(ErrorKind::Storage, "{}: backing file {} not allowed here", name, header.backing_file);
        if (depth + 1 > options.max_backing_depth)
            return fail(ErrorKind::Storage, "{}: backing chain is deeper than {} images (a loop?) at {}", name,
                        options.max_backing_depth, header.backing_file);
        std::filesystem::path backing_path(header.backing_file);
        if (backing_path.is_relative()) backing_path = impl->directory / backing_path;
        if (!header.backing_format.empty() && header.backing_format != "raw" && header.backing_format != "qcow2")
            return fail(ErrorKind::Storage, "{}: backing file format '{}' is not supported (raw or qcow2)", name,
                        header.backing_format);
        auto backing = open_disk_at_depth(backing_path, true, header.backing_format, options, depth + 1);
        if (!backing) return fail(backing.error().with_context(fmt::format("opening the backing file of {}", name)));
        impl->backing = std::move(*backing);
    }

    if (!options.read_only) {
        // Autoclear bits describe extensions (bitmaps, ...) we do not maintain: clearing them
        // tells other readers those extensions are stale, as the spec requires.
        if (header.version >= 3 && header.autoclear_features != 0) {
            std::uint8_t zero[8] = {};
            BOXLITE_TRY_VOID(impl->pwrite(zero, sizeof zero, kAutoclearFieldOffset));
            BOXLITE_TRY_VOID(impl->sync());
            header.autoclear_features = 0;
        }
        if (header.incompatible_features & kIncompatDirty) BOXLITE_TRY_VOID(impl->repair());
    }
    return impl;
}

BoxliteResult<std::unique_ptr<block::BlockBackend>> open_disk_at_depth(const std::filesystem::path& path,
                                                                       bool read_only, const std::string& format,
                                                                       const OpenOptions& options, unsigned depth) {
    std::string fmt_name = format;
    if (fmt_name.empty()) {
        BOXLITE_TRY(fmt_name, probe_format(path));
    }
    if (fmt_name == "raw") {
        BOXLITE_TRY(auto raw, block::RawFile::open(path, read_only));
        return std::unique_ptr<block::BlockBackend>(std::move(raw));
    }
    if (fmt_name != "qcow2")
        return fail(ErrorKind::Storage, "disk {}: format '{}' is not supported (raw or qcow2)", path.string(),
                    fmt_name);
    const int fd = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("opening {}", path.string()), errno);
    OpenOptions opts = options;
    opts.read_only = read_only;
    BOXLITE_TRY(auto impl, open_impl(base::OwnedFd(fd), path.string(), opts, depth));
    return std::unique_ptr<block::BlockBackend>(std::make_unique<Qcow2Image>(std::move(impl)));
}

}  // namespace

BoxliteResult<std::unique_ptr<Qcow2Image>> Qcow2Image::open_fd(int fd, const std::string& name,
                                                               const OpenOptions& options) {
    base::OwnedFd owned(fd);
    return guarded(name, "open", [&]() -> BoxliteResult<std::unique_ptr<Qcow2Image>> {
        BOXLITE_TRY(auto impl, open_impl(std::move(owned), name, options, 0));
        return std::make_unique<Qcow2Image>(std::move(impl));
    });
}

BoxliteResult<std::unique_ptr<Qcow2Image>> Qcow2Image::open(const std::filesystem::path& path,
                                                            const OpenOptions& options) {
    const int fd = ::open(path.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("opening {}", path.string()), errno);
    return open_fd(fd, path.string(), options);
}

namespace {

BoxliteResult<std::unique_ptr<Qcow2Image>> create_impl(const std::filesystem::path& path,
                                                       const CreateOptions& options) {
    const std::string name = path.string();
    if (options.cluster_bits < kMinClusterBits || options.cluster_bits > kMaxClusterBits)
        return fail(ErrorKind::InvalidArgument, "creating {}: cluster_bits {} is out of range ({} to {})", name,
                    options.cluster_bits, kMinClusterBits, kMaxClusterBits);
    if (options.refcount_order > 6)
        return fail(ErrorKind::InvalidArgument, "creating {}: refcount_order {} is out of range (0 to 6)", name,
                    options.refcount_order);
    Header header;
    header.version = 3;
    header.cluster_bits = options.cluster_bits;
    header.refcount_order = options.refcount_order;
    header.size = options.size;
    header.backing_file = options.backing_file;
    header.backing_format = options.backing_format;
    const std::uint64_t cluster_size = header.cluster_size();
    if (!header.backing_file.empty()) {
        if (header.backing_file.size() > kMaxBackingFileName)
            return fail(ErrorKind::InvalidArgument, "creating {}: backing file name is {} bytes (at most {})", name,
                        header.backing_file.size(), kMaxBackingFileName);
        std::filesystem::path backing_path(header.backing_file);
        if (backing_path.is_relative()) backing_path = path.parent_path() / backing_path;
        if (header.backing_format.empty()) {
            BOXLITE_TRY(header.backing_format, probe_format(backing_path));
        }
        BOXLITE_TRY(auto backing, open_disk(backing_path, true, header.backing_format));
        if (header.size == 0) header.size = backing->size();
    }
    if (header.size > kMaxVirtualSize)
        return fail(ErrorKind::InvalidArgument, "creating {}: virtual size {} bytes (at most {})", name, header.size,
                    kMaxVirtualSize);
    if (header.size % 512 != 0)
        return fail(ErrorKind::InvalidArgument,
                    "creating {}: virtual size {} bytes is not a multiple of 512 (disks are made of "
                    "512-byte sectors)",
                    name, header.size);
    if (kWrittenHeaderLength + 16 + align_up(header.backing_format.size(), 8) + 8 + header.backing_file.size() >
        cluster_size)
        return fail(ErrorKind::InvalidArgument,
                    "creating {}: the header and backing file name do not fit in one {}-byte "
                    "cluster; use larger clusters",
                    name, cluster_size);
    const std::uint64_t l1_entries = l1_entries_for(header.size, header.cluster_bits);
    if (l1_entries * 8 > kMaxL1Bytes)
        return fail(ErrorKind::InvalidArgument,
                    "creating {}: virtual size {} needs {} L1 entries with {}-byte clusters (at "
                    "most {}); use larger clusters",
                    name, header.size, l1_entries, cluster_size, kMaxL1Bytes / 8);
    // Layout: header | refcount table | refcount blocks | L1 table, all counted once.
    const std::uint64_t l1_clusters = std::max<std::uint64_t>(1, div_up(l1_entries * 8, cluster_size));
    const std::uint64_t per_block = header.refcounts_per_block();
    std::uint64_t blocks = 1, table = 1;
    for (;;) {
        const std::uint64_t total = 1 + table + blocks + l1_clusters;
        const std::uint64_t b = div_up(total, per_block);
        const std::uint64_t t = div_up(b * 8, cluster_size);
        if (b == blocks && t == table) break;
        blocks = b;
        table = t;
    }
    const std::uint64_t total = 1 + table + blocks + l1_clusters;
    header.refcount_table_offset = cluster_size;
    header.refcount_table_clusters = static_cast<std::uint32_t>(table);
    header.l1_table_offset = (1 + table + blocks) * cluster_size;
    header.l1_size = static_cast<std::uint32_t>(l1_entries);

    // Not O_TRUNC: an image in use (by a box, or by QEMU) must be refused before it is emptied.
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("creating {}", name), errno);
    base::OwnedFd owned(fd);
    BOXLITE_TRY_VOID(block::lock_image(fd, true, name));
    if (::ftruncate(fd, 0) != 0) return fail_errno(ErrorKind::Storage, fmt::format("truncating {}", name), errno);
    std::vector<std::uint8_t> buf = encode_header(header);
    buf.resize(total * cluster_size, 0);
    for (std::uint64_t b = 0; b < blocks; ++b)
        block::store_be64(buf.data() + cluster_size + 8 * b, (1 + table + b) * cluster_size);
    for (std::uint64_t c = 0; c < total; ++c)
        refcount_set(buf.data() + (1 + table + c / per_block) * cluster_size, header.refcount_order, c % per_block, 1);
    BOXLITE_TRY_VOID(block::pwrite_full(fd, buf.data(), buf.size(), 0, name));
    if (::fdatasync(fd) != 0) return fail_errno(ErrorKind::Storage, fmt::format("fdatasync of {}", name), errno);
    return Qcow2Image::open_fd(owned.release(), name, OpenOptions{});
}

}  // namespace

BoxliteResult<std::unique_ptr<Qcow2Image>> Qcow2Image::create(const std::filesystem::path& path,
                                                              const CreateOptions& options) {
    return guarded(path.string(), "create", [&] { return create_impl(path, options); });
}

BoxliteResult<std::unique_ptr<block::BlockBackend>> open_disk(const std::filesystem::path& path, bool read_only,
                                                              const std::string& format, const OpenOptions& options) {
    return guarded(path.string(), "open", [&] { return open_disk_at_depth(path, read_only, format, options, 0); });
}

}  // namespace boxlite::qcow2
