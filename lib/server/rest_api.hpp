// The REST API without the HTTP machinery: a request in, a response out. Routes, bodies, the error
// envelope and the status mapping follow upstream's `boxlite serve` (docs/openapi.yaml lists them);
// executions live here with a bounded backlog of their output, for polling and WebSocket attach.
#pragma once

#include "server/server.hpp"

#include <boxlite/boxlite.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace boxlite::server {

struct HttpRequest {
    std::string method;  ///< "GET", "HEAD", ...
    std::string path;    ///< percent-decoded path, without the query
    std::map<std::string, std::string> query;
    std::string body;
    std::string authorization;  ///< the Authorization header, as sent
    std::string request_id;     ///< X-Request-Id (the server makes one when the client sent none)
};

struct HttpResponse {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
};

/// The JSON error envelope: {"error":{"message","type","code","request_id"}}.
[[nodiscard]] HttpResponse error_response(int status, std::string_view type, std::string_view code,
                                          std::string_view message, std::string_view request_id = {});
/// BoxliteError::http() of upstream: the status, type and code of an error kind.
[[nodiscard]] HttpResponse error_response(const BoxliteError& error, std::string_view request_id = {});

/// Output channels of the attach protocol (the first byte of a binary frame).
inline constexpr std::uint8_t kChannelStdout = 0x01;
inline constexpr std::uint8_t kChannelStderr = 0x02;

/// One execution started through the API: its output is pumped by two threads into a backlog
/// (the last kBacklogBytes of each stream) and, while a client is attached, to that client.
class ExecSession {
public:
    static constexpr std::size_t kBacklogBytes = 256 * 1024;

    /// Receives output while attached. It may block (backpressure: the pump then stops reading,
    /// and the box's writes stall) and returns false when the client is gone.
    using Listener = std::function<bool(std::uint8_t channel, std::string_view data)>;

    /// `main_command`: the box's main command (entrypoint + cmd), which the reaper leaves alone:
    /// it lives as long as the box does, whether a client is attached or not.
    ExecSession(std::string box_id, Execution execution, bool tty, bool main_command = false);
    ~ExecSession();
    ExecSession(const ExecSession&) = delete;
    ExecSession& operator=(const ExecSession&) = delete;

    /// Starts the pump threads; `stdin_data` is written first, then stdin is closed.
    void start(std::shared_ptr<ExecSession> self, std::optional<std::string> stdin_data);

    [[nodiscard]] const std::string& id() const noexcept { return id_; }
    [[nodiscard]] const std::string& box_id() const noexcept { return box_id_; }
    [[nodiscard]] bool tty() const noexcept { return tty_; }
    [[nodiscard]] bool main_command() const noexcept { return main_command_; }
    [[nodiscard]] std::optional<int> exit_code() const;
    [[nodiscard]] std::chrono::steady_clock::time_point finished_at() const;

    /// The backlog of both streams, oldest first (for GET .../output and late attach).
    struct Backlog {
        std::string stdout_data;
        std::string stderr_data;
        bool stdout_truncated = false;
        bool stderr_truncated = false;
        std::optional<int> exit_code;
    };
    [[nodiscard]] Backlog backlog() const;

    /// Attaches a client: nullopt when another one is attached (409). Returns the backlog to
    /// replay; after it, `listener` gets every new chunk until detach().
    [[nodiscard]] std::optional<Backlog> attach(Listener listener);
    void detach();
    /// Blocks until the execution ended; its exit code.
    int wait_exit();

    [[nodiscard]] std::chrono::steady_clock::time_point started_at() const noexcept { return started_at_; }
    /// When the last attached client left; nullopt while one is attached or none ever was.
    [[nodiscard]] std::optional<std::chrono::steady_clock::time_point> orphaned_since() const;
    /// The reaper's progress on this execution: 0 nothing sent, 1 SIGHUP sent, 2 SIGTERM sent.
    int reap_stage = 0;
    std::chrono::steady_clock::time_point reap_stage_at{};

    BoxliteResult<void> write_stdin(std::string_view data);
    BoxliteResult<void> close_stdin();
    BoxliteResult<void> signal(int signo);
    BoxliteResult<void> resize(std::uint16_t rows, std::uint16_t cols);

private:
    void pump(std::uint8_t channel, ExecOutputStream stream);
    void finish(int exit_code);

    std::string id_;
    std::string box_id_;
    bool tty_ = false;
    bool main_command_ = false;
    Execution execution_;
    std::mutex stdin_mutex_;
    std::optional<ExecStdin> stdin_;

