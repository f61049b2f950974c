// AnyEngine: a type-erased Engine, so BoxliteRuntime can pick kvm, qemu, namespace or mock at
// run time (engine/select.hpp maps EngineKind to one). Copies share the same engine object.
//
// It is a PerKindEngine (engine.hpp): given a maker (select_engine() passes make_engine_named),
// engine_for(kind) makes an engine of another kind, so one runtime drives boxes of every engine.
//
// AnyEngine::deferred(name, kinds, maker) is made by its maker only when something first needs
// it (kind(), available(), start(), ...). select_engine() uses it, so a command that never
// starts a box of the default engine (`ls`, `rm`, `exec` into a namespace box) does not pay for
// that engine's probe: under `auto`, the kvm probe runs a tiny 64-bit guest, about 3 ms here.
// may_be(kind) answers whether it could be of that kind without making it.
#pragma once

#include <boxlite/engine.hpp>
#include <boxlite/error.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace boxlite {

class AnyEngine {
public:
    /// Makes the engine named `kind` ("namespace", "kvm", ...), or says why it cannot run here.
    using Maker = BoxliteResult<AnyEngine> (*)(std::string_view kind);

    template <Engine E>
    requires(!std::same_as<std::remove_cvref_t<E>, AnyEngine>) explicit AnyEngine(E engine, Maker maker = nullptr)
        : impl_(std::make_shared<Model<E>>(std::move(engine))), maker_(maker) {}

    /// An engine that cannot run here: every call reports `why` (an UnsupportedEngine error).
    /// Lets a runtime still list, inspect and remove boxes when no engine is usable.
    [[nodiscard]] static AnyEngine unavailable(std::string kind, BoxliteError why, Maker maker = nullptr) {
        return AnyEngine(Unavailable{std::move(kind), std::move(why)}, maker);
    }

    /// The engine `name` stands for, made by `maker(name)` when first needed, once; until then
    /// it may be of any kind in `kinds` (may_be). When the maker fails, every call reports why,
    /// as unavailable() does, and kind() is `name`. Copies share the one engine made.
    [[nodiscard]] static AnyEngine deferred(std::string name, std::vector<std::string> kinds, Maker maker) {
        auto state = std::make_shared<Deferred::State>();
        state->name = std::move(name);
        state->kinds = std::move(kinds);
        state->maker = maker;
        return AnyEngine(Deferred{std::move(state)}, maker);
    }

    /// Whether this engine is, or (deferred and not made yet) may turn out to be, of `kind`.
    /// Never makes a deferred engine.
    [[nodiscard]] bool may_be(std::string_view kind) const { return impl_->may_be(kind); }

    /// This engine, making engines of other kinds with `maker`.
    [[nodiscard]] AnyEngine with_maker(Maker maker) const {
        AnyEngine copy = *this;
        copy.maker_ = maker;
        return copy;
    }

    /// An engine of `kind` from the maker (which the result keeps), or UnsupportedEngine when
    /// this AnyEngine was made without one.
    [[nodiscard]] BoxliteResult<AnyEngine> engine_for(std::string_view kind) const {
        if (maker_ == nullptr) {
            return fail(ErrorKind::UnsupportedEngine, "this runtime runs the {} engine only, not {}", this->kind(),
                        kind);
        }
        BOXLITE_TRY(auto made, maker_(kind));
        made.maker_ = maker_;
        return made;
    }

    [[nodiscard]] std::string_view kind() const { return impl_->kind(); }
    [[nodiscard]] RootfsKind rootfs_kind() const { return impl_->rootfs_kind(); }
    [[nodiscard]] BoxliteResult<void> available() const { return impl_->available(); }
    BoxliteResult<EngineHandle> start(const EngineLaunch& launch) { return impl_->start(launch); }
    BoxliteResult<void> stop(const EngineHandle& h, std::chrono::milliseconds timeout) {
        return impl_->stop(h, timeout);
    }
    BoxliteResult<void> kill(const EngineHandle& h) { return impl_->kill(h); }
    [[nodiscard]] bool is_alive(const EngineHandle& h) const { return impl_->is_alive(h); }
    BoxliteResult<EngineMetrics> metrics(const EngineHandle& h) { return impl_->metrics(h); }

