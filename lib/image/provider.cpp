// The runtime's rootfs provider seam, backed by the image store (see rootfs_provider.hpp).
#include <boxlite/image/image_store.hpp>
#include <boxlite/rootfs_provider.hpp>

#include <map>
#include <memory>
#include <mutex>

namespace boxlite::image {
namespace {

// Opening a store creates directories and a SQLite connection: do it once per home directory
// and search list, and share it (ImageStore is safe to use from several threads).
BoxliteResult<ImageStore*> shared_store(const BoxliteOptions& options) {
    static std::mutex mutex;
    static std::map<std::string, std::unique_ptr<ImageStore>> stores;
    std::string key = options.home_dir.string();
    for (const auto& registry : options.image_registries) key += "\n" + registry;
    key += "\ninsecure:";
    for (const auto& registry : options.insecure_registries) key += "\n" + registry;
    std::lock_guard lock(mutex);
    if (auto it = stores.find(key); it != stores.end()) return it->second.get();
    BOXLITE_TRY(auto store, ImageStore::open(store_options_for(options)));
    auto owned = std::make_unique<ImageStore>(std::move(store));
    auto* raw = owned.get();
    stores.emplace(std::move(key), std::move(owned));
    return raw;
}

}  // namespace

ImageStoreOptions store_options_for(const BoxliteOptions& options) {
    ImageStoreOptions store_options;
    store_options.home = options.home_dir;
    store_options.registry.search_registries = options.image_registries;
    store_options.registry.insecure_registries = options.insecure_registries;
    store_options.registry.platform = host_platform();
    return store_options;
}

ImageRootfsProvider store_rootfs_provider() {
    ImageRootfsProvider provider;
    provider.prepare = [](const RootfsSpec::Image& image, RootfsKind kind, const BoxliteOptions& options,
                          const BoxID& box) -> BoxliteResult<PreparedRootfs> {
        BOXLITE_TRY(auto* store, shared_store(options));
        auto prepared = store->prepare_for(box.str(), image.reference, kind);
        if (!prepared) return fail(prepared.error().with_context(fmt::format("preparing image '{}'", image.reference)));
        PreparedRootfs out{
            prepared->path, image_defaults(prepared->image.config), prepared->image.manifest_digest, {}, {}};
        // prepare_for() pulls only on a box's first call (it leaves pull_time 0 for a pinned
        // image) and builds only when the tree or disk is not cached yet (build_time 0).
        if (prepared->pull_time.count() > 0) out.pull_time = prepared->pull_time;
        if (prepared->build_time.count() > 0) out.build_time = prepared->build_time;
        return out;
    };
    provider.release = [](const BoxID& box, const BoxliteOptions& options) -> BoxliteResult<void> {
        BOXLITE_TRY(auto* store, shared_store(options));
        return store->release(box.str());
    };
    return provider;
}

}  // namespace boxlite::image
