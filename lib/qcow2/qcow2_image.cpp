// QCOW2 primer — how this engine keeps an image exact and crash-consistent.
//
// Layout. A QCOW2 file is cut into clusters (512 B .. 2 MiB, 64 KiB by default). Guest offsets map
// through two levels: the L1 table (one entry per L2 table) and L2 tables (one entry per guest
// cluster). An L2 entry is unallocated (0: read the backing file, or zeroes), a standard cluster
// (host offset, bit 63 COPIED = "refcount is exactly 1, write in place"), a zero cluster (v3
// bit 0), or a compressed cluster (bit 62: byte offset + sector count of a raw-deflate stream).
//
// Refcounts. Every host cluster in use — header, L1, L2 tables, refcount table, refcount blocks,
// data — has a reference count, stored in refcount blocks that a refcount table points to. They
// must be exact: a refcount below the number of references lets a cluster be reused while still
// in use (corruption); one above is a leak (wasted space, harmless). So the only failure we may
// ever leave behind after a crash is a leak.
//
// Ordering (the choice of this engine, instead of QEMU's lazy-refcount dirty bit). Metadata
// changes are batched in memory (L2 tables and refcount blocks are cached; data goes straight to
// its cluster with pwritev) and written out at flush, on cache pressure and at close, in phases
// separated by fdatasync barriers:
//   1. refcount increments: dirty refcount blocks, then (after a barrier) the refcount-table
//      entries that point to new blocks — or, if the table had to grow, the whole new table
//      followed by the header fields that point to it;
//   2. L2 tables (new data clusters are referenced only now, after their refcounts and data);
//   3. the L1 table (new L2 tables are referenced only now);
//   4. refcount decrements (clusters freed by discard, zeroing, copy-on-write of compressed or
//      shared clusters, relocated tables): applied only after no table on disk points to the
//      cluster any more. Freed clusters become reusable only after this phase.
// A crash between any two writes leaves references ⊆ refcounts, i.e. at worst leaks, which
// check() finds and repair() (a full refcount rebuild) removes. An image that another writer
// left with the dirty bit set (QEMU lazy refcounts) is repaired the same way when opened
// read-write.
//
// Trust. Every number read from the file is hostile: offsets are checked for alignment, for the
// file's bounds and against the fixed metadata before use, entries for reserved bits, sizes
// against hard limits, and every failure is a Storage error naming the image and the offending
// value. At open, the in-memory L1 and refcount tables give the place of every L2 table and
// refcount block; those places must not overlap each other or the fixed metadata, and no data
// write, allocation or free ever touches one, whether the table is cached or not. Memory is
// bounded whatever the file claims: L2 and refcount-block caches have budgets, and check/repair
// count references in sparse chunks under a budget, so a sparse file of many TiB costs what
// its tables actually reference.
#include "qcow2_image.hpp"

#include "format.hpp"
#include "image_lock.hpp"
#include "io.hpp"
#include "raw_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <unordered_set>

