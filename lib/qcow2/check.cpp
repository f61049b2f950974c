// QCOW2 check() and repair(): count every reference the metadata makes, compare with the stored
// refcounts (check, the classes `qemu-img check` reports), or rebuild the refcount structures
// from the references (repair, which also clears the dirty bit). Memory stays bounded whatever
// the file claims (see "Trust" in the primer at the top of qcow2_image.cpp).
#include "io.hpp"
#include "qcow2_image_impl.hpp"

#include <algorithm>
#include <map>

namespace boxlite::qcow2 {

namespace {

/// Memory check() and repair() may spend on reference counters (4 bytes per cluster in the
/// chunks the tables point into): a fully used 4 TiB image with 64 KiB clusters.
constexpr std::uint64_t kCheckMemoryBudget = 256ull << 20;
/// Refcount entries check() compares at most (the blocks that cover the file).
constexpr std::uint64_t kMaxCheckClusters = 1ull << 32;
/// Free clusters repair() lists for reuse (8 MiB of offsets); others past it stay unused.
constexpr std::size_t kMaxFreeListAfterRepair = 1u << 20;

}  // namespace

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
    [[nodiscard]] std::uint64_t budget_bytes() const noexcept { return max_chunks_ * kChunk * sizeof(std::uint32_t); }

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

std::uint64_t Qcow2Image::Impl::extent_clusters() const {
    return std::max(align_up(file_size, cluster_size), alloc_end) >> cluster_bits;
}

bool Qcow2Image::Impl::block_present(std::uint64_t b) const {
    return b < reftable.size() && reftable[b] != 0 && !(reftable[b] & kReftableReservedMask);
}

BoxliteResult<std::uint64_t> Qcow2Image::Impl::stored_refcount(std::uint64_t cluster) {
    if (!block_present(cluster / refs_per_block)) return std::uint64_t{0};
    return refcount(cluster);
}

tl::unexpected<BoxliteError> Qcow2Image::Impl::references_over_budget(const ReferenceCounts& refs) const {
    return fail(ErrorKind::Storage,
                "{}: the tables reference clusters all over the {}-byte file; counting them "
                "needs more than {} MiB, the limit for check and repair",
                name, file_size, refs.budget_bytes() >> 20);
}

BoxliteResult<ReferenceCounts> Qcow2Image::Impl::count_references(bool with_refcount_structures, CheckReport& report) {
    const std::uint64_t clusters = extent_clusters();
    ReferenceCounts refs(kCheckMemoryBudget);
    bool over_budget = false;
    auto note = [&](std::string message) {
        ++report.corruptions;
        if (report.messages.size() < 32) report.messages.push_back(std::move(message));
    };
    auto add = [&](std::uint64_t offset, std::uint64_t length, std::string_view what) {
        for (std::uint64_t c = offset >> cluster_bits; c < div_up(offset + length, cluster_size); ++c) {
            if (c >= clusters) {
                note(fmt::format("{} at offset {} lies past the end of the file", what, c << cluster_bits));
                return;
            }
            if (!refs.add(c)) {
                over_budget = true;
                return;
            }
        }
    };
    add(0, cluster_size, "header");
    add(header.l1_table_offset, l1.size() * 8, "L1 table");
    if (with_refcount_structures) {
        add(reftable_offset, std::uint64_t{reftable_clusters} * cluster_size, "refcount table");
        for (std::uint64_t i = 0; i < reftable.size(); ++i) {
            if (reftable[i] & kReftableReservedMask)
                note(fmt::format("refcount table entry {} ({:#x}) has reserved bits set", i, reftable[i]));
            if (const std::uint64_t offset = reftable[i] & ~kReftableReservedMask; offset != 0)
                add(offset, cluster_size, "refcount block");
        }
    }
    if (over_budget) return references_over_budget(refs);
    for (std::uint64_t i = 0; i < l1.size(); ++i) {
        const std::uint64_t l2_offset = l1[i] & kOffsetMask;
        if (l1[i] & kL1ReservedMask) {
            note(fmt::format("L1 entry {} ({:#x}) has reserved bits set", i, l1[i]));
            if (l2_offset != 0) add(l2_offset, cluster_size, "L2 table");
            continue;
        }
        if (l2_offset == 0) continue;
        add(l2_offset, cluster_size, "L2 table");
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
                if (host % cluster_size != 0) {
                    note(fmt::format("L2 entry {} of table {} has unaligned offset {}", j, i, host));
                    continue;
                }
                add(host, cluster_size, "data cluster");
            }
        }
        if (over_budget) return references_over_budget(refs);
    }
    return refs;
}

