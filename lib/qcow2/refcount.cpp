// QCOW2 refcounts: the cache of refcount blocks, refcount updates (which may grow and move the
// refcount table), and cluster allocation. See "Refcounts" and "Ordering" in the primer at the top
// of qcow2_image.cpp: increments are written before the tables that reference a cluster, and
// decrements (pending_free) only after no table on disk points to it.
#include "io.hpp"
#include "qcow2_image_impl.hpp"

#include <algorithm>

namespace boxlite::qcow2 {

void Qcow2Image::Impl::trim_refblocks() {
    if ((refblocks.size() + 1) * cluster_size <= refblock_budget) return;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> by_age;
    for (const auto& [index, block] : refblocks)
        if (!block.dirty) by_age.emplace_back(block.last_use, index);
    std::sort(by_age.begin(), by_age.end());
    const std::size_t drop = std::max<std::size_t>(1, by_age.size() / 2);
    for (std::size_t i = 0; i < drop && i < by_age.size(); ++i) refblocks.erase(by_age[i].second);
}

bool Qcow2Image::Impl::refblocks_over_budget() const {
    return refblocks.size() * cluster_size > refblock_budget &&
           std::any_of(refblocks.begin(), refblocks.end(), [](const auto& kv) { return kv.second.dirty; });
}

BoxliteResult<RefBlock*> Qcow2Image::Impl::load_refblock(std::uint64_t index) {
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
    if (offset % cluster_size != 0 || offset > file_size || cluster_size > file_size - offset)
        return fail(ErrorKind::Storage,
                    "{}: refcount block {} at offset {} is unaligned or outside the file "
                    "({} bytes)",
                    name, index, offset, file_size);
    if (hits_fixed_metadata(offset, cluster_size))
        return fail(ErrorKind::Storage,
                    "{}: overlapping metadata: refcount block {} at offset {} overlaps the "
                    "header, L1 table or refcount table",
                    name, index, offset);
    trim_refblocks();
    RefBlock block;
    block.offset = offset;
    block.raw.resize(cluster_size);
    block.last_use = ++use_clock;
    BOXLITE_TRY_VOID(block::pread_full(fd.get(), block.raw.data(), cluster_size, offset, name));
    return &refblocks.emplace(index, std::move(block)).first->second;
}

BoxliteResult<std::uint64_t> Qcow2Image::Impl::refcount(std::uint64_t cluster) {
    BOXLITE_TRY(RefBlock * block, load_refblock(cluster / refs_per_block));
    if (block == nullptr) return std::uint64_t{0};
    return refcount_get(block->raw.data(), header.refcount_order, cluster % refs_per_block);
}

void Qcow2Image::Impl::mark_reftable_dirty(std::uint64_t index) {
    reftable_dirty_lo = std::min(reftable_dirty_lo, index);
    reftable_dirty_hi = std::max(reftable_dirty_hi, index + 1);
}

BoxliteResult<void> Qcow2Image::Impl::grow_reftable(std::uint64_t entries) {
    const std::uint64_t per_cluster = cluster_size / 8;
    std::uint64_t new_entries = std::max<std::uint64_t>(entries, reftable.size() * 2);
    // The new table's own clusters (and the blocks counting them) must be covered too.
    const std::uint64_t clusters_guess = div_up(new_entries, per_cluster);
    new_entries = std::max(new_entries, (alloc_end / cluster_size + clusters_guess + 2) / refs_per_block + 2);
    const std::uint64_t new_clusters = div_up(new_entries, per_cluster);
    if (new_clusters * cluster_size > kMaxRefcountTableBytes)
        return fail(ErrorKind::Storage, "{}: the refcount table would grow past {} bytes; the image is too large", name,
                    kMaxRefcountTableBytes);
    // The old location stays valid on disk until the header points to the new one, so it
    // is freed in phase 4 like any other cluster.
    for (std::uint32_t i = 0; i < reftable_clusters; ++i) pending_free.push_back(reftable_offset + i * cluster_size);
    const std::uint64_t new_offset = take_from_end(new_clusters);
    reftable.resize(new_clusters * per_cluster, 0);
    reftable_offset = new_offset;
    reftable_clusters = static_cast<std::uint32_t>(new_clusters);
    reftable_relocated = true;
    for (std::uint64_t i = 0; i < new_clusters; ++i)
        BOXLITE_TRY_VOID(set_refcount((new_offset >> cluster_bits) + i, 1));
    return {};
}

BoxliteResult<RefBlock*> Qcow2Image::Impl::ensure_refblock(std::uint64_t index) {
    if (index >= reftable.size()) BOXLITE_TRY_VOID(grow_reftable(index + 1));
    BOXLITE_TRY(RefBlock * existing, load_refblock(index));
    if (existing != nullptr) return existing;
    // A new block goes at the end of the file; usually it lands in the range it covers and
    // counts itself, otherwise setting its refcount recurses once into the next block.
    const std::uint64_t offset = take_from_end(1);
    RefBlock block;
    block.offset = offset;
    block.raw.assign(cluster_size, 0);
    block.dirty = true;
    block.last_use = ++use_clock;
    metadata_added.insert(offset);
    RefBlock* inserted = &refblocks.emplace(index, std::move(block)).first->second;
    reftable[index] = offset;
    mark_reftable_dirty(index);
    BOXLITE_TRY_VOID(set_refcount(offset >> cluster_bits, 1));
    return inserted;
}

BoxliteResult<void> Qcow2Image::Impl::set_refcount(std::uint64_t cluster, std::uint64_t value) {
    if (value > refcount_max)
        return fail(ErrorKind::Storage, "{}: refcount overflow on cluster {} ({} exceeds the {}-bit maximum {})", name,
                    cluster, value, header.refcount_bits(), refcount_max);
    BOXLITE_TRY(RefBlock * block, ensure_refblock(cluster / refs_per_block));
    refcount_set(block->raw.data(), header.refcount_order, cluster % refs_per_block, value);
    block->dirty = true;
    return {};
}

std::uint64_t Qcow2Image::Impl::take_from_end(std::uint64_t count) {
    for (;;) {
        const std::uint64_t start = alloc_end;
        std::uint64_t i = 0;
        while (i < count && !holds_metadata(start + i * cluster_size)) ++i;
        alloc_end = start + (i + 1) * cluster_size;
        if (i == count) {
            alloc_end = start + count * cluster_size;
            return start;
        }
    }
}

BoxliteResult<std::uint64_t> Qcow2Image::Impl::allocate_cluster(bool& fresh) {
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
        BOXLITE_TRY(std::uint64_t current, refcount(offset >> cluster_bits));
        if (current != 0) continue;  // a hostile refcount past the end: skip, never share
        BOXLITE_TRY_VOID(set_refcount(offset >> cluster_bits, 1));
        return offset;
    }
}

void Qcow2Image::Impl::compressed_extent(std::uint64_t entry, std::uint64_t& offset, std::uint64_t& length) const {
    const std::uint32_t x = 62 - (cluster_bits - 8);
    offset = entry & ((1ull << x) - 1) & ((1ull << 56) - 1);
    const std::uint64_t sectors = ((entry & ~kFlagCopied & ~kFlagCompressed) >> x) + 1;
    length = sectors * 512 - (offset & 511);
}

void Qcow2Image::Impl::free_entry_clusters(std::uint64_t entry) {
    if (entry & kFlagCompressed) {
        std::uint64_t offset = 0, length = 0;
        compressed_extent(entry, offset, length);
        for (std::uint64_t c = offset & ~(cluster_size - 1); c < offset + length; c += cluster_size)
            pending_free.push_back(c);
    } else if (const std::uint64_t offset = entry & kOffsetMask; offset != 0) {
        pending_free.push_back(offset);
    }
}

}  // namespace boxlite::qcow2
