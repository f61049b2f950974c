// Qcow2Image::Impl: the state of one open QCOW2 image and the engine's operations on it. The
// primer at the top of qcow2_image.cpp explains the layout, refcounts, write ordering and trust
// rules. The members are defined by concern:
//   qcow2_image.cpp  metadata helpers, L2 tables, metadata write-out, reads, writes, resize, and
//                    the public Qcow2Image entry points
//   refcount.cpp     the refcount cache, refcount updates and cluster allocation
//   check.cpp        check() and repair()
//   open_create.cpp  opening (with backing chains) and creating images
#pragma once

#include "format.hpp"
#include "io.hpp"
#include "qcow2_image.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace boxlite::qcow2 {

using block::iov_length;

inline constexpr std::uint64_t kNoEntry = std::numeric_limits<std::uint64_t>::max();

inline std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) {
    return (value + alignment - 1) / alignment * alignment;
}
inline std::uint64_t div_up(std::uint64_t value, std::uint64_t divisor) {
    return value / divisor + (value % divisor != 0 ? 1 : 0);
}

/// One entry of a refcount block as stored: 1- to 64-bit big-endian; sub-byte ones LSB first.
/// Blocks stay in this form in memory, so a cached block costs one cluster whatever the width.
inline std::uint64_t refcount_get(const std::uint8_t* raw, std::uint32_t order, std::uint64_t i) {
    switch (order) {
        case 0:
        case 1:
        case 2: {
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

inline void refcount_set(std::uint8_t* raw, std::uint32_t order, std::uint64_t i, std::uint64_t value) {
    switch (order) {
        case 0:
        case 1:
        case 2: {
            const std::uint32_t bits = 1u << order;
            const std::uint64_t bit = i * bits;
            const auto mask = static_cast<std::uint8_t>(((1u << bits) - 1) << (bit % 8));
            raw[bit / 8] = static_cast<std::uint8_t>((raw[bit / 8] & ~mask) | ((value << (bit % 8)) & mask));
            break;
        }
        case 3: raw[i] = static_cast<std::uint8_t>(value); break;
        case 4: block::store_be16(raw + 2 * i, static_cast<std::uint16_t>(value)); break;
        case 5: block::store_be32(raw + 4 * i, static_cast<std::uint32_t>(value)); break;
        default: block::store_be64(raw + 8 * i, value); break;
    }
}

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

class ReferenceCounts;  // check.cpp

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

/// A request's data I/O, planned under the image's mutex and done outside it (Impl::submit):
/// guest bytes [boff, +len) of the request's buffers at host offset `host`.
struct DeferredRun {
    std::uint64_t host = 0, boff = 0, len = 0;
};
/// A cluster a write allocated, mapped only once its data is written: L2 entry `l2_index` of the
/// table for L1 entry `l1_index` goes from `old_entry` to `target`.
struct DeferredMap {
    std::uint64_t l1_index = 0, l2_index = 0, target = 0, old_entry = 0;
};
struct RequestPlan {
    std::vector<DeferredRun> runs;
    std::vector<DeferredMap> maps;
};

struct Qcow2Image::Impl {
    base::OwnedFd fd;
    std::string name;
    std::filesystem::path directory;
    OpenOptions options;
    unsigned depth = 0;
    Header header;
    std::uint64_t cluster_size = 0;
    std::uint32_t cluster_bits = 0;
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
    std::uint64_t reftable_offset = 0;
    std::uint32_t reftable_clusters = 0;
    std::uint64_t reftable_dirty_lo = kNoEntry, reftable_dirty_hi = 0;
    bool reftable_relocated = false;
    std::unordered_map<std::uint64_t, RefBlock> refblocks;  // key: block index
    std::uint64_t refblock_budget = 0;                      // bytes of cached refcount blocks before clean ones go

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

    // Requests in flight (submit): each holds the guest clusters it touches from planning to
    // mapping, so requests on different clusters overlap their data I/O and requests on the same
    // cluster (where either writes) run one after the other. Everything else (flush, discard,
    // resize, check...) waits until none is in flight, and new requests wait for it (drain).
    struct InFlight {
        std::uint64_t id = 0, first = 0, last = 0;  // guest clusters [first, last]
        bool write = false;
    };
    std::vector<InFlight> in_flight;
    std::uint64_t next_request = 0;
    unsigned exclusive_waiting = 0;
    std::condition_variable in_flight_changed;

    /// A read or write with its data I/O outside the mutex (the public read() and write()).
    BoxliteResult<void> submit(std::uint64_t offset, std::span<const iovec> iov, bool write);
    /// Waits, with `lock` on `mutex`, until no request is in flight; new ones wait meanwhile.
    void drain(std::unique_lock<std::mutex>& lock);
    /// Maps the clusters of a write whose data is written (submit's last step).
    BoxliteResult<void> publish(const std::vector<DeferredMap>& maps);

    // ---- helpers ------------------------------------------------------------------------
    [[nodiscard]] bool v3() const { return header.version >= 3; }
    [[nodiscard]] bool writable_check() const { return !options.read_only; }

    BoxliteResult<void> check_request(std::uint64_t offset, std::uint64_t length, std::string_view op,
                                      bool writes) const;

    BoxliteResult<void> sync();
    BoxliteResult<void> pwrite(const void* data, std::size_t len, std::uint64_t offset);
    BoxliteResult<void> pwritev(std::span<const iovec> iov, std::uint64_t offset);

    /// True if [offset, offset + length) overlaps the header, L1 table or refcount table.
    [[nodiscard]] bool hits_fixed_metadata(std::uint64_t offset, std::uint64_t length) const;

    /// True if the cluster at `offset` (aligned) holds any metadata, cached or not.
    [[nodiscard]] bool holds_metadata(std::uint64_t offset) const;

    /// Records where the L1 and refcount tables say the L2 tables and refcount blocks are, and
    /// refuses an image where two of them, or one and the header, L1 or refcount table, share
    /// a cluster (writing one would then silently rewrite the other). No I/O: both tables are
    /// in memory, so this costs a sort of at most kMaxL1Bytes / 8 + kMaxRefcountTableBytes / 8
    /// offsets. Unaligned pointers are left to the error at first use.
    BoxliteResult<void> index_metadata();

    // ---- refcounts ----------------------------------------------------------------------
    /// Drops the least recently used half of the clean cached refcount blocks once the cache
    /// is over budget. Dirty blocks stay (they are written at the next safe point); callers
    /// hold a block pointer only until their next load, and only a dirty one across it.
    void trim_refblocks();
    [[nodiscard]] bool refblocks_over_budget() const;
    BoxliteResult<RefBlock*> load_refblock(std::uint64_t index);
    BoxliteResult<std::uint64_t> refcount(std::uint64_t cluster);
    void mark_reftable_dirty(std::uint64_t index);

    /// Makes the refcount table at least `entries` long, moving it to the end of the file.
    BoxliteResult<void> grow_reftable(std::uint64_t entries);
    BoxliteResult<RefBlock*> ensure_refblock(std::uint64_t index);
    BoxliteResult<void> set_refcount(std::uint64_t cluster, std::uint64_t value);

    /// `count` contiguous clusters at the end of the file, stepping over any that a (hostile)
    /// L1 or refcount table entry points at beyond it.
    std::uint64_t take_from_end(std::uint64_t count);

    /// Hands out one cluster, reusing committed-free ones first. `fresh`: reads as zeroes.
    BoxliteResult<std::uint64_t> allocate_cluster(bool& fresh);

    /// Host clusters a compressed L2 entry's data spans.
    void compressed_extent(std::uint64_t entry, std::uint64_t& offset, std::uint64_t& length) const;
    void free_entry_clusters(std::uint64_t entry);

    // ---- L2 tables ----------------------------------------------------------------------
    /// Called only where no request has data in flight that a metadata write-out could map
    /// before it is written (see write()).
    BoxliteResult<void> evict_if_needed();

    /// The L2 table for L1 entry `index`; nullptr if unallocated and !allocate.
    BoxliteResult<L2Table*> l2_table(std::uint64_t index, bool allocate);

    // ---- metadata write-out (the ordering of the primer) ----------------------------------
    BoxliteResult<void> write_refblocks();
    BoxliteResult<void> write_reftable_range(std::uint64_t lo, std::uint64_t hi);
    BoxliteResult<void> write_metadata(bool force_sync);

    // ---- reads --------------------------------------------------------------------------
    BoxliteResult<void> read_backing(std::uint64_t guest, std::span<const iovec> iov, std::uint64_t boff,
                                     std::uint64_t len);

    BoxliteResult<const std::uint8_t*> inflate_cluster(std::uint64_t entry);
    BoxliteResult<void> check_data_offset(std::uint64_t host, std::uint64_t guest) const;

    /// Standard L2 entries with reserved bits set are corrupt (as `qemu-img check` says); the
    /// bits may mean something we do not know, so the entry is not used at all.
    BoxliteResult<void> check_l2_entry(std::uint64_t entry, std::uint64_t guest) const;
    BoxliteResult<std::uint64_t> lookup(std::uint64_t guest);
    /// With a `plan`, host data runs are recorded there instead of read (submit reads them).
    BoxliteResult<void> read(std::uint64_t offset, std::span<const iovec> iov, RequestPlan* plan = nullptr);

    // ---- writes -------------------------------------------------------------------------
    /// The current content of the guest cluster at `guest` (aligned) into `out` (cluster_size bytes).
    BoxliteResult<void> cluster_content(std::uint64_t guest, std::uint64_t entry, std::uint8_t* out, bool& all_zero);

    /// With a `plan`, host data runs and the new clusters' mappings are recorded there instead
    /// of written and mapped (submit writes them, then publish() maps them).
    BoxliteResult<void> write(std::uint64_t offset, std::span<const iovec> iov, RequestPlan* plan = nullptr);
    BoxliteResult<void> write_zeroes(std::uint64_t offset, std::uint64_t length, std::string_view op);

    // ---- resize ----------------------------------------------------------------------------
    BoxliteResult<void> resize(std::uint64_t new_size);

    // ---- check and repair ------------------------------------------------------------------
    /// Host clusters the file and our allocations span; a reference past them is corrupt.
    [[nodiscard]] std::uint64_t extent_clusters() const;

    /// A refcount block exists (and is sane enough to read) for block index `b`.
    [[nodiscard]] bool block_present(std::uint64_t b) const;

    /// The stored refcount, 0 where no usable block exists (check reports those entries).
    BoxliteResult<std::uint64_t> stored_refcount(std::uint64_t cluster);
    [[nodiscard]] tl::unexpected<BoxliteError> references_over_budget(const ReferenceCounts& refs) const;

    /// Counts every reference the metadata makes. `with_refcount_structures`: count the refcount
    /// table and blocks too (check); repair builds new ones and leaves them out.
    BoxliteResult<ReferenceCounts> count_references(bool with_refcount_structures, CheckReport& report);
    BoxliteResult<CheckReport> check();
    BoxliteResult<void> repair();
};

}  // namespace boxlite::qcow2
