#include "oci.hpp"

#include "digest.hpp"

#include <boxlite/image/image_config.hpp>
#include <boxlite/image/reference.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>

namespace boxlite::image {
namespace {

using nlohmann::json;

BoxliteResult<std::string> get_string(const json& object, const char* key, std::string_view what, bool required) {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) {
        if (required) return fail(ErrorKind::Image, "{}: field '{}' is missing", what, key);
        return std::string();
    }
    if (!it->is_string()) return fail(ErrorKind::Image, "{}: field '{}' must be a string", what, key);
    return it->get<std::string>();
}

BoxliteResult<Descriptor> parse_descriptor(const json& object, std::string_view what) {
    if (!object.is_object()) return fail(ErrorKind::Image, "{}: descriptor must be a JSON object", what);
    Descriptor d;
    BOXLITE_TRY(d.media_type, get_string(object, "mediaType", what, false));
    BOXLITE_TRY(d.digest, get_string(object, "digest", what, true));
    if (!is_valid_sha256_digest(d.digest)) {
        return fail(ErrorKind::Image,
                    "{}: digest '{}' is not sha256:<64 lower-case hex> (the only algorithm supported)", what,
                    d.digest.substr(0, 100));
    }
    const auto size = object.find("size");
    if (size == object.end() || !size->is_number_unsigned()) {
        return fail(ErrorKind::Image, "{}: descriptor {} has no non-negative integer 'size'", what, d.digest);
    }
    d.size = size->get<std::uint64_t>();
    if (const auto p = object.find("platform"); p != object.end() && p->is_object()) {
        Platform platform;
        BOXLITE_TRY(platform.os, get_string(*p, "os", what, true));
        BOXLITE_TRY(platform.architecture, get_string(*p, "architecture", what, true));
        BOXLITE_TRY(platform.variant, get_string(*p, "variant", what, false));
        d.platform = std::move(platform);
    }
    if (const auto a = object.find("annotations"); a != object.end() && a->is_object()) {
        for (const auto& [key, value] : a->items()) {
            if (value.is_string()) d.annotations[key] = value.get<std::string>();
        }
    }
    return d;
}

}  // namespace

bool is_layer_media_type(std::string_view m) {
    return m == media_type::kOciLayer || m == media_type::kOciLayerGzip || m == media_type::kOciLayerZstd ||
           m == media_type::kDockerLayerGzip || m == media_type::kDockerForeignLayer ||
           m == "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" ||
           m == "application/vnd.docker.image.rootfs.diff.tar";
}

BoxliteResult<ManifestDocument> parse_manifest_document(std::string_view body, std::string_view content_type) {
    const std::string what = "manifest";
    json doc;
    try {
        doc = json::parse(body);
    } catch (const json::exception& e) {
        return fail(ErrorKind::Image, "manifest is not valid JSON: {}", e.what());
    }
    if (!doc.is_object()) return fail(ErrorKind::Image, "manifest must be a JSON object");
    if (const auto v = doc.find("schemaVersion"); v == doc.end() || !v->is_number_integer() || v->get<int>() != 2) {
        return fail(ErrorKind::Image,
                    "manifest has an unsupported schemaVersion (only schema 2: Docker v2 schema 2 and OCI; schema 1 "
                    "images must be re-pushed)");
    }
    BOXLITE_TRY(auto declared, get_string(doc, "mediaType", what, false));
    // Content-Type may carry parameters ("; charset=utf-8").
    std::string header(content_type.substr(0, content_type.find(';')));
    while (!header.empty() && header.back() == ' ') header.pop_back();
    const bool header_is_manifest_type = header == media_type::kOciManifest || header == media_type::kOciIndex ||
                                         header == media_type::kDockerManifest ||
                                         header == media_type::kDockerManifestList;
    if (!declared.empty() && header_is_manifest_type && declared != header) {
        return fail(ErrorKind::Image, "manifest declares mediaType '{}' but the registry sent Content-Type '{}'",
                    declared, header);
    }
    std::string type = !declared.empty() ? declared : (header_is_manifest_type ? header : std::string());
    if (type.empty())
        type = doc.contains("manifests") ? std::string(media_type::kOciIndex) : std::string(media_type::kOciManifest);

    if (type == media_type::kOciIndex || type == media_type::kDockerManifestList) {
        const auto m = doc.find("manifests");
        if (m == doc.end() || !m->is_array()) return fail(ErrorKind::Image, "index has no 'manifests' array");
        if (m->size() > kMaxIndexEntries) {
            return fail(ErrorKind::Image, "index lists {} manifests (at most {} allowed)", m->size(), kMaxIndexEntries);
        }
        Index index{type, {}};
        for (const auto& entry : *m) {
            BOXLITE_TRY(auto d, parse_descriptor(entry, "index entry"));
            index.manifests.push_back(std::move(d));
        }
        return ManifestDocument{std::move(index)};
    }
    if (type != media_type::kOciManifest && type != media_type::kDockerManifest) {
        return fail(ErrorKind::Image,
                    "unsupported manifest media type '{}' (supported: OCI image manifest/index, Docker v2 schema 2 "
                    "manifest/list)",
                    type.substr(0, 200));
    }
    Manifest manifest{type, {}, {}};
    const auto config = doc.find("config");
    if (config == doc.end()) return fail(ErrorKind::Image, "manifest has no 'config'");
    BOXLITE_TRY(manifest.config, parse_descriptor(*config, "manifest config"));
    const auto layers = doc.find("layers");
    if (layers == doc.end() || !layers->is_array()) return fail(ErrorKind::Image, "manifest has no 'layers' array");
    if (layers->size() > kMaxLayers) {
        return fail(ErrorKind::Image, "manifest lists {} layers (at most {} allowed)", layers->size(), kMaxLayers);
    }
    for (const auto& entry : *layers) {
        BOXLITE_TRY(auto d, parse_descriptor(entry, "manifest layer"));
        if (d.media_type.empty()) d.media_type = std::string(media_type::kOciLayerGzip);
        if (!is_layer_media_type(d.media_type)) {
            return fail(ErrorKind::Image,
                        "layer {} has unsupported media type '{}' (supported: tar, tar+gzip, tar+zstd)", d.digest,
                        d.media_type.substr(0, 200));
        }
        manifest.layers.push_back(std::move(d));
    }
    return ManifestDocument{std::move(manifest)};
}

