// `boxlite serve`: opens the runtime on the home and hands it to the REST server (lib/server).
#include "cli/commands_internal.hpp"

#include "server/server.hpp"

#include <boxlite/image/image_config.hpp>
#include <boxlite/image/image_store.hpp>

#include <cstdio>
#include <cstdlib>

namespace boxlite::cli {

namespace {

/// A grace period from the environment, in seconds (fractions allowed), as upstream's variables.
BoxliteResult<void> grace_from_env(const char* name, std::chrono::milliseconds& value) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') return {};
    char* end = nullptr;
    const double seconds = std::strtod(text, &end);
    if (end == text || *end != '\0' || !(seconds > 0) || seconds > 10.0 * 365 * 86400) {
        return fail(ErrorKind::InvalidArgument, "{}='{}': expected a number of seconds greater than 0", name, text);
    }
    value = std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000.0));
    if (value.count() == 0) value = std::chrono::milliseconds(1);
    return {};
}

}  // namespace

BoxliteResult<int> cmd_serve(Context& context) {
    const auto& args = context.invocation().serve;
    server::ServeOptions options;
    options.host = args.host;
    options.port = args.port;
    options.api_key = args.api_key;
    options.tls_cert = args.tls_cert;
    options.tls_key = args.tls_key;
    options.allow_host_rootfs = args.allow_host_rootfs;
    options.read_timeout = std::chrono::seconds(args.read_timeout_seconds);
    options.max_connections = args.max_connections;
    options.max_body_bytes = args.max_body_bytes;
    BOXLITE_TRY_VOID(grace_from_env("BOXLITE_RECONNECT_GRACE", options.reconnect_grace));
    BOXLITE_TRY_VOID(grace_from_env("BOXLITE_SHUTDOWN_GRACE", options.shutdown_grace));
    BOXLITE_TRY_VOID(grace_from_env("BOXLITE_MAX_SESSION_LIFETIME", options.max_session_lifetime));
    // Refuse a bad configuration before opening the home.
    BOXLITE_TRY_VOID(server::validate(options));
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    // A box's main command falls back to its image's Entrypoint/Cmd: the image is local (create
    // pulled it), so this only reads the home's image store.
    options.image_defaults = [store_options = image::store_options_for(context.runtime_options())](
                                 const std::string& reference) -> BoxliteResult<ImageDefaults> {
        BOXLITE_TRY(auto store, image::ImageStore::open(store_options));
        BOXLITE_TRY(auto local, store.inspect(reference));
        return image::image_defaults(local.config);
    };
    const bool tls = options.tls_cert.has_value();
    BOXLITE_TRY_VOID(server::serve(*runtime, options, [&](std::uint16_t port) {
        // One line on stdout, for scripts and tests that start the server on port 0.
        const auto host = options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host;
        std::fputs(fmt::format("boxlite serve: listening on {}://{}:{}\n", tls ? "https" : "http", host, port).c_str(),
                   stdout);
        std::fflush(stdout);
    }));
    std::fputs("boxlite serve: stopped\n", stdout);
    std::fflush(stdout);
    return kExitSuccess;
}

}  // namespace boxlite::cli