namespace boxlite::qcow2 {
namespace {

using block::iov_length;
using block::UniqueFd;

constexpr std::uint64_t kNoEntry = std::numeric_limits<std::uint64_t>::max();
/// Memory check() and repair() may spend on reference counters (4 bytes per cluster in the
/// chunks the tables point into): a fully used 4 TiB image with 64 KiB clusters.
constexpr std::uint64_t kCheckMemoryBudget = 256ull << 20;
/// Refcount entries check() compares at most (the blocks that cover the file).
constexpr std::uint64_t kMaxCheckClusters = 1ull << 32;
/// Free clusters repair() lists for reuse (8 MiB of offsets); others past it stay unused.
constexpr std::size_t kMaxFreeListAfterRepair = 1u << 20;

std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) {
    return (value + alignment - 1) / alignment * alignment;
}
std::uint64_t div_up(std::uint64_t value, std::uint64_t divisor) {
    return value / divisor + (value % divisor != 0 ? 1 : 0);
}

/// One entry of a refcount block as stored: 1- to 64-bit big-endian; sub-byte ones LSB first.
/// Blocks stay in this form in memory, so a cached block costs one cluster whatever the width.
std::uint64_t refcount_get(const std::uint8_t* raw, std::uint32_t order, std::uint64_t i) {
    switch (order) {
        case 0: case 1: case 2: {
            const std::uint32_t bits = 1u << order;
            const std::uint64_t bit = i * bits;
            return (raw[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
        }
        case 3: return raw[i];
        case 4: return block::load_be16(raw + 2 * i);
        case 5: return block::load_be32(raw + 4 * i);
        default: return block::load_be64(raw + 8 * i);
    }
}

void refcount_set(std::uint8_t* raw, std::uint32_t order, std::uint64_t i, std::uint64_t value) {
    switch (order) {
        case 0: case 1: case 2: {
            const std::uint32_t bits = 1u << order;
            const std::uint64_t bit = i * bits;
            const auto mask = static_cast<std::uint8_t>(((1u << bits) - 1) << (bit % 8));
            raw[bit / 8] = static_cast<std::uint8_t>((raw[bit / 8] & ~mask) |
                                                     ((value << (bit % 8)) & mask));
            break;
        }
        case 3: raw[i] = static_cast<std::uint8_t>(value); break;
        case 4: block::store_be16(raw + 2 * i, static_cast<std::uint16_t>(value)); break;
        case 5: block::store_be32(raw + 4 * i, static_cast<std::uint32_t>(value)); break;
        default: block::store_be64(raw + 8 * i, value); break;
    }
}

/// Reference counts per host cluster, for check() and repair(). Counters exist only in chunks
/// the metadata points into, so a hostile image that is a sparse file of many TiB costs what
/// its tables reference, not what its length claims; and the chunks have a hard budget, so
/// tables that point everywhere end in an error instead of an allocation the process cannot
/// survive.
class ReferenceCounts {
public:
    static constexpr std::uint64_t kChunkBits = 12;
    static constexpr std::uint64_t kChunk = 1ull << kChunkBits;

    explicit ReferenceCounts(std::uint64_t budget_bytes)
        : max_chunks_(std::max<std::uint64_t>(1, budget_bytes / (kChunk * sizeof(std::uint32_t)))) {}

    /// One more reference to `cluster`; false if that needs a chunk past the budget.
    [[nodiscard]] bool add(std::uint64_t cluster) {
        std::uint32_t* chunk = find(cluster >> kChunkBits, true);
        if (chunk == nullptr) return false;
        std::uint32_t& count = chunk[cluster & (kChunk - 1)];
        if (count != std::numeric_limits<std::uint32_t>::max()) ++count;
        return true;
    }
    [[nodiscard]] std::uint32_t get(std::uint64_t cluster) {
        const std::uint32_t* chunk = find(cluster >> kChunkBits, false);
        return chunk == nullptr ? 0 : chunk[cluster & (kChunk - 1)];
    }
    /// Calls f(cluster, count) for every referenced cluster, in ascending order.
    template <typename F>
    void for_each(F&& f) const {
        for (const auto& [index, chunk] : chunks_)
            for (std::uint64_t i = 0; i < kChunk; ++i)
                if (chunk[i] != 0) f((index << kChunkBits) + i, chunk[i]);
    }
    /// Indices of the chunks that hold counters, ascending.
    template <typename F>
    void for_each_chunk(F&& f) const {
        for (const auto& [index, chunk] : chunks_) f(index, chunk.get());
    }
    [[nodiscard]] std::uint64_t budget_bytes() const noexcept {
        return max_chunks_ * kChunk * sizeof(std::uint32_t);
    }

private:
    std::uint32_t* find(std::uint64_t index, bool create) {
        if (index == last_index_) return last_;
        auto it = chunks_.find(index);
        if (it == chunks_.end()) {
            if (!create) return nullptr;
            if (chunks_.size() >= max_chunks_) return nullptr;
            std::unique_ptr<std::uint32_t[]> chunk(new (std::nothrow) std::uint32_t[kChunk]());
            if (!chunk) return nullptr;
            it = chunks_.emplace(index, std::move(chunk)).first;
        }
        last_index_ = index;
        last_ = it->second.get();
        return last_;
    }

    std::map<std::uint64_t, std::unique_ptr<std::uint32_t[]>> chunks_;
    std::uint64_t max_chunks_;
    std::uint64_t last_index_ = std::numeric_limits<std::uint64_t>::max();
    std::uint32_t* last_ = nullptr;
};

/// Runs one engine operation; an allocation that fails (a hostile table asking for more than
/// the process may have, or a real shortage) becomes a Storage error instead of an exception
/// unwinding into the block device. The engine's `failed` mark stays set if a write was cut
/// short, so a half-done update is never built upon.
template <typename F>
auto guarded(std::string_view name, std::string_view op, F&& body) -> decltype(body()) {
    try {
        return body();
    } catch (const std::bad_alloc&) {
        return fail(ErrorKind::Storage, "{}: out of memory during {}", name, op);
    } catch (const std::length_error&) {
        return fail(ErrorKind::Storage, "{}: a table is too large to hold in memory during {}", name, op);
    }
}

BoxliteResult<std::string> probe_format(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail_errno(ErrorKind::Storage, fmt::format("opening disk {}", path.string()), errno);
    UniqueFd owned(fd);
    std::uint8_t magic[4] = {};
    const ssize_t n = ::pread(fd, magic, sizeof magic, 0);
    if (n == 4 && block::load_be32(magic) == kMagic) return std::string("qcow2");
    return std::string("raw");
}

BoxliteResult<std::unique_ptr<block::BlockBackend>> open_disk_at_depth(
    const std::filesystem::path& path, bool read_only, const std::string& format,
    const OpenOptions& options, unsigned depth);

}  // namespace

struct L2Table {
    std::vector<std::uint64_t> entries;
    bool dirty = false;
    std::uint64_t last_use = 0;
};

struct RefBlock {
    std::vector<std::uint8_t> raw;  // the block as stored (refcount_get/refcount_set)
    std::uint64_t offset = 0;
    bool dirty = false;
    std::uint64_t last_use = 0;
};

struct Qcow2Image::Impl {
    UniqueFd fd;
    std::string name;
    std::filesystem::path directory;
    OpenOptions options;
    unsigned depth = 0;
    Header h;
    std::uint64_t cs = 0;
    std::uint32_t cb = 0;
    std::uint64_t l2_entries = 0;
    std::uint64_t refs_per_block = 0;
    std::uint64_t refcount_max = 0;

    std::uint64_t file_size = 0;   // bytes the file holds (tracked across our writes)
    std::uint64_t alloc_end = 0;   // next cluster handed out from the end of the file
    std::uint64_t fresh_from = 0;  // clusters at or past this were never written: read as zero

    std::vector<std::uint64_t> l1;
    std::uint64_t l1_dirty_lo = kNoEntry, l1_dirty_hi = 0;

    std::unordered_map<std::uint64_t, L2Table> l2_cache;  // key: L2 table host offset
    std::uint64_t use_clock = 0;
    std::uint64_t last_l1_index = kNoEntry;  // one-entry lookup cache in front of l2_cache
    L2Table* last_l2 = nullptr;

    std::vector<std::uint64_t> reftable;
    std::uint64_t rt_offset = 0;
    std::uint32_t rt_clusters = 0;
    std::uint64_t rt_dirty_lo = kNoEntry, rt_dirty_hi = 0;
    bool rt_relocated = false;
    std::unordered_map<std::uint64_t, RefBlock> refblocks;  // key: block index
    std::uint64_t refblock_budget = 0;  // bytes of cached refcount blocks before clean ones go

    // Where every L2 table and refcount block is, loaded or not, so that no data write and no
    // allocation ever lands on one: the tables as the L1 and refcount tables named them at open
    // (or after repair), sorted, and the ones allocated since.
    std::vector<std::uint64_t> metadata_at_open;
    std::unordered_set<std::uint64_t> metadata_added;

    std::vector<std::uint64_t> pending_free;  // host cluster offsets, one per decrement
    std::vector<std::uint64_t> free_list;     // committed-free clusters, highest first

    std::unique_ptr<block::BlockBackend> backing;
    std::vector<std::uint8_t> inflated;  // the last decompressed cluster
    std::uint64_t inflated_entry = 0;
    bool inflated_valid = false;  // every 64-bit value is a possible (hostile) entry
    std::vector<std::uint8_t> compressed_buf;
    std::vector<std::uint8_t> scratch;  // one cluster, for copy-on-write
    std::vector<std::uint8_t> zero_cluster;
    std::vector<iovec> iov_tmp;

    bool failed = false;  // a write or metadata update failed part-way: refuse further writes
    std::mutex mutex;

    // ---- helpers ------------------------------------------------------------------------
    [[nodiscard]] bool v3() const { return h.version >= 3; }
    [[nodiscard]] bool writable_check() const { return !options.read_only; }

    BoxliteResult<void> check_request(std::uint64_t offset, std::uint64_t length,
                                      std::string_view op, bool writes) const {
        if (offset > h.size || length > h.size - offset)
            return fail(ErrorKind::InvalidArgument,
                        "{} of {} bytes at offset {} is past the end of {} ({} bytes)", op, length,
                        offset, name, h.size);
        if (writes && options.read_only)
            return fail(ErrorKind::Storage, "{} on {}: the image is open read-only", op, name);
        if (writes && failed)
            return fail(ErrorKind::Storage,
                        "{} on {}: an earlier write failed part-way; reopen the image", op, name);
        return {};
    }

    BoxliteResult<void> sync() {
        if (::fdatasync(fd.get()) != 0)
            return fail_errno(ErrorKind::Storage, fmt::format("fdatasync of {}", name), errno);
        return {};
    }

    BoxliteResult<void> pwrite(const void* data, std::size_t len, std::uint64_t offset) {
        BOXLITE_TRY_VOID(block::pwrite_full(fd.get(), data, len, offset, name));
        file_size = std::max(file_size, offset + len);
        return {};
    }
    BoxliteResult<void> pwritev(std::span<const iovec> iov, std::uint64_t offset) {
        BOXLITE_TRY_VOID(block::pwrite_full(fd.get(), iov, offset, name));
        file_size = std::max(file_size, offset + iov_length(iov));
        return {};
    }

    /// True if [offset, offset + length) overlaps the header, L1 table or refcount table.
    [[nodiscard]] bool hits_fixed_metadata(std::uint64_t offset, std::uint64_t length) const {
        auto overlaps = [&](std::uint64_t b, std::uint64_t e) { return offset < e && b < offset + length; };
        if (overlaps(0, cs)) return true;
        if (!l1.empty() && overlaps(h.l1_table_offset, h.l1_table_offset + align_up(l1.size() * 8, cs)))
            return true;
        return overlaps(rt_offset, rt_offset + std::uint64_t{rt_clusters} * cs);
    }

    /// True if the cluster at `offset` (aligned) holds any metadata, cached or not.
    [[nodiscard]] bool holds_metadata(std::uint64_t offset) const {
        return hits_fixed_metadata(offset, cs) ||
               std::binary_search(metadata_at_open.begin(), metadata_at_open.end(), offset) ||
               metadata_added.count(offset) != 0;
    }

    /// Records where the L1 and refcount tables say the L2 tables and refcount blocks are, and
    /// refuses an image where two of them, or one and the header, L1 or refcount table, share
    /// a cluster (writing one would then silently rewrite the other). No I/O: both tables are
    /// in memory, so this costs a sort of at most kMaxL1Bytes / 8 + kMaxRefcountTableBytes / 8
    /// offsets. Unaligned pointers are left to the error at first use.
    BoxliteResult<void> index_metadata() {
        constexpr std::uint64_t kL2Tag = 1, kRefblockTag = 2, kTagMask = 511;
        std::vector<std::uint64_t> tagged;
        tagged.reserve(static_cast<std::size_t>(
            std::count_if(l1.begin(), l1.end(), [](std::uint64_t e) { return (e & kOffsetMask) != 0; }) +
            std::count_if(reftable.begin(), reftable.end(),
                          [](std::uint64_t e) { return (e & ~kReftableReservedMask) != 0; })));
        for (const std::uint64_t e : l1)
            if (const std::uint64_t offset = e & kOffsetMask; offset != 0 && offset % cs == 0)
                tagged.push_back(offset | kL2Tag);
        for (const std::uint64_t e : reftable)
            if (const std::uint64_t offset = e & ~kReftableReservedMask; offset != 0 && offset % cs == 0)
                tagged.push_back(offset | kRefblockTag);
        std::sort(tagged.begin(), tagged.end());
        auto what = [&](std::uint64_t t) { return (t & kTagMask) == kL2Tag ? "an L2 table" : "a refcount block"; };
        for (std::size_t i = 0; i < tagged.size(); ++i) {
            const std::uint64_t offset = tagged[i] & ~kTagMask;
            if (hits_fixed_metadata(offset, cs))
                return fail(ErrorKind::Storage,
                            "{}: overlapping metadata: {} at offset {} overlaps the header, L1 table "
                            "or refcount table",
                            name, what(tagged[i]), offset);
            if (i > 0 && (tagged[i - 1] & ~kTagMask) == offset)
                return fail(ErrorKind::Storage,
                            "{}: overlapping metadata: {} and {} are both at offset {}", name,
                            what(tagged[i - 1]), what(tagged[i]), offset);
        }
        for (auto& t : tagged) t &= ~kTagMask;
        metadata_at_open = std::move(tagged);
        metadata_added.clear();
        return {};
    }

    // ---- refcounts ----------------------------------------------------------------------
    /// Drops the least recently used half of the clean cached refcount blocks once the cache
    /// is over budget. Dirty blocks stay (they are written at the next safe point); callers
    /// hold a block pointer only until their next load, and only a dirty one across it.
    void trim_refblocks() {
        if ((refblocks.size() + 1) * cs <= refblock_budget) return;
        std::vector<std::pair<std::uint64_t, std::uint64_t>> by_age;
        for (const auto& [index, block] : refblocks)
            if (!block.dirty) by_age.emplace_back(block.last_use, index);
        std::sort(by_age.begin(), by_age.end());
        const std::size_t drop = std::max<std::size_t>(1, by_age.size() / 2);
        for (std::size_t i = 0; i < drop && i < by_age.size(); ++i) refblocks.erase(by_age[i].second);
    }

    [[nodiscard]] bool refblocks_over_budget() const {
        return refblocks.size() * cs > refblock_budget &&
               std::any_of(refblocks.begin(), refblocks.end(), [](const auto& kv) { return kv.second.dirty; });
    }

    BoxliteResult<RefBlock*> load_refblock(std::uint64_t index) {
        if (index >= reftable.size()) return nullptr;
        if (auto it = refblocks.find(index); it != refblocks.end()) {
            it->second.last_use = ++use_clock;
            return &it->second;
        }
        const std::uint64_t entry = reftable[index];
        if (entry & kReftableReservedMask)
            return fail(ErrorKind::Storage,
                        "{}: refcount table entry {} ({:#x}) has reserved bits set; the image is "
                        "corrupt",
                        name, index, entry);
        const std::uint64_t offset = entry;
        if (offset == 0) return nullptr;
        if (offset % cs != 0 || offset > file_size || cs > file_size - offset)
            return fail(ErrorKind::Storage,
                        "{}: refcount block {} at offset {} is unaligned or outside the file "
                        "({} bytes)",
                        name, index, offset, file_size);
        if (hits_fixed_metadata(offset, cs))
            return fail(ErrorKind::Storage,
                        "{}: overlapping metadata: refcount block {} at offset {} overlaps the "
                        "header, L1 table or refcount table",
                        name, index, offset);
        trim_refblocks();
        RefBlock block;
        block.offset = offset;
        block.raw.resize(cs);
        block.last_use = ++use_clock;
        BOXLITE_TRY_VOID(block::pread_full(fd.get(), block.raw.data(), cs, offset, name));
        return &refblocks.emplace(index, std::move(block)).first->second;
    }

    BoxliteResult<std::uint64_t> refcount(std::uint64_t cluster) {
        BOXLITE_TRY(RefBlock * block, load_refblock(cluster / refs_per_block));
        if (block == nullptr) return std::uint64_t{0};
        return refcount_get(block->raw.data(), h.refcount_order, cluster % refs_per_block);
    }

    void mark_reftable_dirty(std::uint64_t index) {
        rt_dirty_lo = std::min(rt_dirty_lo, index);
        rt_dirty_hi = std::max(rt_dirty_hi, index + 1);
    }

    /// Makes the refcount table at least `entries` long, moving it to the end of the file.
    BoxliteResult<void> grow_reftable(std::uint64_t entries) {
        const std::uint64_t per_cluster = cs / 8;
        std::uint64_t new_entries = std::max<std::uint64_t>(entries, reftable.size() * 2);
        // The new table's own clusters (and the blocks counting them) must be covered too.
        const std::uint64_t clusters_guess = div_up(new_entries, per_cluster);
        new_entries = std::max(new_entries, (alloc_end / cs + clusters_guess + 2) / refs_per_block + 2);
        const std::uint64_t new_clusters = div_up(new_entries, per_cluster);
        if (new_clusters * cs > kMaxRefcountTableBytes)
            return fail(ErrorKind::Storage,
                        "{}: the refcount table would grow past {} bytes; the image is too large",
                        name, kMaxRefcountTableBytes);
        // The old location stays valid on disk until the header points to the new one, so it
        // is freed in phase 4 like any other cluster.
        for (std::uint32_t i = 0; i < rt_clusters; ++i) pending_free.push_back(rt_offset + i * cs);
        const std::uint64_t new_offset = take_from_end(new_clusters);
        reftable.resize(new_clusters * per_cluster, 0);
        rt_offset = new_offset;
        rt_clusters = static_cast<std::uint32_t>(new_clusters);
        rt_relocated = true;
        for (std::uint64_t i = 0; i < new_clusters; ++i)
            BOXLITE_TRY_VOID(set_refcount((new_offset >> cb) + i, 1));
        return {};
    }

    BoxliteResult<RefBlock*> ensure_refblock(std::uint64_t index) {
        if (index >= reftable.size()) BOXLITE_TRY_VOID(grow_reftable(index + 1));
        BOXLITE_TRY(RefBlock * existing, load_refblock(index));
        if (existing != nullptr) return existing;
        // A new block goes at the end of the file; usually it lands in the range it covers and
        // counts itself, otherwise setting its refcount recurses once into the next block.
        const std::uint64_t offset = take_from_end(1);
        RefBlock block;
        block.offset = offset;
        block.raw.assign(cs, 0);
        block.dirty = true;
        block.last_use = ++use_clock;
        metadata_added.insert(offset);
        RefBlock* inserted = &refblocks.emplace(index, std::move(block)).first->second;
        reftable[index] = offset;
        mark_reftable_dirty(index);
        BOXLITE_TRY_VOID(set_refcount(offset >> cb, 1));
        return inserted;
    }

    BoxliteResult<void> set_refcount(std::uint64_t cluster, std::uint64_t value) {
        if (value > refcount_max)
            return fail(ErrorKind::Storage,
                        "{}: refcount overflow on cluster {} ({} exceeds the {}-bit maximum {})",
                        name, cluster, value, h.refcount_bits(), refcount_max);
        BOXLITE_TRY(RefBlock * block, ensure_refblock(cluster / refs_per_block));
        refcount_set(block->raw.data(), h.refcount_order, cluster % refs_per_block, value);
        block->dirty = true;
        return {};
    }

    /// `count` contiguous clusters at the end of the file, stepping over any that a (hostile)
    /// L1 or refcount table entry points at beyond it.
    std::uint64_t take_from_end(std::uint64_t count) {
        for (;;) {
            const std::uint64_t start = alloc_end;
            std::uint64_t i = 0;
            while (i < count && !holds_metadata(start + i * cs)) ++i;
            alloc_end = start + (i + 1) * cs;
            if (i == count) {
                alloc_end = start + count * cs;
                return start;
            }
        }
    }

    /// Hands out one cluster, reusing committed-free ones first. `fresh`: reads as zeroes.
    BoxliteResult<std::uint64_t> allocate_cluster(bool& fresh) {
        for (;;) {
            std::uint64_t offset;
            if (!free_list.empty()) {
                offset = free_list.back();
                free_list.pop_back();
                fresh = false;
            } else {
                offset = take_from_end(1);
                fresh = offset >= fresh_from;
            }
            if (holds_metadata(offset)) continue;  // never hand out a table's cluster
            BOXLITE_TRY(std::uint64_t current, refcount(offset >> cb));
            if (current != 0) continue;  // a hostile refcount past the end: skip, never share
            BOXLITE_TRY_VOID(set_refcount(offset >> cb, 1));
            return offset;
        }
    }

    /// Host clusters a compressed L2 entry's data spans.
    void compressed_extent(std::uint64_t entry, std::uint64_t& offset, std::uint64_t& length) const {
        const std::uint32_t x = 62 - (cb - 8);
        offset = entry & ((1ull << x) - 1) & ((1ull << 56) - 1);
        const std::uint64_t sectors = ((entry & ~kFlagCopied & ~kFlagCompressed) >> x) + 1;
        length = sectors * 512 - (offset & 511);
    }

    void free_entry_clusters(std::uint64_t entry) {
        if (entry & kFlagCompressed) {
            std::uint64_t offset = 0, length = 0;
            compressed_extent(entry, offset, length);
            for (std::uint64_t c = offset & ~(cs - 1); c < offset + length; c += cs)
                pending_free.push_back(c);
        } else if (const std::uint64_t offset = entry & kOffsetMask; offset != 0) {
            pending_free.push_back(offset);
        }
    }

    // ---- L2 tables ----------------------------------------------------------------------
    /// Called only where no request has data in flight that a metadata write-out could map
    /// before it is written (see write()).
    BoxliteResult<void> evict_if_needed() {
        // Dirty refcount blocks accumulate between write-outs; this is where they may go.
        if (refblocks_over_budget()) BOXLITE_TRY_VOID(write_metadata(false));
        if ((l2_cache.size() + 1) * cs <= options.l2_cache_bytes || l2_cache.empty()) return {};
        bool any_clean = std::any_of(l2_cache.begin(), l2_cache.end(),
                                     [](const auto& kv) { return !kv.second.dirty; });
        if (!any_clean) BOXLITE_TRY_VOID(write_metadata(false));
        // Drop the older half of the clean tables at once: eviction is then amortised.
        std::vector<std::pair<std::uint64_t, std::uint64_t>> by_age;
        for (const auto& [offset, table] : l2_cache)
            if (!table.dirty) by_age.emplace_back(table.last_use, offset);
        std::sort(by_age.begin(), by_age.end());
        const std::size_t drop = std::max<std::size_t>(1, by_age.size() / 2);
        for (std::size_t i = 0; i < drop && i < by_age.size(); ++i) l2_cache.erase(by_age[i].second);
        last_l1_index = kNoEntry;
        last_l2 = nullptr;
        return {};
    }

    /// The L2 table for L1 entry `index`; nullptr if unallocated and !allocate.
    BoxliteResult<L2Table*> l2_table(std::uint64_t index, bool allocate) {
        if (index == last_l1_index && last_l2 != nullptr) {
            last_l2->last_use = ++use_clock;
            return last_l2;
        }
        const std::uint64_t entry = l1[index];
        if (entry & kL1ReservedMask)
            return fail(ErrorKind::Storage,
                        "{}: L1 entry {} ({:#x}) has reserved bits set; the image is corrupt", name,
                        index, entry);
        std::uint64_t offset = entry & kOffsetMask;
        if (offset == 0) {
            if (!allocate) return nullptr;
            BOXLITE_TRY_VOID(evict_if_needed());
            bool fresh = false;
            BOXLITE_TRY(offset, allocate_cluster(fresh));
            L2Table table;
            table.entries.assign(l2_entries, 0);
            table.dirty = true;
            table.last_use = ++use_clock;
            metadata_added.insert(offset);
            L2Table* inserted = &l2_cache.insert_or_assign(offset, std::move(table)).first->second;
            l1[index] = offset | kFlagCopied;
            l1_dirty_lo = std::min(l1_dirty_lo, index);
            l1_dirty_hi = std::max(l1_dirty_hi, index + 1);
            last_l1_index = index;
            last_l2 = inserted;
            return inserted;
        }
        if (allocate && !(entry & kFlagCopied))
            return fail(ErrorKind::Storage,
                        "{}: L2 table at offset {} is shared (refcount != 1); images with internal "
                        "snapshots are read-only here",
                        name, offset);
        auto it = l2_cache.find(offset);
        if (it == l2_cache.end()) {
            if (offset % cs != 0 || offset > file_size || cs > file_size - offset)
                return fail(ErrorKind::Storage,
                            "{}: L1 entry {} points to an L2 table at offset {} that is unaligned "
                            "or outside the file ({} bytes)",
                            name, index, offset, file_size);
            if (hits_fixed_metadata(offset, cs))
                return fail(ErrorKind::Storage,
                            "{}: overlapping metadata: the L2 table at offset {} (L1 entry {}) "
                            "overlaps the header, L1 table or refcount structures",
                            name, offset, index);
            BOXLITE_TRY_VOID(evict_if_needed());
            std::vector<std::uint8_t> raw(cs);
            BOXLITE_TRY_VOID(block::pread_full(fd.get(), raw.data(), cs, offset, name));
            L2Table table;
            table.entries.resize(l2_entries);
            for (std::uint64_t i = 0; i < l2_entries; ++i)
                table.entries[i] = block::load_be64(raw.data() + 8 * i);
            it = l2_cache.emplace(offset, std::move(table)).first;
        }
        it->second.last_use = ++use_clock;
        last_l1_index = index;
        last_l2 = &it->second;
        return last_l2;
    }

    // ---- metadata write-out (the ordering of the primer) ----------------------------------
    BoxliteResult<void> write_refblocks() {
        for (auto& [index, block] : refblocks) {
            if (!block.dirty) continue;
            BOXLITE_TRY_VOID(pwrite(block.raw.data(), cs, block.offset));
            block.dirty = false;
        }
        return {};
    }

    BoxliteResult<void> write_reftable_range(std::uint64_t lo, std::uint64_t hi) {
        std::vector<std::uint8_t> raw((hi - lo) * 8);
        for (std::uint64_t i = lo; i < hi; ++i) block::store_be64(raw.data() + 8 * (i - lo), reftable[i]);
        return pwrite(raw.data(), raw.size(), rt_offset + lo * 8);
    }

    BoxliteResult<void> write_metadata(bool force_sync) {
        // A half-written update must stop further writes; a request in progress keeps its mark.
        const bool was_failed = failed;
        failed = true;
        // The file must cover every cluster we counted, even ones written only in part.
        if (file_size < alloc_end) {
            if (::ftruncate(fd.get(), static_cast<off_t>(alloc_end)) != 0)
                return fail_errno(ErrorKind::Storage, fmt::format("extending {}", name), errno);
            file_size = alloc_end;
        }
        // Phase 1: refcount increments, then the table entries (or the moved table + header).
        const bool refblocks_dirty = std::any_of(refblocks.begin(), refblocks.end(),
                                                 [](const auto& kv) { return kv.second.dirty; });
        BOXLITE_TRY_VOID(write_refblocks());
        if (refblocks_dirty || force_sync || rt_relocated || rt_dirty_lo != kNoEntry)
            BOXLITE_TRY_VOID(sync());
        if (rt_relocated) {
            BOXLITE_TRY_VOID(write_reftable_range(0, reftable.size()));
            BOXLITE_TRY_VOID(sync());
            std::uint8_t fields[12];
            block::store_be64(fields, rt_offset);
            block::store_be32(fields + 8, rt_clusters);
            BOXLITE_TRY_VOID(pwrite(fields, sizeof fields, kRefcountTableFieldOffset));
            BOXLITE_TRY_VOID(sync());
            h.refcount_table_offset = rt_offset;
            h.refcount_table_clusters = rt_clusters;
            rt_relocated = false;
            rt_dirty_lo = kNoEntry;
        } else if (rt_dirty_lo != kNoEntry) {
            BOXLITE_TRY_VOID(write_reftable_range(rt_dirty_lo, rt_dirty_hi));
            BOXLITE_TRY_VOID(sync());
            rt_dirty_lo = kNoEntry;
        }
        rt_dirty_hi = 0;
        // Phase 2: L2 tables.
        bool wrote = false;
        std::vector<std::uint8_t> raw(cs);
        for (auto& [offset, table] : l2_cache) {
            if (!table.dirty) continue;
            for (std::uint64_t i = 0; i < l2_entries; ++i)
                block::store_be64(raw.data() + 8 * i, table.entries[i]);
            BOXLITE_TRY_VOID(pwrite(raw.data(), cs, offset));
            table.dirty = false;
            wrote = true;
        }
        if (wrote) BOXLITE_TRY_VOID(sync());
        // Phase 3: L1 table.
        if (l1_dirty_lo != kNoEntry) {
            std::vector<std::uint8_t> l1raw((l1_dirty_hi - l1_dirty_lo) * 8);
            for (std::uint64_t i = l1_dirty_lo; i < l1_dirty_hi; ++i)
                block::store_be64(l1raw.data() + 8 * (i - l1_dirty_lo), l1[i]);
            BOXLITE_TRY_VOID(pwrite(l1raw.data(), l1raw.size(), h.l1_table_offset + l1_dirty_lo * 8));
            BOXLITE_TRY_VOID(sync());
            l1_dirty_lo = kNoEntry;
            l1_dirty_hi = 0;
        }
        // Phase 4: refcount decrements, now that nothing on disk points at those clusters.
        if (!pending_free.empty()) {
            std::vector<std::uint64_t> freed;
            for (const std::uint64_t offset : pending_free) {
                // A (corrupt) data entry that pointed at a table must not free the table.
                if (holds_metadata(offset)) continue;
                const std::uint64_t cluster = offset >> cb;
                BOXLITE_TRY(std::uint64_t current, refcount(cluster));
                if (current == 0)
                    return fail(ErrorKind::Storage,
                                "{}: refcount underflow freeing cluster at offset {}; the image is "
                                "corrupt (run check/repair)",
                                name, offset);
                BOXLITE_TRY_VOID(set_refcount(cluster, current - 1));
                if (current == 1) freed.push_back(offset);
                // Decrements are safe to write at any point of this phase: keep the cache bounded
                // when a discard freed clusters all over the image.
                if (refblocks_over_budget()) BOXLITE_TRY_VOID(write_refblocks());
            }
            pending_free.clear();
            BOXLITE_TRY_VOID(write_refblocks());
            BOXLITE_TRY_VOID(sync());
            free_list.insert(free_list.end(), freed.begin(), freed.end());
            std::sort(free_list.begin(), free_list.end(), std::greater<>());
            free_list.erase(std::unique(free_list.begin(), free_list.end()), free_list.end());
        }
        failed = was_failed;
        return {};
    }

    // ---- reads --------------------------------------------------------------------------
    BoxliteResult<void> read_backing(std::uint64_t guest, std::span<const iovec> iov,
                                     std::uint64_t boff, std::uint64_t len) {
        const std::uint64_t bsize = backing ? backing->size() : 0;
        std::uint64_t from_backing = guest < bsize ? std::min(len, bsize - guest) : 0;
        if (from_backing > 0) {
            std::vector<iovec> part;
            block::iov_slice(iov, boff, from_backing, part);
            BOXLITE_TRY_VOID(backing->read(guest, part));
        }
        if (from_backing < len) block::iov_zero(iov, boff + from_backing, len - from_backing);
        return {};
    }

    BoxliteResult<const std::uint8_t*> inflate_cluster(std::uint64_t entry) {
        if (inflated_valid && entry == inflated_entry) return inflated.data();
        std::uint64_t offset = 0, length = 0;
        compressed_extent(entry, offset, length);
        if (offset >= file_size || offset < cs)
            return fail(ErrorKind::Storage,
                        "{}: compressed cluster at offset {} lies outside the file's data area "
                        "({} bytes)",
                        name, offset, file_size);
        length = std::min(length, file_size - offset);
        compressed_buf.resize(length);
        BOXLITE_TRY_VOID(block::pread_full(fd.get(), compressed_buf.data(), length, offset, name));
        inflated.resize(cs);
        z_stream zs{};
        if (inflateInit2(&zs, -15) != Z_OK)
            return fail(ErrorKind::Internal, "zlib inflateInit2 failed");
        zs.next_in = compressed_buf.data();
        zs.avail_in = static_cast<uInt>(length);
        zs.next_out = inflated.data();
        zs.avail_out = static_cast<uInt>(cs);
        const int rc = ::inflate(&zs, Z_FINISH);
        const std::uint64_t produced = cs - zs.avail_out;
        inflateEnd(&zs);
        inflated_valid = false;
        if ((rc != Z_STREAM_END && rc != Z_BUF_ERROR && rc != Z_OK) || produced != cs)
            return fail(ErrorKind::Storage,
                        "{}: compressed cluster at offset {} is corrupt (zlib: {}, {} of {} bytes)",
                        name, offset, rc, produced, cs);
        inflated_entry = entry;
        inflated_valid = true;
        return inflated.data();
    }

    BoxliteResult<void> check_data_offset(std::uint64_t host, std::uint64_t guest) const {
        if (host % cs != 0 || host == 0)
            return fail(ErrorKind::Storage,
                        "{}: data cluster for guest offset {} has an invalid host offset {}", name,
                        guest, host);
        if (host >= std::max(file_size, alloc_end))
            return fail(ErrorKind::Storage,
                        "{}: data cluster for guest offset {} at host offset {} lies past the end "
                        "of the file ({} bytes)",
                        name, guest, host, file_size);
        return {};
    }

    /// Standard L2 entries with reserved bits set are corrupt (as `qemu-img check` says); the
    /// bits may mean something we do not know, so the entry is not used at all.
    BoxliteResult<void> check_l2_entry(std::uint64_t entry, std::uint64_t guest) const {
        if (!(entry & kFlagCompressed) && (entry & kL2ReservedMask))
            return fail(ErrorKind::Storage,
                        "{}: the L2 entry for guest offset {} ({:#x}) has reserved bits set; the "
                        "image is corrupt",
                        name, guest, entry);
        return {};
    }

    BoxliteResult<std::uint64_t> lookup(std::uint64_t guest) {
        const std::uint64_t index = guest / h.bytes_per_l2();
        if (index >= l1.size()) return std::uint64_t{0};
        BOXLITE_TRY(L2Table * table, l2_table(index, false));
        if (table == nullptr) return std::uint64_t{0};
        const std::uint64_t entry = table->entries[(guest >> cb) & (l2_entries - 1)];
        BOXLITE_TRY_VOID(check_l2_entry(entry, guest));
        return entry;
    }

    BoxliteResult<void> read(std::uint64_t offset, std::span<const iovec> iov) {
        const std::uint64_t total = iov_length(iov);
        BOXLITE_TRY_VOID(check_request(offset, total, "read", false));
        // Runs of host-contiguous data clusters (or of unallocated ones) become one syscall.
        enum class Run { None, Host, Backing } run = Run::None;
        std::uint64_t run_host = 0, run_guest = 0, run_boff = 0, run_len = 0;
        auto flush_run = [&]() -> BoxliteResult<void> {
            if (run == Run::Host) {
                block::iov_slice(iov, run_boff, run_len, iov_tmp);
                BOXLITE_TRY_VOID(block::pread_full(fd.get(), iov_tmp, run_host, name));
            } else if (run == Run::Backing) {
                BOXLITE_TRY_VOID(read_backing(run_guest, iov, run_boff, run_len));
            }
            run = Run::None;
            run_len = 0;
            return {};
        };
        std::uint64_t boff = 0;
        while (boff < total) {
            const std::uint64_t guest = offset + boff;
            const std::uint64_t in_cluster = guest & (cs - 1);
            const std::uint64_t chunk = std::min(cs - in_cluster, total - boff);
            BOXLITE_TRY(std::uint64_t entry, lookup(guest));
            const std::uint64_t host = entry & kOffsetMask;
            if (entry & kFlagCompressed) {
                BOXLITE_TRY_VOID(flush_run());
                BOXLITE_TRY(const std::uint8_t* data, inflate_cluster(entry));
                block::iov_from_buffer(iov, boff, data + in_cluster, chunk);
            } else if ((v3() && (entry & kFlagZero)) || (host == 0 && !backing)) {
                BOXLITE_TRY_VOID(flush_run());
                block::iov_zero(iov, boff, chunk);
            } else if (host == 0) {
                if (run != Run::Backing) BOXLITE_TRY_VOID(flush_run());
                if (run == Run::None) {
                    run = Run::Backing;
                    run_guest = guest;
                    run_boff = boff;
                }
                run_len += chunk;
            } else {
                BOXLITE_TRY_VOID(check_data_offset(host, guest));
                if (run != Run::Host || run_host + run_len != host + in_cluster) BOXLITE_TRY_VOID(flush_run());
                if (run == Run::None) {
                    run = Run::Host;
                    run_host = host + in_cluster;
                    run_boff = boff;
                }
                run_len += chunk;
            }
            boff += chunk;
        }
        return flush_run();
    }

    // ---- writes -------------------------------------------------------------------------
    /// The current content of the guest cluster at `guest` (aligned) into `out` (cs bytes).
    BoxliteResult<void> cluster_content(std::uint64_t guest, std::uint64_t entry, std::uint8_t* out,
                                        bool& all_zero) {
        all_zero = false;
        const std::uint64_t host = entry & kOffsetMask;
        if (entry & kFlagCompressed) {
            BOXLITE_TRY(const std::uint8_t* data, inflate_cluster(entry));
            std::memcpy(out, data, cs);
        } else if ((v3() && (entry & kFlagZero)) || (host == 0 && !backing)) {
            std::memset(out, 0, cs);
            all_zero = true;
        } else if (host == 0) {
            if (guest >= backing->size()) {
                std::memset(out, 0, cs);
                all_zero = true;
                return {};
            }
            iovec v{out, cs};
            BOXLITE_TRY_VOID(read_backing(guest, std::span<const iovec>(&v, 1), 0, cs));
        } else {
            BOXLITE_TRY_VOID(check_data_offset(host, guest));
            BOXLITE_TRY_VOID(block::pread_full(fd.get(), out, cs, host, name));
        }
        return {};
    }

    BoxliteResult<void> write(std::uint64_t offset, std::span<const iovec> iov) {
        const std::uint64_t total = iov_length(iov);
        BOXLITE_TRY_VOID(check_request(offset, total, "write", true));
        failed = true;  // until every cluster of this request is written and mapped
        // A run: guest bytes [run_boff, +run_len) go to host [run_host, +run_len) in one pwritev.
        // Runs never cross an L2 table, so no metadata write-out (cache eviction) can publish a
        // mapping whose data is still only in the run.
        bool run_open = false;
        std::uint64_t run_host = 0, run_boff = 0, run_len = 0;
        auto flush_run = [&]() -> BoxliteResult<void> {
            if (run_open) {
                block::iov_slice(iov, run_boff, run_len, iov_tmp);
                BOXLITE_TRY_VOID(pwritev(iov_tmp, run_host));
            }
            run_open = false;
            run_len = 0;
            return {};
        };
        auto add_to_run = [&](std::uint64_t host, std::uint64_t boff, std::uint64_t len) -> BoxliteResult<void> {
            if (run_open && run_host + run_len == host && run_boff + run_len == boff) {
                run_len += len;
                return {};
            }
            BOXLITE_TRY_VOID(flush_run());
            run_open = true;
            run_host = host;
            run_boff = boff;
            run_len = len;
            return {};
        };
        std::uint64_t boff = 0;
        std::uint64_t current_l1 = kNoEntry;
        while (boff < total) {
            const std::uint64_t guest = offset + boff;
            const std::uint64_t in_cluster = guest & (cs - 1);
            const std::uint64_t chunk = std::min(cs - in_cluster, total - boff);
            const std::uint64_t l1_index = guest / h.bytes_per_l2();
            if (l1_index != current_l1) {
                BOXLITE_TRY_VOID(flush_run());
                current_l1 = l1_index;
            }
            BOXLITE_TRY(L2Table * table, l2_table(l1_index, true));
            std::uint64_t& slot = table->entries[(guest >> cb) & (l2_entries - 1)];
            const std::uint64_t entry = slot;
            BOXLITE_TRY_VOID(check_l2_entry(entry, guest));
            const std::uint64_t host = entry & kOffsetMask;
            const bool in_place = host != 0 && !(entry & kFlagCompressed) && (entry & kFlagCopied) &&
                                  !(v3() && (entry & kFlagZero));
            if (in_place) {
                BOXLITE_TRY_VOID(check_data_offset(host, guest));
                // Every L2 table and refcount block is known (holds_metadata), loaded or not.
                if (holds_metadata(host))
                    return fail(ErrorKind::Storage,
                                "{}: overlapping metadata: the data cluster for guest offset {} "
                                "is at host offset {}, which holds metadata",
                                name, guest, host);
                BOXLITE_TRY_VOID(add_to_run(host + in_cluster, boff, chunk));
            } else {
                // Copy-on-write into a newly allocated cluster.
                bool fresh = false;
                BOXLITE_TRY(const std::uint64_t target, allocate_cluster(fresh));
                if (chunk == cs) {
                    BOXLITE_TRY_VOID(add_to_run(target, boff, chunk));
                } else {
                    bool all_zero = false;
                    scratch.resize(cs);
                    BOXLITE_TRY_VOID(cluster_content(guest - in_cluster, entry, scratch.data(), all_zero));
                    if (all_zero && fresh) {
                        // The new cluster is past anything ever written: its holes read as zero.
                        BOXLITE_TRY_VOID(add_to_run(target + in_cluster, boff, chunk));
                    } else {
                        BOXLITE_TRY_VOID(flush_run());
                        block::iov_to_buffer(iov, boff, scratch.data() + in_cluster, chunk);
                        BOXLITE_TRY_VOID(pwrite(scratch.data(), cs, target));
                    }
                }
                // `slot` is still valid: nothing above touched the L2 cache.
                slot = target | kFlagCopied;
                table->dirty = true;
                free_entry_clusters(entry);
            }
            boff += chunk;
        }
        BOXLITE_TRY_VOID(flush_run());
        failed = false;
        return {};
    }

    BoxliteResult<void> write_zeroes(std::uint64_t offset, std::uint64_t length, std::string_view op) {
        BOXLITE_TRY_VOID(check_request(offset, length, op, true));
        if (zero_cluster.size() != cs) zero_cluster.assign(cs, 0);
        std::uint64_t pos = offset;
        const std::uint64_t end = offset + length;
        while (pos < end) {
            const std::uint64_t in_cluster = pos & (cs - 1);
            const std::uint64_t chunk = std::min(cs - in_cluster, end - pos);
            BOXLITE_TRY(const std::uint64_t entry, lookup(pos));
            const std::uint64_t host = entry & kOffsetMask;
            const bool reads_zero = (v3() && (entry & kFlagZero) && !(entry & kFlagCompressed)) ||
                                    (entry == 0 && !backing) ||
                                    (entry == 0 && backing && pos - in_cluster >= backing->size());
            if (reads_zero) {
                // Nothing to do (a zero-flagged cluster may keep its preallocated host cluster).
            } else if (chunk == cs && (v3() || !backing)) {
                // Whole cluster: drop the mapping and free the host cluster.
                const std::uint64_t l1_index = pos / h.bytes_per_l2();
                BOXLITE_TRY(L2Table * table, l2_table(l1_index, true));
                failed = true;
                std::uint64_t& slot = table->entries[(pos >> cb) & (l2_entries - 1)];
                // Without a backing file "unallocated" already reads as zeroes.
                slot = backing ? kFlagZero : 0;
                table->dirty = true;
                if (host != 0 || (entry & kFlagCompressed)) free_entry_clusters(entry);
                failed = false;
            } else {
                iovec v{zero_cluster.data(), chunk};
                BOXLITE_TRY_VOID(write(pos, std::span<const iovec>(&v, 1)));
            }
            pos += chunk;
        }
        return {};
    }

    // ---- resize ----------------------------------------------------------------------------
    BoxliteResult<void> resize(std::uint64_t new_size) {
        if (options.read_only)
            return fail(ErrorKind::Storage, "resize of {}: the image is open read-only", name);
        if (new_size < h.size)
            return fail(ErrorKind::Unsupported,
                        "resize of {} to {} bytes: shrinking a QCOW2 image is not supported (current "
                        "size {})",
                        name, new_size, h.size);
        if (new_size > kMaxVirtualSize)
            return fail(ErrorKind::InvalidArgument, "resize of {} to {} bytes: at most {} allowed",
                        name, new_size, kMaxVirtualSize);
        if (new_size % 512 != 0)
            return fail(ErrorKind::InvalidArgument,
                        "resize of {} to {} bytes: the size must be a multiple of 512", name, new_size);
        const std::uint64_t needed = l1_entries_for(new_size, cb);
        if (needed * 8 > kMaxL1Bytes)
            return fail(ErrorKind::InvalidArgument,
                        "resize of {} to {} bytes needs an L1 table of {} entries (at most {})",
                        name, new_size, needed, kMaxL1Bytes / 8);
        BOXLITE_TRY_VOID(write_metadata(true));
        if (needed > l1.size()) {
            // The L1 table moves to the end of the file: new copy, barrier, header, barrier.
            const std::uint64_t clusters = div_up(needed * 8, cs);
            const std::uint64_t new_offset = take_from_end(clusters);
            failed = true;
            for (std::uint64_t i = 0; i < clusters; ++i)
                BOXLITE_TRY_VOID(set_refcount((new_offset >> cb) + i, 1));
            const std::uint64_t old_offset = h.l1_table_offset;
            const std::uint64_t old_clusters = div_up(l1.size() * 8, cs);
            l1.resize(needed, 0);
            BOXLITE_TRY_VOID(write_metadata(true));  // refcounts of the new L1 clusters
            failed = true;
            std::vector<std::uint8_t> raw(clusters * cs, 0);
            for (std::uint64_t i = 0; i < l1.size(); ++i) block::store_be64(raw.data() + 8 * i, l1[i]);
            BOXLITE_TRY_VOID(pwrite(raw.data(), raw.size(), new_offset));
            BOXLITE_TRY_VOID(sync());
            std::uint8_t fields[12];
            block::store_be32(fields, static_cast<std::uint32_t>(needed));
            block::store_be64(fields + 4, new_offset);
            BOXLITE_TRY_VOID(pwrite(fields, sizeof fields, kL1SizeFieldOffset));
            BOXLITE_TRY_VOID(sync());
            h.l1_size = static_cast<std::uint32_t>(needed);
            h.l1_table_offset = new_offset;
            if (old_offset != 0)
                for (std::uint64_t i = 0; i < old_clusters; ++i) pending_free.push_back(old_offset + i * cs);
            failed = false;
        }
        std::uint8_t size_field[8];
        block::store_be64(size_field, new_size);
        BOXLITE_TRY_VOID(pwrite(size_field, sizeof size_field, kSizeFieldOffset));
        BOXLITE_TRY_VOID(sync());
        h.size = new_size;
        return write_metadata(false);
    }

    // ---- check and repair ------------------------------------------------------------------
    /// Host clusters the file and our allocations span; a reference past them is corrupt.
    [[nodiscard]] std::uint64_t extent_clusters() const {
        return std::max(align_up(file_size, cs), alloc_end) >> cb;
    }

    /// A refcount block exists (and is sane enough to read) for block index `b`.
    [[nodiscard]] bool block_present(std::uint64_t b) const {
        return b < reftable.size() && reftable[b] != 0 && !(reftable[b] & kReftableReservedMask);
    }

    /// The stored refcount, 0 where no usable block exists (check reports those entries).
    BoxliteResult<std::uint64_t> stored_refcount(std::uint64_t cluster) {
        if (!block_present(cluster / refs_per_block)) return std::uint64_t{0};
        return refcount(cluster);
    }

    [[nodiscard]] tl::unexpected<BoxliteError> references_over_budget(const ReferenceCounts& refs) const {
        return fail(ErrorKind::Storage,
                    "{}: the tables reference clusters all over the {}-byte file; counting them "
                    "needs more than {} MiB, the limit for check and repair",
                    name, file_size, refs.budget_bytes() >> 20);
    }

    /// Counts every reference the metadata makes. `with_refcount_structures`: count the refcount
    /// table and blocks too (check); repair builds new ones and leaves them out.
    BoxliteResult<ReferenceCounts> count_references(bool with_refcount_structures, CheckReport& report) {
        const std::uint64_t clusters = extent_clusters();
        ReferenceCounts refs(kCheckMemoryBudget);
        bool over_budget = false;
        auto note = [&](std::string message) {
            ++report.corruptions;
            if (report.messages.size() < 32) report.messages.push_back(std::move(message));
        };
        auto add = [&](std::uint64_t offset, std::uint64_t length, std::string_view what) {
            for (std::uint64_t c = offset >> cb; c < div_up(offset + length, cs); ++c) {
                if (c >= clusters) {
                    note(fmt::format("{} at offset {} lies past the end of the file", what, c << cb));
                    return;
                }
                if (!refs.add(c)) {
                    over_budget = true;
                    return;
                }
            }
        };
        add(0, cs, "header");
        add(h.l1_table_offset, l1.size() * 8, "L1 table");
        if (with_refcount_structures) {
            add(rt_offset, std::uint64_t{rt_clusters} * cs, "refcount table");
            for (std::uint64_t i = 0; i < reftable.size(); ++i) {
                if (reftable[i] & kReftableReservedMask)
                    note(fmt::format("refcount table entry {} ({:#x}) has reserved bits set", i, reftable[i]));
                if (const std::uint64_t offset = reftable[i] & ~kReftableReservedMask; offset != 0)
                    add(offset, cs, "refcount block");
            }
        }
        if (over_budget) return references_over_budget(refs);
        for (std::uint64_t i = 0; i < l1.size(); ++i) {
            const std::uint64_t l2_offset = l1[i] & kOffsetMask;
            if (l1[i] & kL1ReservedMask) {
                note(fmt::format("L1 entry {} ({:#x}) has reserved bits set", i, l1[i]));
                if (l2_offset != 0) add(l2_offset, cs, "L2 table");
                continue;
            }
            if (l2_offset == 0) continue;
            add(l2_offset, cs, "L2 table");
            BOXLITE_TRY(L2Table * table, l2_table(i, false));
            // Copy: loading the next table may evict this one.
            const std::vector<std::uint64_t> entries = table->entries;
            for (std::uint64_t j = 0; j < l2_entries; ++j) {
                const std::uint64_t e = entries[j];
                if (e & kFlagCompressed) {
                    if (e & kFlagCopied)
                        note(fmt::format("L2 entry {} of table {} is compressed and has the COPIED flag", j, i));
                    std::uint64_t offset = 0, length = 0;
                    compressed_extent(e, offset, length);
                    add(offset, length, "compressed cluster");
                } else {
                    if (e & kL2ReservedMask)
                        note(fmt::format("L2 entry {} of table {} ({:#x}) has reserved bits set", j, i, e));
                    const std::uint64_t host = e & kOffsetMask;
                    if (host == 0) continue;
                    if (host % cs != 0) {
                        note(fmt::format("L2 entry {} of table {} has unaligned offset {}", j, i, host));
                        continue;
                    }
                    add(host, cs, "data cluster");
                }
            }
            if (over_budget) return references_over_budget(refs);
        }
        return refs;
    }

    BoxliteResult<CheckReport> check() {
        if (h.nb_snapshots > 0)
            return fail(ErrorKind::Unsupported,
                        "{}: checking images with internal snapshots is not supported", name);
        if (!options.read_only) BOXLITE_TRY_VOID(write_metadata(false));
        CheckReport report;
        BOXLITE_TRY(auto refs, count_references(true, report));
        const std::uint64_t clusters = extent_clusters();
        // Clusters waiting in phase 4 are still referenced by the on-disk refcounts only.
        for (const std::uint64_t offset : pending_free)
            if ((offset >> cb) < clusters && !refs.add(offset >> cb))
                return references_over_budget(refs);
        auto message = [&](std::string text) {
            if (report.messages.size() < 32) report.messages.push_back(std::move(text));
        };
        auto compare = [&](std::uint64_t c, std::uint64_t stored, std::uint64_t referenced) {
            if (stored > 0) ++report.allocated_clusters;
            if (stored < referenced) {
                ++report.corruptions;
                message(fmt::format("cluster {} has refcount {} but {} references", c, stored, referenced));
            } else if (stored > referenced) {
                ++report.leaks;
                message(fmt::format("cluster {} leaked: refcount {}, {} references", c, stored, referenced));
            }
        };
        // The stored refcounts: every block that covers part of the file, one at a time (the
        // cache stays bounded). Refcounts past the end of the file are not looked at, as QEMU
        // does not; the work is bounded by the blocks that exist, not by the file's length.
        const std::uint64_t blocks = std::min<std::uint64_t>(reftable.size(), div_up(clusters, refs_per_block));
        std::uint64_t present = 0;
        for (std::uint64_t b = 0; b < blocks; ++b) present += block_present(b) ? 1 : 0;
        if (present * refs_per_block > kMaxCheckClusters)
            return fail(ErrorKind::Storage,
                        "{}: {} refcount blocks describe {} clusters; checking is limited to {}",
                        name, present, present * refs_per_block, kMaxCheckClusters);
        for (std::uint64_t b = 0; b < blocks; ++b) {
            if (!block_present(b)) continue;
            BOXLITE_TRY(RefBlock * block, load_refblock(b));
            const std::uint64_t first = b * refs_per_block;
            const std::uint64_t n = std::min(refs_per_block, clusters - first);
            for (std::uint64_t i = 0; i < n; ++i)
                compare(first + i, refcount_get(block->raw.data(), h.refcount_order, i), refs.get(first + i));
        }
        // References into ranges no block describes: their refcount is 0.
        refs.for_each([&](std::uint64_t c, std::uint32_t count) {
            if (!block_present(c / refs_per_block)) compare(c, 0, count);
        });
        // COPIED flags must say "refcount == 1" exactly where it is.
        for (std::uint64_t i = 0; i < l1.size(); ++i) {
            const std::uint64_t l2_offset = l1[i] & kOffsetMask;
            if (l2_offset == 0 || (l1[i] & kL1ReservedMask)) continue;
            BOXLITE_TRY(const std::uint64_t rc, stored_refcount(l2_offset >> cb));
            if (((l1[i] & kFlagCopied) != 0) != (rc == 1)) {
                ++report.corruptions;
                message(fmt::format("L1 entry {}: COPIED flag disagrees with refcount {}", i, rc));
            }
            BOXLITE_TRY(L2Table * table, l2_table(i, false));
            const std::vector<std::uint64_t> entries = table->entries;  // the next load may evict
            for (std::uint64_t j = 0; j < l2_entries; ++j) {
                const std::uint64_t e = entries[j];
                const std::uint64_t host = e & kOffsetMask;
                if ((e & kFlagCompressed) || host == 0 || host % cs != 0) continue;
                BOXLITE_TRY(const std::uint64_t data_rc, stored_refcount(host >> cb));
                if (((e & kFlagCopied) != 0) != (data_rc == 1)) {
                    ++report.corruptions;
                    message(fmt::format("L2 entry {} of table {}: COPIED flag disagrees with refcount {}",
                                        j, i, data_rc));
                }
            }
        }
        return report;
    }

    BoxliteResult<void> repair() {
        if (options.read_only)
            return fail(ErrorKind::Storage, "repair of {}: the image is open read-only", name);
        if (h.nb_snapshots > 0)
            return fail(ErrorKind::Unsupported,
                        "{}: repairing images with internal snapshots is not supported", name);
        // Everything except the refcounts goes to disk first; then the refcounts are rebuilt
        // from scratch in fresh clusters and the header switched over in one write.
        const bool was_dirty = (h.incompatible_features & kIncompatDirty) != 0;
        pending_free.clear();  // the rebuild derives every count from the references anyway
        BOXLITE_TRY_VOID(write_metadata(true));
        CheckReport report;
        BOXLITE_TRY(auto refs, count_references(false, report));
        if (report.corruptions > 0)
            return fail(ErrorKind::Storage, "{}: cannot repair: {}", name,
                        report.messages.empty() ? std::string("bad pointers") : report.messages.front());
        std::uint64_t overflow_cluster = kNoEntry, overflow_count = 0;
        refs.for_each([&](std::uint64_t c, std::uint32_t count) {
            if (count > refcount_max && overflow_cluster == kNoEntry) {
                overflow_cluster = c;
                overflow_count = count;
            }
        });
        if (overflow_cluster != kNoEntry)
            return fail(ErrorKind::Storage, "{}: cluster {} has {} references: refcount overflow",
                        name, overflow_cluster, overflow_count);

        // The new structures go past the end of everything (the old ones stay valid on disk
        // until the header points at the new table), and blocks are written only where some
        // cluster is referenced or the new structures themselves lie: the rest of a sparse
        // file costs nothing.
        const std::uint64_t base = extent_clusters();
        std::vector<std::uint64_t> used_blocks;  // ascending
        refs.for_each_chunk([&](std::uint64_t chunk, const std::uint32_t* counts) {
            for (std::uint64_t i = 0; i < ReferenceCounts::kChunk; ++i) {
                if (counts[i] == 0) continue;
                const std::uint64_t b = ((chunk << ReferenceCounts::kChunkBits) + i) / refs_per_block;
                if (used_blocks.empty() || used_blocks.back() != b) used_blocks.push_back(b);
            }
        });
        const std::uint64_t first_new = base / refs_per_block;
        std::uint64_t new_blocks = 1, table_clusters = 1, last_new = first_new;
        for (;;) {
            last_new = (base + new_blocks + table_clusters - 1) / refs_per_block;
            std::uint64_t b = used_blocks.size() + (last_new - first_new + 1);
            if (!used_blocks.empty() && used_blocks.back() == first_new) --b;
            const std::uint64_t t = div_up((last_new + 1) * 8, cs);
            if (t * cs > kMaxRefcountTableBytes)
                return fail(ErrorKind::Storage,
                            "{}: cannot repair: refcounts for a {}-byte file need a refcount table "
                            "of {} bytes (at most {})",
                            name, base * cs, t * cs, kMaxRefcountTableBytes);
            if (b == new_blocks && t == table_clusters) break;
            new_blocks = b;
            table_clusters = t;
        }
        std::vector<std::uint64_t> indices = used_blocks;
        for (std::uint64_t b = first_new; b <= last_new; ++b)
            if (indices.empty() || indices.back() < b) indices.push_back(b);
        const std::uint64_t total = base + new_blocks + table_clusters;
        const std::uint64_t blocks_at = base * cs;
        const std::uint64_t table_at = (base + new_blocks) * cs;
        failed = true;
        std::vector<std::uint8_t> raw(cs);
        std::vector<std::uint64_t> new_table(table_clusters * cs / 8, 0);
        for (std::uint64_t k = 0; k < indices.size(); ++k) {
            const std::uint64_t b = indices[k];
            std::fill(raw.begin(), raw.end(), 0);
            for (std::uint64_t i = 0; i < refs_per_block; ++i) {
                const std::uint64_t c = b * refs_per_block + i;
                const std::uint64_t count = c < base ? refs.get(c) : (c < total ? 1 : 0);
                if (count != 0) refcount_set(raw.data(), h.refcount_order, i, count);
            }
            BOXLITE_TRY_VOID(pwrite(raw.data(), cs, blocks_at + k * cs));
            new_table[b] = blocks_at + k * cs;
        }
        std::vector<std::uint8_t> table_raw(table_clusters * cs, 0);
        for (std::uint64_t i = 0; i < new_table.size(); ++i) block::store_be64(table_raw.data() + 8 * i, new_table[i]);
        BOXLITE_TRY_VOID(pwrite(table_raw.data(), table_raw.size(), table_at));
        BOXLITE_TRY_VOID(sync());
        std::uint8_t fields[12];
        block::store_be64(fields, table_at);
        block::store_be32(fields + 8, static_cast<std::uint32_t>(table_clusters));
        BOXLITE_TRY_VOID(pwrite(fields, sizeof fields, kRefcountTableFieldOffset));
        BOXLITE_TRY_VOID(sync());
        if (was_dirty) {
            std::uint8_t incompat[8];
            block::store_be64(incompat, h.incompatible_features & ~kIncompatDirty);
            BOXLITE_TRY_VOID(pwrite(incompat, sizeof incompat, kIncompatibleFieldOffset));
            BOXLITE_TRY_VOID(sync());
            h.incompatible_features &= ~kIncompatDirty;
        }
        h.refcount_table_offset = table_at;
        h.refcount_table_clusters = static_cast<std::uint32_t>(table_clusters);
        rt_offset = table_at;
        rt_clusters = static_cast<std::uint32_t>(table_clusters);
        reftable = std::move(new_table);
        refblocks.clear();
        alloc_end = std::max(alloc_end, total * cs);
        file_size = std::max(file_size, total * cs);
        BOXLITE_TRY_VOID(index_metadata());
        // Unreferenced clusters below the new structures are free again (the old refcount
        // structures among them). Listed up to a bound: past it they just stay unused.
        free_list.clear();
        std::uint64_t scan_end = 1;
        refs.for_each_chunk([&](std::uint64_t chunk, const std::uint32_t*) {
            scan_end = (chunk + 1) << ReferenceCounts::kChunkBits;
        });
        scan_end = std::min(scan_end, base);
        for (std::uint64_t c = 1; c < scan_end && free_list.size() < kMaxFreeListAfterRepair; ++c)
            if (refs.get(c) == 0) free_list.push_back(c * cs);
        std::sort(free_list.begin(), free_list.end(), std::greater<>());
        failed = false;
        return {};
    }
};

namespace {

BoxliteResult<std::unique_ptr<Qcow2Image::Impl>> open_impl(UniqueFd fd, const std::string& name,
                                                           const OpenOptions& options,
                                                           unsigned depth) {
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
    BOXLITE_TRY(impl->h, parse_header(first, impl->file_size, name));
    Header& h = impl->h;
    impl->cb = h.cluster_bits;
    impl->cs = h.cluster_size();
    impl->l2_entries = h.l2_entries();
    impl->refs_per_block = h.refcounts_per_block();
    impl->refcount_max = h.refcount_order == 6 ? std::numeric_limits<std::uint64_t>::max()
                                               : (1ull << h.refcount_bits()) - 1;
    if (!options.read_only) {
        if (h.incompatible_features & kIncompatCorrupt)
            return fail(ErrorKind::Storage,
                        "{} is marked corrupt; open it read-only, or repair it with `qemu-img check "
                        "-r all`",
                        name);
        if (h.nb_snapshots > 0)
            return fail(ErrorKind::Storage,
                        "{} has {} internal snapshots; such images can only be opened read-only",
                        name, h.nb_snapshots);
    }

    // L1 and refcount tables (bounded by parse_header).
    std::vector<std::uint8_t> raw(std::uint64_t{h.l1_size} * 8);
    BOXLITE_TRY_VOID(block::pread_full(impl->fd.get(), raw.data(), raw.size(), h.l1_table_offset, name));
    impl->l1.resize(h.l1_size);
    for (std::uint64_t i = 0; i < h.l1_size; ++i) impl->l1[i] = block::load_be64(raw.data() + 8 * i);
    raw.resize(std::uint64_t{h.refcount_table_clusters} * impl->cs);
    BOXLITE_TRY_VOID(block::pread_full(impl->fd.get(), raw.data(), raw.size(), h.refcount_table_offset, name));
    impl->reftable.resize(raw.size() / 8);
    for (std::uint64_t i = 0; i < impl->reftable.size(); ++i)
        impl->reftable[i] = block::load_be64(raw.data() + 8 * i);
    impl->rt_offset = h.refcount_table_offset;
    impl->rt_clusters = h.refcount_table_clusters;
    impl->alloc_end = align_up(impl->file_size, impl->cs);
    impl->fresh_from = impl->alloc_end;
    impl->refblock_budget = std::max(options.refcount_cache_bytes, 4 * impl->cs);
    BOXLITE_TRY_VOID(impl->index_metadata());

    if (!h.backing_file.empty()) {
        if (!options.allow_backing)
            return fail(ErrorKind::Storage, "{}: backing file {} not allowed here", name, h.backing_file);
        if (depth + 1 > options.max_backing_depth)
            return fail(ErrorKind::Storage,
                        "{}: backing chain is deeper than {} images (a loop?) at {}", name,
                        options.max_backing_depth, h.backing_file);
        std::filesystem::path backing_path(h.backing_file);
        if (backing_path.is_relative()) backing_path = impl->directory / backing_path;
        if (!h.backing_format.empty() && h.backing_format != "raw" && h.backing_format != "qcow2")
            return fail(ErrorKind::Storage,
                        "{}: backing file format '{}' is not supported (raw or qcow2)", name,
                        h.backing_format);
        auto backing = open_disk_at_depth(backing_path, true, h.backing_format, options, depth + 1);
        if (!backing)
            return fail(backing.error().with_context(fmt::format("opening the backing file of {}", name)));
        impl->backing = std::move(*backing);
    }

    if (!options.read_only) {
        // Autoclear bits describe extensions (bitmaps, ...) we do not maintain: clearing them
        // tells other readers those extensions are stale, as the spec requires.
        if (h.version >= 3 && h.autoclear_features != 0) {
            std::uint8_t zero[8] = {};
            BOXLITE_TRY_VOID(impl->pwrite(zero, sizeof zero, kAutoclearFieldOffset));
            BOXLITE_TRY_VOID(impl->sync());
            h.autoclear_features = 0;
        }
        if (h.incompatible_features & kIncompatDirty) BOXLITE_TRY_VOID(impl->repair());
    }
    return impl;
}

BoxliteResult<std::unique_ptr<block::BlockBackend>> open_disk_at_depth(
    const std::filesystem::path& path, bool read_only, const std::string& format,
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
        return fail(ErrorKind::Storage, "disk {}: format '{}' is not supported (raw or qcow2)",
                    path.string(), fmt_name);
    const int fd = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0)
        return fail_errno(ErrorKind::Storage, fmt::format("opening {}", path.string()), errno);
    OpenOptions opts = options;
    opts.read_only = read_only;
    BOXLITE_TRY(auto impl, open_impl(UniqueFd(fd), path.string(), opts, depth));
    return std::unique_ptr<block::BlockBackend>(std::make_unique<Qcow2Image>(std::move(impl)));
}

}  // namespace

Qcow2Image::Qcow2Image(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Qcow2Image::~Qcow2Image() {
    if (!impl_ || impl_->options.read_only || impl_->failed) return;
    try {
        (void)impl_->write_metadata(false);
    } catch (const std::exception&) {
        // Out of memory while writing out: the image keeps at most leaks (the primer).
    }
}

BoxliteResult<std::unique_ptr<Qcow2Image>> Qcow2Image::open_fd(int fd, const std::string& name,
                                                               const OpenOptions& options) {
    UniqueFd owned(fd);
    return guarded(name, "open", [&]() -> BoxliteResult<std::unique_ptr<Qcow2Image>> {
        BOXLITE_TRY(auto impl, open_impl(std::move(owned), name, options, 0));
        return std::make_unique<Qcow2Image>(std::move(impl));
    });
}

BoxliteResult<std::unique_ptr<Qcow2Image>> Qcow2Image::open(const std::filesystem::path& path,
                                                            const OpenOptions& options) {
    const int fd = ::open(path.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0)
        return fail_errno(ErrorKind::Storage, fmt::format("opening {}", path.string()), errno);
    return open_fd(fd, path.string(), options);
}

namespace {

BoxliteResult<std::unique_ptr<Qcow2Image>> create_impl(const std::filesystem::path& path,
                                                       const CreateOptions& options) {
    const std::string name = path.string();
    if (options.cluster_bits < kMinClusterBits || options.cluster_bits > kMaxClusterBits)
        return fail(ErrorKind::InvalidArgument,
                    "creating {}: cluster_bits {} is out of range ({} to {})", name,
                    options.cluster_bits, kMinClusterBits, kMaxClusterBits);
    if (options.refcount_order > 6)
        return fail(ErrorKind::InvalidArgument, "creating {}: refcount_order {} is out of range (0 to 6)",
                    name, options.refcount_order);
    Header h;
    h.version = 3;
    h.cluster_bits = options.cluster_bits;
    h.refcount_order = options.refcount_order;
    h.size = options.size;
    h.backing_file = options.backing_file;
    h.backing_format = options.backing_format;
    const std::uint64_t cs = h.cluster_size();
    if (!h.backing_file.empty()) {
        if (h.backing_file.size() > kMaxBackingFileName)
            return fail(ErrorKind::InvalidArgument,
                        "creating {}: backing file name is {} bytes (at most {})", name,
                        h.backing_file.size(), kMaxBackingFileName);
        std::filesystem::path backing_path(h.backing_file);
        if (backing_path.is_relative()) backing_path = path.parent_path() / backing_path;
        if (h.backing_format.empty()) {
            BOXLITE_TRY(h.backing_format, probe_format(backing_path));
        }
        BOXLITE_TRY(auto backing, open_disk(backing_path, true, h.backing_format));
        if (h.size == 0) h.size = backing->size();
    }
    if (h.size > kMaxVirtualSize)
        return fail(ErrorKind::InvalidArgument, "creating {}: virtual size {} bytes (at most {})",
                    name, h.size, kMaxVirtualSize);
    if (h.size % 512 != 0)
        return fail(ErrorKind::InvalidArgument,
                    "creating {}: virtual size {} bytes is not a multiple of 512 (disks are made of "
                    "512-byte sectors)",
                    name, h.size);
    if (kWrittenHeaderLength + 16 + align_up(h.backing_format.size(), 8) + 8 + h.backing_file.size() > cs)
        return fail(ErrorKind::InvalidArgument,
                    "creating {}: the header and backing file name do not fit in one {}-byte "
                    "cluster; use larger clusters",
                    name, cs);
    const std::uint64_t l1_entries = l1_entries_for(h.size, h.cluster_bits);
    if (l1_entries * 8 > kMaxL1Bytes)
        return fail(ErrorKind::InvalidArgument,
                    "creating {}: virtual size {} needs {} L1 entries with {}-byte clusters (at "
                    "most {}); use larger clusters",
                    name, h.size, l1_entries, cs, kMaxL1Bytes / 8);
    // Layout: header | refcount table | refcount blocks | L1 table, all counted once.
    const std::uint64_t l1_clusters = std::max<std::uint64_t>(1, div_up(l1_entries * 8, cs));
    const std::uint64_t per_block = h.refcounts_per_block();
    std::uint64_t blocks = 1, table = 1;
    for (;;) {
        const std::uint64_t total = 1 + table + blocks + l1_clusters;
        const std::uint64_t b = div_up(total, per_block);
        const std::uint64_t t = div_up(b * 8, cs);
        if (b == blocks && t == table) break;
        blocks = b;
        table = t;
    }
    const std::uint64_t total = 1 + table + blocks + l1_clusters;
    h.refcount_table_offset = cs;
    h.refcount_table_clusters = static_cast<std::uint32_t>(table);
    h.l1_table_offset = (1 + table + blocks) * cs;
    h.l1_size = static_cast<std::uint32_t>(l1_entries);

    // Not O_TRUNC: an image in use (by a box, or by QEMU) must be refused before it is emptied.
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("creating {}", name), errno);
    UniqueFd owned(fd);
    BOXLITE_TRY_VOID(block::lock_image(fd, true, name));
    if (::ftruncate(fd, 0) != 0)
        return fail_errno(ErrorKind::Storage, fmt::format("truncating {}", name), errno);
    std::vector<std::uint8_t> buf = encode_header(h);
    buf.resize(total * cs, 0);
    for (std::uint64_t b = 0; b < blocks; ++b)
        block::store_be64(buf.data() + cs + 8 * b, (1 + table + b) * cs);
    for (std::uint64_t c = 0; c < total; ++c)
        refcount_set(buf.data() + (1 + table + c / per_block) * cs, h.refcount_order, c % per_block, 1);
    BOXLITE_TRY_VOID(block::pwrite_full(fd, buf.data(), buf.size(), 0, name));
    if (::fdatasync(fd) != 0) return fail_errno(ErrorKind::Storage, fmt::format("fdatasync of {}", name), errno);
    return Qcow2Image::open_fd(owned.release(), name, OpenOptions{});
}

}  // namespace

BoxliteResult<std::unique_ptr<Qcow2Image>> Qcow2Image::create(const std::filesystem::path& path,
                                                              const CreateOptions& options) {
    return guarded(path.string(), "create", [&] { return create_impl(path, options); });
}

// Every entry point takes the image's mutex (see the thread-safety contract in the header) and
// turns an allocation failure into an error instead of letting it unwind into the device.
std::uint64_t Qcow2Image::size() const noexcept {
    std::lock_guard lock(impl_->mutex);
    return impl_->h.size;
}
bool Qcow2Image::read_only() const noexcept {
    std::lock_guard lock(impl_->mutex);
    return impl_->options.read_only;
}

BoxliteResult<void> Qcow2Image::read(std::uint64_t offset, std::span<const iovec> buffers) {
    std::lock_guard lock(impl_->mutex);
    return guarded(impl_->name, "read", [&] { return impl_->read(offset, buffers); });
}
BoxliteResult<void> Qcow2Image::write(std::uint64_t offset, std::span<const iovec> buffers) {
    std::lock_guard lock(impl_->mutex);
    return guarded(impl_->name, "write", [&] { return impl_->write(offset, buffers); });
}
BoxliteResult<void> Qcow2Image::flush() {
    std::lock_guard lock(impl_->mutex);
    if (impl_->options.read_only) return {};
    return guarded(impl_->name, "flush", [&] { return impl_->write_metadata(true); });
}
BoxliteResult<void> Qcow2Image::discard(std::uint64_t offset, std::uint64_t length) {
    std::lock_guard lock(impl_->mutex);
    return guarded(impl_->name, "discard",
                   [&] { return impl_->write_zeroes(offset, length, "discard"); });
}
BoxliteResult<void> Qcow2Image::write_zeroes(std::uint64_t offset, std::uint64_t length) {
    std::lock_guard lock(impl_->mutex);
    return guarded(impl_->name, "write_zeroes",
                   [&] { return impl_->write_zeroes(offset, length, "write_zeroes"); });
}
BoxliteResult<void> Qcow2Image::resize(std::uint64_t new_size) {
    std::lock_guard lock(impl_->mutex);
    return guarded(impl_->name, "resize", [&] { return impl_->resize(new_size); });
}
BoxliteResult<CheckReport> Qcow2Image::check() {
    std::lock_guard lock(impl_->mutex);
    return guarded(impl_->name, "check", [&] { return impl_->check(); });
}
BoxliteResult<void> Qcow2Image::repair() {
    std::lock_guard lock(impl_->mutex);
    return guarded(impl_->name, "repair", [&] { return impl_->repair(); });
}
BoxliteResult<void> Qcow2Image::close() {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->options.read_only && !impl_->failed)
        BOXLITE_TRY_VOID(guarded(impl_->name, "close", [&] { return impl_->write_metadata(true); }));
    impl_->options.read_only = true;  // nothing left to write at destruction
    // Another process may open the image as soon as close() returns; this object only serves
    // reads until it is destroyed.
    block::unlock_image(impl_->fd.get());
    return {};
}

ImageInfo Qcow2Image::info() const {
    std::lock_guard lock(impl_->mutex);
    ImageInfo out;
    out.version = impl_->h.version;
    out.cluster_size = impl_->cs;
    out.size = impl_->h.size;
    out.refcount_bits = impl_->h.refcount_bits();
    out.backing_file = impl_->h.backing_file;
    out.backing_format = impl_->h.backing_format;
    out.snapshots = impl_->h.nb_snapshots;
    out.dirty = (impl_->h.incompatible_features & kIncompatDirty) != 0;
    return out;
}

BoxliteResult<std::unique_ptr<block::BlockBackend>> open_disk(const std::filesystem::path& path,
                                                              bool read_only,
                                                              const std::string& format,
                                                              const OpenOptions& options) {
    return guarded(path.string(), "open", [&] {
        return open_disk_at_depth(path, read_only, format, options, 0);
    });
}

}  // namespace boxlite::qcow2
