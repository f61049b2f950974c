// ImageStore: the local OCI image cache under <home>/images, and the registry client that fills it.
//
//   <home>/images/oci-layout, index.json      an OCI image layout (readable by skopeo/umoci)
//   <home>/images/blobs/sha256/<hex>          manifests, configs, layers; shared by every image
//   <home>/images/rootfs/<hex>/               unpacked tree per manifest digest (namespace engine)
//   <home>/images/disk-images/<hex>.ext4      raw ext4 per manifest digest (VM engines' base disk)
//   <home>/db/images.db                       SQLite: reference -> manifest -> config, layers
//
// Every operation is safe between processes: the database is SQLite (WAL), blobs appear by
// rename, and pulls, blob downloads and rootfs builds take a per-object file lock, so two
// processes pulling the same image do the work once and both succeed.
#pragma once

#include <boxlite/boxlite_options.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>
#include <boxlite/image/image_config.hpp>
#include <boxlite/image/platform.hpp>
#include <boxlite/image/progress.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::image {

struct RegistryCredentials {
    std::string username;
    std::string password;
    friend bool operator==(const RegistryCredentials&, const RegistryCredentials&) = default;
};

/// How the registry client behaves. Every size read from the network is bounded by one of these.
struct RegistryOptions {
    /// Registries tried in order for unqualified references; docker.io is always tried last.
    std::vector<std::string> search_registries = {"docker.io"};
    /// Registries reached over plain HTTP (loopback registries always are, as in Docker):
    /// host[:port] as references name them, compared without regard to case.
    std::vector<std::string> insecure_registries;
    /// Credentials by registry host ("ghcr.io", "localhost:5000"); they win over docker's config.
    std::map<std::string, RegistryCredentials> credentials;
    /// Docker's client config with `auths`; default $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
    std::optional<std::filesystem::path> docker_config;
    /// Which entry of a multi-architecture index to pull.
    Platform platform = host_platform();

    unsigned max_parallel_downloads = 3;
    unsigned max_attempts = 4;                       ///< per request, network errors and 5xx/429
    std::chrono::milliseconds initial_backoff{200};  ///< doubled after every failed attempt
    std::chrono::seconds connect_timeout{15};
    std::chrono::seconds stall_timeout{60};  ///< abort a transfer this long below 1 byte/s

    std::uint64_t max_manifest_bytes = 4ull << 20;  ///< manifests and indexes (Docker: 4 MiB)
    std::uint64_t max_json_bytes = 8ull << 20;      ///< configs, token and error bodies
    std::uint64_t max_layer_bytes = 16ull << 30;    ///< one compressed layer
};

/// Bounds on what one image may unpack to; anything over them is refused as hostile.
struct UnpackLimits {
    std::uint64_t max_entry_bytes = 16ull << 30;  ///< one file
    std::uint64_t max_total_bytes = 64ull << 30;  ///< all files of all layers
    std::uint64_t max_entries = 2'000'000;        ///< entries over all layers
    std::size_t max_path_length = 4096;
    std::size_t max_xattr_bytes = 64u << 10;
};

struct ImageStoreOptions {
    std::filesystem::path home;  ///< the BoxLite home (BoxliteOptions::home_dir)
    RegistryOptions registry;
    UnpackLimits unpack;
};

/// What a runtime's options mean for its image store: its home, image_registries as the search
/// list, insecure_registries, and this host's platform (a box runs on the host). The runtime's
/// rootfs provider and the CLI both open their store with this, so they never disagree.
[[nodiscard]] ImageStoreOptions store_options_for(const BoxliteOptions& options);

struct LayerInfo {
    std::string digest;
    std::string media_type;
    std::uint64_t size = 0;
    friend bool operator==(const LayerInfo&, const LayerInfo&) = default;
};

/// One stored image, as list() and inspect() report it.
struct ImageInfo {
    std::string reference;        ///< canonical, "docker.io/library/alpine:latest"
    std::string manifest_digest;  ///< "sha256:…", what `@digest` pins
    std::string config_digest;    ///< the image id
    std::string index_digest;     ///< the multi-arch index it was selected from, or ""
    std::string media_type;       ///< of the manifest
    std::vector<LayerInfo> layers;
    std::uint64_t size = 0;      ///< manifest + config + layer blobs, as stored
    std::int64_t stored_at = 0;  ///< unix seconds when the reference was last pointed here
    ImageConfig config;

    [[nodiscard]] const std::string& id() const noexcept { return config_digest; }
};

enum class PullPolicy : std::uint8_t {
    IfMissing,  ///< use the local image when the reference is stored; no network then
    Always,     ///< ask the registry what the reference points to now; fetch only missing blobs
    Never,      ///< local store only; Image error when absent
};

struct PullOptions {
    PullPolicy policy = PullPolicy::IfMissing;
    PullProgressCallback progress;
    std::optional<Platform> platform;  ///< overrides RegistryOptions::platform
};

