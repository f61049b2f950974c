// ImageStore: the OCI layout, images.db, pulls, imports and box roots. See image_store.hpp.
// This file: opening the store, blobs and locks, pulls from registries, prepare. The SQL catalog
// is in catalog.cpp, box roots in disk_build.cpp, load() in load.cpp (store_impl.hpp).
#include "store_impl.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <random>
#include <thread>

namespace boxlite::image {

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_suffix() {
    std::random_device random;
    return fmt::format("{}-{:08x}", ::getpid(), random());
}

bool ImageStore::Impl::has_blob(std::string_view digest) const {
    struct stat st {};
    return ::stat(blob_path(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

BoxliteResult<base::FileLock> ImageStore::Impl::named_lock(std::string_view kind, std::string_view key) {
    return base::FileLock::acquire(locks /
                                       fmt::format("{}-{}.lock", kind, digest_hex(sha256_digest(key)).substr(0, 32)),
                                   base::FileLock::Mode::Exclusive);
}

BoxliteResult<void> ImageStore::Impl::write_blob(std::string_view digest, std::string_view data) {
    if (sha256_digest(data) != digest) {
        return fail(ErrorKind::Image, "refusing to store blob: content does not match digest {}", digest);
    }
    if (has_blob(digest)) return {};
    return write_file_atomic(blob_path(digest), data);
}

BoxliteResult<std::pair<std::string, std::uint64_t>> ImageStore::Impl::import_blob_file(
    const fs::path& source, std::optional<std::string_view> expected) {
    const int in = ::open(source.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (in < 0) return fail_errno(ErrorKind::Storage, fmt::format("opening {}", source.string()), errno);
    const auto temp = tmp / fmt::format("import-{}", random_suffix());
    const int out = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        ::close(in);
        return fail_errno(ErrorKind::Storage, fmt::format("creating {}", temp.string()), errno);
    }
    Sha256 hash;
    std::uint64_t size = 0;
    std::vector<char> buffer(1 << 17);
    bool ok = true;
    while (ok) {
        const auto n = ::read(in, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) ok = false;
        if (n <= 0) break;
        hash.update(buffer.data(), static_cast<std::size_t>(n));
        size += static_cast<std::uint64_t>(n);
        if (size > options.registry.max_layer_bytes) ok = false;
        for (std::size_t done = 0; ok && done < static_cast<std::size_t>(n);) {
            const auto w = ::write(out, buffer.data() + done, static_cast<std::size_t>(n) - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) ok = false;
            else done += static_cast<std::size_t>(w);
        }
    }
    ::close(in);
    if (::fsync(out) != 0) ok = false;
    ::close(out);
    const auto digest = hash.finish();
    if (!ok) {
        ::unlink(temp.c_str());
        return fail(ErrorKind::Storage, "copying {} into the image store failed (or it exceeds {} bytes)",
                    source.string(), options.registry.max_layer_bytes);
    }
    if (expected && digest != *expected) {
        ::unlink(temp.c_str());
        return fail(ErrorKind::Image, "digest mismatch for {}: expected {}, content has digest {}", source.string(),
                    *expected, digest);
    }
    if (has_blob(digest)) {
        ::unlink(temp.c_str());
    } else if (::rename(temp.c_str(), blob_path(digest).c_str()) != 0) {
        const int saved = errno;
        ::unlink(temp.c_str());
        return fail_errno(ErrorKind::Storage, "storing blob " + digest, saved);
    }
    return std::pair{digest, size};
}

BoxliteResult<ImageInfo> ImageStore::Impl::pull_from_registry(const ImageReference& ref, const Platform& platform,
                                                              const PullProgressCallback& progress, bool* not_found) {
    RegistryClient client(options.registry, ref);
    BOXLITE_TRY(auto top, client.fetch_manifest(ref.manifest_reference(), not_found));
    BOXLITE_TRY(auto doc, parse_manifest_document(top.body, top.content_type));
    std::string index_digest;
    FetchedManifest fetched = top;
    if (auto* index = std::get_if<Index>(&doc)) {
        BOXLITE_TRY(auto chosen, select_platform(*index, platform, "image " + ref.to_string()));
        BOXLITE_TRY_VOID(write_blob(top.digest, top.body));
        index_digest = top.digest;
        BOXLITE_TRY(fetched, client.fetch_manifest(chosen.digest));
        if (fetched.body.size() != chosen.size) {
            return fail(ErrorKind::Image, "manifest {} is {} bytes but its index entry says {}", chosen.digest,
                        fetched.body.size(), chosen.size);
        }
        BOXLITE_TRY(doc, parse_manifest_document(fetched.body, fetched.content_type));
        if (!std::holds_alternative<Manifest>(doc)) {
            return fail(ErrorKind::Image,
                        "image {}: index entry {} is itself an index (nested indexes are not supported)",
                        ref.to_string(), chosen.digest);
        }
    }
    const auto& manifest = std::get<Manifest>(doc);
    BOXLITE_TRY_VOID(write_blob(fetched.digest, fetched.body));
    if (!has_blob(manifest.config.digest)) {
        BOXLITE_TRY(auto config, client.fetch_blob(manifest.config, options.registry.max_json_bytes));
        BOXLITE_TRY_VOID(parse_image_config(config));
        BOXLITE_TRY_VOID(write_blob(manifest.config.digest, config));
    }
    BOXLITE_TRY_VOID(download_layers(client, manifest, progress));
    const std::string key = ref.to_string();
    BOXLITE_TRY_VOID(record(key, fetched.digest, manifest, fetched.body.size(), index_digest));
    BOXLITE_TRY(auto info, load_info(key));
    if (!info) return fail(ErrorKind::Internal, "image {} vanished from the store right after the pull", key);
    return std::move(*info);
}

BoxliteResult<void> ImageStore::Impl::download_layers(RegistryClient& client, const Manifest& manifest,
                                                      const PullProgressCallback& progress) {
    std::mutex progress_mutex;
    auto report = [&](std::size_t i, std::uint64_t current, LayerPhase phase) {
        if (!progress) return;
        std::lock_guard lock(progress_mutex);
        progress(LayerProgress{manifest.layers[i].digest, i, manifest.layers.size(), current, manifest.layers[i].size,
                               phase});
    };
    for (std::size_t i = 0; i < manifest.layers.size(); ++i) {
        report(i, 0, has_blob(manifest.layers[i].digest) ? LayerPhase::AlreadyExists : LayerPhase::Waiting);
    }
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex error_mutex;
    std::optional<BoxliteError> first_error;
    auto worker = [&] {
        while (!failed) {
            const std::size_t i = next++;
            if (i >= manifest.layers.size()) return;
            const auto& layer = manifest.layers[i];
            if (has_blob(layer.digest)) continue;
            auto result = [&]() -> BoxliteResult<void> {
                BOXLITE_TRY(auto lock, named_lock("blob", layer.digest));
                if (has_blob(layer.digest)) {
                    report(i, layer.size, LayerPhase::AlreadyExists);
                    return {};
                }
                const auto partial = tmp / fmt::format("{}.partial", digest_hex(layer.digest));
                BOXLITE_TRY_VOID(client.download_blob(layer, partial, [&](std::uint64_t current, std::uint64_t) {
                    report(i, current, LayerPhase::Downloading);
                }));
                report(i, layer.size, LayerPhase::Verifying);
                if (::rename(partial.c_str(), blob_path(layer.digest).c_str()) != 0) {
                    return fail_errno(ErrorKind::Storage, "storing layer " + layer.digest, errno);
                }
                report(i, layer.size, LayerPhase::Complete);
                return {};
            }();
            if (!result) {
                std::lock_guard lock(error_mutex);
                if (!first_error) first_error = result.error();
                failed = true;
            }
        }
    };
    const auto missing = static_cast<std::size_t>(
        std::count_if(manifest.layers.begin(), manifest.layers.end(),
                      [&](const Descriptor& d) { return !has_blob(d.digest); }));
    const std::size_t threads = std::min<std::size_t>(std::max(1u, options.registry.max_parallel_downloads), missing);
    std::vector<std::thread> pool;
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (auto& thread : pool) thread.join();
    if (first_error) return fail(*first_error);
    return {};
}

BoxliteResult<PullOutcome> ImageStore::Impl::pull(std::string_view text, const PullOptions& pull_options) {
    BOXLITE_TRY(auto candidates, candidate_references(text, options.registry.search_registries));
    if (pull_options.policy != PullPolicy::Always) {
        BOXLITE_TRY(auto local, find_local(candidates));
        if (local) return PullOutcome{std::move(*local), false};
        if (pull_options.policy == PullPolicy::Never) {
            return fail(ErrorKind::Image, "image '{}' is not in the local store (pull policy is never)", text);
        }
    }
    BOXLITE_TRY(auto store_lock_held, store_lock(base::FileLock::Mode::Shared));
    const Platform platform = pull_options.platform.value_or(options.registry.platform);
    std::optional<BoxliteError> last_not_found;
    for (const auto& candidate : candidates) {
        // Two processes pulling the same reference: the second waits here, then finds it stored.
        BOXLITE_TRY(auto lock, named_lock("ref", candidate.to_string()));
        if (pull_options.policy == PullPolicy::IfMissing) {
            BOXLITE_TRY(auto local, find_local({candidate}));
            if (local) return PullOutcome{std::move(*local), false};
        }
        bool not_found = false;
        auto result = pull_from_registry(candidate, platform, pull_options.progress, &not_found);
        if (result) return PullOutcome{std::move(*result), true};
        if (!not_found || candidates.size() == 1) return fail(result.error());
        last_not_found = result.error();
    }
    std::string tried;
    for (const auto& c : candidates) tried += (tried.empty() ? "" : ", ") + c.registry;
    return fail(ErrorKind::Image, "image '{}' not found in any registry searched ({}); last answer: {}", text, tried,
                last_not_found ? last_not_found->message() : std::string("none"));
}

BoxliteResult<ImageStore> ImageStore::open(ImageStoreOptions options) {
    for (const auto* list : {&options.registry.search_registries, &options.registry.insecure_registries}) {
        for (const auto& registry : *list) {
            if (!is_valid_registry_host(registry)) {
                return fail(ErrorKind::Config,
                            "{} registry '{}' is not a valid host[:port] (e.g. registry.local:5000, "
                            "without a scheme or path)",
                            list == &options.registry.search_registries ? "search" : "insecure",
                            registry.substr(0, 200));
            }
        }
    }
    auto impl = std::make_unique<Impl>();
    impl->images = options.home / "images";
    impl->blobs = impl->images / "blobs" / "sha256";
    impl->tmp = impl->images / "tmp";
    impl->locks = impl->images / "locks";
    impl->rootfs = impl->images / "rootfs";
    impl->disks = impl->images / "disk-images";
    impl->db_path = options.home / "db" / "images.db";
    impl->options = std::move(options);
    std::error_code ec;
    for (const auto& dir :
         {impl->blobs, impl->tmp, impl->locks, impl->rootfs, impl->disks, impl->db_path.parent_path()}) {
        fs::create_directories(dir, ec);
        if (ec) return fail(ErrorKind::Storage, "creating {}: {}", dir.string(), ec.message());
    }
    if (!fs::exists(impl->images / "oci-layout", ec)) {
        BOXLITE_TRY_VOID(write_file_atomic(impl->images / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})"));
    }
    BOXLITE_TRY_VOID(impl->open_database());
    return ImageStore(std::move(impl));
}

ImageStore::ImageStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImageStore::ImageStore(ImageStore&&) noexcept = default;
ImageStore& ImageStore::operator=(ImageStore&&) noexcept = default;
ImageStore::~ImageStore() = default;

const ImageStoreOptions& ImageStore::options() const noexcept { return impl_->options; }
fs::path ImageStore::images_dir() const { return impl_->images; }

BoxliteResult<ImageInfo> ImageStore::pull(std::string_view reference, const PullOptions& options) {
    BOXLITE_TRY(auto outcome, impl_->pull(reference, options));
    return std::move(outcome.info);
}

BoxliteResult<PreparedImage> ImageStore::prepare_for(std::string_view holder, std::string_view reference,
                                                     RootfsKind kind, const PullOptions& options) {
    using Clock = std::chrono::steady_clock;
    if (holder.empty() || holder.size() > 256) {
        return fail(ErrorKind::InvalidArgument, "an image lease needs a holder id of 1 to 256 characters");
    }
    std::optional<std::string> pinned;
    {
        std::lock_guard lock(impl_->db_mutex);
        Statement q(impl_->db, "SELECT manifest_digest FROM leases WHERE holder = ?");
        q.bind(1, holder);
        BOXLITE_TRY(const bool row, q.step());
        if (row) pinned = q.text(0);
    }
    if (!pinned) {
        BOXLITE_TRY(auto out, prepare(reference, kind, options));
        std::lock_guard lock(impl_->db_mutex);
        Statement insert(impl_->db,
                         "INSERT OR REPLACE INTO leases(holder, manifest_digest, reference, created_at) "
                         "VALUES(?, ?, ?, ?)");
        insert.bind(1, holder).bind(2, out.image.manifest_digest).bind(3, reference).bind(4, unix_now());
        BOXLITE_TRY_VOID(insert.run());
        return out;
    }
    // The pinned image: its manifest, config and layers stay in the store while the lease does.
    BOXLITE_TRY(auto shared, impl_->store_lock(base::FileLock::Mode::Shared));
    BOXLITE_TRY(auto info, impl_->load_manifest_info(*pinned));
    if (!info) {
        return fail(ErrorKind::Image, "image {} that box {} was created from ('{}') is no longer in the store", *pinned,
                    holder, reference);
    }
    info->reference = std::string(reference);
    PreparedImage out;
    out.kind = kind;
    out.image = std::move(*info);
    const auto t0 = Clock::now();
    BOXLITE_TRY(auto built,
                kind == RootfsKind::Directory ? impl_->build_rootfs(out.image) : impl_->build_disk(out.image));
    out.path = built.first;
    if (built.second) out.build_time = Clock::now() - t0;
    return out;
}

BoxliteResult<PreparedImage> ImageStore::prepare(std::string_view reference, RootfsKind kind,
                                                 const PullOptions& options) {
    using Clock = std::chrono::steady_clock;
    PreparedImage out;
    out.kind = kind;
    const auto t0 = Clock::now();
    BOXLITE_TRY(auto outcome, impl_->pull(reference, options));
    const auto t1 = Clock::now();
    out.pulled = outcome.contacted_registry;
    out.pull_time = t1 - t0;
    out.image = std::move(outcome.info);
    BOXLITE_TRY(auto built,
                kind == RootfsKind::Directory ? impl_->build_rootfs(out.image) : impl_->build_disk(out.image));
    out.path = built.first;
    if (built.second) out.build_time = Clock::now() - t1;
    return out;
}

}  // namespace boxlite::image
