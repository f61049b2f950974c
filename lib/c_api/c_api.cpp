// The C API (include/boxlite/c/boxlite.h) over the C++ runtime.
//
// Every exported function goes through `guarded()`: it turns a BoxliteResult into a
// BoxliteErrorCode plus CBoxliteError, and catches every exception (bad_alloc is
// ResourceExhausted, anything else Internal), so none crosses the C ABI. Strings handed to the
// caller are malloc()ed, so boxlite_free_string / boxlite_error_free are free().
#include <boxlite/c/boxlite.h>

#include "c_api/options_json.hpp"

#include <boxlite/boxlite.hpp>
#include <boxlite/detail/time.hpp>
#include <boxlite/image/image_store.hpp>
#include <boxlite/version.hpp>

#include <nlohmann/json.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#define BOXLITE_C_EXPORT extern "C" __attribute__((visibility("default")))

using namespace boxlite;
using nlohmann::json;

// --- handles ----------------------------------------------------------------------------------

/// Set by boxlite_runtime_shutdown; shared with the handles made from that runtime.
using ClosedFlag = std::shared_ptr<std::atomic<bool>>;

struct CBoxliteRuntime {
    BoxliteRuntime runtime;
    ClosedFlag closed;
};

struct CBoxHandle {
    LiteBox box;
    ClosedFlag closed;
};

struct CBoxliteImageHandle {
    BoxliteOptions options;
    ClosedFlag closed;
};

struct CBoxliteSimple {
    BoxliteRuntime runtime;
    LiteBox box;
};

namespace {

/// An eventfd that the execution's waker signals. Shared with the waker, which may outlive the
/// C handle inside the agent session: the descriptor is closed only when both are gone.
struct WakeFd {
    int fd = -1;
    int open_errno = 0;  ///< why eventfd() failed, when fd is -1
    WakeFd() : fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
        if (fd < 0) open_errno = errno;
    }
    WakeFd(const WakeFd&) = delete;
    WakeFd& operator=(const WakeFd&) = delete;
    ~WakeFd() {
        if (fd >= 0) ::close(fd);
    }
    void signal() const noexcept {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
    }
    void clear() const noexcept {
        std::uint64_t value = 0;
        [[maybe_unused]] auto n = ::read(fd, &value, sizeof value);
    }
};

}  // namespace

struct CExecutionHandle {
    struct Output {
        std::optional<ExecOutputStream> stream;
        bool ended = false;
        bool polled = false;  ///< read by boxlite_execution_read: pump and wait leave it alone
        BoxliteChunkCallback callback = nullptr;
        void* user_data = nullptr;
    };

    explicit CExecutionHandle(Execution e) : execution(std::move(e)) {
        stdin_stream = execution.stdin();
        out.stream = execution.stdout();
        err.stream = execution.stderr();
        execution.set_waker([w = wake]() { w->signal(); });
    }

    std::shared_ptr<WakeFd> wake = std::make_shared<WakeFd>();
    Execution execution;  // declared before the streams: they are destroyed first
    std::optional<ExecStdin> stdin_stream;
    bool stdin_closed = false;
    Output out;
    Output err;
    std::optional<int> exit_code;
    std::vector<std::byte> buffer = std::vector<std::byte>(64 * 1024);
    /// Set while a callback of this handle runs: pump and wait are refused from inside one.
    bool in_callback = false;
};

