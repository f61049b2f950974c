// BasicRuntime<E, T, S>: the entry point — creates, finds, lists and removes boxes.
//
//   BasicRuntime<MockEngine, PipeTransport, MemoryStorage> rt(options, engine, transport, storage);
//   BOXLITE_TRY(auto box, rt.create(BoxOptions{...}, "web"));
//   BOXLITE_TRY_VOID(box.start());
//
// BoxliteRuntime (AnyEngine, AnyTransport, SqliteStorage) is the form chosen at run time; see
// boxlite.hpp for open_runtime() and default_runtime().
//
// A runtime object is a cheap handle: copies, and the boxes it hands out, share one core. One
// runtime may be used from many threads at once.
#pragma once

#include <boxlite/box_info.hpp>
#include <boxlite/box_options.hpp>
#include <boxlite/boxlite_options.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/detail/runtime_core.hpp>
#include <boxlite/engine/any_engine.hpp>
#include <boxlite/error.hpp>
#include <boxlite/lite_box.hpp>
#include <boxlite/runtime_metrics.hpp>
#include <boxlite/storage/sqlite_storage.hpp>
#include <boxlite/transport/any_transport.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite {

template <Engine E, Transport T, Storage S>
class BasicRuntime {
public:
    using box_type = BasicBox<E, T, S>;
    using engine_type = E;
    using transport_type = T;
    using storage_type = S;

    BasicRuntime(BoxliteOptions options, E engine, T transport, S storage, RuntimeSettings settings = {})
        : core_(std::make_shared<Core>(std::move(options), std::move(engine), std::move(transport), std::move(storage),
                                       std::move(settings))) {}

    /// Validates `options` (and `name`: [A-Za-z0-9][A-Za-z0-9_.-]*, unique), pulls the image
    /// when it is missing and pins it to the box (rootfs_provider.hpp), and records a Configured
    /// box. Nothing runs until start() or the first exec. A rejected create (bad options, an image
    /// that cannot be pulled) writes nothing.
    BoxliteResult<box_type> create(const BoxOptions& options, std::optional<std::string> name = std::nullopt) {
        BOXLITE_TRY(auto record, core_->create(options, std::move(name)));
        return box_type(core_, record.config.id, record.config.name);
    }

    /// By full id, then exact name, then a unique id prefix. NotFound ("box not found: <key>") when
    /// nothing matches; InvalidArgument when a prefix matches several boxes.
    [[nodiscard]] BoxliteResult<box_type> get(std::string_view id_or_name) {
        BOXLITE_TRY(auto record, core_->lookup(id_or_name));
        return box_type(core_, record.config.id, record.config.name);
    }

    [[nodiscard]] BoxliteResult<BoxInfo> get_info(std::string_view id_or_name) {
        BOXLITE_TRY(auto record, core_->lookup(id_or_name));
        return BoxInfo::from(record.config, record.state);
    }

    /// Every box in the home, oldest first, with its current status, whatever engine each box
    /// was created with. Bind the result before iterating it:
    ///
    ///   auto boxes = runtime.list_info();
    ///   if (!boxes) return fail(boxes.error());
    ///   for (const auto& info : *boxes) ...
    ///
    /// (`for (... : *runtime.list_info())` iterates into a temporary destroyed before the body.)
    [[nodiscard]] BoxliteResult<std::vector<BoxInfo>> list_info() { return core_->list_info(); }

    /// False only on NotFound; other failures (database, ambiguous prefix) are errors.
    [[nodiscard]] BoxliteResult<bool> exists(std::string_view id_or_name) {
        auto record = core_->lookup(id_or_name);
        if (record) return true;
        if (record.error().kind() == ErrorKind::NotFound) return false;
        return fail(std::move(record).error());
    }

    /// Removes the box's record and directory. A running box needs force=true (it is killed).
    BoxliteResult<void> remove(std::string_view id_or_name, bool force = false) {
        return core_->remove(id_or_name, force);
    }

    [[nodiscard]] BoxliteResult<RuntimeMetrics> metrics() { return core_->metrics(); }

    [[nodiscard]] const BoxliteOptions& options() const noexcept { return core_->options(); }
    [[nodiscard]] const HomeLayout& layout() const noexcept { return core_->layout(); }
    /// The engine of new boxes (BoxliteOptions::engine); existing boxes keep their own.
    E& engine() noexcept { return core_->engine(); }
    T& transport() noexcept { return core_->transport(); }
    S& storage() noexcept { return core_->storage(); }

private:
    using Core = detail::RuntimeCore<E, T, S>;
    std::shared_ptr<Core> core_;
};

/// The runtime of the CLI, REST server and C API: engine and transport chosen at run time,
/// state in SQLite.
using BoxliteRuntime = BasicRuntime<AnyEngine, AnyTransport, SqliteStorage>;

// The run-time-chosen form is compiled once, in the library (lib/core/default_runtime.cpp):
// a program that uses it does not instantiate and compile the runtime's members again in each
// of its files (a quarter of such a file's compile time). Other policy combinations — mocks,
// custom engines — are instantiated where they are used, as any template.
extern template class detail::RuntimeCore<AnyEngine, AnyTransport, SqliteStorage>;
extern template class BasicBox<AnyEngine, AnyTransport, SqliteStorage>;
extern template class BasicRuntime<AnyEngine, AnyTransport, SqliteStorage>;

}  // namespace boxlite
