// The REST API: routing, request validation, the error envelope, executions. See rest_api.hpp.
#include "server/rest_api.hpp"

#include "server/tar.hpp"

#include <boxlite/detail/time.hpp>

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <thread>

namespace boxlite::server {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

/// Completed executions stay this long for GET and late attach, then are evicted (upstream: 5 min).
constexpr auto kCompletedRetention = std::chrono::minutes(5);

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

HttpResponse json_response(int status, const json& body) {
    HttpResponse response;
    response.status = status;
    response.body = dump(body);
    return response;
}

HttpResponse no_content() {
    HttpResponse response;
    response.status = 204;
    response.content_type.clear();
    return response;
}

HttpResponse invalid(std::string_view message, const HttpRequest& request) {
    return error_response(400, "InvalidArgumentError", "invalid_argument", message, request.request_id);
}

/// A body that parsed but does not fit the schema (unknown field, wrong type): 422, as axum's
/// Json extractor answers upstream, but with the envelope.
HttpResponse unprocessable(std::string_view message, const HttpRequest& request) {
    return error_response(422, "InvalidArgumentError", "invalid_argument", message, request.request_id);
}

HttpResponse not_implemented(std::string_view what, const HttpRequest& request) {
    return error_response(501, "UnsupportedError", "not_implemented",
                          fmt::format("{} is not implemented by this server yet", what), request.request_id);
}

/// Reads a JSON object body field by field, refusing unknown fields and wrong types.
class Body {
public:
    /// `allow_empty`: an empty body reads as {} (every field of the request is optional).
    static tl::expected<Body, HttpResponse> parse(const HttpRequest& request, std::set<std::string> fields,
                                                  bool allow_empty) {
        json value;
        if (request.body.empty() && allow_empty) {
            value = json::object();
        } else {
            value = json::parse(request.body, nullptr, false);
            if (value.is_discarded()) return tl::unexpected(invalid("the request body is not valid JSON", request));
        }
        if (!value.is_object()) return tl::unexpected(unprocessable("the request body must be a JSON object", request));
        for (const auto& [key, unused] : value.items()) {
            if (!fields.contains(key)) {
                std::string allowed;
                for (const auto& f : fields) allowed += (allowed.empty() ? "" : ", ") + f;
                return tl::unexpected(
                    unprocessable(fmt::format("unknown field '{}' (allowed: {})", key, allowed), request));
            }
        }
        return Body(std::move(value), request);
    }

    [[nodiscard]] bool has(const std::string& key) const { return value_.contains(key) && !value_[key].is_null(); }
    [[nodiscard]] const json& raw(const std::string& key) const { return value_[key]; }

