// ImageStore: the OCI layout, images.db, pulls, imports and box roots. See image_store.hpp.
#include <boxlite/image/image_store.hpp>
#include <boxlite/image/reference.hpp>

#include "digest.hpp"
#include "oci.hpp"
#include "registry_client.hpp"
#include "store_util.hpp"
#include "unpack.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace boxlite::image {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS manifests(
    digest TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    config_digest TEXT NOT NULL,
    config_size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS manifest_layers(
    manifest_digest TEXT NOT NULL,
    position INTEGER NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY(manifest_digest, position)
);
CREATE TABLE IF NOT EXISTS images(
    reference TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    index_digest TEXT NOT NULL DEFAULT '',
    stored_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_manifest ON images(manifest_digest);
CREATE TABLE IF NOT EXISTS leases(
    holder TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    reference TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_manifest ON leases(manifest_digest);
)sql";

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_suffix() {
    std::random_device random;
    return fmt::format("{}-{:08x}", ::getpid(), random());
}

// A name for images that came without one: lower-case [a-z0-9-] of the file or directory name.
std::string sanitize_name(std::string_view text) {
    std::string out;
    for (char c : text) {
        const auto u = static_cast<unsigned char>(c);
        if (std::isalnum(u)) out += static_cast<char>(std::tolower(u));
        else if (!out.empty() && out.back() != '-') out += '-';
    }
    while (!out.empty() && out.back() == '-') out.pop_back();
    return out.empty() ? std::string("image") : out;
}

struct PullOutcome {
    ImageInfo info;
    bool contacted_registry = false;
};

}  // namespace

struct ImageStore::Impl {
    ImageStoreOptions options;
    fs::path images, blobs, tmp, locks, rootfs, disks, db_path;
    sqlite3* db = nullptr;
    std::mutex db_mutex;  // one connection shared by this process's threads

    ~Impl() {
        if (db != nullptr) sqlite3_close(db);
    }