namespace {

// --- errors -----------------------------------------------------------------------------------

BoxliteErrorCode to_code(ErrorKind kind) noexcept {
    switch (kind) {
        case ErrorKind::Internal: return BOXLITE_ERR_INTERNAL;
        case ErrorKind::NotFound: return BOXLITE_ERR_NOT_FOUND;
        case ErrorKind::AlreadyExists: return BOXLITE_ERR_ALREADY_EXISTS;
        case ErrorKind::InvalidState: return BOXLITE_ERR_INVALID_STATE;
        case ErrorKind::InvalidArgument: return BOXLITE_ERR_INVALID_ARGUMENT;
        case ErrorKind::Config: return BOXLITE_ERR_CONFIG;
        case ErrorKind::Storage: return BOXLITE_ERR_STORAGE;
        case ErrorKind::Image: return BOXLITE_ERR_IMAGE;
        case ErrorKind::Network: return BOXLITE_ERR_NETWORK;
        case ErrorKind::Execution: return BOXLITE_ERR_EXECUTION;
        case ErrorKind::Stopped: return BOXLITE_ERR_STOPPED;
        case ErrorKind::Engine: return BOXLITE_ERR_ENGINE;
        case ErrorKind::Unsupported: return BOXLITE_ERR_UNSUPPORTED;
        case ErrorKind::Database: return BOXLITE_ERR_DATABASE;
        case ErrorKind::Portal: return BOXLITE_ERR_PORTAL;
        case ErrorKind::Rpc: return BOXLITE_ERR_RPC;
        case ErrorKind::RpcTransport: return BOXLITE_ERR_RPC_TRANSPORT;
        case ErrorKind::MetadataError: return BOXLITE_ERR_METADATA;
        case ErrorKind::UnsupportedEngine: return BOXLITE_ERR_UNSUPPORTED_ENGINE;
    }
    return BOXLITE_ERR_INTERNAL;
}

/// A malloc()ed copy (NULL when out of memory), freed by boxlite_free_string.
char* c_string(std::string_view text) noexcept {
    auto* out = static_cast<char*>(std::malloc(text.size() + 1));
    if (out == nullptr) return nullptr;
    std::memcpy(out, text.data(), text.size());
    out[text.size()] = '\0';
    return out;
}

BoxliteErrorCode report(CBoxliteError* out_error, BoxliteErrorCode code, std::string_view message) noexcept {
    if (out_error != nullptr) {
        out_error->code = code;
        out_error->message = code == BOXLITE_OK ? nullptr : c_string(message);
    }
    return code;
}

BoxliteErrorCode report(CBoxliteError* out_error, const BoxliteError& error) noexcept {
    return report(out_error, to_code(error.kind()), error.to_string());
}

/// Runs `body` (returning BoxliteResult<void>) with every exception caught.
template <class Body>
BoxliteErrorCode guarded(CBoxliteError* out_error, Body&& body) noexcept {
    try {
        BoxliteResult<void> result = body();
        if (!result) return report(out_error, result.error());
        return report(out_error, BOXLITE_OK, {});
    } catch (const std::bad_alloc&) {
        return report(out_error, BOXLITE_ERR_RESOURCE_EXHAUSTED, "resource exhausted: out of memory");
    } catch (const std::exception& e) {
        return report(out_error, BOXLITE_ERR_INTERNAL, std::string("internal error: ") + e.what());
    } catch (...) {
        return report(out_error, BOXLITE_ERR_INTERNAL, "internal error: unknown exception");
    }
}

tl::unexpected<BoxliteError> null_argument(const char* name) {
    return fail(ErrorKind::InvalidArgument, "{} must not be NULL", name);
}

#define BOXLITE_C_REQUIRE(pointer)                                \
    do {                                                          \
        if ((pointer) == nullptr) return null_argument(#pointer); \
    } while (false)

BoxliteResult<void> check_open(const ClosedFlag& closed) {
    if (closed && closed->load()) return fail(ErrorKind::Stopped, "the runtime was shut down");
    return {};
}

BoxliteResult<void> give_json(const json& value, char** out_json) {
    char* text = c_string(value.dump());
    if (text == nullptr) throw std::bad_alloc();
    *out_json = text;
    return {};
}

/// The JSON text of a C argument, parsed; InvalidArgument naming `what` when it is not JSON.
BoxliteResult<json> parse_json_argument(const char* text, const char* what) {
    try {
        return json::parse(text);
    } catch (const json::exception& e) {
        return fail(ErrorKind::InvalidArgument, "{} is not valid JSON: {}", what, e.what());
    }
}

BoxliteResult<std::vector<std::string>> string_array(const char* text, const char* what) {
    std::vector<std::string> out;
    if (text == nullptr) return out;
    BOXLITE_TRY(auto j, parse_json_argument(text, what));
    if (!j.is_array()) return fail(ErrorKind::InvalidArgument, "{} must be a JSON array of strings", what);
    for (std::size_t i = 0; i < j.size(); ++i) {
        if (!j[i].is_string()) {
            return fail(ErrorKind::InvalidArgument, "{}[{}] must be a string (it is a JSON array of strings)", what, i);
        }
        out.push_back(j[i].get<std::string>());
    }
    return out;
}

json box_json(const BoxInfo& info) {
    json state = {{"status", to_string(info.status)}, {"running", info.running()}, {"pid", nullptr}};
    if (info.pid) state["pid"] = *info.pid;
    json j = {{"id", info.id.str()},          {"name", nullptr},
              {"state", std::move(state)},    {"created_at", detail::format_rfc3339(info.created_at)},
              {"image", info.image},          {"cpus", info.cpus},
              {"memory_mib", info.memory_mib}};
    if (info.name) j["name"] = *info.name;
    // Upstream's NetworkInfo: mode, allow_net and the published ports (as bound while the box
    // runs, a picked host port filled in; as asked otherwise, host_port null = to be picked).
    json published = json::array();
    for (const auto& port : info.ports) {
        published.push_back(
            {{"guest_port", port.guest_port},
             {"host_ip", port.host_ip},
             {"host_port", port.host_port && *port.host_port != 0 ? json(*port.host_port) : json(nullptr)},
             {"protocol", to_string(port.protocol)}});
    }
    j["network"] = {{"mode", to_string(info.network.mode)},
                    {"allow_net", info.network.allow_net},
                    {"published_ports", std::move(published)}};
    return j;
}

template <class T>
json optional_json(const std::optional<T>& value) {
    return value ? json(*value) : json(nullptr);
}

BoxliteResult<BoxCommand> to_box_command(const BoxliteCommand& c) {
    if (c.command == nullptr) return null_argument("command->command");
    BoxCommand command(c.command);
    BOXLITE_TRY(auto args, string_array(c.args_json, "command->args_json"));
    command.args(std::move(args));
    if (c.env_json != nullptr) {
        BOXLITE_TRY(auto env, parse_json_argument(c.env_json, "command->env_json"));
        if (!env.is_array()) {
            return fail(ErrorKind::InvalidArgument,
                        "command->env_json must be a JSON array of [\"KEY\", \"value\"] pairs");
        }
        for (std::size_t i = 0; i < env.size(); ++i) {
            const auto& pair = env[i];
            if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_string()) {
                return fail(ErrorKind::InvalidArgument, "command->env_json[{}] must be a [\"KEY\", \"value\"] pair", i);
            }
            command.env(pair[0].get<std::string>(), pair[1].get<std::string>());
        }
    }
    if (c.workdir != nullptr) command.working_dir(c.workdir);
    if (c.user != nullptr) command.user(c.user);
    if (!(c.timeout_secs >= 0) || c.timeout_secs > 365.0 * 24 * 3600) {
        return fail(ErrorKind::InvalidArgument, "command->timeout_secs {} is out of range (0 = none, up to a year)",
                    c.timeout_secs);
    }
    if (c.timeout_secs > 0) {
        command.timeout(std::chrono::milliseconds(static_cast<std::int64_t>(c.timeout_secs * 1000.0 + 0.5)));
    }
    if (c.tty != 0) command.tty(true);
    return command;
}

// --- driving an execution -----------------------------------------------------------------------

/// Delivers what has arrived on each stream to its callback (or drops it when there is none),
/// without blocking. True when anything happened.
BoxliteResult<bool> drain_available(CExecutionHandle& h) {
    h.wake->clear();
    bool progressed = false;
    for (auto* output : {&h.out, &h.err}) {
        while (!output->ended && !output->polled && output->stream) {
            BOXLITE_TRY(auto n, output->stream->try_read_some(h.buffer));
            if (!n) break;
            progressed = true;
            if (*n == 0) {
                output->ended = true;
                break;
            }
            if (output->callback != nullptr) {
                h.in_callback = true;
                output->callback(reinterpret_cast<const std::uint8_t*>(h.buffer.data()), *n, output->user_data);
                h.in_callback = false;
            }
        }
    }
    return progressed;
}

/// Blocks until the waker fires or `timeout_ms` passes (-1: no limit).
BoxliteResult<void> wait_for_wake(CExecutionHandle& h, int timeout_ms) {
    pollfd pfd{h.wake->fd, POLLIN, 0};
    while (::poll(&pfd, 1, timeout_ms) < 0) {
        if (errno != EINTR) return fail_errno(ErrorKind::Internal, "poll on the execution's wake descriptor", errno);
    }
    return {};
}

bool streams_ended(const CExecutionHandle& h) { return h.out.ended && h.err.ended; }

BoxliteResult<void> check_not_in_callback(const CExecutionHandle& h, const char* what) {
    if (h.in_callback) {
        return fail(ErrorKind::InvalidState, "{} cannot be called from one of the same execution's callbacks", what);
    }
    return {};
}

/// The C handle of a started execution; fails when no wake descriptor could be made (no poll()
/// could ever wait on it).
BoxliteResult<std::unique_ptr<CExecutionHandle>> make_execution_handle(Execution execution) {
    auto handle = std::make_unique<CExecutionHandle>(std::move(execution));
    if (handle->wake->fd < 0) {
        return fail_errno(ErrorKind::Internal, "creating the execution's wake descriptor (eventfd)",
                          handle->wake->open_errno);
    }
    return handle;
}

/// Pumps output until the command has ended or `timeout_ms` (-1: no limit) has passed.
BoxliteResult<void> wait_execution(CExecutionHandle& h, int timeout_ms) {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms);
    while (!h.exit_code) {
        BOXLITE_TRY_VOID(drain_available(h));
        if (auto status = h.execution.try_wait()) {
            if (!*status) return fail(std::move(*status).error());
            // Output that arrived with the exit is delivered before wait returns.
            BOXLITE_TRY_VOID(drain_available(h));
            h.exit_code = (*status)->exit_code;
            break;
        }
        int remaining = -1;
        if (timeout_ms >= 0) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            if (left <= 0) return {};
            remaining = static_cast<int>(left);
        }
        BOXLITE_TRY_VOID(wait_for_wake(h, remaining));
    }
    return {};
}

