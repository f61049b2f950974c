// pull, images, images rm, images prune, load — over the image store (include/boxlite/image) —
// and the image lookups `run` needs (pull with progress when missing, the image's command).
#include "cli/commands_internal.hpp"
#include "cli/output.hpp"
#include "cli/progress.hpp"
#include "cli/terminal.hpp"

#if BOXLITE_CLI_HAS_IMAGE_STORE
#include <boxlite/image/image_store.hpp>
#endif

#include <unistd.h>

#include <algorithm>
#include <set>

namespace boxlite::cli {

RuntimeSettings cli_runtime_settings(const Context&) {
    RuntimeSettings settings;
    // A CLI process starts boxes for later processes: a box it starts outlives it, also one made
    // by a foreground `run` (detach=false), which only that `run` process ties to its own life.
    settings.start_detached = true;
    return settings;
}

#if BOXLITE_CLI_HAS_IMAGE_STORE

namespace {

// The same store options as the runtime's rootfs provider (search list, insecure registries,
// platform): what `pull` fetches is what `run` then finds.
BoxliteResult<image::ImageStore> open_store(const Context& context) {
    return image::ImageStore::open(image::store_options_for(context.runtime_options()));
}

/// "sha256:0123456789abcdef…" -> "0123456789ab", as Docker shows image ids.
std::string short_digest(std::string_view digest) {
    const auto colon = digest.find(':');
    const auto hex = colon == std::string_view::npos ? digest : digest.substr(colon + 1);
    return std::string(hex.substr(0, 12));
}

/// "docker.io/library/alpine:3.19" -> ("docker.io/library/alpine", "3.19"); "<none>" tag for
/// digest-only references.
std::pair<std::string, std::string> split_reference(std::string_view reference) {
    std::string_view name = reference;
    if (const auto at = name.find('@'); at != std::string_view::npos) name = name.substr(0, at);
    const auto slash = name.rfind('/');
    const auto colon = name.rfind(':');
    if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
        return {std::string(name.substr(0, colon)), std::string(name.substr(colon + 1))};
    }
    return {std::string(name), "<none>"};
}

PullProgress::Mode progress_mode(bool quiet, int fd) {
    if (quiet) return PullProgress::Mode::Quiet;
    return is_terminal(fd) ? PullProgress::Mode::Terminal : PullProgress::Mode::Plain;
}

image::PullProgressCallback progress_callback(PullProgress& progress) {
    return [&progress](const image::LayerProgress& layer) {
        switch (layer.phase) {
            case image::LayerPhase::Waiting: break;
            case image::LayerPhase::Downloading: progress.update(layer.digest, layer.current, layer.total); break;
            case image::LayerPhase::Verifying: progress.update(layer.digest, layer.total, layer.total); break;
            case image::LayerPhase::Complete: progress.complete(layer.digest, false); break;
            case image::LayerPhase::AlreadyExists: progress.complete(layer.digest, true); break;
        }
    };
}

/// References of images some box was created from (exact reference text, as given at create).
/// The ids of every box in this home: the live holders of image leases.
BoxliteResult<std::vector<std::string>> box_ids(Context& context) {
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    BOXLITE_TRY(auto boxes, runtime->list_info());
    std::vector<std::string> ids;
    for (const auto& box : boxes) ids.push_back(box.id.str());
    return ids;
}

}  // namespace

BoxliteResult<ImageDefaults> prepare_image_for_run(Context& context, const std::string& reference, bool quiet) {
    BOXLITE_TRY(auto store, open_store(context));
    auto local = store.inspect(reference);
    if (!local) {
        // Not here yet: pull now, with progress on stderr (stdout belongs to the command).
        PullProgress progress(progress_mode(quiet, STDERR_FILENO), stderr);
        if (progress.mode() != PullProgress::Mode::Quiet) {
            fmt::print(stderr, "Unable to find image '{}' locally\n", reference);
        }
        image::PullOptions options;
        options.progress = progress_callback(progress);
        BOXLITE_TRY(local, store.pull(reference, options));
        progress.finish(local->reference, local->manifest_digest);
    }
    ImageDefaults defaults;
    defaults.entrypoint = local->config.entrypoint.value_or(std::vector<std::string>{});
    defaults.cmd = local->config.cmd.value_or(std::vector<std::string>{});
    defaults.working_dir = local->config.working_dir;
    defaults.user = local->config.user;
    for (const auto& entry : local->config.env) {
        const auto eq = entry.find('=');
        defaults.env.emplace_back(entry.substr(0, eq), eq == std::string::npos ? "" : entry.substr(eq + 1));
    }
    return defaults;
}

