// `--url URL`: ls, rm, exec and run against a `boxlite serve` (upstream's REST routes) instead of the
// local home, printing what the local commands print. HTTP/1.1 and the WebSocket attach of an
// execution, over Boost.Beast (plain http:// only). The key: --api-key, else $BOXLITE_API_KEY,
// else $BOXLITE_SERVE_API_KEY; sent as `Authorization: Bearer`.
#include "cli/commands_internal.hpp"
#include "cli/output.hpp"

#include <boxlite/detail/time.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

constexpr std::uint64_t kMaxReplyBytes = 64ull * 1024 * 1024;

tl::unexpected<BoxliteError> error(ErrorKind kind, std::string message) {
    return tl::unexpected(BoxliteError(kind, std::move(message)));
}

struct Remote {
    std::string url;
    std::string host;
    std::string port;
    std::string base;  ///< the URL's path + "/v1"
    std::optional<std::string> key;
};

BoxliteResult<Remote> parse_remote(const GlobalFlags& global) {
    Remote r;
    r.url = *global.url;
    std::string_view rest = r.url;
    if (rest.starts_with("https://")) {
        return error(ErrorKind::Unsupported, fmt::format("--url {}: the CLI reaches servers over http:// only", r.url));
    }
    if (!rest.starts_with("http://")) {
        return error(ErrorKind::InvalidArgument,
                     fmt::format("--url must be http://HOST[:PORT][/PATH], got '{}'", r.url));
    }
    rest.remove_prefix(7);
    const auto slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
    while (path.ends_with('/')) path.remove_suffix(1);
    if (authority.starts_with('[')) {  // [v6]:port
        const auto close = authority.find(']');
        if (close == std::string_view::npos)
            return error(ErrorKind::InvalidArgument, "--url: unclosed '[' in the host");
        r.host = std::string(authority.substr(1, close - 1));
        authority.remove_prefix(close + 1);
        r.port = authority.starts_with(':') ? std::string(authority.substr(1)) : "80";
    } else {
        const auto colon = authority.rfind(':');
        r.host = std::string(authority.substr(0, colon));
        r.port = colon == std::string_view::npos ? "80" : std::string(authority.substr(colon + 1));
    }
    if (r.host.empty() || r.port.empty() || r.port.find_first_not_of("0123456789") != std::string::npos) {
        return error(ErrorKind::InvalidArgument,
                     fmt::format("--url must be http://HOST[:PORT][/PATH], got '{}'", r.url));
    }
    r.base = std::string(path) + "/v1";
    if (global.api_key && !global.api_key->empty()) {
        r.key = global.api_key;
    } else {
        for (const char* name : {"BOXLITE_API_KEY", "BOXLITE_SERVE_API_KEY"}) {
            const char* value = std::getenv(name);
            if (value != nullptr && *value != '\0') {
                r.key = value;
                break;
            }
        }
    }
    return r;
}

ErrorKind kind_of(std::string_view type, unsigned status) {
    static constexpr std::pair<std::string_view, ErrorKind> kTypes[] = {
        {"InvalidArgumentError", ErrorKind::InvalidArgument},
        {"UnsupportedError", ErrorKind::Unsupported},
        {"NotFoundError", ErrorKind::NotFound},
        {"AlreadyExistsError", ErrorKind::AlreadyExists},
        {"InvalidStateError", ErrorKind::InvalidState},
        {"StoppedError", ErrorKind::Stopped},
        {"ImageError", ErrorKind::Image},
        {"ExecutionError", ErrorKind::Execution},
        {"NetworkError", ErrorKind::Network},
        {"UpstreamUnavailableError", ErrorKind::RpcTransport},
        {"EngineError", ErrorKind::Engine},
        {"StorageError", ErrorKind::Storage},
        {"DatabaseError", ErrorKind::Database},
        {"MetadataError", ErrorKind::MetadataError},
        {"ConfigError", ErrorKind::Config},
    };
    for (const auto& [name, kind] : kTypes) {
        if (name == type) return kind;
    }
    if (status == 404) return ErrorKind::NotFound;
    if (status == 409) return ErrorKind::InvalidState;
    if (status == 501) return ErrorKind::Unsupported;
    if (status < 500) return ErrorKind::InvalidArgument;
    return ErrorKind::Internal;
}

