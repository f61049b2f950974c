#include "format.hpp"

#include "io.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

namespace boxlite::qcow2 {
namespace {

using block::load_be32;
using block::load_be64;
using block::store_be32;
using block::store_be64;

struct Range {
    std::uint64_t begin;
    std::uint64_t end;
    std::string_view what;
};

bool overlaps(const Range& a, const Range& b) { return a.begin < b.end && b.begin < a.end; }

std::uint64_t round_up(std::uint64_t value, std::uint64_t alignment) {
    return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

std::string describe_incompatible(std::uint64_t bits, std::span<const std::pair<std::uint8_t, std::string>> names) {
    std::string out;
    for (unsigned bit = 0; bit < 64; ++bit) {
        if (!(bits & (1ull << bit))) continue;
        std::string name;
        for (const auto& [b, n] : names)
            if (b == bit) name = n;
        if (name.empty()) {
            switch (bit) {
                case 0: name = "dirty bit"; break;
                case 1: name = "corrupt bit"; break;
                case 2: name = "external data file"; break;
                case 3: name = "compression type"; break;
                case 4: name = "extended L2 entries"; break;
                default: name = "unknown feature"; break;
            }
        }
        if (!out.empty()) out += ", ";
        out += fmt::format("{} (bit {})", name, bit);
    }
    return out;
}

BoxliteResult<Header> parse_header(std::span<const std::uint8_t> buf, std::uint64_t file_size, std::string_view name) {
    if (buf.size() < kV2HeaderLength)
        return fail(ErrorKind::Storage, "{} is not a QCOW2 image: {} bytes is shorter than a QCOW2 header ({} bytes)",
                    name, buf.size(), kV2HeaderLength);
    const std::uint8_t* p = buf.data();
    if (load_be32(p) != kMagic)
        return fail(ErrorKind::Storage, "{} is not a QCOW2 image: bad magic {:#010x} (expected {:#010x})", name,
                    load_be32(p), kMagic);
    Header h;
    h.version = load_be32(p + 4);
    if (h.version != 2 && h.version != 3)
        return fail(ErrorKind::Storage, "{}: unsupported QCOW2 version {} (versions 2 and 3 are supported)", name,
                    h.version);
    h.backing_file_offset = load_be64(p + 8);
    h.backing_file_size = load_be32(p + 16);
    h.cluster_bits = load_be32(p + 20);
    h.size = load_be64(p + 24);
    h.crypt_method = load_be32(p + 32);
    h.l1_size = load_be32(p + 36);
    h.l1_table_offset = load_be64(p + 40);
    h.refcount_table_offset = load_be64(p + 48);
    h.refcount_table_clusters = load_be32(p + 56);
    h.nb_snapshots = load_be32(p + 60);
    h.snapshots_offset = load_be64(p + 64);

    if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits)
        return fail(ErrorKind::Storage, "{}: cluster_bits {} is out of range (QCOW2 allows {} to {}: 512 B to 2 MiB)",
                    name, h.cluster_bits, kMinClusterBits, kMaxClusterBits);
    const std::uint64_t cluster_size = h.cluster_size();

    std::vector<std::pair<std::uint8_t, std::string>> feature_names;
    if (h.version == 3) {
        if (buf.size() < kV3HeaderLength)
            return fail(ErrorKind::Storage, "{}: file too short for a QCOW2 v3 header", name);
        h.incompatible_features = load_be64(p + 72);
        h.compatible_features = load_be64(p + 80);
        h.autoclear_features = load_be64(p + 88);
        h.refcount_order = load_be32(p + 96);
        h.header_length = load_be32(p + 100);
        if (h.header_length < kV3HeaderLength || h.header_length > cluster_size || h.header_length > buf.size())
            return fail(ErrorKind::Storage,
                        "{}: header_length {} is invalid (must be at least {} and fit in the "
                        "first cluster of {} bytes)",
                        name, h.header_length, kV3HeaderLength, cluster_size);
        if (h.header_length > 104) h.compression_type = p[104];
        if (h.refcount_order > 6)
            return fail(ErrorKind::Storage, "{}: refcount_order {} is out of range (0 to 6: 1- to 64-bit refcounts)",
                        name, h.refcount_order);
    } else {
        h.header_length = kV2HeaderLength;
        h.refcount_order = 4;
    }

    // Header extensions: between the header and the backing file name (or the cluster end).
    std::uint64_t ext_end = std::min<std::uint64_t>(cluster_size, buf.size());
    if (h.backing_file_offset > h.header_length && h.backing_file_offset < ext_end) ext_end = h.backing_file_offset;
    for (std::uint64_t pos = h.header_length; pos + 8 <= ext_end;) {
        const std::uint32_t type = load_be32(p + pos);
        const std::uint32_t length = load_be32(p + pos + 4);
        if (type == kExtEnd) break;
        if (length > ext_end - pos - 8)
            return fail(ErrorKind::Storage,
                        "{}: header extension {:#x} at offset {} runs past the first cluster "
                        "({} bytes declared)",
                        name, type, pos, length);
        const std::uint8_t* data = p + pos + 8;
        if (type == kExtBackingFormat) {
            h.backing_format.assign(reinterpret_cast<const char*>(data), length);
        } else if (type == kExtFeatureNames) {
            for (std::uint32_t i = 0; i + 48 <= length; i += 48) {
                if (data[i] != 0) continue;  // only incompatible features matter for errors
                const auto* text = reinterpret_cast<const char*>(data + i + 2);
                feature_names.emplace_back(data[i + 1], std::string(text, strnlen(text, 46)));
            }
        }
        pos += 8 + round_up(length, 8);
    }

    // Features we cannot honour are refused, naming them.
    std::uint64_t known = kIncompatDirty | kIncompatCorrupt;
    if (h.compression_type == 0) known |= kIncompatCompressionType;
    if (h.incompatible_features & ~known)
        return fail(ErrorKind::Storage,
                    "{}: unsupported incompatible QCOW2 features: {} (supported: dirty bit, "
                    "corrupt bit, zlib compression)",
                    name, describe_incompatible(h.incompatible_features & ~known, feature_names));
    if (h.compression_type != 0)
        return fail(ErrorKind::Storage, "{}: unsupported compression type {} (only zlib, type 0, is supported)", name,
                    h.compression_type);
    if (h.crypt_method != 0)
        return fail(ErrorKind::Storage, "{}: encrypted QCOW2 images (crypt_method {}) are not supported", name,
                    h.crypt_method);

    // Sizes: bounded so a hostile header cannot make us allocate absurd tables.
    if (h.size > kMaxVirtualSize)
        return fail(ErrorKind::Storage, "{}: virtual size {} bytes is absurd (at most {} allowed)", name, h.size,
                    kMaxVirtualSize);
    const std::uint64_t l1_needed = l1_entries_for(h.size, h.cluster_bits);
    if (l1_needed * 8 > kMaxL1Bytes || std::uint64_t{h.l1_size} * 8 > kMaxL1Bytes)
        return fail(ErrorKind::Storage,
                    "{}: L1 table of {} entries (virtual size {}) is too large (at most {} entries "
                    "allowed)",
                    name, std::max<std::uint64_t>(l1_needed, h.l1_size), h.size, kMaxL1Bytes / 8);
    if (h.l1_size < l1_needed)
        return fail(ErrorKind::Storage, "{}: L1 table has {} entries but virtual size {} needs {}", name, h.l1_size,
                    h.size, l1_needed);
    if (h.refcount_table_clusters == 0 ||
        std::uint64_t{h.refcount_table_clusters} * cluster_size > kMaxRefcountTableBytes)
        return fail(ErrorKind::Storage, "{}: refcount table of {} clusters is invalid (1 to {} bytes allowed)", name,
                    h.refcount_table_clusters, kMaxRefcountTableBytes);
    if (h.nb_snapshots > kMaxSnapshots)
        return fail(ErrorKind::Storage, "{}: {} snapshots is absurd (at most {} allowed)", name, h.nb_snapshots,
                    kMaxSnapshots);

    // Tables: cluster aligned, inside the file, and not overlapping each other.
    const std::uint64_t l1_bytes = std::uint64_t{h.l1_size} * 8;
    const std::uint64_t reftable_bytes = std::uint64_t{h.refcount_table_clusters} * cluster_size;
    auto inside = [&](std::uint64_t offset, std::uint64_t bytes, std::string_view what) -> BoxliteResult<void> {
        if (offset % cluster_size != 0)
            return fail(ErrorKind::Storage, "{}: {} offset {} is not aligned to the cluster size {}", name, what,
                        offset, cluster_size);
        if (offset == 0 && bytes != 0)
            return fail(ErrorKind::Storage, "{}: {} overlaps the header (offset 0)", name, what);
        if (offset > file_size || bytes > file_size - offset)
            return fail(ErrorKind::Storage, "{}: {} at offset {} ({} bytes) lies outside the file ({} bytes)", name,
                        what, offset, bytes, file_size);
        return {};
    };
    if (h.l1_size > 0) BOXLITE_TRY_VOID(inside(h.l1_table_offset, l1_bytes, "L1 table"));
    BOXLITE_TRY_VOID(inside(h.refcount_table_offset, reftable_bytes, "refcount table"));
    if (h.nb_snapshots > 0) {
        if (h.snapshots_offset % cluster_size != 0 || h.snapshots_offset == 0 || h.snapshots_offset >= file_size)
            return fail(ErrorKind::Storage, "{}: snapshot table offset {} is unaligned or outside the file", name,
                        h.snapshots_offset);
    }
    const Range header_range{0, cluster_size, "header"};
    const Range l1_range{h.l1_table_offset, h.l1_table_offset + round_up(l1_bytes, cluster_size), "L1 table"};
    const Range reftable_range{h.refcount_table_offset, h.refcount_table_offset + reftable_bytes, "refcount table"};
    const Range ranges[] = {header_range, l1_range, reftable_range};
    for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t j = i + 1; j < 3; ++j)
            if (ranges[i].end > ranges[i].begin && ranges[j].end > ranges[j].begin && overlaps(ranges[i], ranges[j]))
                return fail(ErrorKind::Storage, "{}: overlapping metadata: the {} [{}, {}) and the {} [{}, {})", name,
                            ranges[i].what, ranges[i].begin, ranges[i].end, ranges[j].what, ranges[j].begin,
                            ranges[j].end);