struct TextCallback {
    BoxliteOutputCallback callback;
    void* user_data;
    int is_stderr;
};

void forward_text(const std::uint8_t* data, std::size_t len, void* user_data) {
    auto* target = static_cast<TextCallback*>(user_data);
    const std::string text(reinterpret_cast<const char*>(data), len);
    target->callback(text.c_str(), target->is_stderr, target->user_data);
}

BoxliteResult<void> run_blocking(CBoxHandle* box, const BoxliteCommand& c, BoxliteOutputCallback callback,
                                 void* user_data, int* out_exit_code) {
    BOXLITE_TRY_VOID(check_open(box->closed));
    BOXLITE_TRY(auto command, to_box_command(c));
    BOXLITE_TRY(auto execution, box->box.exec(command));
    BOXLITE_TRY(auto handle, make_execution_handle(std::move(execution)));
    CExecutionHandle& h = *handle;
    h.stdin_closed = true;
    if (h.stdin_stream) BOXLITE_TRY_VOID(h.stdin_stream->close());
    TextCallback out{callback, user_data, 0};
    TextCallback err{callback, user_data, 1};
    if (callback != nullptr) {
        h.out.callback = forward_text;
        h.out.user_data = &out;
        h.err.callback = forward_text;
        h.err.user_data = &err;
    }
    BOXLITE_TRY_VOID(wait_execution(h, -1));
    *out_exit_code = h.exit_code.value_or(-1);
    return {};
}

