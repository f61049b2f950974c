// EngineKind -> engine, and the transport set that reaches every engine's agents.
//
//   make_engine(kind)        the engine of that kind, or UnsupportedEngine saying why it cannot
//                            run here. `auto` tries kvm, then qemu, and never silently drops to
//                            namespace isolation: when neither works the error lists why each
//                            was rejected.
//   make_engine_named(kind)  make_engine by the name a box stores (BoxConfig::engine)
//   select_engine(options)   what open_runtime() uses: make_engine, deferred until first needed
//                            (AnyEngine::deferred: `ls` or `exec` into a namespace box does not
//                            run the kvm probe), and an engine that cannot run reports why on
//                            use, so the runtime still opens (list, inspect and remove work;
//                            start reports the reason).
//                            Options::engine is the engine of new boxes; the result makes the
//                            engine of any other kind on demand (make_engine_named), so a box
//                            keeps the engine it was created with.
//   default_transport()      "unix" (namespace engine), "pipe" (mock engine) and "vsock-uds"
//                            (VM engines: the shim's hybrid vsock socket).
#pragma once

#include <boxlite/boxlite_options.hpp>
#include <boxlite/engine/any_engine.hpp>
#include <boxlite/engine/kvm_engine.hpp>
#include <boxlite/engine/mock_engine.hpp>
#include <boxlite/engine/namespace_engine.hpp>
#include <boxlite/engine/qemu_engine.hpp>
#include <boxlite/error.hpp>
#include <boxlite/transport/any_transport.hpp>
#include <boxlite/transport/pipe_transport.hpp>
#include <boxlite/transport/unix_transport.hpp>
#include <boxlite/transport/vsock_uds_transport.hpp>

#include <string>
#include <vector>

namespace boxlite {

namespace detail {

/// One VM engine kind, or UnsupportedEngine with the reason.
[[nodiscard]] inline BoxliteResult<AnyEngine> make_vm_engine(EngineKind kind) {
    switch (kind) {
        case EngineKind::Kvm: {
            KvmEngine engine;
            if (auto ok = engine.available(); !ok) return fail(ok.error());
            return AnyEngine(std::move(engine));
        }
        case EngineKind::Qemu: {
            QemuEngine engine;
            if (auto ok = engine.available(); !ok) return fail(ok.error());
            return AnyEngine(std::move(engine));
        }
        default: return fail(ErrorKind::UnsupportedEngine, "{} is not a VM engine", to_string(kind));
    }
}

}  // namespace detail

[[nodiscard]] inline BoxliteResult<AnyEngine> make_engine(EngineKind kind) {
    switch (kind) {
        case EngineKind::Mock: return AnyEngine(MockEngine{});
        case EngineKind::Namespace: {
            NamespaceEngine engine;
            if (auto ok = engine.available(); !ok) return fail(ok.error());
            return AnyEngine(std::move(engine));
        }
        case EngineKind::Kvm:
        case EngineKind::Qemu: return detail::make_vm_engine(kind);
        case EngineKind::Auto: {
            std::vector<std::string> reasons;
            for (auto candidate : {EngineKind::Kvm, EngineKind::Qemu}) {
                auto engine = detail::make_vm_engine(candidate);
                if (engine) return engine;
                reasons.push_back(engine.error().message());
            }
            std::string text;
            for (const auto& r : reasons) text += (text.empty() ? "" : "; ") + r;
            return fail(ErrorKind::UnsupportedEngine,
                        "auto: no VM engine can run here ({}); the namespace engine is container-grade isolation "
                        "and is only used when asked for (--engine namespace / BOXLITE_ENGINE=namespace)",
                        text);
        }
    }
    return fail(ErrorKind::UnsupportedEngine, "unknown engine kind {}", static_cast<int>(kind));
}

[[nodiscard]] inline BoxliteResult<AnyEngine> make_engine_named(std::string_view kind) {
    BOXLITE_TRY(const auto parsed, parse_engine_kind(kind));
    return make_engine(parsed);
}

[[nodiscard]] inline BoxliteResult<AnyEngine> select_engine(const BoxliteOptions& options) {
    // Made when first needed (AnyEngine::deferred): listing, inspecting, removing boxes or
    // running a command in a box of another engine never probes this one.
    std::string name(to_string(options.engine));
    std::vector<std::string> kinds{name};
    if (options.engine == EngineKind::Auto) kinds = {name, "kvm", "qemu"};
    return AnyEngine::deferred(std::move(name), std::move(kinds), &make_engine_named);
}

[[nodiscard]] inline AnyTransport default_transport() {
    AnyTransport transport;
    transport.add("unix", UnixTransport{});
    transport.add("pipe", PipeTransport{});
    transport.add("vsock-uds", VsockUdsTransport{});
    return transport;
}

}  // namespace boxlite