    if (h.backing_file_offset != 0) {
        if (h.backing_file_size == 0 || h.backing_file_size > kMaxBackingFileName)
            return fail(ErrorKind::Storage, "{}: backing file name length {} is invalid (1 to {} bytes allowed)", name,
                        h.backing_file_size, kMaxBackingFileName);
        const std::uint64_t end = std::min<std::uint64_t>(cluster_size, buf.size());
        if (h.backing_file_offset > end || h.backing_file_size > end - h.backing_file_offset)
            return fail(ErrorKind::Storage,
                        "{}: backing file name at offset {} ({} bytes) lies outside the first "
                        "cluster",
                        name, h.backing_file_offset, h.backing_file_size);
        h.backing_file.assign(reinterpret_cast<const char*>(p + h.backing_file_offset), h.backing_file_size);
        if (h.backing_file.find('\0') != std::string::npos)
            return fail(ErrorKind::Storage, "{}: backing file name contains a NUL byte", name);
    }
    return h;
}

std::vector<std::uint8_t> encode_header(const Header& h) {
    std::vector<std::uint8_t> buf(h.cluster_size(), 0);
    std::uint8_t* p = buf.data();
    store_be32(p, kMagic);
    store_be32(p + 4, 3);
    store_be32(p + 20, h.cluster_bits);
    store_be64(p + 24, h.size);
    store_be32(p + 32, 0);
    store_be32(p + 36, h.l1_size);
    store_be64(p + 40, h.l1_table_offset);
    store_be64(p + 48, h.refcount_table_offset);
    store_be32(p + 56, h.refcount_table_clusters);
    store_be32(p + 60, 0);
    store_be64(p + 64, 0);
    store_be64(p + 72, h.incompatible_features);
    store_be64(p + 80, h.compatible_features);
    store_be64(p + 88, h.autoclear_features);
    store_be32(p + 96, h.refcount_order);
    store_be32(p + 100, kWrittenHeaderLength);
    p[104] = 0;  // compression type: zlib
    std::uint64_t pos = kWrittenHeaderLength;
    if (!h.backing_format.empty()) {
        store_be32(p + pos, kExtBackingFormat);
        store_be32(p + pos + 4, static_cast<std::uint32_t>(h.backing_format.size()));
        std::copy(h.backing_format.begin(), h.backing_format.end(), p + pos + 8);
        pos += 8 + round_up(h.backing_format.size(), 8);
    }
    store_be32(p + pos, kExtEnd);  // end-of-extensions marker
    store_be32(p + pos + 4, 0);
    pos += 8;
    if (!h.backing_file.empty()) {
        store_be64(p + 8, pos);
        store_be32(p + 16, static_cast<std::uint32_t>(h.backing_file.size()));
        std::copy(h.backing_file.begin(), h.backing_file.end(), p + pos);
    }
    return buf;
}

}  // namespace boxlite::qcow2
