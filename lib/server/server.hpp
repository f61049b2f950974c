// `boxlite serve`: the REST API of docs/openapi.yaml (upstream's routes, bodies, error envelope and
// status mapping) and WebSocket attach, over HTTP/1.1 or HTTPS.
//
// Two layers, kept apart so Boost.Beast's templates stay in one file:
//   rest_api.{hpp,cpp}     requests and responses as plain structs: routing, JSON bodies, the error
//                          envelope, executions and their output backlog (no Beast)
//   http_server.cpp        Boost.Beast + Asio: accept, TLS, parse with size limits and timeouts,
//                          hand each request to a worker thread, WebSocket attach, SIGTERM
#pragma once

#include <boxlite/boxlite.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace boxlite::server {

struct ServeOptions {
    std::string host = "127.0.0.1";
    std::uint16_t port = 8100;
    /// Every route but GET /v1/config then needs `Authorization: Bearer <key>`.
    std::optional<std::string> api_key;
    /// Lets a client create a box on a host folder (`rootfs_path`); off: only images.
    bool allow_host_rootfs = false;
    std::optional<std::string> tls_cert;  ///< PEM certificate chain; with tls_key, HTTPS
    std::optional<std::string> tls_key;   ///< PEM private key
    /// A request's headers and body must arrive within this time (slow-loris), and an idle
    /// keep-alive connection is closed after it.
    std::chrono::seconds read_timeout{30};
    std::chrono::seconds write_timeout{30};
    std::size_t max_header_bytes = 16 * 1024;
    std::size_t max_body_bytes = 256 * 1024 * 1024;  ///< file uploads (tar) are the big bodies
    std::size_t max_connections = 256;
    /// The orphan reaper (upstream's BOXLITE_RECONNECT_GRACE, BOXLITE_SHUTDOWN_GRACE,
    /// BOXLITE_MAX_SESSION_LIFETIME): an execution whose attached client left gets SIGHUP after
    /// `reconnect_grace`, SIGTERM `shutdown_grace` later, then SIGKILL and eviction after another
    /// `shutdown_grace`; any execution is killed and evicted at `max_session_lifetime`.
    std::chrono::milliseconds reconnect_grace{std::chrono::seconds(300)};
    std::chrono::milliseconds shutdown_grace{std::chrono::seconds(30)};
    std::chrono::milliseconds max_session_lifetime{std::chrono::seconds(86400)};
    /// The Entrypoint/Cmd/Env/WorkingDir/User of a local image (the serve command looks it up in
    /// the home's image store), for a box's main command; unset: only BoxOptions count.
    std::function<BoxliteResult<ImageDefaults>(const std::string& reference)> image_defaults;
    unsigned io_threads = 2;
    unsigned worker_threads = 8;  ///< runtime calls block (box start, file copies): they run here
};

/// Refuses what must not run: a non-loopback host without an API key, half a TLS pair.
[[nodiscard]] BoxliteResult<void> validate(const ServeOptions& options);

/// True for 127.0.0.0/8, ::1 and "localhost".
[[nodiscard]] bool is_loopback_host(const std::string& host);

/// Serves until SIGTERM or SIGINT: then stops accepting, lets requests in flight finish, closes
/// attached WebSockets and returns; boxes and executions are left as they are. `on_listening`
/// gets the bound port (useful with port 0) once the server accepts connections.
[[nodiscard]] BoxliteResult<void> serve(BoxliteRuntime runtime, const ServeOptions& options,
                                        std::function<void(std::uint16_t)> on_listening = {});

}  // namespace boxlite::server
