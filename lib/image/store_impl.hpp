// ImageStore::Impl: the state of one open image store and the operations the public methods are
// built from. Internal to lib/image. Its members are defined by concern:
//   store.cpp       blobs, locks, pulls from registries, prepare
//   catalog.cpp     the SQL catalog (images.db) and index.json; list, inspect, remove, leases, gc
//   disk_build.cpp  box roots: the unpacked rootfs directory and the ext4 base disk
//   load.cpp        load(): OCI layouts and `docker save` tarballs
#pragma once

#include <boxlite/image/image_store.hpp>
#include <boxlite/image/reference.hpp>

#include "base/sqlite.hpp"
#include "digest.hpp"
#include "oci.hpp"
#include "registry_client.hpp"
#include "store_util.hpp"

#include "base/file_lock.hpp"

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite::image {

namespace fs = std::filesystem;
using base::Statement;

/// Seconds since the Unix epoch (the catalog's timestamps).
std::int64_t unix_now();
/// A suffix for temporary names that two processes or threads never share.
std::string random_suffix();

struct PullOutcome {
    ImageInfo info;
    bool contacted_registry = false;
};

struct ImageStore::Impl {
    ImageStoreOptions options;
    fs::path images, blobs, tmp, locks, rootfs, disks, db_path;
    base::Database db;
    std::mutex db_mutex;  // one connection shared by this process's threads

    // ---- blobs and locks (store.cpp) ------------------------------------------------------
    fs::path blob_path(std::string_view digest) const { return blobs / std::string(digest_hex(digest)); }
    bool has_blob(std::string_view digest) const;
    BoxliteResult<base::FileLock> store_lock(base::FileLock::Mode mode) {
        return base::FileLock::acquire(images / ".lock", mode);
    }
    BoxliteResult<base::FileLock> named_lock(std::string_view kind, std::string_view key);
    BoxliteResult<void> write_blob(std::string_view digest, std::string_view data);
    // Copies a file into the store while hashing it; returns its digest and size.
    BoxliteResult<std::pair<std::string, std::uint64_t>> import_blob_file(const fs::path& source,
                                                                          std::optional<std::string_view> expected);

    // ---- the SQL catalog (catalog.cpp) ----------------------------------------------------
    /// Opens images.db (WAL, busy timeout), creates its schema, and index.json if missing.
    BoxliteResult<void> open_database();
    BoxliteResult<void> record(const std::string& reference, const std::string& manifest_digest,
                               const Manifest& manifest, std::uint64_t manifest_size, const std::string& index_digest);
    BoxliteResult<std::optional<ImageInfo>> load_info(const std::string& reference);
    // The manifest's record, when it and every blob it names are in the store.
    BoxliteResult<std::optional<ImageInfo>> load_manifest_info(const std::string& manifest_digest);
    // index.json mirrors images.db so that skopeo / umoci can read the store as an OCI layout.
    BoxliteResult<void> write_index_json();
    BoxliteResult<std::optional<ImageInfo>> find_local(const std::vector<ImageReference>& candidates);

    // ---- pulls (store.cpp) ----------------------------------------------------------------
    BoxliteResult<ImageInfo> pull_from_registry(const ImageReference& ref, const Platform& platform,
                                                const PullProgressCallback& progress, bool* not_found);
    BoxliteResult<void> download_layers(RegistryClient& client, const Manifest& manifest,
                                        const PullProgressCallback& progress);
    BoxliteResult<PullOutcome> pull(std::string_view text, const PullOptions& pull_options);

    // ---- box roots (disk_build.cpp) -------------------------------------------------------
    BoxliteResult<std::pair<fs::path, bool>> build_rootfs(const ImageInfo& image);
    // mke2fs -d copies owners and modes from the tree. A tree unpacked by a non-root user (VM
    // engines need only /dev/kvm) has that user as every owner, setuid binaries included, and
    // directories widened by u+rwx; the disk must hold what the layers declare, so those inodes
    // are rewritten with debugfs. Its top directory tells who unpacked the tree.
    BoxliteResult<void> correct_disk_ownership(const ImageInfo& image, const fs::path& tree, const fs::path& disk);
    BoxliteResult<std::pair<fs::path, bool>> build_disk(const ImageInfo& image);
    /// gc's part for <images>/directory-disks (rootfs directories' cached ext4 bases): under the
    /// cache's build lock, every base no box links to and every temporary file of a build.
    void collect_directory_disks(GcReport& report) const;
};

}  // namespace boxlite::image