BoxliteResult<int> cmd_pull(Context& context) {
    const auto& args = context.invocation().pull;
    BOXLITE_TRY(auto store, open_store(context));
    PullProgress progress(progress_mode(args.quiet, STDOUT_FILENO), stdout);
    if (!args.quiet) {
        const auto [repository, tag] = split_reference(args.image);
        const bool by_digest = args.image.find('@') != std::string::npos;
        fmt::print("{}: Pulling from {}\n", tag == "<none>" && !by_digest ? "latest" : tag, repository);
        std::fflush(stdout);
    }
    image::PullOptions options;
    options.policy = image::PullPolicy::Always;  // `pull` asks the registry, as docker pull does
    options.progress = progress_callback(progress);
    BOXLITE_TRY(auto info, store.pull(args.image, options));
    if (args.quiet) {
        fmt::print("{}\n", info.config_digest);
    } else {
        progress.finish(info.reference, info.manifest_digest);
    }
    return kExitSuccess;
}

BoxliteResult<int> cmd_images(Context& context) {
    const auto& args = context.invocation().images;
    BOXLITE_TRY(auto store, open_store(context));
    BOXLITE_TRY(auto images, store.list());
    if (args.quiet) {
        std::set<std::string> printed;
        for (const auto& info : images) {
            if (printed.insert(info.config_digest).second) fmt::print("{}\n", short_digest(info.config_digest));
        }
        return kExitSuccess;
    }
    const auto now = std::chrono::system_clock::now();
    nlohmann::json rows = nlohmann::json::array();
    nlohmann::json table_rows = nlohmann::json::array();
    for (const auto& info : images) {
        const auto [repository, tag] = split_reference(info.reference);
        const auto stored = std::chrono::system_clock::time_point(std::chrono::seconds(info.stored_at));
        nlohmann::json row = {
            {"ID", info.config_digest},
            {"Repository", repository},
            {"Tag", tag},
            {"Reference", info.reference},
            {"Digest", info.manifest_digest},
            {"Size", info.size},
            {"Layers", info.layers.size()},
            {"Created", info.config.created},
            {"Stored", boxlite::detail::format_rfc3339(stored)},
            {"Platform", info.config.platform.to_string()},
        };
        nlohmann::json table_row = row;
        table_row["ID"] = short_digest(info.config_digest);
        table_row["Size"] = human_size(info.size);
        table_row["Stored"] = time_ago(stored, now);
        rows.push_back(std::move(row));
        table_rows.push_back(std::move(table_row));
    }
    const std::vector<Column> columns = {
        {"Repository", "REPOSITORY"}, {"Tag", "TAG"}, {"ID", "IMAGE ID"}, {"Stored", "PULLED"}, {"Size", "SIZE"}};
    const std::string format = args.format.value_or("table");
    BOXLITE_TRY(auto text, render_rows(format == "table" ? table_rows : rows, format, columns));
    fmt::print("{}", text);
    return kExitSuccess;
}

BoxliteResult<int> cmd_images_rm(Context& context) {
    const auto& args = context.invocation().images;
    BOXLITE_TRY(auto store, open_store(context));
    int status = kExitSuccess;
    for (const auto& reference : args.remove_refs) {
        // The store refuses the last reference to an image that boxes hold (its leases), naming
        // them; -f untags anyway, and those boxes keep their image until they are removed.
        auto removed = [&]() -> BoxliteResult<std::string> {
            BOXLITE_TRY(auto info, store.inspect(reference));
            BOXLITE_TRY_VOID(store.remove(info.reference, args.force));
            return info.reference;
        }();
        if (removed) {
            fmt::print("Untagged: {}\n", *removed);
        } else {
            fmt::print(stderr, "Error: {}\n", removed.error().to_string());
            status = kExitRuntimeError;
        }
    }
    return status;
}