BoxliteResult<CheckReport> Qcow2Image::Impl::check() {
    if (header.nb_snapshots > 0)
        return fail(ErrorKind::Unsupported, "{}: checking images with internal snapshots is not supported", name);
    if (!options.read_only) BOXLITE_TRY_VOID(write_metadata(false));
    CheckReport report;
    BOXLITE_TRY(auto refs, count_references(true, report));
    const std::uint64_t clusters = extent_clusters();
    // Clusters waiting in phase 4 are still referenced by the on-disk refcounts only.
    for (const std::uint64_t offset : pending_free)
        if ((offset >> cluster_bits) < clusters && !refs.add(offset >> cluster_bits))
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
        return fail(ErrorKind::Storage, "{}: {} refcount blocks describe {} clusters; checking is limited to {}", name,
                    present, present * refs_per_block, kMaxCheckClusters);
    for (std::uint64_t b = 0; b < blocks; ++b) {
        if (!block_present(b)) continue;
        BOXLITE_TRY(RefBlock * block, load_refblock(b));
        const std::uint64_t first = b * refs_per_block;
        const std::uint64_t n = std::min(refs_per_block, clusters - first);
        for (std::uint64_t i = 0; i < n; ++i)
            compare(first + i, refcount_get(block->raw.data(), header.refcount_order, i), refs.get(first + i));
    }
    // References into ranges no block describes: their refcount is 0.
    refs.for_each([&](std::uint64_t c, std::uint32_t count) {
        if (!block_present(c / refs_per_block)) compare(c, 0, count);
    });
    // COPIED flags must say "refcount == 1" exactly where it is.
    for (std::uint64_t i = 0; i < l1.size(); ++i) {
        const std::uint64_t l2_offset = l1[i] & kOffsetMask;
        if (l2_offset == 0 || (l1[i] & kL1ReservedMask)) continue;
        BOXLITE_TRY(const std::uint64_t rc, stored_refcount(l2_offset >> cluster_bits));
        if (((l1[i] & kFlagCopied) != 0) != (rc == 1)) {
            ++report.corruptions;
            message(fmt::format("L1 entry {}: COPIED flag disagrees with refcount {}", i, rc));
        }
        BOXLITE_TRY(L2Table * table, l2_table(i, false));
        const std::vector<std::uint64_t> entries = table->entries;  // the next load may evict
        for (std::uint64_t j = 0; j < l2_entries; ++j) {
            const std::uint64_t e = entries[j];
            const std::uint64_t host = e & kOffsetMask;
            if ((e & kFlagCompressed) || host == 0 || host % cluster_size != 0) continue;
            BOXLITE_TRY(const std::uint64_t data_rc, stored_refcount(host >> cluster_bits));
            if (((e & kFlagCopied) != 0) != (data_rc == 1)) {
                ++report.corruptions;
                message(fmt::format("L2 entry {} of table {}: COPIED flag disagrees with refcount {}", j, i, data_rc));
            }
        }
    }
    return report;
}

