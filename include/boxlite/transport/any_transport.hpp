// AnyStream and AnyTransport: the type-erased ByteStream and Transport that BoxliteRuntime
// (chosen at run time) uses.
//
// AnyTransport dispatches on the endpoint's scheme — the text before the first ':' of
// EngineHandle::endpoint ("unix:/…/agent.sock" -> "unix", "vsock-uds:/…:2695" -> "vsock-uds").
// Each engine's endpoints name the transport that reaches them, so one AnyTransport with every
// concrete transport registered serves boxes of every engine:
//
//   AnyTransport transport;
//   transport.add("unix", UnixTransport{});
//   transport.add("pipe", PipeTransport{});
#pragma once

#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace boxlite {

class AnyStream {
public:
    AnyStream() = default;
    // The same-type test comes first: checking ByteStream<AnyStream> (movable) considers this
    // constructor, and clang would recurse into ByteStream<AnyStream> without the short circuit.
    template <class S>
    requires(!std::same_as<std::remove_cvref_t<S>, AnyStream> && ByteStream<S>) explicit AnyStream(S stream)
        : impl_(std::make_unique<Model<S>>(std::move(stream))) {}

    BoxliteResult<std::size_t> read_some(std::span<std::byte> buffer) {
        if (!impl_) return fail(ErrorKind::RpcTransport, "read on an empty stream");
        return impl_->read_some(buffer);
    }
    BoxliteResult<void> write_all(std::span<const std::byte> data) {
        if (!impl_) return fail(ErrorKind::RpcTransport, "write on an empty stream");
        return impl_->write_all(data);
    }
    BoxliteResult<void> shutdown_write() {
        if (!impl_) return fail(ErrorKind::RpcTransport, "shutdown on an empty stream");
        return impl_->shutdown_write();
    }
    void close() {
        if (impl_) impl_->close();
    }
    [[nodiscard]] int native_handle() { return impl_ ? impl_->native_handle() : -1; }

    /// The concrete stream, when it is an S.
    template <class S>
    [[nodiscard]] S* target() noexcept {
        auto* model = dynamic_cast<Model<S>*>(impl_.get());
        return model != nullptr ? &model->stream : nullptr;
    }

private:
    struct Base {
        virtual ~Base() = default;
        virtual BoxliteResult<std::size_t> read_some(std::span<std::byte>) = 0;
        virtual BoxliteResult<void> write_all(std::span<const std::byte>) = 0;
        virtual BoxliteResult<void> shutdown_write() = 0;
        virtual void close() = 0;
        virtual int native_handle() = 0;
    };
    template <class S>
    struct Model final : Base {
        explicit Model(S s) : stream(std::move(s)) {}
        BoxliteResult<std::size_t> read_some(std::span<std::byte> b) override { return stream.read_some(b); }
        BoxliteResult<void> write_all(std::span<const std::byte> d) override { return stream.write_all(d); }
        BoxliteResult<void> shutdown_write() override { return stream.shutdown_write(); }
        void close() override { stream.close(); }
        int native_handle() override { return stream.native_handle(); }
        S stream;
    };
    std::unique_ptr<Base> impl_;
};

static_assert(ByteStream<AnyStream>);

class AnyTransport {
public:
    using stream_type = AnyStream;

    AnyTransport() = default;

    /// Routes endpoints "<scheme>:…" to `transport`; a later add() for the same scheme replaces
    /// the earlier one.
    template <Transport T>
    AnyTransport& add(std::string scheme, T transport) {
        routes_[std::move(scheme)] = std::make_shared<Model<T>>(std::move(transport));
        return *this;
    }

    [[nodiscard]] bool handles(std::string_view scheme) const { return routes_.contains(std::string(scheme)); }

    BoxliteResult<AnyStream> connect(std::string_view endpoint, std::chrono::milliseconds timeout) {
        const auto colon = endpoint.find(':');
        const auto scheme = endpoint.substr(0, colon == std::string_view::npos ? 0 : colon);
        auto it = routes_.find(std::string(scheme));
        if (it == routes_.end()) {
            std::string known;
            for (const auto& [name, route] : routes_) known += (known.empty() ? "" : ", ") + name;
            return fail(ErrorKind::InvalidArgument, "no transport for endpoint '{}' (scheme '{}'; registered: {})",
                        endpoint, scheme, known.empty() ? "none" : known);
        }
        return it->second->connect(endpoint, timeout);
    }

    /// The registered transport for `scheme`, when it is a T (tests reach PipeTransport's hub).
    template <class T>
    [[nodiscard]] T* target(std::string_view scheme) noexcept {
        auto it = routes_.find(std::string(scheme));
        if (it == routes_.end()) return nullptr;
        auto* model = dynamic_cast<Model<T>*>(it->second.get());
        return model != nullptr ? &model->transport : nullptr;
    }

private:
    struct Base {
        virtual ~Base() = default;
        virtual BoxliteResult<AnyStream> connect(std::string_view, std::chrono::milliseconds) = 0;
    };
    template <class T>
    struct Model final : Base {
        explicit Model(T t) : transport(std::move(t)) {}
        BoxliteResult<AnyStream> connect(std::string_view endpoint, std::chrono::milliseconds timeout) override {
            auto stream = transport.connect(endpoint, timeout);
            if (!stream) return fail(std::move(stream).error());
            return AnyStream(std::move(*stream));
        }
        T transport;
    };
    // shared_ptr: copies of an AnyTransport share the concrete transports (they are handles).
    std::map<std::string, std::shared_ptr<Base>, std::less<>> routes_;
};

static_assert(Transport<AnyTransport>);

}  // namespace boxlite