BoxliteResult<Descriptor> select_platform(const Index& index, const Platform& wanted, std::string_view what) {
    const Descriptor* fallback = nullptr;
    // An entry without `platform` says nothing about where it runs; containerd accepts it as a
    // match (single-entry indexes written by some tools have none), so do we — after every entry
    // that names a matching platform.
    const Descriptor* unlabelled = nullptr;
    const auto want = normalize_platform(wanted);
    for (const auto& entry : index.manifests) {
        if (!entry.platform) {
            if (unlabelled == nullptr) unlabelled = &entry;
            continue;
        }
        if (!platform_matches(wanted, *entry.platform)) continue;
        if (normalize_platform(*entry.platform).variant == want.variant) return entry;
        if (fallback == nullptr) fallback = &entry;
    }
    if (fallback != nullptr) return *fallback;
    if (unlabelled != nullptr) return *unlabelled;
    std::string offered;
    for (const auto& entry : index.manifests) {
        if (!entry.platform) continue;
        if (!offered.empty()) offered += ", ";
        offered += entry.platform->to_string();
    }
    return fail(ErrorKind::Image, "{} has no image for platform {} (it offers: {})", what, wanted.to_string(),
                offered.empty() ? std::string("none") : offered);
}

std::string serialize_manifest(const Manifest& manifest) {
    auto descriptor = [](const Descriptor& d) {
        return json{{"mediaType", d.media_type}, {"digest", d.digest}, {"size", d.size}};
    };
    json layers = json::array();
    for (const auto& layer : manifest.layers) layers.push_back(descriptor(layer));
    json doc{{"schemaVersion", 2},
             {"mediaType", manifest.media_type},
             {"config", descriptor(manifest.config)},
             {"layers", layers}};
    return doc.dump();
}

BoxliteResult<ImageConfig> parse_image_config(std::string_view text) {
    json doc;
    try {
        doc = json::parse(text);
    } catch (const json::exception& e) {
        return fail(ErrorKind::Image, "image config is not valid JSON: {}", e.what());
    }
    if (!doc.is_object()) return fail(ErrorKind::Image, "image config must be a JSON object");
    ImageConfig config;
    const std::string what = "image config";
    BOXLITE_TRY(config.platform.os, get_string(doc, "os", what, false));
    BOXLITE_TRY(config.platform.architecture, get_string(doc, "architecture", what, false));
    BOXLITE_TRY(config.platform.variant, get_string(doc, "variant", what, false));
    BOXLITE_TRY(config.created, get_string(doc, "created", what, false));

    auto string_list = [&](const json& object,
                           const char* key) -> BoxliteResult<std::optional<std::vector<std::string>>> {
        const auto it = object.find(key);
        if (it == object.end() || it->is_null()) return std::optional<std::vector<std::string>>{};
        if (!it->is_array()) return fail(ErrorKind::Image, "image config: '{}' must be an array of strings", key);
        std::vector<std::string> out;
        for (const auto& item : *it) {
            if (!item.is_string()) return fail(ErrorKind::Image, "image config: '{}' must be an array of strings", key);
            out.push_back(item.get<std::string>());
        }
        return std::optional<std::vector<std::string>>{std::move(out)};
    };
    if (const auto c = doc.find("config"); c != doc.end() && c->is_object()) {
        BOXLITE_TRY(auto env, string_list(*c, "Env"));
        if (env) config.env = std::move(*env);
        BOXLITE_TRY(config.entrypoint, string_list(*c, "Entrypoint"));
        BOXLITE_TRY(config.cmd, string_list(*c, "Cmd"));
        BOXLITE_TRY(config.working_dir, get_string(*c, "WorkingDir", what, false));
        BOXLITE_TRY(config.user, get_string(*c, "User", what, false));
        BOXLITE_TRY(config.stop_signal, get_string(*c, "StopSignal", what, false));
        if (const auto l = c->find("Labels"); l != c->end() && l->is_object()) {
            for (const auto& [key, value] : l->items()) {
                if (value.is_string()) config.labels[key] = value.get<std::string>();
            }
        }
    }
    if (const auto r = doc.find("rootfs"); r != doc.end() && r->is_object()) {
        BOXLITE_TRY(auto ids, string_list(*r, "diff_ids"));
        if (ids) config.diff_ids = std::move(*ids);
    }
    return config;
}

BoxliteResult<std::string> sha256_file(const std::filesystem::path& path, std::uint64_t* size) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (file == nullptr) return fail_errno(ErrorKind::Storage, fmt::format("opening {}", path.string()), errno);
    Sha256 hash;
    std::uint64_t total = 0;
    std::vector<char> buffer(1 << 16);
    while (true) {
        const auto n = std::fread(buffer.data(), 1, buffer.size(), file);
        if (n == 0) break;
        hash.update(buffer.data(), n);
        total += n;
    }
    const bool error = std::ferror(file) != 0;
    std::fclose(file);
    if (error) return fail(ErrorKind::Storage, "reading {} failed", path.string());
    if (size != nullptr) *size = total;
    return hash.finish();
}

}  // namespace boxlite::image
