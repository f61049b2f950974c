// Qcow2Image: BoxLite's own QCOW2 engine — the copy-on-write disk behind every box
// (boxes/<id>/disk.qcow2 over the image's cached ext4 base). See qcow2_image.cpp for the primer
// on refcounts and crash-consistent metadata ordering.
//
// Thread safety: one image may be used from several threads at once (block_backend.hpp). read()
// and write() plan under the image's mutex, do their data I/O outside it, and (writes) map the new
// clusters under it again: requests on different clusters are in flight together, requests on a
// cluster another one in flight touches wait for it when either writes. flush(), discard(),
// write_zeroes(), resize(), check(), repair() and close() wait until no request is in flight and
// run alone. Backing files are separate backends with their own locks.
//
// Locking: an image is locked as QEMU locks it (image_lock.hpp) from open until destruction or
// close(): read-write excludes every other opener, read-only excludes writers. A second opener —
// another box, this process again, or qemu-img without -U — gets a Storage error "image is in
// use by another process".
#pragma once

#include "block_backend.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace boxlite::qcow2 {

struct CreateOptions {
    /// Virtual size in bytes. 0 with a backing file means "the backing file's size".
    std::uint64_t size = 0;
    /// Stored as given; a relative name is resolved against the new image's directory.
    std::string backing_file;
    /// "raw" or "qcow2"; empty probes the backing file and stores what it found.
    std::string backing_format;
    /// 9 (512 B) to 21 (2 MiB); 16 (64 KiB) like qemu-img.
    std::uint32_t cluster_bits = 16;
    /// 0 to 6 (1- to 64-bit refcounts); 4 (16-bit) like qemu-img.
    std::uint32_t refcount_order = 4;
};

struct OpenOptions {
    bool read_only = false;
    /// Upper bound for cached L2 tables; least recently used clean tables are dropped.
    std::uint64_t l2_cache_bytes = 32ull << 20;
    /// Upper bound for cached refcount blocks (at least 4 clusters), enforced the same way.
    std::uint64_t refcount_cache_bytes = 4ull << 20;
    /// Longest backing chain followed (a loop of backing files ends here, too).
    unsigned max_backing_depth = 16;
    /// Off for untrusted images given without their directory (the fuzzer): a backing file
    /// name is then an error instead of a path we open.
    bool allow_backing = true;
};

/// What check() found: the same classes `qemu-img check` reports.
struct CheckReport {
    std::uint64_t corruptions = 0;  ///< refcount below the references, bad pointers, flags
    std::uint64_t leaks = 0;        ///< clusters with a refcount but no reference
    std::uint64_t allocated_clusters = 0;
    std::vector<std::string> messages;  ///< the first problems, for humans
    [[nodiscard]] bool clean() const noexcept { return corruptions == 0 && leaks == 0; }
};

struct ImageInfo {
    std::uint32_t version = 3;
    std::uint64_t cluster_size = 0;
    std::uint64_t size = 0;
    std::uint32_t refcount_bits = 16;
    std::string backing_file;
    std::string backing_format;
    std::uint32_t snapshots = 0;
    bool dirty = false;
};

class Qcow2Image final : public block::BlockBackend {
public:
    /// Creates a v3 image (overwriting `path`) and opens it read-write.
    static BoxliteResult<std::unique_ptr<Qcow2Image>> create(const std::filesystem::path& path,
                                                             const CreateOptions& options);
    /// Opens a v2 or v3 image and its backing chain (backing files are opened read-only).
    static BoxliteResult<std::unique_ptr<Qcow2Image>> open(const std::filesystem::path& path,
                                                           const OpenOptions& options = {});
    /// As open(), over an already open descriptor (taken over); `name` is used in messages and
    /// its parent directory resolves relative backing file names.
    static BoxliteResult<std::unique_ptr<Qcow2Image>> open_fd(int fd, const std::string& name,
                                                              const OpenOptions& options = {});
    /// Writes pending metadata (without the final fsync guarantees of flush()) and closes.
    ~Qcow2Image() override;

    [[nodiscard]] std::uint64_t size() const noexcept override;
    [[nodiscard]] bool read_only() const noexcept override;
    BoxliteResult<void> read(std::uint64_t offset, std::span<const iovec> buffers) override;
    BoxliteResult<void> write(std::uint64_t offset, std::span<const iovec> buffers) override;
    BoxliteResult<void> flush() override;
    /// Whole clusters are deallocated and read back as zeroes; partial ones are zeroed.
    BoxliteResult<void> discard(std::uint64_t offset, std::uint64_t length) override;
    BoxliteResult<void> write_zeroes(std::uint64_t offset, std::uint64_t length) override;

    /// Grows the virtual size (the L1 table moves if it must). Shrinking is Unsupported.
    BoxliteResult<void> resize(std::uint64_t new_size);
    /// Recomputes every refcount from the metadata and compares (writes pending metadata first).
    BoxliteResult<CheckReport> check();
    /// Rebuilds the refcount structures from the metadata: fixes leaks and a dirty image.
    BoxliteResult<void> repair();
    /// Flushes and reports any error a destructor would have to swallow, then releases the
    /// image lock: from here on the object only serves reads, and should be destroyed.
    BoxliteResult<void> close();
    [[nodiscard]] ImageInfo info() const;

    /// The engine's state (qcow2_image_impl.hpp; built only by open and create, open_create.cpp).
    struct Impl;
    explicit Qcow2Image(std::unique_ptr<Impl> impl);

private:
    std::unique_ptr<Impl> impl_;
};

/// Opens a disk of either format: "qcow2", "raw", or "" (probe by the QCOW2 magic).
BoxliteResult<std::unique_ptr<block::BlockBackend>> open_disk(const std::filesystem::path& path, bool read_only,
                                                              const std::string& format = "",
                                                              const OpenOptions& options = {});

}  // namespace boxlite::qcow2
