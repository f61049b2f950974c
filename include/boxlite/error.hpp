// BoxliteError and BoxliteResult<T>: the only way a fallible BoxLite call reports failure.
//
// No exception crosses the public API. Every error carries a kind (the reference's
// BoxliteError variants) and a message that says what failed, on which box/image/path,
// and — where there is one — what the caller can do about it.
#pragma once

#include <fmt/format.h>
#include <tl/expected.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace boxlite {

/// The reference's error variants, one per failure domain. Every kind is either returned somewhere
/// in lib/, cli/ or include/, or marked *reserved* below with the work that will return it; a
/// reserved kind stays because the reference (Rust API, C error codes, REST mapping) has it.
enum class ErrorKind : std::uint8_t {
    UnsupportedEngine,  ///< the requested engine cannot run on this host
    Engine,             ///< the engine (VMM, shim, namespaces) failed
    Config,             ///< an option is out of range or inconsistent
    Storage,            ///< filesystem / disk image problem
    Image,              ///< image reference, pull, manifest or layer problem
    Portal,             ///< host <-> guest communication problem
    Network,            ///< networking set-up problem. Reserved: returned once boxes get networking
                        ///< (passt, port forwards, the egress firewall); REST maps it to 503
    Rpc,                ///< the guest agent answered with an error
    RpcTransport,       ///< the transport to the guest agent failed
    Internal,           ///< a bug or an unexpected system error
    Execution,          ///< a command could not be run in the box
    Unsupported,        ///< the operation is not supported (here, or yet)
    NotFound,           ///< no such box (the CLI also uses it for a missing file to load)
    AlreadyExists,      ///< a box (or resource) of that name/id already exists
    InvalidState,       ///< the box is in the wrong state for the operation
    Database,           ///< SQLite failed
    MetadataError,      ///< stored metadata is corrupt or unreadable
    InvalidArgument,    ///< an argument is malformed
    Stopped,            ///< the box or runtime has been stopped / shut down. Reserved: returned once the
                        ///< runtime has a shutdown() after which calls are refused; REST maps it to 409
};

/// Stable lower-case identifier of a kind ("not_found"), for JSON and the C API.
constexpr std::string_view to_identifier(ErrorKind kind) noexcept {
    switch (kind) {
        case ErrorKind::UnsupportedEngine: return "unsupported_engine";
        case ErrorKind::Engine: return "engine";
        case ErrorKind::Config: return "config";
        case ErrorKind::Storage: return "storage";
        case ErrorKind::Image: return "image";
        case ErrorKind::Portal: return "portal";
        case ErrorKind::Network: return "network";
        case ErrorKind::Rpc: return "rpc";
        case ErrorKind::RpcTransport: return "rpc_transport";
        case ErrorKind::Internal: return "internal";
        case ErrorKind::Execution: return "execution";
        case ErrorKind::Unsupported: return "unsupported";
        case ErrorKind::NotFound: return "not_found";
        case ErrorKind::AlreadyExists: return "already_exists";
        case ErrorKind::InvalidState: return "invalid_state";
        case ErrorKind::Database: return "database";
        case ErrorKind::MetadataError: return "metadata";
        case ErrorKind::InvalidArgument: return "invalid_argument";
        case ErrorKind::Stopped: return "stopped";
    }
    return "internal";
}

/// The prefix the reference puts before the message ("configuration error: ...").
constexpr std::string_view message_prefix(ErrorKind kind) noexcept {
    switch (kind) {
        case ErrorKind::UnsupportedEngine: return "unsupported engine kind";
        case ErrorKind::Engine: return "engine reported an error";
        case ErrorKind::Config: return "configuration error";
        case ErrorKind::Storage: return "storage error";
        case ErrorKind::Image: return "images error";
        case ErrorKind::Portal: return "portal error";
        case ErrorKind::Network: return "network error";
        case ErrorKind::Rpc: return "rpc error";
        case ErrorKind::RpcTransport: return "rpc transport error";
        case ErrorKind::Internal: return "internal error";
        case ErrorKind::Execution: return "execution error";
        case ErrorKind::Unsupported: return "unsupported";
        case ErrorKind::NotFound: return "box not found";
        case ErrorKind::AlreadyExists: return "already exists";
        case ErrorKind::InvalidState: return "invalid state";
        case ErrorKind::Database: return "database error";
        case ErrorKind::MetadataError: return "metadata error";
        case ErrorKind::InvalidArgument: return "invalid argument";
        case ErrorKind::Stopped: return "stopped";
    }
    return "internal error";
}