/// The server's error as a BoxliteError of the same kind and message (its "kind: " prefix, which
/// the CLI prints itself, removed).
BoxliteError error_from(unsigned status, const std::string& body) {
    std::string type;
    std::string message;
    auto doc = nlohmann::json::parse(body, nullptr, false);
    if (doc.is_object() && doc.contains("error") && doc["error"].is_object()) {
        const auto& err = doc["error"];
        if (err.contains("type") && err["type"].is_string()) type = err["type"].get<std::string>();
        if (err.contains("message") && err["message"].is_string()) message = err["message"].get<std::string>();
    } else {
        message = body.substr(0, 500);
    }
    if (status == 401)
        return BoxliteError(ErrorKind::InvalidArgument, fmt::format("the server refused the API key: {}", message));
    const auto kind = kind_of(type, status);
    const auto prefix = fmt::format("{}: ", message_prefix(kind));
    if (message.starts_with(prefix)) message.erase(0, prefix.size());
    if (message.empty()) message = fmt::format("HTTP {} from the server", status);
    return BoxliteError(kind, std::move(message));
}

struct Reply {
    unsigned status = 0;
    std::string body;
};

BoxliteResult<Reply> call(const Remote& r, http::verb verb, const std::string& target,
                          const std::optional<nlohmann::json>& body = std::nullopt) {
    try {
        asio::io_context ioc;
        tcp::resolver resolver(ioc);
        beast::tcp_stream stream(ioc);
        stream.connect(resolver.resolve(r.host, r.port));
        http::request<http::string_body> req{verb, r.base + target, 11};
        req.set(http::field::host, r.host);
        req.set(http::field::user_agent, "boxlite-cli");
        if (r.key) req.set(http::field::authorization, "Bearer " + *r.key);
        if (body) {
            req.set(http::field::content_type, "application/json");
            req.body() = body->dump();
        }
        req.prepare_payload();
        http::write(stream, req);
        beast::flat_buffer buffer;
        http::response_parser<http::string_body> parser;
        parser.body_limit(kMaxReplyBytes);
        http::read(stream, buffer, parser);
        Reply reply{parser.get().result_int(), std::move(parser.get().body())};
        beast::error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        if (reply.status >= 300) return tl::unexpected(error_from(reply.status, reply.body));
        return reply;
    } catch (const boost::system::system_error& e) {
        return error(ErrorKind::RpcTransport, fmt::format("cannot reach {}: {}", r.url, e.code().message()));
    }
}

BoxliteResult<nlohmann::json> call_json(const Remote& r, http::verb verb, const std::string& target,
                                        const std::optional<nlohmann::json>& body = std::nullopt) {
    BOXLITE_TRY(auto reply, call(r, verb, target, body));
    auto doc = nlohmann::json::parse(reply.body, nullptr, false);
    if (doc.is_discarded())
        return error(ErrorKind::Internal, fmt::format("{} answered {} with no JSON", r.url, target));
    return doc;
}

std::string quote(std::string_view segment) {
    std::string out;
    for (unsigned char c : segment) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += fmt::format("%{:02X}", c);
        }
    }
    return out;
}

std::string text_field(const nlohmann::json& doc, const char* key) {
    return doc.contains(key) && doc[key].is_string() ? doc[key].get<std::string>() : std::string();
}

