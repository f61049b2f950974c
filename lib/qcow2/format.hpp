// The QCOW2 on-disk format: header fields, table-entry bits and limits, and a parser that turns
// the first cluster of an untrusted file into a validated Header (or a Storage error that says
// what is wrong). Layout from QEMU's docs/interop/qcow2.txt; every number is big-endian.
#pragma once

#include <boxlite/error.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace boxlite::qcow2 {

inline constexpr std::uint32_t kMagic = 0x514649fb;   // "QFI\xfb"
inline constexpr std::uint32_t kMinClusterBits = 9;   // 512 B
inline constexpr std::uint32_t kMaxClusterBits = 21;  // 2 MiB
inline constexpr std::uint32_t kDefaultClusterBits = 16;
inline constexpr std::uint32_t kV2HeaderLength = 72;
inline constexpr std::uint32_t kV3HeaderLength = 104;
/// The v3 header we write: 104 bytes + compression_type, padded to a multiple of 8.
inline constexpr std::uint32_t kWrittenHeaderLength = 112;
inline constexpr std::uint32_t kMaxBackingFileName = 1023;
/// Bounds that keep a hostile header from making us allocate or scan absurd amounts.
inline constexpr std::uint64_t kMaxL1Bytes = 32ull << 20;  // 4 Mi L1 entries
inline constexpr std::uint64_t kMaxRefcountTableBytes = 8ull << 20;
inline constexpr std::uint64_t kMaxVirtualSize = 1ull << 55;  // 32 PiB
inline constexpr std::uint32_t kMaxSnapshots = 65536;

// Header field offsets we update in place.
inline constexpr std::uint64_t kSizeFieldOffset = 24;
inline constexpr std::uint64_t kL1SizeFieldOffset = 36;         // l1_size (4) + l1_table_offset (8)
inline constexpr std::uint64_t kRefcountTableFieldOffset = 48;  // offset (8) + clusters (4)
inline constexpr std::uint64_t kIncompatibleFieldOffset = 72;
inline constexpr std::uint64_t kAutoclearFieldOffset = 88;

// Incompatible feature bits.
inline constexpr std::uint64_t kIncompatDirty = 1ull << 0;
inline constexpr std::uint64_t kIncompatCorrupt = 1ull << 1;
inline constexpr std::uint64_t kIncompatExternalData = 1ull << 2;
inline constexpr std::uint64_t kIncompatCompressionType = 1ull << 3;
inline constexpr std::uint64_t kIncompatExtendedL2 = 1ull << 4;

// Header extension types.
inline constexpr std::uint32_t kExtEnd = 0;
inline constexpr std::uint32_t kExtBackingFormat = 0xE2792ACA;
inline constexpr std::uint32_t kExtFeatureNames = 0x6803f857;

// Table entry bits.
inline constexpr std::uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9..55
inline constexpr std::uint64_t kFlagCopied = 1ull << 63;             // refcount is exactly 1
inline constexpr std::uint64_t kFlagCompressed = 1ull << 62;
inline constexpr std::uint64_t kFlagZero = 1ull << 0;  // v3: reads as zeroes
/// Bits of an L1 entry that must be zero (0..8, 56..62); set ones make the image corrupt.
inline constexpr std::uint64_t kL1ReservedMask = 0x7f000000000001ffull;
/// Bits of a standard (uncompressed) L2 entry that must be zero (1..8, 56..61).
inline constexpr std::uint64_t kL2ReservedMask = 0x3f000000000001feull;
/// Bits of a refcount table entry that must be zero (0..8: blocks are cluster aligned).
inline constexpr std::uint64_t kReftableReservedMask = 0x1ffull;

struct Header {
    std::uint32_t version = 3;
    std::uint64_t backing_file_offset = 0;
    std::uint32_t backing_file_size = 0;
    std::uint32_t cluster_bits = kDefaultClusterBits;
    std::uint64_t size = 0;
    std::uint32_t crypt_method = 0;
    std::uint32_t l1_size = 0;
    std::uint64_t l1_table_offset = 0;
    std::uint64_t refcount_table_offset = 0;
    std::uint32_t refcount_table_clusters = 0;
    std::uint32_t nb_snapshots = 0;
    std::uint64_t snapshots_offset = 0;
    std::uint64_t incompatible_features = 0;
    std::uint64_t compatible_features = 0;
    std::uint64_t autoclear_features = 0;
    std::uint32_t refcount_order = 4;
    std::uint32_t header_length = kV2HeaderLength;
    std::uint8_t compression_type = 0;

    std::string backing_file;    ///< as stored (relative paths are relative to the image)
    std::string backing_format;  ///< from the backing-format extension; empty = probe

    [[nodiscard]] std::uint64_t cluster_size() const noexcept { return 1ull << cluster_bits; }
    [[nodiscard]] std::uint64_t l2_entries() const noexcept { return cluster_size() / 8; }
    /// Guest bytes one L1 entry (one L2 table) maps.
    [[nodiscard]] std::uint64_t bytes_per_l2() const noexcept { return l2_entries() << cluster_bits; }
    [[nodiscard]] std::uint32_t refcount_bits() const noexcept { return 1u << refcount_order; }
    /// Refcount entries per refcount block.
    [[nodiscard]] std::uint64_t refcounts_per_block() const noexcept { return (cluster_size() * 8) >> refcount_order; }
};

/// L1 entries needed to map `size` guest bytes with `cluster_bits` clusters.
[[nodiscard]] constexpr std::uint64_t l1_entries_for(std::uint64_t size, std::uint32_t cluster_bits) noexcept {
    const std::uint64_t per_l2 = (1ull << (cluster_bits - 3)) << cluster_bits;
    return size / per_l2 + (size % per_l2 != 0 ? 1 : 0);
}

/// Parses and validates the header in `first_cluster` (the file's first bytes: at least the
/// whole first cluster, or the whole file if it is shorter). `file_size` bounds every table.
/// `name` is the path used in error messages.
BoxliteResult<Header> parse_header(std::span<const std::uint8_t> first_cluster, std::uint64_t file_size,
                                   std::string_view name);

/// Encodes `header` (plus the backing-format extension and backing file name) into a buffer
/// of one cluster, as a freshly created v3 image stores it.
std::vector<std::uint8_t> encode_header(const Header& header);

/// The names of set incompatible-feature bits, for error messages ("external data file, bit 7").
std::string describe_incompatible(std::uint64_t bits, std::span<const std::pair<std::uint8_t, std::string>> names);

}  // namespace boxlite::qcow2
