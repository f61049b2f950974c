// The image store's SQL catalog: images.db (manifests, their layers, image names and the leases
// boxes hold), index.json that mirrors it, and the public methods that are queries over it
// (list, inspect, remove, leases, gc).
#include "store_impl.hpp"
#include "unpack.hpp"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <set>

namespace boxlite::image {

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

}  // namespace

BoxliteResult<void> ImageStore::Impl::open_database() {
    BOXLITE_TRY(db, base::Database::open(db_path, 30000));
    // Switching a new database to WAL and creating its schema are not covered by SQLite's busy
    // handler when two processes do it at once ("database is locked"), so opening is serialised.
    BOXLITE_TRY(auto opening, base::FileLock::acquire(locks / "open.lock", base::FileLock::Mode::Exclusive));
    BOXLITE_TRY_VOID(db.exec("PRAGMA journal_mode=WAL"));
    // Pins (leases) are commits that must survive a power loss: synchronous stays FULL here.
    BOXLITE_TRY_VOID(db.keep_wal_between_connections());
    BOXLITE_TRY_VOID(db.exec(kSchema));
    std::error_code ec;
    if (!fs::exists(images / "index.json", ec)) BOXLITE_TRY_VOID(write_index_json());
    return {};
}

BoxliteResult<void> ImageStore::Impl::record(const std::string& reference, const std::string& manifest_digest,
                                             const Manifest& manifest, std::uint64_t manifest_size,
                                             const std::string& index_digest) {
    {
        std::lock_guard lock(db_mutex);
        BOXLITE_TRY_VOID(db.exec("BEGIN IMMEDIATE"));
        auto body = [&]() -> BoxliteResult<void> {
            Statement m(db,
                        "INSERT OR IGNORE INTO manifests(digest, media_type, size, config_digest, config_size) "
                        "VALUES(?,?,?,?,?)");
            m.bind(1, manifest_digest).bind(2, manifest.media_type).bind(3, static_cast<std::int64_t>(manifest_size));
            m.bind(4, manifest.config.digest).bind(5, static_cast<std::int64_t>(manifest.config.size));
            BOXLITE_TRY_VOID(m.run());
            for (std::size_t i = 0; i < manifest.layers.size(); ++i) {
                Statement l(db,
                            "INSERT OR IGNORE INTO manifest_layers(manifest_digest, position, digest, media_type, "
                            "size) VALUES(?,?,?,?,?)");
                l.bind(1, manifest_digest).bind(2, static_cast<std::int64_t>(i)).bind(3, manifest.layers[i].digest);
                l.bind(4, manifest.layers[i].media_type).bind(5, static_cast<std::int64_t>(manifest.layers[i].size));
                BOXLITE_TRY_VOID(l.run());
            }
            Statement r(db,
                        "INSERT OR REPLACE INTO images(reference, manifest_digest, index_digest, stored_at) "
                        "VALUES(?,?,?,?)");
            r.bind(1, reference).bind(2, manifest_digest).bind(3, index_digest).bind(4, unix_now());
            return r.run();
        }();
        if (!body) {
            (void)db.exec("ROLLBACK");
            return fail(body.error());
        }
        BOXLITE_TRY_VOID(db.exec("COMMIT"));
    }
    return write_index_json();
}

BoxliteResult<std::optional<ImageInfo>> ImageStore::Impl::load_info(const std::string& reference) {
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

BoxliteResult<std::optional<ImageInfo>> ImageStore::Impl::load_manifest_info(const std::string& manifest_digest) {
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
        Statement l(db,
                    "SELECT digest, media_type, size FROM manifest_layers WHERE manifest_digest = ? ORDER BY position");
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

BoxliteResult<void> ImageStore::Impl::write_index_json() {
    BOXLITE_TRY(auto lock, base::FileLock::acquire(locks / "index.lock", base::FileLock::Mode::Exclusive));
    nlohmann::json manifests = nlohmann::json::array();
    {
        std::lock_guard db_lock(db_mutex);
        Statement q(db,
                    "SELECT i.reference, i.manifest_digest, m.media_type, m.size FROM images i JOIN manifests m "
                    "ON m.digest = i.manifest_digest ORDER BY i.reference");
        while (true) {
            BOXLITE_TRY(const bool row, q.step());
            if (!row) break;
            // The full reference in both: a bare tag would make two images tagged "latest"
            // ambiguous for `skopeo … oci:<home>/images:<name>`.
            const auto reference = q.text(0);
            nlohmann::json annotations{{"io.containerd.image.name", reference},
                                       {"org.opencontainers.image.ref.name", reference}};
            manifests.push_back(
                {{"mediaType", q.text(2)}, {"digest", q.text(1)}, {"size", q.integer(3)}, {"annotations", annotations}});
        }
    }
    nlohmann::json index{{"schemaVersion", 2}, {"mediaType", media_type::kOciIndex}, {"manifests", manifests}};
    return write_file_atomic(images / "index.json", index.dump(2));
}

BoxliteResult<std::optional<ImageInfo>> ImageStore::Impl::find_local(const std::vector<ImageReference>& candidates) {
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
    const bool hex = needle.size() >= 4 && needle.size() <= 64 && std::all_of(needle.begin(), needle.end(), [](char c) {
                         return std::isxdigit(static_cast<unsigned char>(c));
                     });
    if (hex) {
        std::set<std::string> matches;
        std::string first;
        {
            std::lock_guard lock(impl_->db_mutex);
            Statement q(impl_->db,
                        "SELECT i.reference, m.config_digest, i.manifest_digest FROM images i JOIN manifests m "
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
        auto& db = impl_->db;
        BOXLITE_TRY_VOID(db.exec("BEGIN IMMEDIATE"));
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
            (void)db.exec("ROLLBACK");
            return fail(body.error());
        }
        BOXLITE_TRY_VOID(db.exec("COMMIT"));
    }
    return impl_->write_index_json();
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
    Statement q(impl_->db,
                "SELECT holder, manifest_digest, reference, created_at FROM leases ORDER BY created_at, holder");
    while (true) {
        BOXLITE_TRY(const bool row, q.step());
        if (!row) break;
        out.push_back(ImageLease{q.text(0), q.text(1), q.text(2), q.integer(3)});
    }
    return out;
}

BoxliteResult<GcReport> ImageStore::gc(const GcOptions& options) {
    GcReport report;
    BOXLITE_TRY(auto exclusive, impl_->store_lock(base::FileLock::Mode::Exclusive));
    std::set<std::string> keep_blobs;
    std::set<std::string> keep_manifests;
    {
        std::lock_guard lock(impl_->db_mutex);
        auto& db = impl_->db;
        BOXLITE_TRY_VOID(db.exec("BEGIN IMMEDIATE"));
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
            BOXLITE_TRY_VOID(
                db.exec("DELETE FROM manifests WHERE digest NOT IN (SELECT manifest_digest FROM images "
                        "UNION SELECT manifest_digest FROM leases)"));
            BOXLITE_TRY_VOID(
                db.exec("DELETE FROM manifest_layers WHERE manifest_digest NOT IN (SELECT digest FROM manifests)"));
            Statement images(db,
                             "SELECT manifest_digest, index_digest FROM images "
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
            (void)db.exec("ROLLBACK");
            return fail(body.error());
        }
        BOXLITE_TRY_VOID(db.exec("COMMIT"));
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
    impl_->collect_directory_disks(report);
    return report;
}

}  // namespace boxlite::image