BoxliteResult<int> remote_list(const Remote& r, const ListArgs& args) {
    BOXLITE_TRY(auto doc, call_json(r, http::verb::get, "/boxes"));
    if (!doc.contains("boxes") || !doc["boxes"].is_array()) {
        return error(ErrorKind::Internal, "the server's box list has no 'boxes' array");
    }
    const auto now = std::chrono::system_clock::now();
    nlohmann::json rows = nlohmann::json::array();
    nlohmann::json table_rows = nlohmann::json::array();
    for (const auto& box : doc["boxes"]) {
        const auto id = text_field(box, "box_id");
        const auto status = text_field(box, "status");
        if (!args.all && status != "running") continue;
        if (args.quiet) {
            fmt::print("{}\n", id.substr(0, 12));
            continue;
        }
        const auto created = text_field(box, "created_at");
        auto when = boxlite::detail::parse_rfc3339(created);
        const auto name = box.contains("name") && box["name"].is_string() ? box["name"].get<std::string>() : "";
        nlohmann::json row = {
            {"ID", id},
            {"Name", name},
            {"Image", text_field(box, "image")},
            {"Status", status},
            {"Created", created},
            {"CreatedSince", when ? time_ago(*when, now) : created},
            {"Engine", "remote"},
            {"Cpus", box.value("cpus", 0)},
            {"MemoryMib", box.value("memory_mib", 0)},
            {"Pid", box.contains("pid") ? box["pid"] : nlohmann::json()},
        };
        nlohmann::json table_row = row;
        table_row["ID"] = id.substr(0, 12);
        table_row["Created"] = row["CreatedSince"];
        table_row["Name"] = name.empty() ? "-" : name;
        rows.push_back(std::move(row));
        table_rows.push_back(std::move(table_row));
    }
    if (args.quiet) return kExitSuccess;
    const std::vector<Column> columns = {{"ID", "BOX ID"},       {"Image", "IMAGE"},   {"Status", "STATUS"},
                                         {"Created", "CREATED"}, {"Engine", "ENGINE"}, {"Name", "NAME"}};
    const std::string format = args.format.value_or("table");
    BOXLITE_TRY(auto text, render_rows(format == "table" ? table_rows : rows, format, columns));
    fmt::print("{}", text);
    return kExitSuccess;
}

BoxliteResult<int> remote_rm(const Remote& r, const BoxesArgs& args) {
    std::vector<std::string> targets = args.boxes;
    if (args.all) {
        BOXLITE_TRY(auto doc, call_json(r, http::verb::get, "/boxes"));
        for (const auto& box : doc.value("boxes", nlohmann::json::array()))
            targets.push_back(text_field(box, "box_id"));
    }
    int status = kExitSuccess;
    for (const auto& name : targets) {
        auto done = call(r, http::verb::delete_, fmt::format("/boxes/{}?force={}", quote(name), args.force));
        if (done) {
            fmt::print("{}\n", name);
            std::fflush(stdout);
        } else {
            fmt::print(stderr, "Error: {}\n", done.error().to_string());
            status = kExitRuntimeError;
        }
    }
    return status;
}