    mutable std::mutex mutex_;
    std::condition_variable exited_;
    std::string stdout_backlog_, stderr_backlog_;
    bool stdout_truncated_ = false, stderr_truncated_ = false;
    std::shared_ptr<Listener> listener_;
    /// Until a client first attaches (or kFirstAttachWait passed), a full backlog holds the output
    /// back instead of dropping its start: an exec followed by its attach loses nothing.
    bool first_attach_over_ = false;
    std::condition_variable first_attach_;
    std::optional<int> exit_code_;
    std::chrono::steady_clock::time_point finished_at_{};
    std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
    std::optional<std::chrono::steady_clock::time_point> orphaned_since_;
    int open_streams_ = 2;
};

/// The signals the API lets a client send (upstream's whitelist).
[[nodiscard]] bool is_allowed_signal(int signo);

class RestApi {
public:
    RestApi(BoxliteRuntime runtime, const ServeOptions& options);
    ~RestApi();
    RestApi(const RestApi&) = delete;
    RestApi& operator=(const RestApi&) = delete;

    /// Answers one request; thread-safe, and it blocks while the runtime works.
    [[nodiscard]] HttpResponse handle(const HttpRequest& request);

    /// Checks the Authorization header (constant-time); nullopt when it passes.
    [[nodiscard]] std::optional<HttpResponse> authenticate(const HttpRequest& request) const;

    /// The execution that GET .../executions/{id}/attach (or the box's /attach) refers to, or the
    /// error response to send instead of upgrading.
    [[nodiscard]] tl::expected<std::shared_ptr<ExecSession>, HttpResponse> attach_target(const HttpRequest& request);

    /// Every route the server answers, as "METHOD /path/{param}" (tests compare with the OpenAPI
    /// document).
    [[nodiscard]] static std::vector<std::string> routes();

private:
    HttpResponse route(const HttpRequest& request, const std::vector<std::string>& parts);
    HttpResponse create_box(const HttpRequest& request);
    HttpResponse list_boxes(const HttpRequest& request);
    HttpResponse box_response(LiteBox& box, const HttpRequest& request, int status);
    HttpResponse exec(const std::string& box, const HttpRequest& request);
    HttpResponse execution(const std::string& box, const std::string& exec_id, const std::string& action,
                           const HttpRequest& request);
    HttpResponse put_files(const std::string& box, const HttpRequest& request);
    HttpResponse get_files(const std::string& box, const HttpRequest& request);
    HttpResponse runtime_metrics(const HttpRequest& request);

    /// The box's main command session: the one running (or finished) already, else a new one
    /// (the box is started first when needed); with `relaunch_finished`, a finished one is
    /// replaced by a new run (POST .../start). 409 for a box that has no main command.
    tl::expected<std::shared_ptr<ExecSession>, HttpResponse> main_session(LiteBox& box, const HttpRequest& request,
                                                                          bool relaunch_finished);
    /// What the box's main command is (BoxOptions over the image's Entrypoint/Cmd, as the
    /// runtime merges them), or nullopt when there is none.
    BoxliteResult<std::optional<BoxCommand>> main_command(const BoxConfig& config) const;
    /// The exit code of the box's main command once it has exited (BoxResponse.exit_code).
    std::optional<int> main_exit_code(const std::string& box_id);

    tl::expected<std::shared_ptr<ExecSession>, HttpResponse> find_execution(const std::string& box,
                                                                            const std::string& exec_id,
                                                                            const HttpRequest& request);
    void evict_finished();
    void reap();

    BoxliteRuntime runtime_;
    std::optional<std::string> api_key_;
    bool allow_host_rootfs_ = false;
    ServeOptions options_;
    std::mutex executions_mutex_;
    std::map<std::string, std::shared_ptr<ExecSession>> executions_;
    /// Box id -> its main command's session (under executions_mutex_); kept after it finished
    /// (for exit_code), until the box is removed or its command runs again.
    std::map<std::string, std::shared_ptr<ExecSession>> main_sessions_;
    /// Box id -> the mutex that makes two attaches (or a start and an attach) launch its main
    /// command once; per box, as starting a VM box takes seconds (under executions_mutex_).
    std::map<std::string, std::shared_ptr<std::mutex>> main_launch_mutexes_;
    std::atomic<std::uint64_t> boxes_stopped_total_{0};

    std::mutex reaper_mutex_;
    std::condition_variable reaper_wake_;
    bool reaper_stop_ = false;
    std::thread reaper_;
};

}  // namespace boxlite::server