    fs::path blob_path(std::string_view digest) const { return blobs / std::string(digest_hex(digest)); }
    bool has_blob(std::string_view digest) const {
        struct stat st {};
        return ::stat(blob_path(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
    }

    BoxliteResult<FileLock> store_lock(FileLock::Mode mode) { return FileLock::acquire(images / ".lock", mode); }
    BoxliteResult<FileLock> named_lock(std::string_view kind, std::string_view key) {
        return FileLock::acquire(locks / fmt::format("{}-{}.lock", kind, digest_hex(sha256_digest(key)).substr(0, 32)),
                                 FileLock::Mode::Exclusive);
    }

    BoxliteResult<void> write_blob(std::string_view digest, std::string_view data) {
        if (sha256_digest(data) != digest) {
            return fail(ErrorKind::Image, "refusing to store blob: content does not match digest {}", digest);
        }
        if (has_blob(digest)) return {};
        return write_file_atomic(blob_path(digest), data);
    }

    // Copies a file into the store while hashing it; returns its digest and size.
    BoxliteResult<std::pair<std::string, std::uint64_t>> import_blob_file(const fs::path& source,
                                                                          std::optional<std::string_view> expected) {
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

    BoxliteResult<void> record(const std::string& reference, const std::string& manifest_digest, const Manifest& manifest,
                               std::uint64_t manifest_size, const std::string& index_digest) {
        {
            std::lock_guard lock(db_mutex);
            BOXLITE_TRY_VOID(sql_exec(db, "BEGIN IMMEDIATE"));
            auto body = [&]() -> BoxliteResult<void> {
                Statement m(db, "INSERT OR IGNORE INTO manifests(digest, media_type, size, config_digest, config_size) "
                                "VALUES(?,?,?,?,?)");
                m.bind(1, manifest_digest).bind(2, manifest.media_type).bind(3, static_cast<std::int64_t>(manifest_size));
                m.bind(4, manifest.config.digest).bind(5, static_cast<std::int64_t>(manifest.config.size));
                BOXLITE_TRY_VOID(m.run());
                for (std::size_t i = 0; i < manifest.layers.size(); ++i) {
                    Statement l(db, "INSERT OR IGNORE INTO manifest_layers(manifest_digest, position, digest, media_type, "
                                    "size) VALUES(?,?,?,?,?)");
                    l.bind(1, manifest_digest).bind(2, static_cast<std::int64_t>(i)).bind(3, manifest.layers[i].digest);
                    l.bind(4, manifest.layers[i].media_type).bind(5, static_cast<std::int64_t>(manifest.layers[i].size));
                    BOXLITE_TRY_VOID(l.run());
                }
                Statement r(db, "INSERT OR REPLACE INTO images(reference, manifest_digest, index_digest, stored_at) "
                                "VALUES(?,?,?,?)");
                r.bind(1, reference).bind(2, manifest_digest).bind(3, index_digest).bind(4, unix_now());
                return r.run();
            }();
            if (!body) {
                (void)sql_exec(db, "ROLLBACK");
                return fail(body.error());
            }
            BOXLITE_TRY_VOID(sql_exec(db, "COMMIT"));
        }
        return write_index_json();
    }

    BoxliteResult<std::optional<ImageInfo>> load_info(const std::string& reference) {
        std::string manifest_digest, index_digest;
        std::int64_t stored_at = 0;
        {
            std::lock_guard lock(db_mutex);
            Statement q(db, "SELECT manifest_digest, index_digest, stored_at FROM images WHERE reference = ?");
            q.bind(1, reference);
            BOXLITE_TRY(const bool row, q.step());
            if (!row) return std::optional<ImageInfo>{};
            manifest_digest = q.text(0);
            index_digest = q.text(1);
            stored_at = q.integer(2);
        }
        BOXLITE_TRY(auto info, load_manifest_info(manifest_digest));
        if (!info) return std::optional<ImageInfo>{};
        info->reference = reference;
        info->index_digest = index_digest;
        info->stored_at = stored_at;
        return info;
    }

    // The manifest's record, when it and every blob it names are in the store.
    BoxliteResult<std::optional<ImageInfo>> load_manifest_info(const std::string& manifest_digest) {
        ImageInfo info;
        info.manifest_digest = manifest_digest;
        std::uint64_t config_size = 0;
        {
            std::lock_guard lock(db_mutex);
            Statement m(db, "SELECT media_type, size, config_digest, config_size FROM manifests WHERE digest = ?");
            m.bind(1, manifest_digest);
            BOXLITE_TRY(const bool row, m.step());
            if (!row) return std::optional<ImageInfo>{};
            info.media_type = m.text(0);
            info.size = static_cast<std::uint64_t>(m.integer(1));
            info.config_digest = m.text(2);
            config_size = static_cast<std::uint64_t>(m.integer(3));
            Statement l(db, "SELECT digest, media_type, size FROM manifest_layers WHERE manifest_digest = ? ORDER BY position");
            l.bind(1, manifest_digest);
            while (true) {
                BOXLITE_TRY(const bool more, l.step());
                if (!more) break;
                info.layers.push_back({l.text(0), l.text(1), static_cast<std::uint64_t>(l.integer(2))});
            }
        }
        info.size += config_size;
        for (const auto& layer : info.layers) {
            info.size += layer.size;
            if (!has_blob(layer.digest)) return std::optional<ImageInfo>{};
        }
        if (!has_blob(manifest_digest) || !has_blob(info.config_digest)) return std::optional<ImageInfo>{};
        BOXLITE_TRY(auto config_text, read_file_bounded(blob_path(info.config_digest), options.registry.max_json_bytes));
        BOXLITE_TRY(info.config, parse_image_config(config_text));
        return std::optional<ImageInfo>{std::move(info)};
    }

    // index.json mirrors images.db so that skopeo / umoci can read the store as an OCI layout.
    BoxliteResult<void> write_index_json() {
        BOXLITE_TRY(auto lock, FileLock::acquire(locks / "index.lock", FileLock::Mode::Exclusive));
        nlohmann::json manifests = nlohmann::json::array();
        {
            std::lock_guard db_lock(db_mutex);
            Statement q(db, "SELECT i.reference, i.manifest_digest, m.media_type, m.size FROM images i JOIN manifests m "
                            "ON m.digest = i.manifest_digest ORDER BY i.reference");
            while (true) {
                BOXLITE_TRY(const bool row, q.step());
                if (!row) break;
                // The full reference in both: a bare tag would make two images tagged "latest"
                // ambiguous for `skopeo … oci:<home>/images:<name>`.
                const auto reference = q.text(0);
                nlohmann::json annotations{{"io.containerd.image.name", reference},
                                           {"org.opencontainers.image.ref.name", reference}};
                manifests.push_back({{"mediaType", q.text(2)},
                                     {"digest", q.text(1)},
                                     {"size", q.integer(3)},
                                     {"annotations", annotations}});
            }
        }
        nlohmann::json index{{"schemaVersion", 2}, {"mediaType", media_type::kOciIndex}, {"manifests", manifests}};
        return write_file_atomic(images / "index.json", index.dump(2));
    }

    BoxliteResult<std::optional<ImageInfo>> find_local(const std::vector<ImageReference>& candidates) {
        for (const auto& candidate : candidates) {
            BOXLITE_TRY(auto info, load_info(candidate.to_string()));
            if (info) return info;
            // Pinned by digest and already stored under another name: no network needed.
            if (candidate.digest) {
                BOXLITE_TRY(auto by_digest, load_manifest_info(*candidate.digest));
                if (by_digest) {
                    BOXLITE_TRY(auto manifest_text,
                                read_file_bounded(blob_path(*candidate.digest), options.registry.max_manifest_bytes));
                    BOXLITE_TRY(auto doc, parse_manifest_document(manifest_text));
                    if (auto* m = std::get_if<Manifest>(&doc)) {
                        BOXLITE_TRY_VOID(record(candidate.to_string(), *candidate.digest, *m, manifest_text.size(), ""));
                        BOXLITE_TRY(auto stored, load_info(candidate.to_string()));
                        if (stored) return stored;
                    }
                }
            }
        }
        return std::optional<ImageInfo>{};
    }

    BoxliteResult<ImageInfo> pull_from_registry(const ImageReference& ref, const Platform& platform,
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
                return fail(ErrorKind::Image, "image {}: index entry {} is itself an index (nested indexes are not supported)",
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

    BoxliteResult<void> download_layers(RegistryClient& client, const Manifest& manifest,
                                        const PullProgressCallback& progress) {
        std::mutex progress_mutex;
        auto report = [&](std::size_t i, std::uint64_t current, LayerPhase phase) {
            if (!progress) return;
            std::lock_guard lock(progress_mutex);
            progress(LayerProgress{manifest.layers[i].digest, i, manifest.layers.size(), current,
                                   manifest.layers[i].size, phase});
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
        const auto missing = static_cast<std::size_t>(std::count_if(
            manifest.layers.begin(), manifest.layers.end(), [&](const Descriptor& d) { return !has_blob(d.digest); }));
        const std::size_t threads = std::min<std::size_t>(std::max(1u, options.registry.max_parallel_downloads), missing);
        std::vector<std::thread> pool;
        for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
        worker();
        for (auto& thread : pool) thread.join();
        if (first_error) return fail(*first_error);
        return {};
    }

    BoxliteResult<PullOutcome> pull(std::string_view text, const PullOptions& pull_options) {
        BOXLITE_TRY(auto candidates, candidate_references(text, options.registry.search_registries));
        if (pull_options.policy != PullPolicy::Always) {
            BOXLITE_TRY(auto local, find_local(candidates));
            if (local) return PullOutcome{std::move(*local), false};
            if (pull_options.policy == PullPolicy::Never) {
                return fail(ErrorKind::Image, "image '{}' is not in the local store (pull policy is never)", text);
            }
        }
        BOXLITE_TRY(auto store_lock_held, store_lock(FileLock::Mode::Shared));
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

    BoxliteResult<std::pair<fs::path, bool>> build_rootfs(const ImageInfo& image) {
        const auto target = rootfs / std::string(digest_hex(image.manifest_digest));
        struct stat st {};
        if (::lstat(target.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return std::pair{target, false};
        BOXLITE_TRY(auto shared, store_lock(FileLock::Mode::Shared));
        BOXLITE_TRY(auto lock, named_lock("rootfs", image.manifest_digest));
        if (::lstat(target.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return std::pair{target, false};
        std::vector<fs::path> layers;
        for (const auto& layer : image.layers) {
            if (!has_blob(layer.digest)) {
                return fail(ErrorKind::Image, "image {}: layer {} is missing from the store (pull it again)",
                            image.reference, layer.digest);
            }
            layers.push_back(blob_path(layer.digest));
        }
        auto unpacked = unpack_image(layers, target, options.unpack);
        if (!unpacked) return fail(unpacked.error().with_context(fmt::format("unpacking image {}", image.reference)));
        return std::pair{target, true};
    }

    // mke2fs -d copies owners and modes from the tree. A tree unpacked by a non-root user (VM
    // engines need only /dev/kvm) has that user as every owner, setuid binaries included, and
    // directories widened by u+rwx; the disk must hold what the layers declare, so those inodes
    // are rewritten with debugfs. Its top directory tells who unpacked the tree.
    BoxliteResult<void> correct_disk_ownership(const ImageInfo& image, const fs::path& tree, const fs::path& disk) {
        struct stat top {};
        if (::lstat(tree.c_str(), &top) != 0) return fail_errno(ErrorKind::Storage, "stat " + tree.string(), errno);
        if (top.st_uid == 0) return {};
        std::vector<fs::path> layers;
        for (const auto& layer : image.layers) layers.push_back(blob_path(layer.digest));
        BOXLITE_TRY(const auto declared, declared_ownership(layers, options.unpack));

        std::string script;
        std::string unquotable;
        auto correct = [&](const std::string& relative, const struct stat& st, const DeclaredOwnership& want) {
            std::string commands;
            std::string quoted = "\"/";
            for (char c : relative) {
                if (c == '"') quoted += '"';  // debugfs reads "" inside quotes as one quote
                quoted += c;
            }
            quoted += '"';
            if (st.st_uid != want.uid) commands += fmt::format("sif {} uid {}\n", quoted, want.uid);
            if (st.st_gid != want.gid) commands += fmt::format("sif {} gid {}\n", quoted, want.gid);
            if (!S_ISLNK(st.st_mode) && (st.st_mode & 07777) != want.mode) {
                commands += fmt::format("sif {} mode 0{:o}\n", quoted, (st.st_mode & S_IFMT) | want.mode);
            }
            if (commands.empty()) return;
            if (relative.find_first_of("\n\r") != std::string::npos) {
                if (unquotable.empty()) unquotable = relative;
                return;
            }
            script += commands;
        };
        // Directories no layer lists were created by unpack, as root would have: 0:0, 0755.
        const DeclaredOwnership implicit_dir{0, 0, 0755};
        correct("", top, implicit_dir);
        std::error_code ec;
        for (auto it = fs::recursive_directory_iterator(tree, fs::directory_options::none, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
            struct stat st {};
            if (::lstat(it->path().c_str(), &st) != 0) continue;
            const auto relative = it->path().lexically_relative(tree).string();
            if (const auto found = declared.find(relative); found != declared.end()) {
                correct(relative, st, found->second);
            } else if (S_ISDIR(st.st_mode)) {
                correct(relative, st, implicit_dir);
            }
        }
        if (ec) return fail(ErrorKind::Storage, "walking {}: {}", tree.string(), ec.message());
        if (!unquotable.empty()) {
            return fail(ErrorKind::Image,
                        "image {}: the path '{}' has a line break, which debugfs cannot address; build the disk as "
                        "root (then no correction is needed)",
                        image.reference, unquotable);
        }
        if (script.empty()) return {};
        const auto script_path = fs::path(disk.string() + ".debugfs");
        BOXLITE_TRY_VOID(write_file_atomic(script_path, script));
        std::string diagnostics;
        auto ran = run_program({"debugfs", "-w", "-f", script_path.string(), disk.string()}, ErrorKind::Storage,
                               &diagnostics);
        ::unlink(script_path.c_str());
        BOXLITE_TRY_VOID(ran);
        // debugfs exits 0 whatever its commands did; anything on stderr but its banner is a failure.
        std::string errors;
        std::size_t start = 0;
        while (start < diagnostics.size()) {
            auto end = diagnostics.find('\n', start);
            if (end == std::string::npos) end = diagnostics.size();
            const auto line = diagnostics.substr(start, end - start);
            if (!line.empty() && !line.starts_with("debugfs ")) errors += (errors.empty() ? "" : "; ") + line;
            start = end + 1;
        }
        if (!errors.empty()) {
            return fail(ErrorKind::Storage, "setting the owners and modes the layers declare in {} with debugfs: {}",
                        disk.string(), errors.substr(0, 1000));
        }
        return {};
    }

    BoxliteResult<std::pair<fs::path, bool>> build_disk(const ImageInfo& image) {
        const auto target = disks / fmt::format("{}.ext4", digest_hex(image.manifest_digest));
        struct stat st {};
        if (::lstat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return std::pair{target, false};
        BOXLITE_TRY(auto tree, build_rootfs(image));
        BOXLITE_TRY(auto shared, store_lock(FileLock::Mode::Shared));
        BOXLITE_TRY(auto lock, named_lock("disk", image.manifest_digest));
        if (::lstat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return std::pair{target, false};

        // Size: what the tree occupies, plus room for ext4's metadata and the journal.
        std::uint64_t bytes = 0;
        std::uint64_t inodes = 0;
        std::error_code ec;
        for (auto it = fs::recursive_directory_iterator(tree.first, fs::directory_options::none, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
            struct stat entry {};
            if (::lstat(it->path().c_str(), &entry) != 0) continue;
            ++inodes;
            bytes += static_cast<std::uint64_t>(entry.st_blocks) * 512 + 4096;
        }
        if (ec) return fail(ErrorKind::Storage, "walking {}: {}", tree.first.string(), ec.message());
        const std::uint64_t mib = 1ull << 20;
        std::uint64_t size = bytes + bytes / 4 + inodes * 256 + 48 * mib;
        size = (size + mib - 1) / mib * mib;
        const std::uint64_t inode_count = inodes + inodes / 4 + 4096;

        const auto temp = disks / fmt::format(".tmp-{}-{}.ext4", digest_hex(image.manifest_digest).substr(0, 16), random_suffix());
        auto built = run_program({"mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-N",
                                  std::to_string(inode_count), "-L", "boxlite-rootfs", "-d", tree.first.string(),
                                  temp.string(), fmt::format("{}k", size / 1024)},
                                 ErrorKind::Storage);
        if (built) built = correct_disk_ownership(image, tree.first, temp);
        if (!built) {
            ::unlink(temp.c_str());
            return fail(built.error().with_context(fmt::format("building the ext4 disk of image {}", image.reference)));
        }
        if (::rename(temp.c_str(), target.c_str()) != 0) {
            const int saved = errno;
            ::unlink(temp.c_str());
            return fail_errno(ErrorKind::Storage, "renaming into " + target.string(), saved);
        }
        return std::pair{target, true};
    }
};

BoxliteResult<ImageStore> ImageStore::open(ImageStoreOptions options) {
    for (const auto* list : {&options.registry.search_registries, &options.registry.insecure_registries}) {
        for (const auto& registry : *list) {
            if (!is_valid_registry_host(registry)) {
                return fail(ErrorKind::Config, "{} registry '{}' is not a valid host[:port] (e.g. registry.local:5000, "
                            "without a scheme or path)",
                            list == &options.registry.search_registries ? "search" : "insecure", registry.substr(0, 200));
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
    for (const auto& dir : {impl->blobs, impl->tmp, impl->locks, impl->rootfs, impl->disks, impl->db_path.parent_path()}) {
        fs::create_directories(dir, ec);
        if (ec) return fail(ErrorKind::Storage, "creating {}: {}", dir.string(), ec.message());
    }
    if (!fs::exists(impl->images / "oci-layout", ec)) {
        BOXLITE_TRY_VOID(write_file_atomic(impl->images / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})"));
    }
    if (sqlite3_open_v2(impl->db_path.c_str(), &impl->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
        return fail(ErrorKind::Database, "opening {}: {}", impl->db_path.string(),
                    impl->db != nullptr ? sqlite3_errmsg(impl->db) : "out of memory");
    }
    sqlite3_busy_timeout(impl->db, 30000);
    // Switching a new database to WAL and creating its schema are not covered by SQLite's busy
    // handler when two processes do it at once ("database is locked"), so opening is serialised.
    BOXLITE_TRY(auto opening, FileLock::acquire(impl->locks / "open.lock", FileLock::Mode::Exclusive));
    BOXLITE_TRY_VOID(sql_exec(impl->db, "PRAGMA journal_mode=WAL"));
    BOXLITE_TRY_VOID(sql_exec(impl->db, kSchema));
    if (!fs::exists(impl->images / "index.json", ec)) BOXLITE_TRY_VOID(impl->write_index_json());
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

BoxliteResult<std::vector<ImageInfo>> ImageStore::list() {
    std::vector<std::string> references;
    {
        std::lock_guard lock(impl_->db_mutex);
        Statement q(impl_->db, "SELECT reference FROM images ORDER BY stored_at DESC, reference");
        while (true) {
            BOXLITE_TRY(const bool row, q.step());
            if (!row) break;
            references.push_back(q.text(0));
        }
    }
    std::vector<ImageInfo> out;
    for (const auto& reference : references) {
        BOXLITE_TRY(auto info, impl_->load_info(reference));
        if (info) out.push_back(std::move(*info));
    }
    return out;
}

BoxliteResult<ImageInfo> ImageStore::inspect(std::string_view text) {
    if (auto candidates = candidate_references(text, impl_->options.registry.search_registries)) {
        for (const auto& candidate : *candidates) {
            BOXLITE_TRY(auto info, impl_->load_info(candidate.to_string()));
            if (info) return std::move(*info);
        }
    }
    // By manifest digest or by (a prefix of) the image id, as `docker image inspect` accepts.
    std::string needle(text);
    if (needle.starts_with("sha256:")) needle = needle.substr(7);
    const bool hex = needle.size() >= 4 && needle.size() <= 64 &&
                     std::all_of(needle.begin(), needle.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
    if (hex) {
        std::set<std::string> matches;
        std::string first;
        {
            std::lock_guard lock(impl_->db_mutex);
            Statement q(impl_->db, "SELECT i.reference, m.config_digest, i.manifest_digest FROM images i JOIN manifests m "
                                   "ON m.digest = i.manifest_digest ORDER BY i.stored_at DESC");
            while (true) {
                BOXLITE_TRY(const bool row, q.step());
                if (!row) break;
                const auto config = q.text(1).substr(7);
                const auto manifest = q.text(2).substr(7);
                if (config.starts_with(needle) || manifest == needle) {
                    matches.insert(q.text(1));
                    if (first.empty()) first = q.text(0);
                }
            }
        }
        if (matches.size() > 1) {
            return fail(ErrorKind::InvalidArgument, "image id prefix '{}' is ambiguous ({} images match)", text,
                        matches.size());
        }
        if (!first.empty()) {
            BOXLITE_TRY(auto info, impl_->load_info(first));
            if (info) return std::move(*info);
        }
    }
    return fail(ErrorKind::Image, "image '{}' is not in the local store", text);
}

BoxliteResult<void> ImageStore::remove(std::string_view text, bool force) {
    BOXLITE_TRY(auto info, inspect(text));
    {
        std::lock_guard lock(impl_->db_mutex);
        auto* db = impl_->db;
        BOXLITE_TRY_VOID(sql_exec(db, "BEGIN IMMEDIATE"));
        auto body = [&]() -> BoxliteResult<void> {
            if (!force) {
                Statement others(db, "SELECT COUNT(*) FROM images WHERE manifest_digest = ? AND reference != ?");
                others.bind(1, info.manifest_digest).bind(2, info.reference);
                BOXLITE_TRY(const bool row, others.step());
                if (row && others.integer(0) == 0) {
                    std::vector<std::string> holders;
                    Statement q(db, "SELECT holder FROM leases WHERE manifest_digest = ? ORDER BY created_at, holder");
                    q.bind(1, info.manifest_digest);
                    while (true) {
                        BOXLITE_TRY(const bool more, q.step());
                        if (!more) break;
                        holders.push_back(q.text(0));
                    }
                    if (!holders.empty()) {
                        return fail(ErrorKind::InvalidState,
                                    "image '{}' is used by {} box{} ({}); remove {} first, or force the removal "
                                    "(the boxes keep their image until they are removed)",
                                    info.reference, holders.size(), holders.size() == 1 ? "" : "es",
                                    fmt::join(holders, ", "), holders.size() == 1 ? "it" : "them");
                    }
                }
            }
            Statement d(db, "DELETE FROM images WHERE reference = ?");
            d.bind(1, info.reference);
            return d.run();
        }();
        if (!body) {
            (void)sql_exec(db, "ROLLBACK");
            return fail(body.error());
        }
        BOXLITE_TRY_VOID(sql_exec(db, "COMMIT"));
    }
    return impl_->write_index_json();
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
        Statement insert(impl_->db, "INSERT OR REPLACE INTO leases(holder, manifest_digest, reference, created_at) "
                                    "VALUES(?, ?, ?, ?)");
        insert.bind(1, holder).bind(2, out.image.manifest_digest).bind(3, reference).bind(4, unix_now());
        BOXLITE_TRY_VOID(insert.run());
        return out;
    }
    // The pinned image: its manifest, config and layers stay in the store while the lease does.
    BOXLITE_TRY(auto shared, impl_->store_lock(FileLock::Mode::Shared));
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
    BOXLITE_TRY(auto built, kind == RootfsKind::Directory ? impl_->build_rootfs(out.image) : impl_->build_disk(out.image));
    out.path = built.first;
    if (built.second) out.build_time = Clock::now() - t0;
    return out;
}

BoxliteResult<void> ImageStore::release(std::string_view holder) {
    std::lock_guard lock(impl_->db_mutex);
    Statement d(impl_->db, "DELETE FROM leases WHERE holder = ?");
    d.bind(1, holder);
    return d.run();
}

BoxliteResult<std::vector<ImageLease>> ImageStore::leases() {
    std::vector<ImageLease> out;
    std::lock_guard lock(impl_->db_mutex);
    Statement q(impl_->db, "SELECT holder, manifest_digest, reference, created_at FROM leases ORDER BY created_at, holder");
    while (true) {
        BOXLITE_TRY(const bool row, q.step());
        if (!row) break;
        out.push_back(ImageLease{q.text(0), q.text(1), q.text(2), q.integer(3)});
    }
    return out;
}

BoxliteResult<GcReport> ImageStore::gc(const GcOptions& options) {
    GcReport report;
    BOXLITE_TRY(auto exclusive, impl_->store_lock(FileLock::Mode::Exclusive));
    std::set<std::string> keep_blobs;
    std::set<std::string> keep_manifests;
    {
        std::lock_guard lock(impl_->db_mutex);
        auto* db = impl_->db;
        BOXLITE_TRY_VOID(sql_exec(db, "BEGIN IMMEDIATE"));
        auto body = [&]() -> BoxliteResult<void> {
            if (options.live_holders) {
                const std::set<std::string> live(options.live_holders->begin(), options.live_holders->end());
                const auto cutoff = unix_now() - options.lease_grace.count();
                std::vector<std::string> stale;
                Statement q(db, "SELECT holder FROM leases WHERE created_at <= ?");
                q.bind(1, cutoff);
                while (true) {
                    BOXLITE_TRY(const bool row, q.step());
                    if (!row) break;
                    if (!live.contains(q.text(0))) stale.push_back(q.text(0));
                }
                for (const auto& holder : stale) {
                    Statement d(db, "DELETE FROM leases WHERE holder = ?");
                    d.bind(1, holder);
                    BOXLITE_TRY_VOID(d.run());
                    ++report.leases_dropped;
                }
            }
            BOXLITE_TRY_VOID(sql_exec(db, "DELETE FROM manifests WHERE digest NOT IN (SELECT manifest_digest FROM images "
                                          "UNION SELECT manifest_digest FROM leases)"));
            BOXLITE_TRY_VOID(sql_exec(db, "DELETE FROM manifest_layers WHERE manifest_digest NOT IN (SELECT digest FROM manifests)"));
            Statement images(db, "SELECT manifest_digest, index_digest FROM images "
                                 "UNION SELECT manifest_digest, '' FROM leases");
            while (true) {
                BOXLITE_TRY(const bool row, images.step());
                if (!row) break;
                keep_manifests.insert(images.text(0));
                keep_blobs.insert(images.text(0));
                if (!images.text(1).empty()) keep_blobs.insert(images.text(1));
            }
            Statement configs(db, "SELECT config_digest FROM manifests");
            while (true) {
                BOXLITE_TRY(const bool row, configs.step());
                if (!row) break;
                keep_blobs.insert(configs.text(0));
            }
            Statement layers(db, "SELECT digest FROM manifest_layers");
            while (true) {
                BOXLITE_TRY(const bool row, layers.step());
                if (!row) break;
                keep_blobs.insert(layers.text(0));
            }
            return {};
        }();
        if (!body) {
            (void)sql_exec(db, "ROLLBACK");
            return fail(body.error());
        }
        BOXLITE_TRY_VOID(sql_exec(db, "COMMIT"));
    }
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(impl_->blobs, ec)) {
        const auto name = entry.path().filename().string();
        if (keep_blobs.contains("sha256:" + name)) continue;
        std::error_code size_ec;
        const auto size = entry.is_regular_file(size_ec) ? entry.file_size(size_ec) : 0;
        if (fs::remove(entry.path(), size_ec)) {
            ++report.blobs_removed;
            report.bytes_freed += size;
        }
    }
    // Nothing else can be pulling or building while we hold the store lock exclusively, so every
    // temporary file and partial download left behind is garbage from a crashed process.
    for (const auto& entry : fs::directory_iterator(impl_->tmp, ec)) remove_tree(entry.path());
    for (const auto& entry : fs::directory_iterator(impl_->rootfs, ec)) {
        const auto name = entry.path().filename().string();
        if (keep_manifests.contains("sha256:" + name)) continue;
        remove_tree(entry.path());
        if (!name.starts_with(".tmp-")) ++report.rootfs_removed;
    }
    for (const auto& entry : fs::directory_iterator(impl_->disks, ec)) {
        const auto name = entry.path().filename().string();
        if (name.ends_with(".ext4") && keep_manifests.contains("sha256:" + name.substr(0, name.size() - 5))) continue;
        std::error_code remove_ec;
        const auto size = entry.is_regular_file(remove_ec) ? entry.file_size(remove_ec) : 0;
        if (fs::remove(entry.path(), remove_ec) && !name.starts_with(".tmp-")) {
            ++report.disk_images_removed;
            report.bytes_freed += size;
        }
    }
    return report;
}

BoxliteResult<fs::path> ImageStore::rootfs_directory(const ImageInfo& image) {
    BOXLITE_TRY(auto built, impl_->build_rootfs(image));
    return built.first;
}

BoxliteResult<fs::path> ImageStore::disk_image(const ImageInfo& image) {
    BOXLITE_TRY(auto built, impl_->build_disk(image));
    return built.first;
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
    BOXLITE_TRY(auto built, kind == RootfsKind::Directory ? impl_->build_rootfs(out.image) : impl_->build_disk(out.image));
    out.path = built.first;
    if (built.second) out.build_time = Clock::now() - t1;
    return out;
}

// ---------------------------------------------------------------------------------------------
// load(): OCI layouts (directory or tarball) and `docker save` tarballs.
// ---------------------------------------------------------------------------------------------
namespace {

struct DockerSaveEntry {
    std::string config;
    std::vector<std::string> repo_tags;
    std::vector<std::string> layers;
};

// A path from an archive's own metadata, resolved inside `root` (no escapes through "..",
// absolute paths or symlinks that lead out — `docker save` does use in-archive symlinks).
BoxliteResult<fs::path> inside(const fs::path& root, std::string_view relative) {
    if (relative.empty() || relative.front() == '/' || relative.size() > 4096) {
        return fail(ErrorKind::Image, "archive names an invalid path '{}'", relative.substr(0, 200));
    }
    std::error_code ec;
    const auto base = fs::canonical(root, ec);
    if (ec) return fail(ErrorKind::Storage, "resolving {}: {}", root.string(), ec.message());
    const auto resolved = fs::weakly_canonical(base / fs::path(relative), ec);
    if (ec) return fail(ErrorKind::Image, "archive path '{}' cannot be resolved: {}", relative, ec.message());
    const auto rel = resolved.lexically_relative(base);
    if (rel.empty() || rel.begin()->string() == "..") {
        return fail(ErrorKind::Image, "archive path '{}' leads outside the archive (refused)", relative);
    }
    return resolved;
}

}  // namespace

BoxliteResult<std::vector<ImageInfo>> ImageStore::load(const fs::path& path, std::optional<std::string> reference) {
    auto& impl = *impl_;
    BOXLITE_TRY(auto shared, impl.store_lock(FileLock::Mode::Shared));
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) return fail(ErrorKind::Image, "cannot load images: {} does not exist", path.string());
    std::string default_name = sanitize_name(path.filename().string());
    for (const char* suffix : {"-tar-gz", "-tar-zst", "-tgz", "-tar"}) {
        if (default_name.ends_with(suffix) && default_name.size() > std::strlen(suffix)) {
            default_name.resize(default_name.size() - std::strlen(suffix));
            break;
        }
    }
    // A short name normalizes as everywhere else (Docker's rule: "mine:1" is
    // docker.io/library/mine:1), so the same short name finds it again in run, inspect and rm.
    std::optional<ImageReference> wanted;
    if (reference) {
        BOXLITE_TRY(auto parsed, parse_reference(*reference));
        wanted = std::move(parsed);
    }

    fs::path root = path;
    fs::path extracted;
    struct Cleanup {
        fs::path dir;
        ~Cleanup() {
            if (!dir.empty()) remove_tree(dir);
        }
    } cleanup;
    if (!fs::is_directory(status)) {
        // A tarball (plain, gzip or zstd): unpack it with the same hostile-input rules as layers.
        extracted = impl.tmp / fmt::format("load-{}", random_suffix());
        auto unpacked = unpack_image(std::vector<fs::path>{path}, extracted, impl.options.unpack);
        if (!unpacked) return fail(unpacked.error().with_context(fmt::format("reading archive {}", path.string())));
        cleanup.dir = extracted;
        root = extracted;
    }

    std::vector<ImageInfo> out;
    auto finish = [&](const std::string& ref_text, const std::string& manifest_digest, const Manifest& manifest,
                      std::uint64_t manifest_size, const std::string& index_digest) -> BoxliteResult<void> {
        BOXLITE_TRY_VOID(impl.record(ref_text, manifest_digest, manifest, manifest_size, index_digest));
        BOXLITE_TRY(auto info, impl.load_info(ref_text));
        if (!info) return fail(ErrorKind::Internal, "loaded image {} is incomplete in the store", ref_text);
        out.push_back(std::move(*info));
        return {};
    };

    if (fs::exists(root / "manifest.json", ec)) {
        // docker save: [{"Config": "...", "RepoTags": [...], "Layers": [...]}]
        BOXLITE_TRY(auto text, read_file_bounded(root / "manifest.json", impl.options.registry.max_json_bytes));
        std::vector<DockerSaveEntry> entries;
        try {
            const auto doc = nlohmann::json::parse(text);
            if (!doc.is_array()) return fail(ErrorKind::Image, "{}: manifest.json is not an array", path.string());
            for (const auto& item : doc) {
                DockerSaveEntry entry;
                entry.config = item.at("Config").get<std::string>();
                if (item.contains("RepoTags") && item["RepoTags"].is_array()) {
                    entry.repo_tags = item["RepoTags"].get<std::vector<std::string>>();
                }
                entry.layers = item.at("Layers").get<std::vector<std::string>>();
                if (entry.layers.size() > kMaxLayers) {
                    return fail(ErrorKind::Image, "{}: an image has {} layers (at most {})", path.string(),
                                entry.layers.size(), kMaxLayers);
                }
                entries.push_back(std::move(entry));
            }
        } catch (const nlohmann::json::exception& e) {
            return fail(ErrorKind::Image, "{}: malformed manifest.json: {}", path.string(), e.what());
        }
        if (wanted && entries.size() != 1) {
            return fail(ErrorKind::InvalidArgument, "{} holds {} images; a name can only be given for exactly one",
                        path.string(), entries.size());
        }
        for (const auto& entry : entries) {
            BOXLITE_TRY(auto config_path, inside(root, entry.config));
            BOXLITE_TRY(auto config_text, read_file_bounded(config_path, impl.options.registry.max_json_bytes));
            BOXLITE_TRY(auto config, parse_image_config(config_text));
            Manifest manifest;
            manifest.media_type = std::string(media_type::kOciManifest);
            manifest.config = {std::string(media_type::kOciConfig), sha256_digest(config_text), config_text.size(), {}, {}};
            BOXLITE_TRY_VOID(impl.write_blob(manifest.config.digest, config_text));
            // Every layer is checked against its diff_id (the digest of its uncompressed tar) before
            // it enters the store: that is all a docker save archive says about its layers.
            if (config.diff_ids.size() != entry.layers.size()) {
                return fail(ErrorKind::Image, "{}: config {} lists {} layers (rootfs.diff_ids) but manifest.json {}",
                            path.string(), entry.config, config.diff_ids.size(), entry.layers.size());
            }
            for (std::size_t i = 0; i < entry.layers.size(); ++i) {
                const auto& layer = entry.layers[i];
                BOXLITE_TRY(auto layer_path, inside(root, layer));
                BOXLITE_TRY(auto diff_id, uncompressed_sha256(layer_path));
                if (diff_id != config.diff_ids[i]) {
                    return fail(ErrorKind::Image,
                                "{}: digest mismatch for layer {}: the config's diff_id is {}, the uncompressed content "
                                "has digest {}",
                                path.string(), layer, config.diff_ids[i], diff_id);
                }
                unsigned char magic[4] = {0, 0, 0, 0};
                if (std::FILE* f = std::fopen(layer_path.c_str(), "rb")) {
                    (void)std::fread(magic, 1, sizeof magic, f);
                    std::fclose(f);
                }
                std::string type(media_type::kOciLayer);
                if (magic[0] == 0x1f && magic[1] == 0x8b) type = media_type::kOciLayerGzip;
                if (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd) type = media_type::kOciLayerZstd;
                // An uncompressed layer's blob digest is its diff_id: checked again as it is copied.
                const auto expected = type == media_type::kOciLayer ? std::optional<std::string_view>(diff_id)
                                                                   : std::nullopt;
                BOXLITE_TRY(auto stored, impl.import_blob_file(layer_path, expected));
                manifest.layers.push_back({type, stored.first, stored.second, {}, {}});
            }
            const auto manifest_text = serialize_manifest(manifest);
            const auto manifest_digest = sha256_digest(manifest_text);
            BOXLITE_TRY_VOID(impl.write_blob(manifest_digest, manifest_text));
            std::vector<std::string> names;
            if (wanted) names.push_back(wanted->to_string());
            else {
                for (const auto& tag : entry.repo_tags) {
                    BOXLITE_TRY(auto parsed, parse_reference(tag));
                    names.push_back(parsed.to_string());
                }
            }
            if (names.empty()) names.push_back(fmt::format("localhost/{}@{}", default_name, manifest_digest));
            for (const auto& name : names) BOXLITE_TRY_VOID(finish(name, manifest_digest, manifest, manifest_text.size(), ""));
        }
        return out;
    }

    if (!fs::exists(root / "oci-layout", ec) || !fs::exists(root / "index.json", ec)) {
        return fail(ErrorKind::Image,
                    "{} is neither an OCI image layout (oci-layout + index.json) nor a docker save archive (manifest.json)",
                    path.string());
    }
    BOXLITE_TRY(auto layout_text, read_file_bounded(root / "oci-layout", 4096));
    try {
        const auto layout = nlohmann::json::parse(layout_text);
        if (!layout.is_object() || layout.value("imageLayoutVersion", "") != "1.0.0") {
            return fail(ErrorKind::Image, "{}: unsupported oci-layout version (expected 1.0.0)", path.string());
        }
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::Image, "{}: malformed oci-layout: {}", path.string(), e.what());
    }
    BOXLITE_TRY(auto index_text, read_file_bounded(root / "index.json", impl.options.registry.max_manifest_bytes));
    BOXLITE_TRY(auto index_doc, parse_manifest_document(index_text));
    const auto* index = std::get_if<Index>(&index_doc);
    if (index == nullptr) return fail(ErrorKind::Image, "{}: index.json is not an image index", path.string());
    if (wanted && index->manifests.size() != 1) {
        return fail(ErrorKind::InvalidArgument, "{} holds {} images; a name can only be given for exactly one",
                    path.string(), index->manifests.size());
    }
    auto read_blob = [&](const Descriptor& d, std::uint64_t max) -> BoxliteResult<std::string> {
        BOXLITE_TRY(auto blob_path, inside(root, "blobs/sha256/" + std::string(digest_hex(d.digest))));
        BOXLITE_TRY(auto text, read_file_bounded(blob_path, max));
        const auto digest = sha256_digest(text);
        if (digest != d.digest) {
            return fail(ErrorKind::Image, "{}: digest mismatch for blob: expected {}, content has digest {}", path.string(),
                        d.digest, digest);
        }
        return text;
    };
    const Platform platform = impl.options.registry.platform;
    for (const auto& top : index->manifests) {
        BOXLITE_TRY(auto text, read_blob(top, impl.options.registry.max_manifest_bytes));
        BOXLITE_TRY(auto doc, parse_manifest_document(text, top.media_type));
        std::string index_digest;
        std::string manifest_text = text;
        std::string manifest_digest = top.digest;
        if (auto* nested = std::get_if<Index>(&doc)) {
            BOXLITE_TRY(auto chosen, select_platform(*nested, platform, fmt::format("{} entry {}", path.string(), top.digest)));
            BOXLITE_TRY_VOID(impl.write_blob(top.digest, text));
            index_digest = top.digest;
            BOXLITE_TRY(manifest_text, read_blob(chosen, impl.options.registry.max_manifest_bytes));
            manifest_digest = chosen.digest;
            BOXLITE_TRY(doc, parse_manifest_document(manifest_text, chosen.media_type));
            if (!std::holds_alternative<Manifest>(doc)) {
                return fail(ErrorKind::Image, "{}: nested indexes are not supported", path.string());
            }
        }
        const auto& manifest = std::get<Manifest>(doc);
        BOXLITE_TRY(auto config_text, read_blob(manifest.config, impl.options.registry.max_json_bytes));
        BOXLITE_TRY_VOID(parse_image_config(config_text));
        BOXLITE_TRY_VOID(impl.write_blob(manifest.config.digest, config_text));
        for (const auto& layer : manifest.layers) {
            BOXLITE_TRY(auto layer_path, inside(root, "blobs/sha256/" + std::string(digest_hex(layer.digest))));
            BOXLITE_TRY_VOID(impl.import_blob_file(layer_path, layer.digest));
        }
        BOXLITE_TRY_VOID(impl.write_blob(manifest_digest, manifest_text));

        std::string name;
        if (wanted) {
            name = wanted->to_string();
        } else if (const auto full = top.annotations.find("io.containerd.image.name"); full != top.annotations.end()) {
            BOXLITE_TRY(auto parsed, parse_reference(full->second));
            name = parsed.to_string();
        } else if (const auto tag = top.annotations.find("org.opencontainers.image.ref.name");
                   tag != top.annotations.end()) {
            // A bare tag ("1.0") names an image of this layout; a full reference stands alone.
            const bool bare = tag->second.find_first_of("/:@") == std::string::npos;
            BOXLITE_TRY(auto parsed, parse_reference(bare ? fmt::format("localhost/{}:{}", default_name, tag->second)
                                                          : tag->second));
            name = parsed.to_string();
        } else {
            name = fmt::format("localhost/{}@{}", default_name, manifest_digest);
        }
        BOXLITE_TRY_VOID(finish(name, manifest_digest, manifest, manifest_text.size(), index_digest));
    }
    return out;
}

}  // namespace boxlite::image
