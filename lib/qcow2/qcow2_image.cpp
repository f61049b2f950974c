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
//
// This file holds the read/write path: L2 tables, the metadata write-out in the order above,
// reads, writes, resize, and the public entry points. Refcounts are in refcount.cpp, check and
// repair in check.cpp, open and create in open_create.cpp; Impl is in qcow2_image_impl.hpp.
#include "qcow2_image.hpp"

#include "image_lock.hpp"
#include "io.hpp"
#include "qcow2_image_impl.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <mutex>

namespace boxlite::qcow2 {

// ---- helpers ----------------------------------------------------------------------------

BoxliteResult<void> Qcow2Image::Impl::check_request(std::uint64_t offset, std::uint64_t length, std::string_view op,
                                                    bool writes) const {
    if (offset > header.size || length > header.size - offset)
        return fail(ErrorKind::InvalidArgument, "{} of {} bytes at offset {} is past the end of {} ({} bytes)", op,
                    length, offset, name, header.size);
    if (writes && options.read_only) return fail(ErrorKind::Storage, "{} on {}: the image is open read-only", op, name);
    if (writes && failed)
        return fail(ErrorKind::Storage, "{} on {}: an earlier write failed part-way; reopen the image", op, name);
    return {};
}

BoxliteResult<void> Qcow2Image::Impl::sync() {
    if (::fdatasync(fd.get()) != 0) return fail_errno(ErrorKind::Storage, fmt::format("fdatasync of {}", name), errno);
    return {};
}

BoxliteResult<void> Qcow2Image::Impl::pwrite(const void* data, std::size_t len, std::uint64_t offset) {
    BOXLITE_TRY_VOID(block::pwrite_full(fd.get(), data, len, offset, name));
    file_size = std::max(file_size, offset + len);
    return {};
}

BoxliteResult<void> Qcow2Image::Impl::pwritev(std::span<const iovec> iov, std::uint64_t offset) {
    BOXLITE_TRY_VOID(block::pwrite_full(fd.get(), iov, offset, name));
    file_size = std::max(file_size, offset + iov_length(iov));
    return {};
}

bool Qcow2Image::Impl::hits_fixed_metadata(std::uint64_t offset, std::uint64_t length) const {
    auto overlaps = [&](std::uint64_t b, std::uint64_t e) { return offset < e && b < offset + length; };
    if (overlaps(0, cluster_size)) return true;
    if (!l1.empty() && overlaps(header.l1_table_offset, header.l1_table_offset + align_up(l1.size() * 8, cluster_size)))
        return true;
    return overlaps(reftable_offset, reftable_offset + std::uint64_t{reftable_clusters} * cluster_size);
}

bool Qcow2Image::Impl::holds_metadata(std::uint64_t offset) const {
    return hits_fixed_metadata(offset, cluster_size) ||
           std::binary_search(metadata_at_open.begin(), metadata_at_open.end(), offset) ||
           metadata_added.count(offset) != 0;
}

BoxliteResult<void> Qcow2Image::Impl::index_metadata() {
    constexpr std::uint64_t kL2Tag = 1, kRefblockTag = 2, kTagMask = 511;
    std::vector<std::uint64_t> tagged;
    tagged.reserve(static_cast<std::size_t>(
        std::count_if(l1.begin(), l1.end(), [](std::uint64_t e) { return (e & kOffsetMask) != 0; }) +
        std::count_if(reftable.begin(), reftable.end(),
                      [](std::uint64_t e) { return (e & ~kReftableReservedMask) != 0; })));
    for (const std::uint64_t e : l1)
        if (const std::uint64_t offset = e & kOffsetMask; offset != 0 && offset % cluster_size == 0)
            tagged.push_back(offset | kL2Tag);
    for (const std::uint64_t e : reftable)
        if (const std::uint64_t offset = e & ~kReftableReservedMask; offset != 0 && offset % cluster_size == 0)
            tagged.push_back(offset | kRefblockTag);
    std::sort(tagged.begin(), tagged.end());
    auto what = [&](std::uint64_t t) { return (t & kTagMask) == kL2Tag ? "an L2 table" : "a refcount block"; };
    for (std::size_t i = 0; i < tagged.size(); ++i) {
        const std::uint64_t offset = tagged[i] & ~kTagMask;
        if (hits_fixed_metadata(offset, cluster_size))
            return fail(ErrorKind::Storage,
                        "{}: overlapping metadata: {} at offset {} overlaps the header, L1 table "
                        "or refcount table",
                        name, what(tagged[i]), offset);
        if (i > 0 && (tagged[i - 1] & ~kTagMask) == offset)
            return fail(ErrorKind::Storage, "{}: overlapping metadata: {} and {} are both at offset {}", name,
                        what(tagged[i - 1]), what(tagged[i]), offset);
    }
    for (auto& t : tagged) t &= ~kTagMask;
    metadata_at_open = std::move(tagged);
    metadata_added.clear();
    return {};
}

// ---- L2 tables --------------------------------------------------------------------------

BoxliteResult<void> Qcow2Image::Impl::evict_if_needed() {
    // Dirty refcount blocks accumulate between write-outs; this is where they may go.
    if (refblocks_over_budget()) BOXLITE_TRY_VOID(write_metadata(false));
    if ((l2_cache.size() + 1) * cluster_size <= options.l2_cache_bytes || l2_cache.empty()) return {};
    bool any_clean = std::any_of(l2_cache.begin(), l2_cache.end(), [](const auto& kv) { return !kv.second.dirty; });
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

BoxliteResult<L2Table*> Qcow2Image::Impl::l2_table(std::uint64_t index, bool allocate) {
    if (index == last_l1_index && last_l2 != nullptr) {
        last_l2->last_use = ++use_clock;
        return last_l2;
    }
    const std::uint64_t entry = l1[index];
    if (entry & kL1ReservedMask)
        return fail(ErrorKind::Storage, "{}: L1 entry {} ({:#x}) has reserved bits set; the image is corrupt", name,
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
        if (offset % cluster_size != 0 || offset > file_size || cluster_size > file_size - offset)
            return fail(ErrorKind::Storage,
                        "{}: L1 entry {} points to an L2 table at offset {} that is unaligned "
                        "or outside the file ({} bytes)",
                        name, index, offset, file_size);
        if (hits_fixed_metadata(offset, cluster_size))
            return fail(ErrorKind::Storage,
                        "{}: overlapping metadata: the L2 table at offset {} (L1 entry {}) "
                        "overlaps the header, L1 table or refcount structures",
                        name, offset, index);
        BOXLITE_TRY_VOID(evict_if_needed());
        std::vector<std::uint8_t> raw(cluster_size);
        BOXLITE_TRY_VOID(block::pread_full(fd.get(), raw.data(), cluster_size, offset, name));
        L2Table table;
        table.entries.resize(l2_entries);
        for (std::uint64_t i = 0; i < l2_entries; ++i) table.entries[i] = block::load_be64(raw.data() + 8 * i);
        it = l2_cache.emplace(offset, std::move(table)).first;
    }
    it->second.last_use = ++use_clock;
    last_l1_index = index;
    last_l2 = &it->second;
    return last_l2;
}

// ---- metadata write-out (the ordering of the primer) ------------------------------------

BoxliteResult<void> Qcow2Image::Impl::write_refblocks() {
    for (auto& [index, block] : refblocks) {
        if (!block.dirty) continue;
        BOXLITE_TRY_VOID(pwrite(block.raw.data(), cluster_size, block.offset));
        block.dirty = false;
    }
    return {};
}

BoxliteResult<void> Qcow2Image::Impl::write_reftable_range(std::uint64_t lo, std::uint64_t hi) {
    std::vector<std::uint8_t> raw((hi - lo) * 8);
    for (std::uint64_t i = lo; i < hi; ++i) block::store_be64(raw.data() + 8 * (i - lo), reftable[i]);
    return pwrite(raw.data(), raw.size(), reftable_offset + lo * 8);
}

BoxliteResult<void> Qcow2Image::Impl::write_metadata(bool force_sync) {
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
    if (refblocks_dirty || force_sync || reftable_relocated || reftable_dirty_lo != kNoEntry) BOXLITE_TRY_VOID(sync());
    if (reftable_relocated) {
        BOXLITE_TRY_VOID(write_reftable_range(0, reftable.size()));
        BOXLITE_TRY_VOID(sync());
        std::uint8_t fields[12];
        block::store_be64(fields, reftable_offset);
        block::store_be32(fields + 8, reftable_clusters);
        BOXLITE_TRY_VOID(pwrite(fields, sizeof fields, kRefcountTableFieldOffset));
        BOXLITE_TRY_VOID(sync());
        header.refcount_table_offset = reftable_offset;
        header.refcount_table_clusters = reftable_clusters;
        reftable_relocated = false;
        reftable_dirty_lo = kNoEntry;
    } else if (reftable_dirty_lo != kNoEntry) {
        BOXLITE_TRY_VOID(write_reftable_range(reftable_dirty_lo, reftable_dirty_hi));
        BOXLITE_TRY_VOID(sync());
        reftable_dirty_lo = kNoEntry;
    }
    reftable_dirty_hi = 0;
    // Phase 2: L2 tables.
    bool wrote = false;
    std::vector<std::uint8_t> raw(cluster_size);
    for (auto& [offset, table] : l2_cache) {
        if (!table.dirty) continue;
        for (std::uint64_t i = 0; i < l2_entries; ++i) block::store_be64(raw.data() + 8 * i, table.entries[i]);
        BOXLITE_TRY_VOID(pwrite(raw.data(), cluster_size, offset));
        table.dirty = false;
        wrote = true;
    }
    if (wrote) BOXLITE_TRY_VOID(sync());
    // Phase 3: L1 table.
    if (l1_dirty_lo != kNoEntry) {
        std::vector<std::uint8_t> l1raw((l1_dirty_hi - l1_dirty_lo) * 8);
        for (std::uint64_t i = l1_dirty_lo; i < l1_dirty_hi; ++i)
            block::store_be64(l1raw.data() + 8 * (i - l1_dirty_lo), l1[i]);
        BOXLITE_TRY_VOID(pwrite(l1raw.data(), l1raw.size(), header.l1_table_offset + l1_dirty_lo * 8));
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
            const std::uint64_t cluster = offset >> cluster_bits;
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

// ---- reads ------------------------------------------------------------------------------

BoxliteResult<void> Qcow2Image::Impl::read_backing(std::uint64_t guest, std::span<const iovec> iov, std::uint64_t boff,
                                                   std::uint64_t len) {
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

BoxliteResult<const std::uint8_t*> Qcow2Image::Impl::inflate_cluster(std::uint64_t entry) {
    if (inflated_valid && entry == inflated_entry) return inflated.data();
    std::uint64_t offset = 0, length = 0;
    compressed_extent(entry, offset, length);
    if (offset >= file_size || offset < cluster_size)
        return fail(ErrorKind::Storage,
                    "{}: compressed cluster at offset {} lies outside the file's data area "
                    "({} bytes)",
                    name, offset, file_size);
    length = std::min(length, file_size - offset);
    compressed_buf.resize(length);
    BOXLITE_TRY_VOID(block::pread_full(fd.get(), compressed_buf.data(), length, offset, name));
    inflated.resize(cluster_size);
    z_stream zs{};
    if (inflateInit2(&zs, -15) != Z_OK) return fail(ErrorKind::Internal, "zlib inflateInit2 failed");
    zs.next_in = compressed_buf.data();
    zs.avail_in = static_cast<uInt>(length);
    zs.next_out = inflated.data();
    zs.avail_out = static_cast<uInt>(cluster_size);
    const int rc = ::inflate(&zs, Z_FINISH);
    const std::uint64_t produced = cluster_size - zs.avail_out;
    inflateEnd(&zs);
    inflated_valid = false;
    if ((rc != Z_STREAM_END && rc != Z_BUF_ERROR && rc != Z_OK) || produced != cluster_size)
        return fail(ErrorKind::Storage, "{}: compressed cluster at offset {} is corrupt (zlib: {}, {} of {} bytes)",
                    name, offset, rc, produced, cluster_size);
    inflated_entry = entry;
    inflated_valid = true;
    return inflated.data();
}

BoxliteResult<void> Qcow2Image::Impl::check_data_offset(std::uint64_t host, std::uint64_t guest) const {
    if (host % cluster_size != 0 || host == 0)
        return fail(ErrorKind::Storage, "{}: data cluster for guest offset {} has an invalid host offset {}", name,
                    guest, host);
    if (host >= std::max(file_size, alloc_end))
        return fail(ErrorKind::Storage,
                    "{}: data cluster for guest offset {} at host offset {} lies past the end "
                    "of the file ({} bytes)",
                    name, guest, host, file_size);
    return {};
}

BoxliteResult<void> Qcow2Image::Impl::check_l2_entry(std::uint64_t entry, std::uint64_t guest) const {
    if (!(entry & kFlagCompressed) && (entry & kL2ReservedMask))
        return fail(ErrorKind::Storage,
                    "{}: the L2 entry for guest offset {} ({:#x}) has reserved bits set; the "
                    "image is corrupt",
                    name, guest, entry);
    return {};
}

BoxliteResult<std::uint64_t> Qcow2Image::Impl::lookup(std::uint64_t guest) {
    const std::uint64_t index = guest / header.bytes_per_l2();
    if (index >= l1.size()) return std::uint64_t{0};
    BOXLITE_TRY(L2Table * table, l2_table(index, false));
    if (table == nullptr) return std::uint64_t{0};
    const std::uint64_t entry = table->entries[(guest >> cluster_bits) & (l2_entries - 1)];
    BOXLITE_TRY_VOID(check_l2_entry(entry, guest));
    return entry;
}

BoxliteResult<void> Qcow2Image::Impl::read(std::uint64_t offset, std::span<const iovec> iov, RequestPlan* plan) {
    const std::uint64_t total = iov_length(iov);
    BOXLITE_TRY_VOID(check_request(offset, total, "read", false));
    // Runs of host-contiguous data clusters (or of unallocated ones) become one syscall.
    enum class Run { None, Host, Backing } run = Run::None;
    std::uint64_t run_host = 0, run_guest = 0, run_boff = 0, run_len = 0;
    auto flush_run = [&]() -> BoxliteResult<void> {
        if (run == Run::Host && plan != nullptr) {
            plan->runs.push_back({run_host, run_boff, run_len});
        } else if (run == Run::Host) {
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
        const std::uint64_t in_cluster = guest & (cluster_size - 1);
        const std::uint64_t chunk = std::min(cluster_size - in_cluster, total - boff);
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

// ---- writes -----------------------------------------------------------------------------

BoxliteResult<void> Qcow2Image::Impl::cluster_content(std::uint64_t guest, std::uint64_t entry, std::uint8_t* out,
                                                      bool& all_zero) {
    all_zero = false;
    const std::uint64_t host = entry & kOffsetMask;
    if (entry & kFlagCompressed) {
        BOXLITE_TRY(const std::uint8_t* data, inflate_cluster(entry));
        std::memcpy(out, data, cluster_size);
    } else if ((v3() && (entry & kFlagZero)) || (host == 0 && !backing)) {
        std::memset(out, 0, cluster_size);
        all_zero = true;
    } else if (host == 0) {
        if (guest >= backing->size()) {
            std::memset(out, 0, cluster_size);
            all_zero = true;
            return {};
        }
        iovec v{out, cluster_size};
        BOXLITE_TRY_VOID(read_backing(guest, std::span<const iovec>(&v, 1), 0, cluster_size));
    } else {
        BOXLITE_TRY_VOID(check_data_offset(host, guest));
        BOXLITE_TRY_VOID(block::pread_full(fd.get(), out, cluster_size, host, name));
    }
    return {};
}

BoxliteResult<void> Qcow2Image::Impl::write(std::uint64_t offset, std::span<const iovec> iov, RequestPlan* plan) {
    const std::uint64_t total = iov_length(iov);
    BOXLITE_TRY_VOID(check_request(offset, total, "write", true));
    failed = true;  // until every cluster of this request is written and mapped
    // A run: guest bytes [run_boff, +run_len) go to host [run_host, +run_len) in one pwritev.
    // Runs never cross an L2 table, so no metadata write-out (cache eviction) can publish a
    // mapping whose data is still only in the run.
    bool run_open = false;
    std::uint64_t run_host = 0, run_boff = 0, run_len = 0;
    auto flush_run = [&]() -> BoxliteResult<void> {
        if (run_open && plan != nullptr) {
            plan->runs.push_back({run_host, run_boff, run_len});
        } else if (run_open) {
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
        const std::uint64_t in_cluster = guest & (cluster_size - 1);
        const std::uint64_t chunk = std::min(cluster_size - in_cluster, total - boff);
        const std::uint64_t l1_index = guest / header.bytes_per_l2();
        if (l1_index != current_l1) {
            BOXLITE_TRY_VOID(flush_run());
            current_l1 = l1_index;
        }
        BOXLITE_TRY(L2Table * table, l2_table(l1_index, true));
        std::uint64_t& slot = table->entries[(guest >> cluster_bits) & (l2_entries - 1)];
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
            if (chunk == cluster_size) {
                BOXLITE_TRY_VOID(add_to_run(target, boff, chunk));
            } else {
                bool all_zero = false;
                scratch.resize(cluster_size);
                BOXLITE_TRY_VOID(cluster_content(guest - in_cluster, entry, scratch.data(), all_zero));
                if (all_zero && fresh) {
                    // The new cluster is past anything ever written: its holes read as zero.
                    BOXLITE_TRY_VOID(add_to_run(target + in_cluster, boff, chunk));
                } else {
                    BOXLITE_TRY_VOID(flush_run());
                    block::iov_to_buffer(iov, boff, scratch.data() + in_cluster, chunk);
                    BOXLITE_TRY_VOID(pwrite(scratch.data(), cluster_size, target));
                }
            }
            if (plan != nullptr) {
                // Mapped once the data is written (publish): until then no metadata write-out
                // can make the cluster reachable, and readers of it wait (submit).
                plan->maps.push_back({l1_index, (guest >> cluster_bits) & (l2_entries - 1), target, entry});
            } else {
                // `slot` is still valid: nothing above touched the L2 cache.
                slot = target | kFlagCopied;
                table->dirty = true;
                free_entry_clusters(entry);
            }
        }
        boff += chunk;
    }
    BOXLITE_TRY_VOID(flush_run());
    failed = false;
    return {};
}

BoxliteResult<void> Qcow2Image::Impl::write_zeroes(std::uint64_t offset, std::uint64_t length, std::string_view op) {
    BOXLITE_TRY_VOID(check_request(offset, length, op, true));
    if (zero_cluster.size() != cluster_size) zero_cluster.assign(cluster_size, 0);
    std::uint64_t pos = offset;
    const std::uint64_t end = offset + length;
    while (pos < end) {
        const std::uint64_t in_cluster = pos & (cluster_size - 1);
        const std::uint64_t chunk = std::min(cluster_size - in_cluster, end - pos);
        BOXLITE_TRY(const std::uint64_t entry, lookup(pos));
        const std::uint64_t host = entry & kOffsetMask;
        const bool reads_zero = (v3() && (entry & kFlagZero) && !(entry & kFlagCompressed)) ||
                                (entry == 0 && !backing) ||
                                (entry == 0 && backing && pos - in_cluster >= backing->size());
        if (reads_zero) {
            // Nothing to do (a zero-flagged cluster may keep its preallocated host cluster).
        } else if (chunk == cluster_size && (v3() || !backing)) {
            // Whole cluster: drop the mapping and free the host cluster.
            const std::uint64_t l1_index = pos / header.bytes_per_l2();
            BOXLITE_TRY(L2Table * table, l2_table(l1_index, true));
            failed = true;
            std::uint64_t& slot = table->entries[(pos >> cluster_bits) & (l2_entries - 1)];
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

// ---- resize -----------------------------------------------------------------------------

BoxliteResult<void> Qcow2Image::Impl::resize(std::uint64_t new_size) {
    if (options.read_only) return fail(ErrorKind::Storage, "resize of {}: the image is open read-only", name);
    if (new_size < header.size)
        return fail(ErrorKind::Unsupported,
                    "resize of {} to {} bytes: shrinking a QCOW2 image is not supported (current "
                    "size {})",
                    name, new_size, header.size);
    if (new_size > kMaxVirtualSize)
        return fail(ErrorKind::InvalidArgument, "resize of {} to {} bytes: at most {} allowed", name, new_size,
                    kMaxVirtualSize);
    if (new_size % 512 != 0)
        return fail(ErrorKind::InvalidArgument, "resize of {} to {} bytes: the size must be a multiple of 512", name,
                    new_size);
    const std::uint64_t needed = l1_entries_for(new_size, cluster_bits);
    if (needed * 8 > kMaxL1Bytes)
        return fail(ErrorKind::InvalidArgument, "resize of {} to {} bytes needs an L1 table of {} entries (at most {})",
                    name, new_size, needed, kMaxL1Bytes / 8);
    BOXLITE_TRY_VOID(write_metadata(true));
    if (needed > l1.size()) {
        // The L1 table moves to the end of the file: new copy, barrier, header, barrier.
        const std::uint64_t clusters = div_up(needed * 8, cluster_size);
        const std::uint64_t new_offset = take_from_end(clusters);
        failed = true;
        for (std::uint64_t i = 0; i < clusters; ++i)
            BOXLITE_TRY_VOID(set_refcount((new_offset >> cluster_bits) + i, 1));
        const std::uint64_t old_offset = header.l1_table_offset;
        const std::uint64_t old_clusters = div_up(l1.size() * 8, cluster_size);
        l1.resize(needed, 0);
        BOXLITE_TRY_VOID(write_metadata(true));  // refcounts of the new L1 clusters
        failed = true;
        std::vector<std::uint8_t> raw(clusters * cluster_size, 0);
        for (std::uint64_t i = 0; i < l1.size(); ++i) block::store_be64(raw.data() + 8 * i, l1[i]);
        BOXLITE_TRY_VOID(pwrite(raw.data(), raw.size(), new_offset));
        BOXLITE_TRY_VOID(sync());
        std::uint8_t fields[12];
        block::store_be32(fields, static_cast<std::uint32_t>(needed));
        block::store_be64(fields + 4, new_offset);
        BOXLITE_TRY_VOID(pwrite(fields, sizeof fields, kL1SizeFieldOffset));
        BOXLITE_TRY_VOID(sync());
        header.l1_size = static_cast<std::uint32_t>(needed);
        header.l1_table_offset = new_offset;
        if (old_offset != 0)
            for (std::uint64_t i = 0; i < old_clusters; ++i) pending_free.push_back(old_offset + i * cluster_size);
        failed = false;
    }
    std::uint8_t size_field[8];
    block::store_be64(size_field, new_size);
    BOXLITE_TRY_VOID(pwrite(size_field, sizeof size_field, kSizeFieldOffset));
    BOXLITE_TRY_VOID(sync());
    header.size = new_size;
    return write_metadata(false);
}

// ---- requests in flight ------------------------------------------------------------------

void Qcow2Image::Impl::drain(std::unique_lock<std::mutex>& lock) {
    ++exclusive_waiting;
    in_flight_changed.wait(lock, [&] { return in_flight.empty(); });
    --exclusive_waiting;
    in_flight_changed.notify_all();  // requests waiting for the drain start once `lock` is released
}

BoxliteResult<void> Qcow2Image::Impl::publish(const std::vector<DeferredMap>& maps) {
    const bool was_failed = failed;
    failed = true;
    for (const DeferredMap& m : maps) {
        BOXLITE_TRY(L2Table * table, l2_table(m.l1_index, true));
        std::uint64_t& slot = table->entries[m.l2_index];
        if (slot != m.old_entry)  // the request held the cluster: nobody else may have mapped it
            return fail(ErrorKind::Internal, "{}: the L2 entry of a cluster changed while a write to it was in flight",
                        name);
        slot = m.target | kFlagCopied;
        table->dirty = true;
        free_entry_clusters(m.old_entry);
    }
    failed = was_failed;
    return {};
}

BoxliteResult<void> Qcow2Image::Impl::submit(std::uint64_t offset, std::span<const iovec> iov, bool write) {
    const std::uint64_t total = iov_length(iov);
    std::unique_lock lock(mutex);
    BOXLITE_TRY_VOID(check_request(offset, total, write ? "write" : "read", write));
    const std::uint64_t first = offset >> cluster_bits;
    const std::uint64_t last = (offset + std::max<std::uint64_t>(total, 1) - 1) >> cluster_bits;
    auto conflicts = [&] {
        if (exclusive_waiting > 0) return true;
        return std::any_of(in_flight.begin(), in_flight.end(), [&](const InFlight& other) {
            return (write || other.write) && first <= other.last && other.first <= last;
        });
    };
    in_flight_changed.wait(lock, [&] { return !conflicts(); });
    const std::uint64_t id = ++next_request;
    in_flight.push_back({id, first, last, write});
    // Leaves the in-flight set however this ends (the mutex is held again by then).
    struct Leave {
        Impl& impl;
        std::uint64_t id;
        ~Leave() {
            std::erase_if(impl.in_flight, [&](const InFlight& r) { return r.id == id; });
            impl.in_flight_changed.notify_all();
        }
    } leave{*this, id};

    RequestPlan plan;
    BOXLITE_TRY_VOID(write ? this->write(offset, iov, &plan) : this->read(offset, iov, &plan));
    BoxliteResult<void> io{};
    std::uint64_t end = 0;
    if (!plan.runs.empty()) {
        // The data, without the mutex: other requests plan, map and do their own I/O meanwhile.
        // The descriptor stays open (close() waits for this request) and the clusters are this
        // request's (allocated for it, or mapped to the guest clusters it holds).
        struct Unlocked {
            std::unique_lock<std::mutex>& lock;
            explicit Unlocked(std::unique_lock<std::mutex>& l) : lock(l) { lock.unlock(); }
            ~Unlocked() { lock.lock(); }
            Unlocked(const Unlocked&) = delete;
            Unlocked& operator=(const Unlocked&) = delete;
        } unlocked(lock);
        std::vector<iovec> slice;
        for (const DeferredRun& run : plan.runs) {
            block::iov_slice(iov, run.boff, run.len, slice);
            io = write ? block::pwrite_full(fd.get(), slice, run.host, name)
                       : block::pread_full(fd.get(), slice, run.host, name);
            if (!io) break;
            end = std::max(end, run.host + run.len);
        }
    }
    if (!write) return io;
    file_size = std::max(file_size, end);
    if (!io) {
        failed = true;  // the new clusters stay unmapped: leaked, never exposed
        return io;
    }
    return publish(plan.maps);
}

// ---- the public entry points --------------------------------------------------------------

Qcow2Image::Qcow2Image(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Qcow2Image::~Qcow2Image() {
    if (!impl_ || impl_->options.read_only || impl_->failed) return;
    try {
        (void)impl_->write_metadata(false);
    } catch (const std::exception&) {
        // Out of memory while writing out: the image keeps at most leaks (the primer).
    }
}

// Every entry point takes the image's mutex (see the thread-safety contract in the header) and
// turns an allocation failure into an error instead of letting it unwind into the device.
std::uint64_t Qcow2Image::size() const noexcept {
    std::lock_guard lock(impl_->mutex);
    return impl_->header.size;
}
bool Qcow2Image::read_only() const noexcept {
    std::lock_guard lock(impl_->mutex);
    return impl_->options.read_only;
}

BoxliteResult<void> Qcow2Image::read(std::uint64_t offset, std::span<const iovec> buffers) {
    return guarded(impl_->name, "read", [&] { return impl_->submit(offset, buffers, false); });
}
BoxliteResult<void> Qcow2Image::write(std::uint64_t offset, std::span<const iovec> buffers) {
    return guarded(impl_->name, "write", [&] { return impl_->submit(offset, buffers, true); });
}
BoxliteResult<void> Qcow2Image::flush() {
    std::unique_lock lock(impl_->mutex);
    impl_->drain(lock);
    if (impl_->options.read_only) return {};
    return guarded(impl_->name, "flush", [&] { return impl_->write_metadata(true); });
}
BoxliteResult<void> Qcow2Image::discard(std::uint64_t offset, std::uint64_t length) {
    std::unique_lock lock(impl_->mutex);
    impl_->drain(lock);
    return guarded(impl_->name, "discard", [&] { return impl_->write_zeroes(offset, length, "discard"); });
}
BoxliteResult<void> Qcow2Image::write_zeroes(std::uint64_t offset, std::uint64_t length) {
    std::unique_lock lock(impl_->mutex);
    impl_->drain(lock);
    return guarded(impl_->name, "write_zeroes", [&] { return impl_->write_zeroes(offset, length, "write_zeroes"); });
}
BoxliteResult<void> Qcow2Image::resize(std::uint64_t new_size) {
    std::unique_lock lock(impl_->mutex);
    impl_->drain(lock);
    return guarded(impl_->name, "resize", [&] { return impl_->resize(new_size); });
}
BoxliteResult<CheckReport> Qcow2Image::check() {
    std::unique_lock lock(impl_->mutex);
    impl_->drain(lock);
    return guarded(impl_->name, "check", [&] { return impl_->check(); });
}
BoxliteResult<void> Qcow2Image::repair() {
    std::unique_lock lock(impl_->mutex);
    impl_->drain(lock);
    return guarded(impl_->name, "repair", [&] { return impl_->repair(); });
}
BoxliteResult<void> Qcow2Image::close() {
    std::unique_lock lock(impl_->mutex);
    impl_->drain(lock);
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
    out.version = impl_->header.version;
    out.cluster_size = impl_->cluster_size;
    out.size = impl_->header.size;
    out.refcount_bits = impl_->header.refcount_bits();
    out.backing_file = impl_->header.backing_file;
    out.backing_format = impl_->header.backing_format;
    out.snapshots = impl_->header.nb_snapshots;
    out.dirty = (impl_->header.incompatible_features & kIncompatDirty) != 0;
    return out;
}

}  // namespace boxlite::qcow2
