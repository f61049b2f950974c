// ImageStore::load(): images from OCI layouts (directory or tarball) and `docker save` tarballs,
// checked blob by blob before they enter the store.
#include "store_impl.hpp"
#include "unpack.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <cstdio>
#include <cstring>

namespace boxlite::image {
namespace {

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
    BOXLITE_TRY(auto shared, impl.store_lock(base::FileLock::Mode::Shared));
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status))
        return fail(ErrorKind::Image, "cannot load images: {} does not exist", path.string());
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
            manifest.config = {
                std::string(media_type::kOciConfig), sha256_digest(config_text), config_text.size(), {}, {}};
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
                if (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd)
                    type = media_type::kOciLayerZstd;
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
            for (const auto& name : names)
                BOXLITE_TRY_VOID(finish(name, manifest_digest, manifest, manifest_text.size(), ""));
        }
        return out;
    }

    if (!fs::exists(root / "oci-layout", ec) || !fs::exists(root / "index.json", ec)) {
        return fail(
            ErrorKind::Image,
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
            return fail(ErrorKind::Image, "{}: digest mismatch for blob: expected {}, content has digest {}",
                        path.string(), d.digest, digest);
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
            BOXLITE_TRY(auto chosen,
                        select_platform(*nested, platform, fmt::format("{} entry {}", path.string(), top.digest)));
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