bool write_all(int fd, const char* data, std::size_t size) {
    while (size > 0) {
        const auto n = ::write(fd, data, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

/// Attaches to `path` (a WebSocket route), forwards stdin (all of it, then EOF, with
/// `interactive`; else EOF at once), copies stdout/stderr to ours; the command's exit status.
BoxliteResult<int> attach_and_pump(const Remote& r, const std::string& path, bool interactive) {
    try {
        asio::io_context ioc;
        tcp::resolver resolver(ioc);
        websocket::stream<beast::tcp_stream> ws(ioc);
        beast::get_lowest_layer(ws).connect(resolver.resolve(r.host, r.port));
        ws.set_option(websocket::stream_base::decorator([&](websocket::request_type& req) {
            req.set(http::field::user_agent, "boxlite-cli");
            if (r.key) req.set(http::field::authorization, "Bearer " + *r.key);
        }));
        websocket::response_type handshake;
        beast::error_code ec;
        ws.handshake(handshake, r.host + ":" + r.port, r.base + path, ec);
        if (ec) {
            if (handshake.result_int() >= 300)
                return tl::unexpected(error_from(handshake.result_int(), handshake.body()));
            return error(ErrorKind::RpcTransport, fmt::format("cannot attach to {}: {}", path, ec.message()));
        }
        ws.read_message_max(kMaxReplyBytes);
        // stdin: with -i, everything read from ours is sent before the output is read (the
        // command sees it all, then EOF); without, EOF at once.
        if (interactive) {
            char chunk[64 * 1024];
            for (;;) {
                const auto n = ::read(STDIN_FILENO, chunk, sizeof chunk);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break;
                ws.binary(true);
                ws.write(asio::buffer(chunk, static_cast<std::size_t>(n)));
            }
        }
        ws.text(true);
        ws.write(asio::buffer(std::string(R"({"type":"stdin_eof"})")));
        beast::flat_buffer buffer;
        for (;;) {
            buffer.clear();
            ws.read(buffer, ec);
            if (ec) break;
            const auto data = beast::buffers_to_string(buffer.data());
            if (ws.got_binary()) {
                if (data.empty()) continue;
                write_all(data[0] == 2 ? STDERR_FILENO : STDOUT_FILENO, data.data() + 1, data.size() - 1);
                continue;
            }
            auto frame = nlohmann::json::parse(data, nullptr, false);
            if (!frame.is_object()) continue;
            if (frame.value("type", "") == "exit") {
                const int code = frame.value("exit_code", 1);
                ws.close(websocket::close_code::normal, ec);
                return code < 0 ? 128 - code : code;
            }
            if (frame.value("type", "") == "error") fmt::print(stderr, "Error: {}\n", frame.value("message", ""));
        }
        return error(ErrorKind::RpcTransport, fmt::format("the connection to {} ended before the command did", r.url));
    } catch (const boost::system::system_error& e) {
        return error(ErrorKind::RpcTransport, fmt::format("cannot attach to {}: {}", path, e.code().message()));
    }
}

// `-e NAME=VALUE` as given, `-e NAME` from this process's environment (skipped when unset), as the
// local commands do.
nlohmann::json env_json(const std::vector<std::string>& entries) {
    nlohmann::json env = nlohmann::json::object();
    for (const auto& entry : entries) {
        const auto eq = entry.find('=');
        if (eq != std::string::npos) {
            env[entry.substr(0, eq)] = entry.substr(eq + 1);
        } else if (const char* value = std::getenv(entry.c_str()); value != nullptr) {
            env[entry] = value;
        }
    }
    return env;
}

BoxliteResult<int> remote_exec(const Remote& r, const ExecArgs& args) {
    if (args.user) return error(ErrorKind::Unsupported, "exec --user is not available through the REST API");
    if (args.tty) return error(ErrorKind::Unsupported, "exec -t is not available with --url yet");
    if (args.detach) return error(ErrorKind::Unsupported, "exec -d is not available with --url yet");
    nlohmann::json body = {{"command", args.command.front()},
                           {"args", std::vector<std::string>(args.command.begin() + 1, args.command.end())}};
    if (!args.env.empty()) {
        const nlohmann::json env = env_json(args.env);
        body["env"] = env;
    }
    if (args.workdir) body["working_dir"] = *args.workdir;
    const auto box_path = fmt::format("/boxes/{}", quote(args.box));
    BOXLITE_TRY(auto started, call_json(r, http::verb::post, box_path + "/exec", body));
    const auto exec_id = text_field(started, "execution_id");
    if (exec_id.empty()) return error(ErrorKind::Internal, "the server's exec answer has no execution_id");
    return attach_and_pump(r, fmt::format("{}/executions/{}/attach", box_path, quote(exec_id)), args.interactive);
}

std::optional<int> parse_count(const std::optional<std::string>& text) {
    if (!text || text->empty() || text->find_first_not_of("0123456789") != std::string::npos || text->size() > 9) {
        return std::nullopt;
    }
    return std::stoi(*text);
}

BoxliteResult<int> remote_run(const Remote& r, const CreateArgs& args) {
    if (args.tty) return error(ErrorKind::Unsupported, "run -t is not available with --url yet");
    if (args.disk_size || args.pids_limit || args.network || !args.allow_net.empty() || !args.publish.empty() ||
        !args.volume.empty()) {
        return error(ErrorKind::Unsupported,
                     "with --url, run takes no --disk-size, --pids-limit, --network, --allow-net, -p or -v "
                     "(the REST API does not accept them)");
    }
    nlohmann::json body = nlohmann::json::object();
    auto positional = args.positionals.begin();
    if (args.rootfs) {
        body["rootfs_path"] = *args.rootfs;
    } else {
        if (positional == args.positionals.end()) return error(ErrorKind::InvalidArgument, "run needs an IMAGE");
        body["image"] = *positional++;
    }
    // The server runs no client-chosen main command (no box attach): the command is exec'd in
    // the started box, as `boxlite exec` would.
    if (positional == args.positionals.end()) {
        return error(ErrorKind::Unsupported,
                     "with --url, run needs a COMMAND (the image's default is not run remotely)");
    }
    nlohmann::json exec = {{"command", *positional},
                           {"args", std::vector<std::string>(positional + 1, args.positionals.end())}};
    if (args.name) body["name"] = *args.name;
    if (args.workdir) body["working_dir"] = *args.workdir;
    if (args.user) body["user"] = *args.user;
    if (args.entrypoint) body["entrypoint"] = std::vector<std::string>{*args.entrypoint};
    if (args.cpus) {
        auto cpus = parse_count(args.cpus);
        if (!cpus) {
            return error(ErrorKind::InvalidArgument,
                         fmt::format("--cpus must be a whole number with --url, got '{}'", *args.cpus));
        }
        body["cpus"] = *cpus;
    }
    if (args.memory) {
        auto mib = parse_count(args.memory);
        if (!mib) {
            return error(ErrorKind::InvalidArgument,
                         fmt::format("--memory must be MiB (a whole number) with --url, got '{}'", *args.memory));
        }
        body["memory_mib"] = *mib;
    }
    if (!args.env.empty()) {
        const nlohmann::json env = env_json(args.env);
        body["env"] = env;
        exec["env"] = env;
    }
    if (args.workdir) exec["working_dir"] = *args.workdir;
    BOXLITE_TRY(auto created, call_json(r, http::verb::post, "/boxes", body));
    const auto id = text_field(created, "box_id");
    const auto box_path = fmt::format("/boxes/{}", quote(id));
    auto started = call(r, http::verb::post, box_path + "/start");
    if (started && args.detach) {  // the command started, not waited for
        BOXLITE_TRY(auto execution, call_json(r, http::verb::post, box_path + "/exec", exec));
        (void)execution;
        fmt::print("{}\n", id);
        return kExitSuccess;
    }
    BoxliteResult<int> status = tl::unexpected(BoxliteError(ErrorKind::Internal, "not started"));
    if (!started) {
        status = tl::unexpected(started.error());
    } else if (auto execution = call_json(r, http::verb::post, box_path + "/exec", exec); !execution) {
        status = tl::unexpected(execution.error());
    } else {
        status = attach_and_pump(r,
                                 fmt::format("{}/executions/{}/attach", box_path,
                                             quote(text_field(*execution, "execution_id"))),
                                 args.interactive);
    }
    if (args.remove) (void)call(r, http::verb::delete_, box_path + "?force=true");
    return status;
}

}  // namespace

BoxliteResult<int> cmd_remote(Context& context) {
    BOXLITE_TRY(auto remote, parse_remote(context.global()));
    const auto& command = context.invocation().command;
    if (command == "list") return remote_list(remote, context.invocation().list);
    if (command == "rm") return remote_rm(remote, context.invocation().boxes);
    if (command == "exec") return remote_exec(remote, context.invocation().exec);
    if (command == "run") return remote_run(remote, context.invocation().create);
    return error(ErrorKind::Unsupported,
                 fmt::format("'{}' does not work with --url yet (ls, rm, exec and run do)", command));
}

}  // namespace boxlite::cli