BoxliteResult<BoxliteOptions> runtime_options(const char* home_dir) {
    BOXLITE_TRY(auto options, BoxliteOptions::from_environment());
    if (home_dir != nullptr) {
        if (*home_dir == '\0') return fail(ErrorKind::InvalidArgument, "home_dir must not be empty (NULL: default)");
        options.home_dir = home_dir;
    }
    return options;
}

/// "docker.io/library/alpine:3.19" -> {"docker.io/library/alpine", "3.19"}; a digest reference
/// has the digest as its tag.
std::pair<std::string, std::string> split_reference(const std::string& reference) {
    if (const auto at = reference.find('@'); at != std::string::npos) {
        return {reference.substr(0, at), reference.substr(at + 1)};
    }
    const auto slash = reference.rfind('/');
    const auto colon = reference.rfind(':');
    if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
        return {reference.substr(0, colon), reference.substr(colon + 1)};
    }
    return {reference, "latest"};
}

}  // namespace

// --- runtime ------------------------------------------------------------------------------------

BOXLITE_C_EXPORT const char* boxlite_version(void) {
    static const std::string text(boxlite::version());
    return text.c_str();
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_runtime_new(const char* home_dir, const char* registries_json,
                                                      CBoxliteRuntime** out_runtime, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(out_runtime);
        *out_runtime = nullptr;
        BOXLITE_TRY(auto options, runtime_options(home_dir));
        if (registries_json != nullptr) {
            BOXLITE_TRY(options.image_registries, string_array(registries_json, "registries_json"));
            for (const auto& host : options.image_registries) {
                if (host.empty()) return fail(ErrorKind::InvalidArgument, "registries_json holds an empty host");
            }
        }
        BOXLITE_TRY(auto runtime, open_runtime(std::move(options)));
        *out_runtime = new CBoxliteRuntime{std::move(runtime), std::make_shared<std::atomic<bool>>(false)};
        return {};
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_runtime_shutdown(CBoxliteRuntime* runtime, int timeout_secs,
                                                           CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(runtime);
        if (timeout_secs < -1 || timeout_secs > 86400) {
            return fail(ErrorKind::InvalidArgument,
                        "timeout_secs {} is out of range (0 = default 10 s, -1 = no limit, else 1 to 86400)",
                        timeout_secs);
        }
        if (runtime->closed->exchange(true)) return {};  // already shut down
        BOXLITE_TRY(auto infos, runtime->runtime.list_info());
        std::optional<BoxliteError> first_error;
        for (const auto& info : infos) {
            if (!info.running()) continue;
            auto box = runtime->runtime.get(info.id.str());
            auto stopped = box ? box->stop() : BoxliteResult<void>(fail(box.error()));
            if (!stopped && stopped.error().kind() != ErrorKind::NotFound && !first_error) {
                first_error = stopped.error();
            }
        }
        if (first_error) return fail(*first_error);
        return {};
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_runtime_metrics(CBoxliteRuntime* runtime, char** out_json,
                                                          CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(runtime);
        BOXLITE_C_REQUIRE(out_json);
        *out_json = nullptr;
        BOXLITE_TRY_VOID(check_open(runtime->closed));
        BOXLITE_TRY(auto m, runtime->runtime.metrics());
        return give_json({{"boxes_created_total", m.boxes_created_total},
                          {"boxes_failed_total", m.boxes_failed_total},
                          {"num_running_boxes", m.num_running_boxes},
                          {"total_commands_executed", m.total_commands_executed},
                          {"total_exec_errors", m.total_exec_errors}},
                         out_json);
    });
}

BOXLITE_C_EXPORT void boxlite_runtime_free(CBoxliteRuntime* runtime) {
    try {
        delete runtime;
    } catch (...) {}
}

// --- boxes ----------------------------------------------------------------------------------------

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_create_box(CBoxliteRuntime* runtime, const char* options_json,
                                                     CBoxHandle** out_box, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(runtime);
        BOXLITE_C_REQUIRE(out_box);
        *out_box = nullptr;
        BOXLITE_TRY_VOID(check_open(runtime->closed));
        BOXLITE_TRY(auto request, capi::parse_create_options(options_json == nullptr ? "null" : options_json));
        BOXLITE_TRY(auto box, runtime->runtime.create(request.options, std::move(request.name)));
        *out_box = new CBoxHandle{std::move(box), runtime->closed};
        return {};
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_get(CBoxliteRuntime* runtime, const char* id_or_name, CBoxHandle** out_box,
                                              CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(runtime);
        BOXLITE_C_REQUIRE(id_or_name);
        BOXLITE_C_REQUIRE(out_box);
        *out_box = nullptr;
        BOXLITE_TRY_VOID(check_open(runtime->closed));
        BOXLITE_TRY(auto box, runtime->runtime.get(id_or_name));
        *out_box = new CBoxHandle{std::move(box), runtime->closed};
        return {};
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_start_box(CBoxHandle* box, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(box);
        BOXLITE_TRY_VOID(check_open(box->closed));
        return box->box.start();
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_stop_box(CBoxHandle* box, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(box);
        BOXLITE_TRY_VOID(check_open(box->closed));
        return box->box.stop();
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_remove(CBoxliteRuntime* runtime, const char* id_or_name, int force,
                                                 CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(runtime);
        BOXLITE_C_REQUIRE(id_or_name);
        BOXLITE_TRY_VOID(check_open(runtime->closed));
        return runtime->runtime.remove(id_or_name, force != 0);
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_list_info(CBoxliteRuntime* runtime, char** out_json,
                                                    CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(runtime);
        BOXLITE_C_REQUIRE(out_json);
        *out_json = nullptr;
        BOXLITE_TRY_VOID(check_open(runtime->closed));
        BOXLITE_TRY(auto infos, runtime->runtime.list_info());
        json list = json::array();
        for (const auto& info : infos) list.push_back(box_json(info));
        return give_json(list, out_json);
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_get_info(CBoxliteRuntime* runtime, const char* id_or_name, char** out_json,
                                                   CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(runtime);
        BOXLITE_C_REQUIRE(id_or_name);
        BOXLITE_C_REQUIRE(out_json);
        *out_json = nullptr;
        BOXLITE_TRY_VOID(check_open(runtime->closed));
        BOXLITE_TRY(auto info, runtime->runtime.get_info(id_or_name));
        return give_json(box_json(info), out_json);
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_box_info(CBoxHandle* box, char** out_json, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(box);
        BOXLITE_C_REQUIRE(out_json);
        *out_json = nullptr;
        BOXLITE_TRY_VOID(check_open(box->closed));
        BOXLITE_TRY(auto info, box->box.info());
        return give_json(box_json(info), out_json);
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_box_metrics(CBoxHandle* box, char** out_json, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(box);
        BOXLITE_C_REQUIRE(out_json);
        *out_json = nullptr;
        BOXLITE_TRY_VOID(check_open(box->closed));
        BOXLITE_TRY(auto m, box->box.metrics());
        return give_json({{"cpu_percent", optional_json(m.cpu_percent)},
                          {"memory_bytes", optional_json(m.memory_bytes)},
                          {"commands_executed_total", m.commands_executed_total},
                          {"exec_errors_total", m.exec_errors_total},
                          {"bytes_sent_total", m.bytes_sent_total},
                          {"bytes_received_total", m.bytes_received_total},
                          {"total_create_duration_ms", optional_json(m.total_create_duration_ms)},
                          {"guest_boot_duration_ms", optional_json(m.guest_boot_duration_ms)},
                          {"network_bytes_sent", optional_json(m.network_bytes_sent)},
                          {"network_bytes_received", optional_json(m.network_bytes_received)},
                          {"network_tcp_connections", optional_json(m.network_tcp_connections)},
                          {"network_tcp_errors", optional_json(m.network_tcp_errors)}},
                         out_json);
    });
}

BOXLITE_C_EXPORT char* boxlite_box_id(CBoxHandle* box) {
    if (box == nullptr) return nullptr;
    try {
        return c_string(box->box.id().str());
    } catch (...) {
        return nullptr;
    }
}

BOXLITE_C_EXPORT void boxlite_box_free(CBoxHandle* box) {
    try {
        delete box;
    } catch (...) {}
}

// --- blocking execution -----------------------------------------------------------------------

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execute(CBoxHandle* box, const char* command, const char* args_json,
                                                  BoxliteOutputCallback callback, void* user_data, int* out_exit_code,
                                                  CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(box);
        BOXLITE_C_REQUIRE(command);
        BOXLITE_C_REQUIRE(out_exit_code);
        BoxliteCommand c{};
        c.command = command;
        c.args_json = args_json;
        return run_blocking(box, c, callback, user_data, out_exit_code);
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execute_cmd(CBoxHandle* box, const BoxliteCommand* command,
                                                      BoxliteOutputCallback callback, void* user_data,
                                                      int* out_exit_code, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(box);
        BOXLITE_C_REQUIRE(command);
        BOXLITE_C_REQUIRE(out_exit_code);
        return run_blocking(box, *command, callback, user_data, out_exit_code);
    });
}

// --- handle-driven execution ------------------------------------------------------------------

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_box_exec(CBoxHandle* box, const BoxliteCommand* command,
                                                   CExecutionHandle** out_execution, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(box);
        BOXLITE_C_REQUIRE(command);
        BOXLITE_C_REQUIRE(out_execution);
        *out_execution = nullptr;
        BOXLITE_TRY_VOID(check_open(box->closed));
        BOXLITE_TRY(auto c, to_box_command(*command));
        BOXLITE_TRY(auto execution, box->box.exec(c));
        BOXLITE_TRY(auto handle, make_execution_handle(std::move(execution)));
        *out_execution = handle.release();
        return {};
    });
}

namespace {
BoxliteErrorCode set_output_callback(CExecutionHandle* execution, bool is_stderr, BoxliteChunkCallback callback,
                                     void* user_data, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(execution);
        auto& output = is_stderr ? execution->err : execution->out;
        output.callback = callback;
        output.user_data = user_data;
        return {};
    });
}
}  // namespace

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_on_stdout(CExecutionHandle* execution,
                                                              BoxliteChunkCallback callback, void* user_data,
                                                              CBoxliteError* out_error) {
    return set_output_callback(execution, false, callback, user_data, out_error);
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_on_stderr(CExecutionHandle* execution,
                                                              BoxliteChunkCallback callback, void* user_data,
                                                              CBoxliteError* out_error) {
    return set_output_callback(execution, true, callback, user_data, out_error);
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_fd(CExecutionHandle* execution, int* out_fd,
                                                       CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(execution);
        BOXLITE_C_REQUIRE(out_fd);
        if (execution->wake->fd < 0) return fail(ErrorKind::Internal, "the execution has no wake descriptor");
        *out_fd = execution->wake->fd;
        return {};
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_pump(CExecutionHandle* execution, int timeout_ms, int* out_finished,
                                                         CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(execution);
        if (out_finished != nullptr) *out_finished = 0;
        if (timeout_ms < -1) {
            return fail(ErrorKind::InvalidArgument, "timeout_ms {} is out of range (-1 = no limit, 0 = poll)",
                        timeout_ms);
        }
        BOXLITE_TRY_VOID(check_not_in_callback(*execution, "boxlite_execution_pump"));
        BOXLITE_TRY(bool progressed, drain_available(*execution));
        if (!progressed && !streams_ended(*execution) && timeout_ms != 0) {
            BOXLITE_TRY_VOID(wait_for_wake(*execution, timeout_ms));
            BOXLITE_TRY_VOID(drain_available(*execution));
        }
        if (out_finished != nullptr) *out_finished = streams_ended(*execution) ? 1 : 0;
        return {};
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_read(CExecutionHandle* execution, int is_stderr, uint8_t* buffer,
                                                         size_t capacity, size_t* out_len, int* out_eof,
                                                         CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(execution);
        BOXLITE_C_REQUIRE(out_len);
        BOXLITE_C_REQUIRE(out_eof);
        *out_len = 0;
        *out_eof = 0;
        if (buffer == nullptr && capacity != 0) return null_argument("buffer");
        if (is_stderr != 0 && is_stderr != 1) {
            return fail(ErrorKind::InvalidArgument, "is_stderr is {} (0 for stdout, 1 for stderr)", is_stderr);
        }
        auto& output = is_stderr != 0 ? execution->err : execution->out;
        if (output.callback != nullptr) {
            return fail(ErrorKind::InvalidState, "{} has a callback: its output goes there (boxlite_execution_pump)",
                        is_stderr != 0 ? "stderr" : "stdout");
        }
        output.polled = true;
        // Progress after this point signals the descriptor again.
        execution->wake->clear();
        if (output.ended || !output.stream) {
            *out_eof = 1;
            return {};
        }
        if (capacity == 0) return {};
        BOXLITE_TRY(auto n, output.stream->try_read_some(std::as_writable_bytes(std::span(buffer, capacity))));
        if (!n) return {};
        if (*n == 0) {
            output.ended = true;
            *out_eof = 1;
            return {};
        }
        *out_len = *n;
        return {};
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_stdin_write(CExecutionHandle* execution, const uint8_t* data,
                                                                size_t len, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(execution);
        if (data == nullptr && len != 0) return null_argument("data");
        if (execution->stdin_closed || !execution->stdin_stream) {
            return fail(ErrorKind::InvalidState, "stdin of the execution is closed");
        }
        if (len == 0) return {};
        return execution->stdin_stream->write(std::as_bytes(std::span(data, len)));
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_stdin_close(CExecutionHandle* execution, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(execution);
        if (std::exchange(execution->stdin_closed, true) || !execution->stdin_stream) return {};
        return execution->stdin_stream->close();
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_wait(CExecutionHandle* execution, int timeout_ms,
                                                         int* out_exit_code, int* out_exited,
                                                         CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(execution);
        BOXLITE_C_REQUIRE(out_exit_code);
        BOXLITE_C_REQUIRE(out_exited);
        *out_exited = 0;
        if (timeout_ms < -1) {
            return fail(ErrorKind::InvalidArgument, "timeout_ms {} is out of range (-1 = no limit, 0 = poll)",
                        timeout_ms);
        }
        BOXLITE_TRY_VOID(check_not_in_callback(*execution, "boxlite_execution_wait"));
        BOXLITE_TRY_VOID(wait_execution(*execution, timeout_ms));
        if (execution->exit_code) {
            *out_exited = 1;
            *out_exit_code = *execution->exit_code;
        }
        return {};
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_kill(CExecutionHandle* execution, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(execution);
        if (execution->exit_code) return {};
        return execution->execution.kill();
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_signal(CExecutionHandle* execution, int signal,
                                                           CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(execution);
        return execution->execution.signal(signal);
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_execution_tty_resize(CExecutionHandle* execution, int rows, int cols,
                                                               CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(execution);
        if (rows < 1 || rows > 65535 || cols < 1 || cols > 65535) {
            return fail(ErrorKind::InvalidArgument, "tty size {}x{} is out of range (each 1 to 65535)", rows, cols);
        }
        return execution->execution.resize_tty(static_cast<std::uint16_t>(rows), static_cast<std::uint16_t>(cols));
    });
}

BOXLITE_C_EXPORT void boxlite_execution_free(CExecutionHandle* execution) {
    try {
        delete execution;
    } catch (...) {}
}

// --- files ------------------------------------------------------------------------------------

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_copy_in(CBoxHandle* box, const char* host_path, const char* box_path,
                                                  CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(box);
        BOXLITE_C_REQUIRE(host_path);
        BOXLITE_C_REQUIRE(box_path);
        BOXLITE_TRY_VOID(check_open(box->closed));
        return box->box.copy_in(host_path, box_path);
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_copy_out(CBoxHandle* box, const char* box_path, const char* host_path,
                                                   CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(box);
        BOXLITE_C_REQUIRE(box_path);
        BOXLITE_C_REQUIRE(host_path);
        BOXLITE_TRY_VOID(check_open(box->closed));
        return box->box.copy_out(box_path, host_path);
    });
}

// --- images -----------------------------------------------------------------------------------

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_runtime_images(CBoxliteRuntime* runtime, CBoxliteImageHandle** out_images,
                                                         CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(runtime);
        BOXLITE_C_REQUIRE(out_images);
        *out_images = nullptr;
        BOXLITE_TRY_VOID(check_open(runtime->closed));
        *out_images = new CBoxliteImageHandle{runtime->runtime.options(), runtime->closed};
        return {};
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_image_pull(CBoxliteImageHandle* images, const char* reference,
                                                     char** out_json, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(images);
        BOXLITE_C_REQUIRE(reference);
        BOXLITE_C_REQUIRE(out_json);
        *out_json = nullptr;
        BOXLITE_TRY_VOID(check_open(images->closed));
        BOXLITE_TRY(auto store, image::ImageStore::open(image::store_options_for(images->options)));
        BOXLITE_TRY(auto pulled, store.pull(reference));
        return give_json({{"reference", pulled.reference},
                          {"config_digest", pulled.config_digest},
                          {"layer_count", pulled.layers.size()}},
                         out_json);
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_image_list(CBoxliteImageHandle* images, char** out_json,
                                                     CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(images);
        BOXLITE_C_REQUIRE(out_json);
        *out_json = nullptr;
        BOXLITE_TRY_VOID(check_open(images->closed));
        BOXLITE_TRY(auto store, image::ImageStore::open(image::store_options_for(images->options)));
        BOXLITE_TRY(auto list, store.list());
        json out = json::array();
        for (const auto& info : list) {
            auto [repository, tag] = split_reference(info.reference);
            out.push_back(json{{"reference", info.reference},
                               {"repository", repository},
                               {"tag", tag},
                               {"id", info.id()},
                               {"cached_at", detail::format_rfc3339(std::chrono::system_clock::time_point(
                                                 std::chrono::seconds(info.stored_at)))},
                               {"size_bytes", info.size}});
        }
        return give_json(out, out_json);
    });
}

BOXLITE_C_EXPORT void boxlite_image_free(CBoxliteImageHandle* images) {
    try {
        delete images;
    } catch (...) {}
}

// --- the simple API -----------------------------------------------------------------------------

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_simple_new(const char* image, int cpus, int memory_mib,
                                                     CBoxliteSimple** out_runner, CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(image);
        BOXLITE_C_REQUIRE(out_runner);
        *out_runner = nullptr;
        if (*image == '\0') return fail(ErrorKind::InvalidArgument, "image must not be empty");
        if (cpus < 0 || cpus > 255)
            return fail(ErrorKind::InvalidArgument, "cpus {} is out of range (0 = default, 1 to 255)", cpus);
        if (memory_mib < 0)
            return fail(ErrorKind::InvalidArgument, "memory_mib {} is negative (0 = default)", memory_mib);
        BOXLITE_TRY(auto options, runtime_options(nullptr));
        BOXLITE_TRY(auto runtime, open_runtime(std::move(options)));
        BoxOptions box_options;
        box_options.rootfs = image[0] == '/' ? RootfsSpec::path(image) : RootfsSpec::image(image);
        if (cpus > 0) box_options.cpus = static_cast<std::uint32_t>(cpus);
        if (memory_mib > 0) box_options.memory_mib = static_cast<std::uint32_t>(memory_mib);
        box_options.auto_remove = false;  // removed by boxlite_simple_free
        BOXLITE_TRY(auto box, runtime.create(box_options));
        *out_runner = new CBoxliteSimple{std::move(runtime), std::move(box)};
        return {};
    });
}

BOXLITE_C_EXPORT BoxliteErrorCode boxlite_simple_run(CBoxliteSimple* runner, const char* command,
                                                     const char* const* args, int argc, CBoxliteExecResult** out_result,
                                                     CBoxliteError* out_error) {
    return guarded(out_error, [&]() -> BoxliteResult<void> {
        BOXLITE_C_REQUIRE(runner);
        BOXLITE_C_REQUIRE(command);
        BOXLITE_C_REQUIRE(out_result);
        *out_result = nullptr;
        if (argc < 0) return fail(ErrorKind::InvalidArgument, "argc {} is negative", argc);
        if (argc > 0 && args == nullptr) return null_argument("args");
        BoxCommand c(command);
        for (int i = 0; i < argc; ++i) {
            if (args[i] == nullptr) return fail(ErrorKind::InvalidArgument, "args[{}] must not be NULL", i);
            c.arg(args[i]);
        }
        BOXLITE_TRY(auto output, runner->box.run(c));
        auto* result = static_cast<CBoxliteExecResult*>(std::calloc(1, sizeof(CBoxliteExecResult)));
        if (result == nullptr) throw std::bad_alloc();
        result->exit_code = output.exit_code;
        result->stdout_text = c_string(output.stdout_text);
        result->stderr_text = c_string(output.stderr_text);
        if (result->stdout_text == nullptr || result->stderr_text == nullptr) {
            boxlite_result_free(result);
            throw std::bad_alloc();
        }
        *out_result = result;
        return {};
    });
}

BOXLITE_C_EXPORT void boxlite_simple_free(CBoxliteSimple* runner) {
    if (runner == nullptr) return;
    try {
        (void)runner->runtime.remove(runner->box.id().str(), true);
        delete runner;
    } catch (...) {}
}

BOXLITE_C_EXPORT void boxlite_result_free(CBoxliteExecResult* result) {
    if (result == nullptr) return;
    std::free(result->stdout_text);
    std::free(result->stderr_text);
    std::free(result);
}

// --- freeing ----------------------------------------------------------------------------------

BOXLITE_C_EXPORT void boxlite_free_string(char* text) { std::free(text); }

BOXLITE_C_EXPORT void boxlite_error_free(CBoxliteError* error) {
    if (error == nullptr) return;
    std::free(error->message);
    error->message = nullptr;
}
