// <boxlite/boxlite.hpp>: the whole public API, and the runtime a program gets by default.
//
//   auto runtime = boxlite::default_runtime();            // ~/.boxlite (or $BOXLITE_HOME)
//   if (!runtime) { fmt::print("{}\n", runtime.error()); return 1; }
//   BOXLITE_TRY(auto box, runtime->create(boxlite::BoxOptions{}, "web"));
//
// Engine selection: engine/select.hpp maps BoxliteOptions::engine to an AnyEngine (select_engine)
// and registers every transport in an AnyTransport (default_transport). BoxliteOptions::engine is
// the engine of new boxes; a box keeps the engine it was created with, so one runtime lists and
// drives boxes of every engine in one home. An engine that cannot run here still gives a
// runtime: its boxes can be listed, inspected and removed, and starting one reports the reason.
#pragma once

#include <boxlite/box_command.hpp>
#include <boxlite/box_config.hpp>
#include <boxlite/box_id.hpp>
#include <boxlite/box_info.hpp>
#include <boxlite/box_metrics.hpp>
#include <boxlite/box_options.hpp>
#include <boxlite/box_state.hpp>
#include <boxlite/box_status.hpp>
#include <boxlite/boxlite_options.hpp>
#include <boxlite/bytes.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/container_id.hpp>
#include <boxlite/engine/any_engine.hpp>
#include <boxlite/engine/mock_engine.hpp>
#include <boxlite/error.hpp>
#include <boxlite/guest_assets.hpp>
#include <boxlite/json.hpp>
#include <boxlite/lite_box.hpp>
#include <boxlite/rootfs_provider.hpp>
#include <boxlite/runtime.hpp>
#include <boxlite/runtime_metrics.hpp>
#include <boxlite/seconds.hpp>
#include <boxlite/security_options.hpp>
#include <boxlite/storage/memory_storage.hpp>
#include <boxlite/storage/sqlite_storage.hpp>
#include <boxlite/transport/any_transport.hpp>
#include <boxlite/transport/pipe_transport.hpp>
#include <boxlite/version.hpp>

#include <boxlite/engine/select.hpp>

#include <mutex>
#include <optional>

namespace boxlite {

namespace detail {

inline BoxliteResult<AnyEngine> engine_for(const BoxliteOptions& options) { return select_engine(options); }

inline AnyTransport transport_for(const BoxliteOptions&) { return default_transport(); }

}  // namespace detail

/// A BoxliteRuntime on `options.home_dir`, with the engine `options.engine` selects.
[[nodiscard]] inline BoxliteResult<BoxliteRuntime> open_runtime(BoxliteOptions options, RuntimeSettings settings = {}) {
    BOXLITE_TRY_VOID(options.validate());
    BOXLITE_TRY(auto storage, SqliteStorage::open(options.home_dir));
    BOXLITE_TRY(auto engine, detail::engine_for(options));
    auto transport = detail::transport_for(options);
    return BoxliteRuntime(std::move(options), std::move(engine), std::move(transport), std::move(storage),
                          std::move(settings));
}

/// The process-wide runtime on BoxliteOptions::from_environment() (BOXLITE_HOME,
/// BOXLITE_ENGINE), opened on first use; every call returns a handle to the same one. A
/// failure to open is returned to every caller.
[[nodiscard]] inline BoxliteResult<BoxliteRuntime> default_runtime() {
    static std::once_flag once;
    static std::optional<BoxliteResult<BoxliteRuntime>> instance;
    std::call_once(once, [] {
        auto options = BoxliteOptions::from_environment();
        if (!options) instance.emplace(fail(options.error()));
        else instance.emplace(open_runtime(std::move(*options)));
    });
    return *instance;
}

}  // namespace boxlite