/// A box's hold on the image it was created from (see ImageStore::prepare_for).
struct ImageLease {
    std::string holder;           ///< the box id
    std::string manifest_digest;  ///< the image the box was created from, pinned
    std::string reference;        ///< as the box asked for it
    std::int64_t created_at = 0;  ///< unix seconds
    friend bool operator==(const ImageLease&, const ImageLease&) = default;
};

struct GcOptions {
    /// When set: leases of holders not in this list are stale (their box vanished without
    /// releasing them) and are dropped first — unless younger than `lease_grace`, since a box
    /// being created in another process holds its lease just before its record is written.
    std::optional<std::vector<std::string>> live_holders;
    std::chrono::seconds lease_grace{600};
};

struct GcReport {
    std::size_t blobs_removed = 0;
    std::uint64_t bytes_freed = 0;
    std::size_t rootfs_removed = 0;
    std::size_t disk_images_removed = 0;
    std::size_t leases_dropped = 0;  ///< stale leases (GcOptions::live_holders)
};

/// A box root ready for an engine, and what getting it cost.
struct PreparedImage {
    ImageInfo image;
    std::filesystem::path path;  ///< rootfs/<hex>/ or disk-images/<hex>.ext4
    RootfsKind kind = RootfsKind::Directory;
    bool pulled = false;  ///< the registry was contacted
    std::chrono::nanoseconds pull_time{0};
    std::chrono::nanoseconds build_time{0};  ///< unpack / mke2fs; 0 when cached
};

class ImageStore {
public:
    /// Creates the layout and database when absent. Storage / Database errors name the path;
    /// a search or insecure registry that is not host[:port] is a Config error.
    [[nodiscard]] static BoxliteResult<ImageStore> open(ImageStoreOptions options);

    ImageStore(ImageStore&&) noexcept;
    ImageStore& operator=(ImageStore&&) noexcept;
    ImageStore(const ImageStore&) = delete;
    ImageStore& operator=(const ImageStore&) = delete;
    ~ImageStore();

    /// Resolves `reference` (search registries for unqualified names) and makes it local.
    [[nodiscard]] BoxliteResult<ImageInfo> pull(std::string_view reference, const PullOptions& options = {});
    /// Every stored reference, newest first.
    [[nodiscard]] BoxliteResult<std::vector<ImageInfo>> list();
    /// A stored image by reference, by manifest digest, or by (a prefix of) its id; never uses the
    /// network. Image error "image 'x' is not in the local store" when absent.
    [[nodiscard]] BoxliteResult<ImageInfo> inspect(std::string_view reference_or_id);
    /// Forgets a reference; its blobs stay until gc(). When it is the last reference to an image
    /// that boxes hold a lease on, InvalidState names those boxes, unless `force` (the boxes keep
    /// their image either way: a lease keeps its content until released).
    [[nodiscard]] BoxliteResult<void> remove(std::string_view reference, bool force = false);
    /// Deletes blobs, rootfs trees and ext4 images that no stored reference and no lease uses.
    [[nodiscard]] BoxliteResult<GcReport> gc(const GcOptions& options = {});

    /// prepare() on behalf of a box, which then holds a lease on that image: the first call
    /// resolves `reference` (pulling per `options`) and pins the manifest digest to `holder`;
    /// later calls for the same holder use the pinned image, without the network, even after
    /// its tag has moved or been removed. gc() keeps leased images.
    [[nodiscard]] BoxliteResult<PreparedImage> prepare_for(std::string_view holder, std::string_view reference,
                                                           RootfsKind kind, const PullOptions& options = {});
    /// The box is gone: its image may be collected once no reference or other lease uses it.
    [[nodiscard]] BoxliteResult<void> release(std::string_view holder);
    /// Every lease, oldest first.
    [[nodiscard]] BoxliteResult<std::vector<ImageLease>> leases();

    /// Imports an OCI image layout directory, an OCI layout tarball, or a `docker save` tarball.
    /// `reference` names the image when there is exactly one; otherwise each image keeps the name
    /// in its annotation / RepoTags (a bare tag becomes "localhost/<dir name>:<tag>").
    [[nodiscard]] BoxliteResult<std::vector<ImageInfo>> load(const std::filesystem::path& path,
                                                             std::optional<std::string> reference = {});

    /// The unpacked, shared, read-only tree of `image`; built once (unpack to a temporary directory,
    /// then rename), reused afterwards.
    [[nodiscard]] BoxliteResult<std::filesystem::path> rootfs_directory(const ImageInfo& image);
    /// A raw ext4 image of that tree (mke2fs -d); built once, reused afterwards.
    [[nodiscard]] BoxliteResult<std::filesystem::path> disk_image(const ImageInfo& image);

    /// pull (per options) + rootfs_directory or disk_image: what a runtime needs to start a box.
    [[nodiscard]] BoxliteResult<PreparedImage> prepare(std::string_view reference, RootfsKind kind,
                                                       const PullOptions& options = {});

    [[nodiscard]] const ImageStoreOptions& options() const noexcept;
    [[nodiscard]] std::filesystem::path images_dir() const;

    struct Impl;

private:
    explicit ImageStore(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace boxlite::image