    /// The concrete engine, when it is an E.
    template <class E>
    [[nodiscard]] E* target() noexcept {
        auto* model = dynamic_cast<Model<E>*>(impl_.get());
        return model != nullptr ? &model->engine : nullptr;
    }

private:
    struct Unavailable {
        std::string name;
        BoxliteError why;
        [[nodiscard]] std::string_view kind() const { return name; }
        [[nodiscard]] bool may_be(std::string_view k) const { return k == name; }
        [[nodiscard]] RootfsKind rootfs_kind() const { return RootfsKind::Directory; }
        [[nodiscard]] BoxliteResult<void> available() const { return fail(why); }
        BoxliteResult<EngineHandle> start(const EngineLaunch&) { return fail(why); }
        BoxliteResult<void> stop(const EngineHandle&, std::chrono::milliseconds) { return fail(why); }
        BoxliteResult<void> kill(const EngineHandle&) { return fail(why); }
        [[nodiscard]] bool is_alive(const EngineHandle&) const { return false; }
        BoxliteResult<EngineMetrics> metrics(const EngineHandle&) { return fail(why); }
    };

    struct Deferred {
        struct State {
            std::string name;
            std::vector<std::string> kinds;
            Maker maker = nullptr;
            std::mutex mutex;
            std::unique_ptr<AnyEngine> engine;  // once made: the maker's engine, or unavailable()
        };
        std::shared_ptr<State> state;

        /// The engine, made on the first call (callers meanwhile wait); when the maker fails, an
        /// unavailable() engine named `name` that reports why.
        [[nodiscard]] AnyEngine& made() const {
            std::lock_guard lock(state->mutex);
            if (!state->engine) {
                auto engine = state->maker != nullptr
                                  ? state->maker(state->name)
                                  : fail(ErrorKind::UnsupportedEngine, "no way to make the {} engine", state->name);
                state->engine = std::make_unique<AnyEngine>(
                    engine ? std::move(*engine) : AnyEngine::unavailable(state->name, engine.error()));
            }
            return *state->engine;
        }
        [[nodiscard]] bool may_be(std::string_view kind) const {
            if (kind == state->name) return true;
            std::lock_guard lock(state->mutex);
            if (state->engine) return state->engine->kind() == kind;
            for (const auto& k : state->kinds)
                if (k == kind) return true;
            return false;
        }
        [[nodiscard]] std::string_view kind() const { return made().kind(); }
        [[nodiscard]] RootfsKind rootfs_kind() const { return made().rootfs_kind(); }
        [[nodiscard]] BoxliteResult<void> available() const { return made().available(); }
        BoxliteResult<EngineHandle> start(const EngineLaunch& l) { return made().start(l); }
        BoxliteResult<void> stop(const EngineHandle& h, std::chrono::milliseconds t) { return made().stop(h, t); }
        BoxliteResult<void> kill(const EngineHandle& h) { return made().kill(h); }
        [[nodiscard]] bool is_alive(const EngineHandle& h) const { return made().is_alive(h); }
        BoxliteResult<EngineMetrics> metrics(const EngineHandle& h) { return made().metrics(h); }
    };

    struct Base {
        virtual ~Base() = default;
        virtual std::string_view kind() const = 0;
        virtual bool may_be(std::string_view kind) const = 0;
        virtual RootfsKind rootfs_kind() const = 0;
        virtual BoxliteResult<void> available() const = 0;
        virtual BoxliteResult<EngineHandle> start(const EngineLaunch&) = 0;
        virtual BoxliteResult<void> stop(const EngineHandle&, std::chrono::milliseconds) = 0;
        virtual BoxliteResult<void> kill(const EngineHandle&) = 0;
        virtual bool is_alive(const EngineHandle&) const = 0;
        virtual BoxliteResult<EngineMetrics> metrics(const EngineHandle&) = 0;
    };
    template <class E>
    struct Model final : Base {
        explicit Model(E e) : engine(std::move(e)) {}
        std::string_view kind() const override { return engine.kind(); }
        bool may_be(std::string_view k) const override {
            if constexpr (requires { engine.may_be(k); }) return engine.may_be(k);
            else return engine.kind() == k;
        }
        RootfsKind rootfs_kind() const override { return engine.rootfs_kind(); }
        BoxliteResult<void> available() const override { return engine.available(); }
        BoxliteResult<EngineHandle> start(const EngineLaunch& l) override { return engine.start(l); }
        BoxliteResult<void> stop(const EngineHandle& h, std::chrono::milliseconds t) override {
            return engine.stop(h, t);
        }
        BoxliteResult<void> kill(const EngineHandle& h) override { return engine.kill(h); }
        bool is_alive(const EngineHandle& h) const override { return engine.is_alive(h); }
        BoxliteResult<EngineMetrics> metrics(const EngineHandle& h) override { return engine.metrics(h); }
        E engine;
    };
    std::shared_ptr<Base> impl_;
    Maker maker_ = nullptr;
};

static_assert(PerKindEngine<AnyEngine>);

}  // namespace boxlite