BoxliteResult<int> cmd_images_prune(Context& context) {
    const auto& args = context.invocation().images;
    BOXLITE_TRY(auto store, open_store(context));
    if (args.prune_all) {
        // As Docker: an image some box was created from stays, every tag of it (the store
        // itself only refuses to drop its last reference).
        BOXLITE_TRY(auto live, box_ids(context));
        BOXLITE_TRY(auto leases, store.leases());
        std::set<std::string> in_use;
        for (const auto& lease : leases) {
            if (std::find(live.begin(), live.end(), lease.holder) != live.end()) in_use.insert(lease.manifest_digest);
        }
        BOXLITE_TRY(auto images, store.list());
        for (const auto& info : images) {
            if (in_use.contains(info.manifest_digest)) continue;
            auto removed = store.remove(info.reference);
            if (!removed && removed.error().kind() == ErrorKind::InvalidState) continue;  // a box uses it
            BOXLITE_TRY_VOID(removed);
            fmt::print("Untagged: {}\n", info.reference);
        }
    }
    image::GcOptions gc_options;
    BOXLITE_TRY(gc_options.live_holders, box_ids(context));
    BOXLITE_TRY(auto report, store.gc(gc_options));
    fmt::print("Deleted {} blobs, {} rootfs trees, {} disk images\nTotal reclaimed space: {}\n", report.blobs_removed,
               report.rootfs_removed, report.disk_images_removed, human_size(report.bytes_freed));
    return kExitSuccess;
}

BoxliteResult<int> cmd_load(Context& context) {
    const auto& args = context.invocation().load;
    BOXLITE_TRY(auto store, open_store(context));
    std::error_code ec;
    const auto path = std::filesystem::absolute(args.input, ec);
    if (ec || !std::filesystem::exists(path, ec)) {
        return fail(ErrorKind::NotFound, "load: '{}' does not exist (expected an OCI layout directory or a tarball)",
                    args.input);
    }
    BOXLITE_TRY(auto loaded, store.load(path, args.tag));
    for (const auto& info : loaded) {
        if (args.quiet) {
            fmt::print("{}\n", info.reference);
        } else {
            fmt::print("Loaded image: {} ({})\n", info.reference, short_digest(info.config_digest));
        }
    }
    return kExitSuccess;
}

std::optional<std::size_t> image_count(Context& context) {
    auto store = open_store(context);
    if (!store) return std::nullopt;
    auto images = store->list();
    if (!images) return std::nullopt;
    return images->size();
}

#else  // no image store in this tree yet: every image command says so

namespace {
tl::unexpected<BoxliteError> no_image_store(const char* what) {
    return fail(ErrorKind::Unsupported, "'{}' needs the image store, which is not in this build of BoxLite yet", what);
}
}  // namespace

BoxliteResult<ImageDefaults> prepare_image_for_run(Context&, const std::string& reference, bool) {
    // The runtime's own image provider may still resolve it at start; the image's command is
    // unknown here, so `run` needs an explicit command.
    (void)reference;
    return ImageDefaults{};
}
BoxliteResult<int> cmd_pull(Context&) { return no_image_store("pull"); }
BoxliteResult<int> cmd_images(Context&) { return no_image_store("images"); }
BoxliteResult<int> cmd_images_rm(Context&) { return no_image_store("images rm"); }
BoxliteResult<int> cmd_images_prune(Context&) { return no_image_store("images prune"); }
BoxliteResult<int> cmd_load(Context&) { return no_image_store("load"); }
std::optional<std::size_t> image_count(Context&) { return std::nullopt; }

#endif

}  // namespace boxlite::cli