class BoxliteError {
public:
    BoxliteError(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {}

    [[nodiscard]] ErrorKind kind() const noexcept { return kind_; }
    /// The message without the kind's prefix ("CPU count must be between 1 and 8").
    [[nodiscard]] const std::string& message() const noexcept { return message_; }

    /// The full text, as the reference displays it: "configuration error: CPU count must be ...".
    [[nodiscard]] std::string to_string() const {
        if (message_.empty()) return std::string(message_prefix(kind_));
        return fmt::format("{}: {}", message_prefix(kind_), message_);
    }

    /// Adds outer context, keeping the kind: "starting box 01JJ...: <message>".
    [[nodiscard]] BoxliteError with_context(std::string_view context) const {
        return BoxliteError(kind_, fmt::format("{}: {}", context, message_));
    }

    friend bool operator==(const BoxliteError&, const BoxliteError&) = default;

private:
    ErrorKind kind_;
    std::string message_;
};

template <class T>
using BoxliteResult = tl::expected<T, BoxliteError>;

/// `return fail(ErrorKind::Config, "CPU count must be between 1 and {}", max);`
template <class... Args>
[[nodiscard]] tl::unexpected<BoxliteError> fail(ErrorKind kind, fmt::format_string<Args...> format, Args&&... args) {
    return tl::unexpected<BoxliteError>(BoxliteError(kind, fmt::format(format, std::forward<Args>(args)...)));
}

[[nodiscard]] inline tl::unexpected<BoxliteError> fail(BoxliteError error) {
    return tl::unexpected<BoxliteError>(std::move(error));
}

/// An errno-carrying failure: "<what>: <strerror(errno)>".
[[nodiscard]] inline tl::unexpected<BoxliteError> fail_errno(ErrorKind kind, std::string_view what, int error_number) {
    return tl::unexpected<BoxliteError>(
        BoxliteError(kind, fmt::format("{}: {}", what, std::system_category().message(error_number))));
}

}  // namespace boxlite

template <>
struct fmt::formatter<boxlite::ErrorKind> : fmt::formatter<std::string_view> {
    auto format(boxlite::ErrorKind kind, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(boxlite::to_identifier(kind), ctx);
    }
};

template <>
struct fmt::formatter<boxlite::BoxliteError> : fmt::formatter<std::string_view> {
    auto format(const boxlite::BoxliteError& error, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(error.to_string(), ctx);
    }
};

/// Propagates the error of a BoxliteResult expression, like Rust's `?`.
/// `BOXLITE_TRY(auto fd, open_file(path));` or `BOXLITE_TRY_VOID(flush());`
#define BOXLITE_DETAIL_CONCAT2(a, b) a##b
#define BOXLITE_DETAIL_CONCAT(a, b) BOXLITE_DETAIL_CONCAT2(a, b)
#define BOXLITE_TRY_IMPL(tmp, decl, expr)                                               \
    auto tmp = (expr);                                                                  \
    if (!tmp) return ::tl::unexpected<::boxlite::BoxliteError>(std::move(tmp).error()); \
    decl = std::move(*tmp)
#define BOXLITE_TRY(decl, expr) BOXLITE_TRY_IMPL(BOXLITE_DETAIL_CONCAT(boxlite_try_, __LINE__), decl, expr)
#define BOXLITE_TRY_VOID(expr)                                                                            \
    do {                                                                                                  \
        auto boxlite_try_void_result = (expr);                                                            \
        if (!boxlite_try_void_result)                                                                     \
            return ::tl::unexpected<::boxlite::BoxliteError>(std::move(boxlite_try_void_result).error()); \
    } while (false)