    tl::expected<std::optional<std::string>, HttpResponse> string(const std::string& key) const {
        if (!has(key)) return std::optional<std::string>{};
        if (!value_[key].is_string()) return tl::unexpected(type_error(key, "a string"));
        return std::optional<std::string>(value_[key].get<std::string>());
    }
    tl::expected<std::optional<bool>, HttpResponse> boolean(const std::string& key) const {
        if (!has(key)) return std::optional<bool>{};
        if (!value_[key].is_boolean()) return tl::unexpected(type_error(key, "true or false"));
        return std::optional<bool>(value_[key].get<bool>());
    }
    tl::expected<std::optional<std::uint64_t>, HttpResponse> unsigned_int(const std::string& key,
                                                                          std::uint64_t max) const {
        if (!has(key)) return std::optional<std::uint64_t>{};
        const auto& v = value_[key];
        if (!v.is_number_unsigned() || v.get<std::uint64_t>() > max) {
            return tl::unexpected(type_error(key, fmt::format("an integer from 0 to {}", max)));
        }
        return std::optional<std::uint64_t>(v.get<std::uint64_t>());
    }
    tl::expected<std::optional<std::vector<std::string>>, HttpResponse> strings(const std::string& key) const {
        if (!has(key)) return std::optional<std::vector<std::string>>{};
        const auto& v = value_[key];
        if (!v.is_array()) return tl::unexpected(type_error(key, "an array of strings"));
        std::vector<std::string> out;
        for (const auto& item : v) {
            if (!item.is_string()) return tl::unexpected(type_error(key, "an array of strings"));
            out.push_back(item.get<std::string>());
        }
        return std::optional<std::vector<std::string>>(std::move(out));
    }
    tl::expected<std::vector<std::pair<std::string, std::string>>, HttpResponse> string_map(
        const std::string& key) const {
        std::vector<std::pair<std::string, std::string>> out;
        if (!has(key)) return out;
        const auto& v = value_[key];
        if (!v.is_object()) return tl::unexpected(type_error(key, "an object of strings ({\"KEY\": \"value\"})"));
        for (const auto& [k, item] : v.items()) {
            if (!item.is_string())
                return tl::unexpected(type_error(key, "an object of strings ({\"KEY\": \"value\"})"));
            out.emplace_back(k, item.get<std::string>());
        }
        return out;
    }

private:
    Body(json value, const HttpRequest& request) : value_(std::move(value)), request_(&request) {}
    [[nodiscard]] HttpResponse type_error(const std::string& key, std::string_view expected) const {
        return unprocessable(fmt::format("field '{}' must be {}", key, expected), *request_);
    }
    json value_;
    const HttpRequest* request_;
};

#define SERVE_TRY(var, expr)                                   \
    auto var##_result = (expr);                                \
    if (!var##_result) return std::move(var##_result).error(); \
    auto var = std::move(*var##_result)

std::string_view status_text(BoxStatus status) {
    switch (status) {
        case BoxStatus::Configured: return "configured";
        case BoxStatus::Running: return "running";
        case BoxStatus::Stopping:
        case BoxStatus::Removing: return "stopping";
        case BoxStatus::Stopped: return "stopped";
        default: return "unknown";
    }
}

// The box's settings upstream has and the core does not (auto_pause, auto_resume, auto_delete):
// kept in labels under this prefix, hidden from the response's labels.
constexpr std::string_view kServeLabelPrefix = "boxlite.serve.";

/// `exit_code`: the box's main command's, once it has exited (present only then, as upstream).
json box_json(const BoxInfo& info, std::optional<int> exit_code) {
    json labels = json::object();
    std::map<std::string, std::string> serve_settings;
    for (const auto& [key, value] : info.labels) {
        if (std::string_view(key).starts_with(kServeLabelPrefix))
            serve_settings[key.substr(kServeLabelPrefix.size())] = value;
        else labels[key] = value;
    }
    auto setting = [&](const std::string& key, std::uint64_t fallback) -> std::uint64_t {
        auto it = serve_settings.find(key);
        if (it == serve_settings.end()) return fallback;
        return std::strtoull(it->second.c_str(), nullptr, 10);
    };
    json out = {
        {"box_id", info.id.str()},
        {"name", info.name ? json(*info.name) : json(nullptr)},
        {"status", status_text(info.status)},
        {"created_at", boxlite::detail::format_rfc3339(info.created_at)},
        {"updated_at", boxlite::detail::format_rfc3339(info.last_updated)},
        {"pid", info.pid ? json(*info.pid) : json(nullptr)},
        {"image", info.image},
        {"cpus", info.cpus},
        {"memory_mib", info.memory_mib},
        {"labels", labels},
        {"auto_pause", setting("auto_pause", 0)},
        {"auto_delete", setting("auto_delete", 0)},
        {"auto_resume", setting("auto_resume", 1) != 0},
    };
    if (exit_code) out["exit_code"] = *exit_code;
    return out;
}

template <class T>
json optional_json(const std::optional<T>& value) {
    return value ? json(*value) : json(nullptr);
}

std::vector<std::string> split_path(std::string_view path) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (start <= path.size()) {
        auto end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        if (end > start) parts.emplace_back(path.substr(start, end - start));
        start = end + 1;
    }
    return parts;
}

tl::expected<bool, HttpResponse> query_bool(const HttpRequest& request, const std::string& key) {
    auto it = request.query.find(key);
    if (it == request.query.end()) return false;
    if (it->second == "true" || it->second == "1") return true;
    if (it->second == "false" || it->second == "0") return false;
    return tl::unexpected(invalid(fmt::format("query parameter '{}' must be true or false", key), request));
}

/// A box path from `?path=`: absolute, no "..", no NUL.
tl::expected<std::string, HttpResponse> box_path_param(const HttpRequest& request) {
    auto it = request.query.find("path");
    if (it == request.query.end() || it->second.empty()) {
        return tl::unexpected(invalid("query parameter 'path' is required (an absolute path in the box)", request));
    }
    const auto& path = it->second;
    if (path.front() != '/') {
        return tl::unexpected(invalid(fmt::format("path '{}' must be absolute", path), request));
    }
    if (path.find('\0') != std::string::npos) return tl::unexpected(invalid("path must not contain NUL", request));
    for (const auto& part : split_path(path)) {
        if (part == "..") {
            return tl::unexpected(invalid(fmt::format("path '{}' must not contain '..'", path), request));
        }
    }
    return path;
}

/// The temporary folder of one file transfer, removed with it.
class ScratchDir {
public:
    static BoxliteResult<ScratchDir> make() {
        std::string pattern = (fs::temp_directory_path() / "boxlite-serve-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) {
            return fail(ErrorKind::Storage, "cannot create a temporary folder in {}",
                        fs::temp_directory_path().string());
        }
        return ScratchDir(pattern);
    }
    ScratchDir(ScratchDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
    ScratchDir& operator=(ScratchDir&&) = delete;
    ~ScratchDir() {
        if (path_.empty()) return;
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    [[nodiscard]] const fs::path& path() const noexcept { return path_; }

private:
    explicit ScratchDir(fs::path path) : path_(std::move(path)) {}
    fs::path path_;
};

std::array<unsigned char, 32> sha256(std::string_view data) {
    std::array<unsigned char, 32> digest{};
    unsigned int size = 0;
    EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr);
    return digest;
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------

HttpResponse error_response(int status, std::string_view type, std::string_view code, std::string_view message,
                            std::string_view request_id) {
    json error = {{"message", message}, {"type", type}, {"code", code}};
    if (!request_id.empty()) error["request_id"] = request_id;
    return json_response(status, {{"error", error}});
}

HttpResponse error_response(const BoxliteError& error, std::string_view request_id) {
    struct Mapping {
        int status;
        std::string_view type;
        std::string_view code;
    };
    const Mapping m = [&]() -> Mapping {
        switch (error.kind()) {
            case ErrorKind::InvalidArgument: return {400, "InvalidArgumentError", "invalid_argument"};
            // The core says Config for an option out of range: the client's mistake, not the server's.
            case ErrorKind::Config: return {400, "InvalidArgumentError", "invalid_argument"};
            case ErrorKind::Unsupported:
            case ErrorKind::UnsupportedEngine: return {400, "UnsupportedError", "unsupported"};
            case ErrorKind::NotFound: return {404, "NotFoundError", "not_found"};
            case ErrorKind::AlreadyExists: return {409, "AlreadyExistsError", "already_exists"};
            case ErrorKind::InvalidState: return {409, "InvalidStateError", "invalid_state"};
            case ErrorKind::Stopped: return {409, "StoppedError", "stopped"};
            case ErrorKind::Image: return {422, "ImageError", "image_pull_failed"};
            case ErrorKind::Execution: return {422, "ExecutionError", "execution_failed"};
            case ErrorKind::Network: return {503, "NetworkError", "network_unavailable"};
            case ErrorKind::Portal:
            case ErrorKind::Rpc:
            case ErrorKind::RpcTransport: return {503, "UpstreamUnavailableError", "upstream_unavailable"};
            case ErrorKind::Engine: return {503, "EngineError", "engine_unavailable"};
            case ErrorKind::Storage: return {500, "StorageError", "storage_error"};
            case ErrorKind::Database: return {500, "DatabaseError", "database_error"};
            case ErrorKind::MetadataError: return {500, "MetadataError", "metadata_error"};
            case ErrorKind::Internal: return {500, "InternalError", "internal"};
        }
        return {500, "InternalError", "internal"};
    }();
    return error_response(m.status, m.type, m.code, error.to_string(), request_id);
}

bool is_allowed_signal(int signo) {
    static constexpr int kAllowed[] = {1, 2, 3, 6, 10, 12, 15, 28};
    return std::find(std::begin(kAllowed), std::end(kAllowed), signo) != std::end(kAllowed);
}

// ------------------------------------------------------------------------------------------
// ExecSession
// ------------------------------------------------------------------------------------------

ExecSession::ExecSession(std::string box_id, Execution execution, bool tty, bool main_command)
    : id_(execution.id()),
      box_id_(std::move(box_id)),
      tty_(tty),
      main_command_(main_command),
      execution_(std::move(execution)) {}

ExecSession::~ExecSession() = default;

void ExecSession::start(std::shared_ptr<ExecSession> self, std::optional<std::string> stdin_data) {
    auto out = execution_.stdout();
    auto err = execution_.stderr();
    stdin_ = execution_.stdin();
    // Detached: a pump blocks in a read until the execution ends, which may outlive the server
    // (boxes and executions are left running at shutdown); `self` keeps the session alive.
    std::thread([self, stream = std::move(*out)]() mutable { self->pump(kChannelStdout, std::move(stream)); }).detach();
    std::thread([self, stream = std::move(*err)]() mutable { self->pump(kChannelStderr, std::move(stream)); }).detach();
    if (stdin_data) {
        std::thread([self, data = std::move(*stdin_data)] {
            (void)self->write_stdin(data);
            (void)self->close_stdin();
        }).detach();
    }
}

/// How long a full backlog waits for an execution's first client before dropping old output.
constexpr auto kFirstAttachWait = std::chrono::seconds(10);

void ExecSession::pump(std::uint8_t channel, ExecOutputStream stream) {
    std::string buffer(64 * 1024, '\0');
    while (true) {
        auto n = stream.read_some(std::as_writable_bytes(std::span(buffer.data(), buffer.size())));
        if (!n || *n == 0) break;
        const std::string_view chunk(buffer.data(), *n);
        std::shared_ptr<Listener> listener;
        {
            std::unique_lock lock(mutex_);
            auto& backlog = channel == kChannelStdout ? stdout_backlog_ : stderr_backlog_;
            auto& truncated = channel == kChannelStdout ? stdout_truncated_ : stderr_truncated_;
            if (!first_attach_over_ && backlog.size() + chunk.size() > kBacklogBytes) {
                // Backpressure on the process while its client is on its way (exec, then attach).
                first_attach_.wait_for(lock, kFirstAttachWait, [&] { return first_attach_over_; });
                first_attach_over_ = true;
            }
            backlog.append(chunk);
            if (backlog.size() > kBacklogBytes) {
                backlog.erase(0, backlog.size() - kBacklogBytes);
                truncated = true;
            }
            listener = listener_;
        }
        // Outside the lock: the listener may block while the client catches up (backpressure).
        if (listener && !(*listener)(channel, chunk)) {
            std::lock_guard lock(mutex_);
            if (listener_ == listener) {
                listener_.reset();
                orphaned_since_ = std::chrono::steady_clock::now();
            }
        }
    }
    bool last = false;
    {
        std::lock_guard lock(mutex_);
        last = --open_streams_ == 0;
    }
    if (!last) return;
    auto result = execution_.wait();
    finish(result ? result->exit_code : -1);
}

void ExecSession::finish(int exit_code) {
    std::lock_guard lock(mutex_);
    exit_code_ = exit_code;
    finished_at_ = std::chrono::steady_clock::now();
    exited_.notify_all();
}

std::optional<int> ExecSession::exit_code() const {
    std::lock_guard lock(mutex_);
    return exit_code_;
}

std::chrono::steady_clock::time_point ExecSession::finished_at() const {
    std::lock_guard lock(mutex_);
    return finished_at_;
}

ExecSession::Backlog ExecSession::backlog() const {
    std::lock_guard lock(mutex_);
    return {stdout_backlog_, stderr_backlog_, stdout_truncated_, stderr_truncated_, exit_code_};
}

std::optional<std::chrono::steady_clock::time_point> ExecSession::orphaned_since() const {
    std::lock_guard lock(mutex_);
    return orphaned_since_;
}

std::optional<ExecSession::Backlog> ExecSession::attach(Listener listener) {
    std::lock_guard lock(mutex_);
    if (listener_) return std::nullopt;
    listener_ = std::make_shared<Listener>(std::move(listener));
    orphaned_since_.reset();
    first_attach_over_ = true;
    first_attach_.notify_all();
    return Backlog{stdout_backlog_, stderr_backlog_, stdout_truncated_, stderr_truncated_, exit_code_};
}

void ExecSession::detach() {
    std::lock_guard lock(mutex_);
    if (listener_) orphaned_since_ = std::chrono::steady_clock::now();
    listener_.reset();
}

int ExecSession::wait_exit() {
    std::unique_lock lock(mutex_);
    exited_.wait(lock, [&] { return exit_code_.has_value(); });
    return *exit_code_;
}

BoxliteResult<void> ExecSession::write_stdin(std::string_view data) {
    std::lock_guard lock(stdin_mutex_);
    if (!stdin_) return fail(ErrorKind::InvalidState, "the stdin of execution {} is closed", id_);
    return stdin_->write(data);
}

BoxliteResult<void> ExecSession::close_stdin() {
    std::lock_guard lock(stdin_mutex_);
    if (!stdin_) return {};
    auto closed = stdin_->close();
    stdin_.reset();
    return closed;
}

BoxliteResult<void> ExecSession::signal(int signo) { return execution_.signal(signo); }

BoxliteResult<void> ExecSession::resize(std::uint16_t rows, std::uint16_t cols) {
    return execution_.resize_tty(rows, cols);
}

// ------------------------------------------------------------------------------------------
// RestApi
// ------------------------------------------------------------------------------------------

RestApi::RestApi(BoxliteRuntime runtime, const ServeOptions& options)
    : runtime_(std::move(runtime)),
      api_key_(options.api_key),
      allow_host_rootfs_(options.allow_host_rootfs),
      options_(options) {
    // The reaper looks often enough to honour the shortest grace period, and at least every 30 s.
    const auto shortest = std::min({options.reconnect_grace, options.shutdown_grace, options.max_session_lifetime});
    const auto tick = std::clamp<std::chrono::milliseconds>(shortest / 4, std::chrono::milliseconds(50),
                                                            std::chrono::seconds(30));
    reaper_ = std::thread([this, tick] {
        std::unique_lock lock(reaper_mutex_);
        while (!reaper_wake_.wait_for(lock, tick, [&] { return reaper_stop_; })) {
            lock.unlock();
            reap();
            lock.lock();
        }
    });
}

RestApi::~RestApi() {
    {
        std::lock_guard lock(reaper_mutex_);
        reaper_stop_ = true;
    }
    reaper_wake_.notify_all();
    reaper_.join();
}

void RestApi::reap() {
    evict_finished();
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<ExecSession>> sessions;
    {
        std::lock_guard lock(executions_mutex_);
        for (const auto& [id, session] : executions_) sessions.push_back(session);
    }
    for (const auto& session : sessions) {
        if (session->exit_code() || session->main_command()) continue;
        bool evict = false;
        if (now - session->started_at() >= options_.max_session_lifetime) {
            (void)session->signal(SIGKILL);
            evict = true;
        } else if (const auto orphaned = session->orphaned_since(); !orphaned) {
            session->reap_stage = 0;  // a client is attached (again), or none ever was
        } else if (session->reap_stage == 0 && now - *orphaned >= options_.reconnect_grace) {
            (void)session->signal(SIGHUP);
            session->reap_stage = 1;
            session->reap_stage_at = now;
        } else if (session->reap_stage == 1 && now - session->reap_stage_at >= options_.shutdown_grace) {
            (void)session->signal(SIGTERM);
            session->reap_stage = 2;
            session->reap_stage_at = now;
        } else if (session->reap_stage == 2 && now - session->reap_stage_at >= options_.shutdown_grace) {
            (void)session->signal(SIGKILL);
            evict = true;
        }
        if (evict) {
            std::lock_guard lock(executions_mutex_);
            executions_.erase(session->id());
        }
    }
}

std::vector<std::string> RestApi::routes() {
    return {
        "GET /v1/config",
        "GET /v1/me",
        "GET /v1/metrics",
        "POST /v1/volumes",
        "GET /v1/volumes",
        "GET /v1/volumes/{volume_id}",
        "DELETE /v1/volumes/{volume_id}",
        "POST /v1/boxes",
        "GET /v1/boxes",
        "POST /v1/boxes/import",
        "GET /v1/boxes/{box_id}",
        "HEAD /v1/boxes/{box_id}",
        "DELETE /v1/boxes/{box_id}",
        "POST /v1/boxes/{box_id}/start",
        "POST /v1/boxes/{box_id}/stop",
        "GET /v1/boxes/{box_id}/metrics",
        "GET /v1/boxes/{box_id}/attach",
        "POST /v1/boxes/{box_id}/exec",
        "GET /v1/boxes/{box_id}/executions/{exec_id}",
        "DELETE /v1/boxes/{box_id}/executions/{exec_id}",
        "GET /v1/boxes/{box_id}/executions/{exec_id}/output",
        "GET /v1/boxes/{box_id}/executions/{exec_id}/attach",
        "POST /v1/boxes/{box_id}/executions/{exec_id}/signal",
        "POST /v1/boxes/{box_id}/executions/{exec_id}/resize",
        "PUT /v1/boxes/{box_id}/files",
        "GET /v1/boxes/{box_id}/files",
        "POST /v1/boxes/{box_id}/snapshots",
        "GET /v1/boxes/{box_id}/snapshots",
        "GET /v1/boxes/{box_id}/snapshots/{name}",
        "DELETE /v1/boxes/{box_id}/snapshots/{name}",
        "POST /v1/boxes/{box_id}/snapshots/{name}/restore",
        "POST /v1/boxes/{box_id}/clone",
        "POST /v1/boxes/{box_id}/export",
    };
}

std::optional<HttpResponse> RestApi::authenticate(const HttpRequest& request) const {
    if (!api_key_) return std::nullopt;
    if (request.method == "GET" && request.path == "/v1/config") return std::nullopt;
    std::string_view header = request.authorization;
    std::string_view token;
    if (header.size() > 7 && (header.starts_with("Bearer ") || header.starts_with("bearer "))) {
        token = header.substr(7);
    }
    // Compare digests, so neither the key's bytes nor its length leak through timing.
    const auto expected = sha256(*api_key_);
    const auto given = sha256(token);
    const bool match = CRYPTO_memcmp(expected.data(), given.data(), expected.size()) == 0 && !token.empty();
    if (match) return std::nullopt;
    return error_response(401, "AuthError", "unauthenticated", "invalid or missing API key", request.request_id);
}

HttpResponse RestApi::handle(const HttpRequest& request) {
    if (auto denied = authenticate(request)) return *denied;
    const auto parts = split_path(request.path);
    if (parts.size() < 2 || parts[0] != "v1") {
        return error_response(404, "NotFoundError", "not_found",
                              fmt::format("no route for {} {}", request.method, request.path), request.request_id);
    }
    return route(request, parts);
}

HttpResponse RestApi::route(const HttpRequest& request, const std::vector<std::string>& parts) {
    const auto& method = request.method;
    const auto n = parts.size();
    auto method_not_allowed = [&](std::string_view allowed) {
        auto response = error_response(405, "MethodNotAllowedError", "method_not_allowed",
                                       fmt::format("{} is not allowed on {} (allowed: {})", method, request.path,
                                                   allowed),
                                       request.request_id);
        response.headers.emplace_back("Allow", std::string(allowed));
        return response;
    };
    const auto& top = parts[1];
    if (n == 2 && top == "config") {
        if (method != "GET") return method_not_allowed("GET");
        return json_response(200, {{"capabilities",
                                    {{"linux_capabilities_enabled", false},
                                     {"snapshots_enabled", false},
                                     {"clone_enabled", false},
                                     {"export_enabled", false},
                                     {"import_enabled", false}}}});
    }
    if (n == 2 && top == "me") {
        if (method != "GET") return method_not_allowed("GET");
        return json_response(200, {{"sub", "local-anonymous"},
                                   {"principal_type", "service_account"},
                                   {"email", nullptr},
                                   {"display_name", "Local (boxlite serve)"},
                                   {"prefix", nullptr},
                                   {"scopes",
                                    {"box:read", "box:write", "box:exec", "box:delete", "image:read", "image:write",
                                     "snapshot:read", "snapshot:write", "snapshot:delete", "me:read"}},
                                   {"expires_at", nullptr}});
    }
    if (n == 2 && top == "metrics") {
        if (method != "GET") return method_not_allowed("GET");
        return runtime_metrics(request);
    }
    if (top == "volumes" && n <= 3) {
        if (n == 2 && method != "GET" && method != "POST") return method_not_allowed("GET, POST");
        if (n == 3 && method != "GET" && method != "DELETE") return method_not_allowed("GET, DELETE");
        return not_implemented("volumes", request);
    }
    if (top != "boxes") {
        return error_response(404, "NotFoundError", "not_found",
                              fmt::format("no route for {} {}", method, request.path), request.request_id);
    }
    if (n == 2) {
        if (method == "POST") return create_box(request);
        if (method == "GET") return list_boxes(request);
        return method_not_allowed("GET, POST");
    }
    if (n == 3 && parts[2] == "import") {
        if (method != "POST") return method_not_allowed("POST");
        return not_implemented("box import", request);
    }
    const auto& box_key = parts[2];
    if (n == 3) {
        if (method == "HEAD") {
            auto exists = runtime_.exists(box_key);
            if (!exists) return error_response(exists.error(), request.request_id);
            HttpResponse response = no_content();
            if (!*exists) response.status = 404;
            return response;
        }
        if (method == "GET") {
            auto box = runtime_.get(box_key);
            if (!box) return error_response(box.error(), request.request_id);
            return box_response(*box, request, 200);
        }
        if (method == "DELETE") {
            SERVE_TRY(force, query_bool(request, "force"));
            auto box = runtime_.get(box_key);
            if (!box) return error_response(box.error(), request.request_id);
            const auto id = box->id().str();
            if (auto removed = runtime_.remove(id, force); !removed) {
                return error_response(removed.error(), request.request_id);
            }
            std::lock_guard lock(executions_mutex_);
            std::erase_if(executions_, [&](const auto& entry) { return entry.second->box_id() == id; });
            main_sessions_.erase(id);
            main_launch_mutexes_.erase(id);
            return no_content();
        }
        return method_not_allowed("GET, HEAD, DELETE");
    }
    const auto& action = parts[3];
    if (n == 4 && (action == "start" || action == "stop")) {
        if (method != "POST") return method_not_allowed("POST");
        auto box = runtime_.get(box_key);
        if (!box) return error_response(box.error(), request.request_id);
        auto done = action == "start" ? box->start() : box->stop();
        if (!done) return error_response(done.error(), request.request_id);
        if (action == "stop") ++boxes_stopped_total_;
        if (action == "start") {
            // A started box runs its main command (when it has one), as a container runs its init;
            // a finished run is replaced by a new one, a running one is left as it is.
            auto command = box->config().and_then([&](const BoxConfig& config) { return main_command(config); });
            if (!command) return error_response(command.error(), request.request_id);
            if (*command) {
                if (auto session = main_session(*box, request, true); !session) return std::move(session).error();
            }
        }
        return box_response(*box, request, 200);
    }
    if (n == 4 && action == "metrics") {
        if (method != "GET") return method_not_allowed("GET");
        auto box = runtime_.get(box_key);
        if (!box) return error_response(box.error(), request.request_id);
        auto m = box->metrics();
        if (!m) return error_response(m.error(), request.request_id);
        json boot = nullptr;
        if (m->total_create_duration_ms) {
            boot = {{"total_create_ms", optional_json(m->total_create_duration_ms)},
                    {"guest_boot_ms", optional_json(m->guest_boot_duration_ms)},
                    {"filesystem_setup_ms", optional_json(m->stage_filesystem_setup_ms)},
                    {"image_prepare_ms", optional_json(m->stage_image_prepare_ms)},
                    {"guest_rootfs_ms", optional_json(m->stage_guest_rootfs_ms)},
                    {"box_config_ms", optional_json(m->stage_box_config_ms)},
                    {"box_spawn_ms", optional_json(m->stage_box_spawn_ms)},
                    {"container_init_ms", optional_json(m->stage_container_init_ms)}};
        }
        return json_response(200, {{"commands_executed_total", m->commands_executed_total},
                                   {"exec_errors_total", m->exec_errors_total},
                                   {"bytes_sent_total", m->bytes_sent_total},
                                   {"bytes_received_total", m->bytes_received_total},
                                   {"cpu_percent", optional_json(m->cpu_percent)},
                                   {"memory_bytes", optional_json(m->memory_bytes)},
                                   {"network_bytes_sent", optional_json(m->network_bytes_sent)},
                                   {"network_bytes_received", optional_json(m->network_bytes_received)},
                                   {"network_tcp_connections", optional_json(m->network_tcp_connections)},
                                   {"network_tcp_errors", optional_json(m->network_tcp_errors)},
                                   {"boot_timing", boot}});
    }
    if (n == 4 && action == "attach") {
        if (method != "GET") return method_not_allowed("GET");
        return error_response(400, "InvalidArgumentError", "invalid_argument",
                              "attach needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
                              request.request_id);
    }
    if (n == 4 && action == "exec") {
        if (method != "POST") return method_not_allowed("POST");
        return exec(box_key, request);
    }
    if (action == "executions" && (n == 5 || n == 6)) {
        return execution(box_key, parts[4], n == 6 ? parts[5] : std::string(), request);
    }
    if (n == 4 && action == "files") {
        if (method == "PUT") return put_files(box_key, request);
        if (method == "GET") return get_files(box_key, request);
        return method_not_allowed("GET, PUT");
    }
    if (action == "snapshots" && n >= 4 && n <= 6) {
        if (n == 6 && parts[5] != "restore") {
            return error_response(404, "NotFoundError", "not_found",
                                  fmt::format("no route for {} {}", method, request.path), request.request_id);
        }
        if (n == 4 && method != "GET" && method != "POST") return method_not_allowed("GET, POST");
        if (n == 5 && method != "GET" && method != "DELETE") return method_not_allowed("GET, DELETE");
        if (n == 6 && method != "POST") return method_not_allowed("POST");
        return not_implemented("snapshots", request);
    }
    if (n == 4 && (action == "clone" || action == "export")) {
        if (method != "POST") return method_not_allowed("POST");
        return not_implemented(action == "clone" ? "clone" : "export", request);
    }
    return error_response(404, "NotFoundError", "not_found", fmt::format("no route for {} {}", method, request.path),
                          request.request_id);
}

HttpResponse RestApi::box_response(LiteBox& box, const HttpRequest& request, int status) {
    auto info = box.info();
    if (!info) return error_response(info.error(), request.request_id);
    return json_response(status, box_json(*info, main_exit_code(info->id.str())));
}

std::optional<int> RestApi::main_exit_code(const std::string& box_id) {
    std::lock_guard lock(executions_mutex_);
    auto it = main_sessions_.find(box_id);
    if (it == main_sessions_.end()) return std::nullopt;
    return it->second->exit_code();
}

BoxliteResult<std::optional<BoxCommand>> RestApi::main_command(const BoxConfig& config) const {
    ImageDefaults image;
    const auto* reference = config.options.rootfs.as_image();
    if (reference && options_.image_defaults) {
        // The image's Env, WorkingDir and User count whatever the command; without its config
        // (the image was removed since), only a box that names its own entrypoint still has one.
        auto found = options_.image_defaults(reference->reference);
        if (found) image = std::move(*found);
        else if (!config.options.entrypoint) return fail(found.error());
    }
    EngineLaunch launch;
    merge_launch_defaults(config.options, image, launch);
    if (launch.init_command.empty() || launch.init_command.front().empty()) return std::nullopt;
    BoxCommand command(launch.init_command.front());
    command.args(std::vector<std::string>(launch.init_command.begin() + 1, launch.init_command.end()));
    for (auto& [key, value] : launch.env) command.env(key, value);
    command.working_dir(launch.working_dir);
    if (!launch.user.empty()) command.user(launch.user);
    const auto tty = config.options.labels.find(std::string(kServeLabelPrefix) + "tty");
    command.tty(tty != config.options.labels.end() && tty->second == "1");
    return command;
}

tl::expected<std::shared_ptr<ExecSession>, HttpResponse> RestApi::main_session(LiteBox& box, const HttpRequest& request,
                                                                               bool relaunch_finished) {
    const auto id = box.id().str();
    std::shared_ptr<std::mutex> launch_mutex;
    {
        std::lock_guard lock(executions_mutex_);
        auto& slot = main_launch_mutexes_[id];
        if (!slot) slot = std::make_shared<std::mutex>();
        launch_mutex = slot;
    }
    std::lock_guard launching(*launch_mutex);
    {
        std::lock_guard lock(executions_mutex_);
        auto it = main_sessions_.find(id);
        if (it != main_sessions_.end() && !(relaunch_finished && it->second->exit_code())) return it->second;
    }
    auto config = box.config();
    if (!config) return tl::unexpected(error_response(config.error(), request.request_id));
    auto command = main_command(*config);
    if (!command) return tl::unexpected(error_response(command.error(), request.request_id));
    if (!*command) {
        return tl::unexpected(error_response(
            409, "InvalidStateError", "invalid_state",
            fmt::format("box {} has no main command: it was created without 'entrypoint' or 'cmd', and its image "
                        "sets neither; run one with POST /v1/boxes/{}/exec and attach to that execution",
                        id, id),
            request.request_id));
    }
    auto execution = box.exec(**command);  // starts the box when it is not running
    if (!execution) return tl::unexpected(error_response(execution.error(), request.request_id));
    auto session = std::make_shared<ExecSession>(id, std::move(*execution), (*command)->is_tty(), true);
    session->start(session, std::nullopt);  // stdin stays open for the attached client
    std::lock_guard lock(executions_mutex_);
    executions_[session->id()] = session;
    main_sessions_[id] = session;
    return session;
}

HttpResponse RestApi::list_boxes(const HttpRequest& request) {
    auto boxes = runtime_.list_info();
    if (!boxes) return error_response(boxes.error(), request.request_id);
    json list = json::array();
    for (const auto& info : *boxes) list.push_back(box_json(info, main_exit_code(info.id.str())));
    return json_response(200, {{"boxes", list}});
}

HttpResponse RestApi::runtime_metrics(const HttpRequest& request) {
    auto m = runtime_.metrics();
    if (!m) return error_response(m.error(), request.request_id);
    return json_response(200, {{"boxes_created_total", m->boxes_created_total},
                               {"boxes_failed_total", m->boxes_failed_total},
                               {"boxes_stopped_total", boxes_stopped_total_.load()},
                               {"num_running_boxes", m->num_running_boxes},
                               {"total_commands_executed", m->total_commands_executed},
                               {"total_exec_errors", m->total_exec_errors}});
}

HttpResponse RestApi::create_box(const HttpRequest& request) {
    SERVE_TRY(body, Body::parse(request,
                                {"name", "image", "rootfs_path", "cpus", "memory_mib", "disk_size_gb", "working_dir",
                                 "env", "entrypoint", "cmd", "user", "tty", "advanced", "network", "auto_pause",
                                 "auto_delete", "auto_resume", "detach"},
                                true));
    BoxOptions options;
    SERVE_TRY(name, body.string("name"));
    SERVE_TRY(image, body.string("image"));
    SERVE_TRY(rootfs_path, body.string("rootfs_path"));
    if (rootfs_path) {
        if (image) return invalid("give either 'image' or 'rootfs_path', not both", request);
        if (!allow_host_rootfs_) {
            return invalid(
                "'rootfs_path' is disabled on this server: a client must not choose host folders "
                "(start it with `boxlite serve --allow-host-rootfs` to allow it)",
                request);
        }
        std::error_code ec;
        if (rootfs_path->empty() || rootfs_path->front() != '/' || !fs::is_directory(*rootfs_path, ec)) {
            return invalid(fmt::format("rootfs_path '{}' is not an absolute path to a directory", *rootfs_path),
                           request);
        }
        options.rootfs = RootfsSpec::path(fs::path(*rootfs_path).lexically_normal());
    } else {
        options.rootfs = RootfsSpec::image(image.value_or("alpine:latest"));
    }
    SERVE_TRY(cpus, body.unsigned_int("cpus", 255));
    if (cpus) options.cpus = static_cast<std::uint32_t>(*cpus);
    SERVE_TRY(memory, body.unsigned_int("memory_mib", std::numeric_limits<std::uint32_t>::max()));
    if (memory) options.memory_mib = static_cast<std::uint32_t>(*memory);
    SERVE_TRY(disk, body.unsigned_int("disk_size_gb", std::numeric_limits<std::uint32_t>::max()));
    if (disk) options.disk_size_gb = static_cast<std::uint32_t>(*disk);
    SERVE_TRY(working_dir, body.string("working_dir"));
    options.working_dir = working_dir;
    SERVE_TRY(env, body.string_map("env"));
    options.env = std::move(env);
    SERVE_TRY(entrypoint, body.strings("entrypoint"));
    options.entrypoint = entrypoint;
    SERVE_TRY(cmd, body.strings("cmd"));
    options.cmd = cmd;
    SERVE_TRY(user, body.string("user"));
    options.user = user;
    SERVE_TRY(tty, body.boolean("tty"));
    if (body.has("advanced")) {
        const auto& advanced = body.raw("advanced");
        if (!advanced.is_object()) return unprocessable("field 'advanced' must be an object", request);
        for (const auto& [key, value] : advanced.items()) {
            if (key != "capabilities") {
                return unprocessable(fmt::format("unknown field 'advanced.{}' (allowed: capabilities)", key), request);
            }
            const bool empty = value.is_null() || (value.is_object() && value.value("add", json::array()).empty() &&
                                                   value.value("drop", json::array()).empty());
            if (!empty) {
                return error_response(400, "UnsupportedError", "unsupported",
                                      "'advanced.capabilities' cannot be changed through the REST API",
                                      request.request_id);
            }
        }
    }
    if (body.has("network")) {
        const auto& network = body.raw("network");
        if (!network.is_object()) return unprocessable("field 'network' must be an object", request);
        for (const auto& [key, value] : network.items()) {
            if (key == "mode") {
                if (!value.is_string() || (value != "enabled" && value != "disabled")) {
                    return unprocessable("field 'network.mode' must be \"enabled\" or \"disabled\"", request);
                }
                options.network.mode = value == "enabled" ? NetworkMode::Enabled : NetworkMode::Disabled;
            } else if (key == "allow_net") {
                if (!value.is_array())
                    return unprocessable("field 'network.allow_net' must be an array of strings", request);
                for (const auto& item : value) {
                    if (!item.is_string()) {
                        return unprocessable("field 'network.allow_net' must be an array of strings", request);
                    }
                    options.network.allow_net.push_back(item.get<std::string>());
                }
            } else {
                return unprocessable(fmt::format("unknown field 'network.{}' (allowed: mode, allow_net)", key),
                                     request);
            }
        }
    }
    SERVE_TRY(auto_pause, body.unsigned_int("auto_pause", std::numeric_limits<std::uint32_t>::max()));
    SERVE_TRY(auto_delete, body.unsigned_int("auto_delete", std::numeric_limits<std::uint32_t>::max()));
    SERVE_TRY(auto_resume, body.boolean("auto_resume"));
    SERVE_TRY(detach, body.boolean("detach"));
    const std::string prefix(kServeLabelPrefix);
    options.labels[prefix + "auto_pause"] = std::to_string(auto_pause.value_or(0));
    options.labels[prefix + "auto_delete"] = std::to_string(auto_delete.value_or(0));
    options.labels[prefix + "auto_resume"] = auto_resume.value_or(true) ? "1" : "0";
    if (tty.value_or(false)) options.labels[prefix + "tty"] = "1";  // the main command's PTY
    // The server outlives no box: boxes stay until deleted (a stopped box keeps its record).
    options.detach = detach.value_or(auto_delete.value_or(0) == 0);
    options.auto_remove = false;
    auto box = runtime_.create(options, name);
    if (!box) return error_response(box.error(), request.request_id);
    return box_response(*box, request, 201);
}

HttpResponse RestApi::exec(const std::string& box_key, const HttpRequest& request) {
    SERVE_TRY(body, Body::parse(request, {"command", "args", "stdin", "env", "timeout_seconds", "working_dir", "tty"},
                                false));
    SERVE_TRY(command, body.string("command"));
    if (!command || command->empty()) return unprocessable("field 'command' is required (a non-empty string)", request);
    BoxCommand cmd(*command);
    SERVE_TRY(args, body.strings("args"));
    if (args) cmd.args(*args);
    SERVE_TRY(env, body.string_map("env"));
    for (auto& [key, value] : env) cmd.env(key, value);
    SERVE_TRY(stdin_data, body.string("stdin"));
    if (body.has("timeout_seconds")) {
        const auto& t = body.raw("timeout_seconds");
        if (!t.is_number() || !std::isfinite(t.get<double>()) || t.get<double>() < 0 || t.get<double>() > 1e9) {
            return unprocessable("field 'timeout_seconds' must be a finite number of seconds >= 0", request);
        }
        const auto ms = static_cast<std::int64_t>(t.get<double>() * 1000.0);
        if (ms > 0) cmd.timeout(std::chrono::milliseconds(ms));
    }
    SERVE_TRY(working_dir, body.string("working_dir"));
    if (working_dir) cmd.working_dir(*working_dir);
    SERVE_TRY(tty, body.boolean("tty"));
    cmd.tty(tty.value_or(false));

    auto box = runtime_.get(box_key);
    if (!box) return error_response(box.error(), request.request_id);
    auto execution = box->exec(cmd);
    if (!execution) return error_response(execution.error(), request.request_id);
    auto session = std::make_shared<ExecSession>(box->id().str(), std::move(*execution), tty.value_or(false));
    session->start(session, std::move(stdin_data));
    evict_finished();
    {
        std::lock_guard lock(executions_mutex_);
        executions_[session->id()] = session;
    }
    return json_response(201, {{"execution_id", session->id()}});
}

void RestApi::evict_finished() {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(executions_mutex_);
    std::erase_if(executions_, [&](const auto& entry) {
        return entry.second->exit_code() && now - entry.second->finished_at() > kCompletedRetention;
    });
}

tl::expected<std::shared_ptr<ExecSession>, HttpResponse> RestApi::find_execution(const std::string& box_key,
                                                                                 const std::string& exec_id,
                                                                                 const HttpRequest& request) {
    auto box = runtime_.get(box_key);
    if (!box) return tl::unexpected(error_response(box.error(), request.request_id));
    std::lock_guard lock(executions_mutex_);
    auto it = executions_.find(exec_id);
    if (it == executions_.end() || it->second->box_id() != box->id().str()) {
        return tl::unexpected(error_response(404, "NotFoundError", "not_found",
                                             fmt::format("execution not found: {} (box {})", exec_id, box_key),
                                             request.request_id));
    }
    return it->second;
}

HttpResponse RestApi::execution(const std::string& box_key, const std::string& exec_id, const std::string& action,
                                const HttpRequest& request) {
    const auto& method = request.method;
    auto method_not_allowed = [&](std::string_view allowed) {
        return error_response(405, "MethodNotAllowedError", "method_not_allowed",
                              fmt::format("{} is not allowed on {} (allowed: {})", method, request.path, allowed),
                              request.request_id);
    };
    if (action.empty()) {
        if (method != "GET" && method != "DELETE") return method_not_allowed("GET, DELETE");
    } else if (action == "output" || action == "attach") {
        if (method != "GET") return method_not_allowed("GET");
    } else if (action == "signal" || action == "resize") {
        if (method != "POST") return method_not_allowed("POST");
    } else {
        return error_response(404, "NotFoundError", "not_found",
                              fmt::format("no route for {} {}", method, request.path), request.request_id);
    }
    // Validate the body before looking anything up: a bad body is 400/422 whatever the ids.
    std::optional<Body> body;
    if (action == "signal" || action == "resize") {
        auto parsed = Body::parse(request,
                                  action == "signal" ? std::set<std::string>{"signal"}
                                                     : std::set<std::string>{"cols", "rows"},
                                  false);
        if (!parsed) return parsed.error();
        body.emplace(std::move(*parsed));
    }
    SERVE_TRY(session, find_execution(box_key, exec_id, request));
    if (action.empty() && method == "GET") {
        const auto code = session->exit_code();
        json out = {{"execution_id", session->id()}, {"status", code ? "completed" : "running"}};
        if (code) out["exit_code"] = *code;
        return json_response(200, out);
    }
    if (action.empty()) {  // DELETE: SIGKILL, then forget it
        if (!session->exit_code()) {
            if (auto killed = session->signal(SIGKILL); !killed && !session->exit_code()) {
                return error_response(killed.error(), request.request_id);
            }
        }
        std::lock_guard lock(executions_mutex_);
        executions_.erase(session->id());
        return no_content();
    }
    if (action == "output") {
        auto backlog = session->backlog();
        json out = {{"execution_id", session->id()},
                    {"status", backlog.exit_code ? "completed" : "running"},
                    {"stdout", backlog.stdout_data},
                    {"stderr", backlog.stderr_data},
                    {"stdout_truncated", backlog.stdout_truncated},
                    {"stderr_truncated", backlog.stderr_truncated}};
        if (backlog.exit_code) out["exit_code"] = *backlog.exit_code;
        return json_response(200, out);
    }
    if (action == "attach") {
        return error_response(400, "InvalidArgumentError", "invalid_argument",
                              "attach needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
                              request.request_id);
    }
    if (action == "signal") {
        const auto& value = body->raw("signal");
        if (!body->has("signal") || !value.is_number_integer()) {
            return unprocessable("field 'signal' is required (an integer)", request);
        }
        const auto signo = value.get<std::int64_t>();
        if (signo < 0 || signo > 64 || !is_allowed_signal(static_cast<int>(signo))) {
            return invalid(fmt::format("signal {} is not allowed (allowed: 1, 2, 3, 6, 10, 12, 15, 28)", signo),
                           request);
        }
        if (session->exit_code()) {
            return error_response(409, "InvalidStateError", "invalid_state",
                                  fmt::format("execution {} has already exited", session->id()), request.request_id);
        }
        if (auto sent = session->signal(static_cast<int>(signo)); !sent) {
            return error_response(sent.error(), request.request_id);
        }
        return no_content();
    }
    // resize
    SERVE_TRY(cols, body->unsigned_int("cols", std::numeric_limits<std::uint32_t>::max()));
    SERVE_TRY(rows, body->unsigned_int("rows", std::numeric_limits<std::uint32_t>::max()));
    if (!cols || !rows) return unprocessable("fields 'cols' and 'rows' are required", request);
    if (*cols == 0 || *rows == 0 || *cols > 65535 || *rows > 65535) {
        return invalid(fmt::format("terminal size {}x{} must be between 1 and 65535 each", *cols, *rows), request);
    }
    if (!session->tty()) {
        return error_response(409, "InvalidStateError", "invalid_state",
                              fmt::format("execution {} has no terminal (exec with \"tty\": true)", session->id()),
                              request.request_id);
    }
    if (auto resized = session->resize(static_cast<std::uint16_t>(*rows), static_cast<std::uint16_t>(*cols));
        !resized) {
        return error_response(resized.error(), request.request_id);
    }
    return no_content();
}

tl::expected<std::shared_ptr<ExecSession>, HttpResponse> RestApi::attach_target(const HttpRequest& request) {
    if (auto denied = authenticate(request)) return tl::unexpected(*denied);
    const auto parts = split_path(request.path);
    if (parts.size() == 6 && parts[0] == "v1" && parts[1] == "boxes" && parts[3] == "executions" &&
        parts[5] == "attach") {
        return find_execution(parts[2], parts[4], request);
    }
    if (parts.size() == 4 && parts[0] == "v1" && parts[1] == "boxes" && parts[3] == "attach") {
        auto box = runtime_.get(parts[2]);
        if (!box) return tl::unexpected(error_response(box.error(), request.request_id));
        return main_session(*box, request, false);
    }
    return tl::unexpected(error_response(404, "NotFoundError", "not_found",
                                         fmt::format("no WebSocket route at {}", request.path), request.request_id));
}

HttpResponse RestApi::put_files(const std::string& box_key, const HttpRequest& request) {
    SERVE_TRY(dest, box_path_param(request));
    auto box = runtime_.get(box_key);
    if (!box) return error_response(box.error(), request.request_id);
    auto scratch = ScratchDir::make();
    if (!scratch) return error_response(scratch.error(), request.request_id);
    const auto root = scratch->path() / "in";
    fs::create_directory(root);
    if (auto extracted = extract_tar(request.body, root); !extracted) {
        return invalid(fmt::format("the body is not a usable tar archive: {}", extracted.error().message()), request);
    }
    std::error_code ec;
    const std::string into = dest.ends_with('/') ? dest : dest + "/";
    for (const auto& entry : fs::directory_iterator(root, ec)) {
        if (auto copied = box->copy_in(entry.path().string(), into); !copied) {
            return error_response(copied.error(), request.request_id);
        }
    }
    if (ec) {
        return error_response(BoxliteError(ErrorKind::Storage,
                                           fmt::format("cannot list {}: {}", root.string(), ec.message())),
                              request.request_id);
    }
    return no_content();
}

HttpResponse RestApi::get_files(const std::string& box_key, const HttpRequest& request) {
    SERVE_TRY(src, box_path_param(request));
    auto box = runtime_.get(box_key);
    if (!box) return error_response(box.error(), request.request_id);
    auto scratch = ScratchDir::make();
    if (!scratch) return error_response(scratch.error(), request.request_id);
    auto name = fs::path(src).filename().string();
    if (name.empty()) name = fs::path(src).parent_path().filename().string();
    if (name.empty()) name = "root";
    const auto local = scratch->path() / name;
    if (auto copied = box->copy_out(src, local.string()); !copied) {
        return error_response(copied.error(), request.request_id);
    }
    auto archive = create_tar(scratch->path(), name);
    if (!archive) return error_response(archive.error(), request.request_id);
    HttpResponse response;
    response.content_type = "application/x-tar";
    response.body = std::move(*archive);
    return response;
}

}  // namespace boxlite::server