BoxliteResult<void> Qcow2Image::Impl::repair() {
    if (options.read_only) return fail(ErrorKind::Storage, "repair of {}: the image is open read-only", name);
    if (header.nb_snapshots > 0)
        return fail(ErrorKind::Unsupported, "{}: repairing images with internal snapshots is not supported", name);
    // Everything except the refcounts goes to disk first; then the refcounts are rebuilt
    // from scratch in fresh clusters and the header switched over in one write.
    const bool was_dirty = (header.incompatible_features & kIncompatDirty) != 0;
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
        return fail(ErrorKind::Storage, "{}: cluster {} has {} references: refcount overflow", name, overflow_cluster,
                    overflow_count);

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
        const std::uint64_t t = div_up((last_new + 1) * 8, cluster_size);
        if (t * cluster_size > kMaxRefcountTableBytes)
            return fail(ErrorKind::Storage,
                        "{}: cannot repair: refcounts for a {}-byte file need a refcount table "
                        "of {} bytes (at most {})",
                        name, base * cluster_size, t * cluster_size, kMaxRefcountTableBytes);
        if (b == new_blocks && t == table_clusters) break;
        new_blocks = b;
        table_clusters = t;
    }
    std::vector<std::uint64_t> indices = used_blocks;
    for (std::uint64_t b = first_new; b <= last_new; ++b)
        if (indices.empty() || indices.back() < b) indices.push_back(b);
    const std::uint64_t total = base + new_blocks + table_clusters;
    const std::uint64_t blocks_at = base * cluster_size;
    const std::uint64_t table_at = (base + new_blocks) * cluster_size;
    failed = true;
    std::vector<std::uint8_t> raw(cluster_size);
    std::vector<std::uint64_t> new_table(table_clusters * cluster_size / 8, 0);
    for (std::uint64_t k = 0; k < indices.size(); ++k) {
        const std::uint64_t b = indices[k];
        std::fill(raw.begin(), raw.end(), 0);
        for (std::uint64_t i = 0; i < refs_per_block; ++i) {
            const std::uint64_t c = b * refs_per_block + i;
            const std::uint64_t count = c < base ? refs.get(c) : (c < total ? 1 : 0);
            if (count != 0) refcount_set(raw.data(), header.refcount_order, i, count);
        }
        BOXLITE_TRY_VOID(pwrite(raw.data(), cluster_size, blocks_at + k * cluster_size));
        new_table[b] = blocks_at + k * cluster_size;
    }
    std::vector<std::uint8_t> table_raw(table_clusters * cluster_size, 0);
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
        block::store_be64(incompat, header.incompatible_features & ~kIncompatDirty);
        BOXLITE_TRY_VOID(pwrite(incompat, sizeof incompat, kIncompatibleFieldOffset));
        BOXLITE_TRY_VOID(sync());
        header.incompatible_features &= ~kIncompatDirty;
    }
    header.refcount_table_offset = table_at;
    header.refcount_table_clusters = static_cast<std::uint32_t>(table_clusters);
    reftable_offset = table_at;
    reftable_clusters = static_cast<std::uint32_t>(table_clusters);
    reftable = std::move(new_table);
    refblocks.clear();
    alloc_end = std::max(alloc_end, total * cluster_size);
    file_size = std::max(file_size, total * cluster_size);
    BOXLITE_TRY_VOID(index_metadata());
    // Unreferenced clusters below the new structures are free again (the old refcount
    // structures among them). Listed up to a bound: past it they just stay unused.
    free_list.clear();
    std::uint64_t scan_end = 1;
    refs.for_each_chunk(
        [&](std::uint64_t chunk, const std::uint32_t*) { scan_end = (chunk + 1) << ReferenceCounts::kChunkBits; });
    scan_end = std::min(scan_end, base);
    for (std::uint64_t c = 1; c < scan_end && free_list.size() < kMaxFreeListAfterRepair; ++c)
        if (refs.get(c) == 0) free_list.push_back(c * cluster_size);
    std::sort(free_list.begin(), free_list.end(), std::greater<>());
    failed = false;
    return {};
}

}  // namespace boxlite::qcow2
