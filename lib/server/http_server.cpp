// The HTTP side of `boxlite serve`: Boost.Beast over Asio, plain or TLS.
//
// Threads: `io_threads` run the io_context (accept, parse, write, WebSocket frames), each
// connection on its own strand; `worker_threads` run RestApi::handle, which blocks on the
// runtime. A request is read whole (header and body limits, one deadline for both: a slow-loris
// client is cut off), handed to a worker, and its response written back on the strand.
//
// Shutdown (SIGTERM/SIGINT): the acceptor closes (connections still in the kernel's accept queue
// are accepted and closed first, so they end in order, not reset), idle connections are closed,
// requests in flight finish and get their response (with `Connection: close`), attached WebSockets
// are closed with "going away"; then serve() returns. Boxes and executions are left as they are.
#include "server/rest_api.hpp"
#include "server/server.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <nlohmann/json.hpp>
#include <openssl/rand.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <thread>

namespace boxlite::server {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using error_code = beast::error_code;

std::string new_request_id() {
    unsigned char bytes[16];
    RAND_bytes(bytes, sizeof bytes);
    bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x40);
    bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string id;
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) id += '-';
        id += kHex[bytes[i] >> 4];
        id += kHex[bytes[i] & 15];
    }
    return id;
}

std::string percent_decode(std::string_view text, bool plus_is_space) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        auto hex = [](char h) -> int {
            if (h >= '0' && h <= '9') return h - '0';
            if (h >= 'a' && h <= 'f') return h - 'a' + 10;
            if (h >= 'A' && h <= 'F') return h - 'A' + 10;
            return -1;
        };
        if (c == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
            out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out += ' ';
        } else {
            out += c;
        }
    }
    return out;
}

/// What the Beast request says, in RestApi's terms.
HttpRequest to_api_request(const http::request<http::string_body>& req) {
    HttpRequest out;
    out.method = std::string(req.method_string());
    const std::string_view target = req.target();
    const auto q = target.find('?');
    out.path = percent_decode(target.substr(0, q), false);
    if (q != std::string_view::npos) {
        std::string_view query = target.substr(q + 1);
        while (!query.empty()) {
            const auto amp = query.find('&');
            const auto pair = query.substr(0, amp);
            const auto eq = pair.find('=');
            auto key = percent_decode(pair.substr(0, eq), true);
            auto value = eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1), true);
            if (!key.empty()) out.query.emplace(std::move(key), std::move(value));
            if (amp == std::string_view::npos) break;
            query.remove_prefix(amp + 1);
        }
    }
    out.body = req.body();
    if (auto it = req.find(http::field::authorization); it != req.end()) out.authorization = std::string(it->value());
    if (auto it = req.find("x-request-id"); it != req.end() && !it->value().empty() && it->value().size() <= 200) {
        out.request_id = std::string(it->value());
    } else {
        out.request_id = new_request_id();
    }
    return out;
}

struct ServerState {
    ServerState(const ServeOptions& o, RestApi& a) : options(o), api(a), workers(o.worker_threads) {}

    const ServeOptions& options;
    RestApi& api;
    net::io_context ioc{static_cast<int>(std::max(1u, options.io_threads))};
    net::thread_pool workers;
    std::optional<ssl::context> tls;
    std::atomic<std::size_t> connections{0};
    std::atomic<bool> stopping{false};

    // Open connections, so shutdown can close the idle ones.
    std::mutex sessions_mutex;
    std::list<std::function<void()>> closers;
};

/// Counts a connection for the cap; released with the session.
class ConnectionSlot {
public:
    explicit ConnectionSlot(ServerState& state) : state_(&state) { ++state.connections; }
    ConnectionSlot(const ConnectionSlot&) = delete;
    ConnectionSlot& operator=(const ConnectionSlot&) = delete;
    ~ConnectionSlot() { --state_->connections; }

private:
    ServerState* state_;
};

template <class Stream>
class WebSocketSession;

/// One HTTP connection: reads requests one at a time, answers each from a worker thread.
template <class Stream>
class HttpSession : public std::enable_shared_from_this<HttpSession<Stream>> {
public:
    HttpSession(ServerState& state, Stream stream) : state_(state), slot_(state), stream_(std::move(stream)) {}

    void run() {
        register_closer();
        if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
            beast::get_lowest_layer(stream_).expires_after(state_.options.read_timeout);
            stream_.async_handshake(ssl::stream_base::server,
                                    beast::bind_front_handler(&HttpSession::on_handshake, this->shared_from_this()));
        } else {
            net::dispatch(stream_.get_executor(),
                          beast::bind_front_handler(&HttpSession::read, this->shared_from_this()));
        }
    }

private:
    void register_closer() {
        std::weak_ptr<HttpSession> weak = this->shared_from_this();
        std::lock_guard lock(state_.sessions_mutex);
        state_.closers.push_back([weak] {
            if (auto self = weak.lock()) {
                net::dispatch(self->stream_.get_executor(), [self] { self->close_if_idle(); });
            }
        });
        closer_ = std::prev(state_.closers.end());
        registered_ = true;
    }

public:
    ~HttpSession() {
        if (!registered_) return;
        std::lock_guard lock(state_.sessions_mutex);
        state_.closers.erase(closer_);
    }

private:
    void on_handshake(error_code ec) {
        if (ec) return;
        read();
    }

    void read() {
        if (state_.stopping) return close();
        parser_.emplace();
        parser_->header_limit(static_cast<std::uint32_t>(state_.options.max_header_bytes));
        parser_->body_limit(state_.options.max_body_bytes);
        reading_ = true;
        // One deadline for the whole request, headers and body: a client trickling bytes is cut off.
        beast::get_lowest_layer(stream_).expires_after(state_.options.read_timeout);
        http::async_read(stream_, buffer_, *parser_,
                         beast::bind_front_handler(&HttpSession::on_read, this->shared_from_this()));
    }

    void on_read(error_code ec, std::size_t) {
        reading_ = false;
        if (ec == http::error::end_of_stream || ec == net::error::operation_aborted || ec == beast::error::timeout) {
            return close();
        }
        if (ec == http::error::body_limit) {
            return reply(error_response(413, "PayloadTooLargeError", "payload_too_large",
                                        fmt::format("the request body is larger than {} bytes",
                                                    state_.options.max_body_bytes)),
                         false);
        }
        if (ec == http::error::header_limit) {
            return reply(error_response(431, "HeadersTooLargeError", "headers_too_large",
                                        fmt::format("the request headers are larger than {} bytes",
                                                    state_.options.max_header_bytes)),
                         false);
        }
        if (ec) {
            if (ec.category() == http::make_error_code(http::error::bad_target).category() && buffer_.size() > 0) {
                return reply(error_response(400, "InvalidArgumentError", "invalid_argument",
                                            fmt::format("malformed HTTP request: {}", ec.message())),
                             false);
            }
            return close();
        }
        auto request = parser_->release();
        beast::get_lowest_layer(stream_).expires_never();
        if (websocket::is_upgrade(request)) return upgrade(std::move(request));
        auto api_request = std::make_shared<HttpRequest>(to_api_request(request));
        keep_alive_ = request.keep_alive();
        head_ = request.method() == http::verb::head;
        version_ = request.version();
        busy_ = true;
        // The worker may block for seconds (a box starting): the io threads stay free.
        net::post(state_.workers,
                  [self = this->shared_from_this(), api_request, guard = net::make_work_guard(state_.ioc)]() mutable {
                      auto response = self->state_.api.handle(*api_request);
                      response.headers.emplace_back("X-Request-Id", api_request->request_id);
                      net::post(self->stream_.get_executor(), [self, response = std::move(response)]() mutable {
                          self->reply(std::move(response), self->keep_alive_);
                      });
                  });
    }

    void reply(HttpResponse response, bool keep_alive) {
        busy_ = true;
        auto res = std::make_shared<http::response<http::string_body>>();
        res->version(version_ ? version_ : 11);
        res->result(static_cast<http::status>(response.status));
        res->set(http::field::server, "boxlite");
        if (!response.content_type.empty()) res->set(http::field::content_type, response.content_type);
        for (const auto& [name, value] : response.headers) res->set(name, value);
        const bool keep = keep_alive && !state_.stopping;
        res->keep_alive(keep);
        if (head_) {
            // HEAD: the status and headers only.
            if (response.status != 204) res->content_length(0);
        } else {
            res->body() = std::move(response.body);
            res->prepare_payload();
        }
        beast::get_lowest_layer(stream_).expires_after(state_.options.write_timeout);
        auto on_write = [self = this->shared_from_this(), res, keep](error_code ec, std::size_t) {
            self->busy_ = false;
            self->head_ = false;
            if (ec || !keep) return self->close();
            self->read();
        };
        http::async_write(stream_, *res, on_write);
    }

    void upgrade(http::request<http::string_body> request);

    /// At shutdown: a connection waiting for its next request closes now; one that has begun
    /// sending a request gets to finish it (within the read timeout) and gets its answer.
    void close_if_idle() {
        if (reading_ && !busy_ && buffer_.size() == 0 && parser_ && !parser_->got_some()) {
            beast::get_lowest_layer(stream_).cancel();
        }
    }

    void close() {
        error_code ec;
        if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
            beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
            stream_.async_shutdown([self = this->shared_from_this()](error_code) {
                error_code ignored;
                beast::get_lowest_layer(self->stream_).socket().close(ignored);
            });
        } else {
            stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
            stream_.socket().close(ec);
        }
    }

    ServerState& state_;
    ConnectionSlot slot_;
    Stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    bool keep_alive_ = false;
    bool head_ = false;
    unsigned version_ = 11;
    bool reading_ = false;
    bool busy_ = false;
    bool registered_ = false;
    std::list<std::function<void()>>::iterator closer_;
};

/// One attached WebSocket client of an execution (frames of docs/openapi.yaml, upstream's §4.4).
/// Output goes through a bounded queue: when the client reads slower than the box writes, the
/// pump thread waits, the execution's output pipe fills, and the box's writes stall.
template <class Stream>
class WebSocketSession : public std::enable_shared_from_this<WebSocketSession<Stream>> {
public:
    static constexpr std::size_t kMaxQueuedBytes = 1024 * 1024;

    WebSocketSession(ServerState& state, Stream stream, beast::flat_buffer leftover, std::shared_ptr<ExecSession> exec)
        : state_(state), slot_(state), ws_(std::move(stream)), buffer_(std::move(leftover)), exec_(std::move(exec)) {}

    ~WebSocketSession() {
        if (!registered_) return;
        std::lock_guard lock(state_.sessions_mutex);
        state_.closers.erase(closer_);
    }

    void run(http::request<http::string_body> request) {
        request_ = std::move(request);
        attach_deadline_ = std::chrono::steady_clock::now() + kReattachGrace;
        attach();
    }

private:
    /// How long an attach waits for the execution's previous client to be detached. A client
    /// that closes and attaches again at once can be faster than the server's end of its first
    /// session, which detaches only once its read completes after the close reply went out; a
    /// second client attached for real is refused (409) when this has passed.
    static constexpr auto kReattachGrace = std::chrono::milliseconds(500);

    void attach() {
        std::weak_ptr<WebSocketSession> weak = this->shared_from_this();
        {
            std::lock_guard lock(queue_mutex_);
            auto backlog = exec_->attach([weak](std::uint8_t channel, std::string_view data) {
                auto self = weak.lock();
                return self && self->enqueue_output(channel, data);
            });
            if (!backlog) {
                attached_ = false;
                if (std::chrono::steady_clock::now() < attach_deadline_) {
                    retry_timer_.expires_after(std::chrono::milliseconds(10));
                    retry_timer_.async_wait([self = this->shared_from_this()](error_code ec) {
                        if (!ec) self->attach();
                    });
                    return;
                }
                return refuse();
            }
            attached_ = true;
            // The backlog goes out first; live output queues behind it (the pump waits on this lock).
            if (!backlog->stdout_data.empty()) push_locked(true, frame(kChannelStdout, backlog->stdout_data));
            if (!backlog->stderr_data.empty()) push_locked(true, frame(kChannelStderr, backlog->stderr_data));
        }
        {
            std::lock_guard lock(state_.sessions_mutex);
            state_.closers.push_back([weak] {
                if (auto self = weak.lock()) {
                    net::dispatch(self->ws_.get_executor(),
                                  [self] { self->shutdown(websocket::close_code::going_away); });
                }
            });
            closer_ = std::prev(state_.closers.end());
            registered_ = true;
        }
        beast::get_lowest_layer(ws_).expires_never();
        websocket::stream_base::timeout timeouts{};
        timeouts.handshake_timeout = state_.options.read_timeout;
        timeouts.idle_timeout = std::chrono::seconds(30);  // a ping after 15 s of silence, as upstream
        timeouts.keep_alive_pings = true;
        ws_.set_option(timeouts);
        ws_.read_message_max(1024 * 1024);
        ws_.set_option(websocket::stream_base::decorator([id = exec_->id()](websocket::response_type& res) {
            res.set(http::field::server, "boxlite");
            res.set("x-boxlite-execution-id", id);
        }));
        ws_.async_accept(request_, beast::bind_front_handler(&WebSocketSession::on_accept, this->shared_from_this()));
    }

    static std::string frame(std::uint8_t channel, std::string_view data) {
        std::string out;
        out.reserve(data.size() + 1);
        out += static_cast<char>(channel);
        out.append(data);
        return out;
    }

    struct Outgoing {
        bool binary;
        std::string data;
        bool close_after = false;
    };

    void push_locked(bool binary, std::string data, bool close_after = false) {
        queued_bytes_ += data.size();
        queue_.push_back({binary, std::move(data), close_after});
    }

    /// Called on the pump thread: waits while the queue is full (backpressure), then queues.
    bool enqueue_output(std::uint8_t channel, std::string_view data) {
        {
            std::unique_lock lock(queue_mutex_);
            drained_.wait(lock, [&] { return closed_ || queued_bytes_ < kMaxQueuedBytes; });
            if (closed_) return false;
            push_locked(true, frame(exec_->tty() ? kChannelStdout : channel, data));
        }
        net::post(ws_.get_executor(), [self = this->shared_from_this()] { self->write_next(); });
        return true;
    }

    void enqueue_text(std::string text, bool close_after = false) {
        {
            std::lock_guard lock(queue_mutex_);
            if (closed_) return;
            push_locked(false, std::move(text), close_after);
        }
        net::post(ws_.get_executor(), [self = this->shared_from_this()] { self->write_next(); });
    }

    void refuse() {
        auto response = error_response(409, "InvalidStateError", "invalid_state",
                                       fmt::format("execution {} already has an attached client", exec_->id()));
        auto res = std::make_shared<http::response<http::string_body>>(http::status::conflict, request_.version());
        res->set(http::field::content_type, "application/json");
        res->set(http::field::server, "boxlite");
        res->keep_alive(false);
        res->body() = response.body;
        res->prepare_payload();
        beast::get_lowest_layer(ws_).expires_after(state_.options.write_timeout);
        http::async_write(ws_.next_layer(), *res, [self = this->shared_from_this(), res](error_code, std::size_t) {
            error_code ignored;
            beast::get_lowest_layer(self->ws_).socket().shutdown(tcp::socket::shutdown_both, ignored);
            beast::get_lowest_layer(self->ws_).socket().close(ignored);
        });
    }

    void on_accept(error_code ec) {
        if (ec) return finish();
        accepted_ = true;
        // The exit frame: a thread waits for the execution (it may run for hours), then queues it
        // behind the output the pumps queued before the execution ended.
        std::weak_ptr<WebSocketSession> weak = this->shared_from_this();
        std::thread([weak, exec = exec_] {
            const int code = exec->wait_exit();
            if (auto self = weak.lock()) {
                self->enqueue_text(nlohmann::json{{"type", "exit"}, {"exit_code", code}}.dump(), true);
            }
        }).detach();
        write_next();
        read();
    }

    void read() {
        ws_.async_read(in_, beast::bind_front_handler(&WebSocketSession::on_read, this->shared_from_this()));
    }

    void on_read(error_code ec, std::size_t) {
        if (ec) return finish();
        if (ws_.got_binary()) {
            auto data = beast::buffers_to_string(in_.data());
            in_.consume(in_.size());
            // Stdin writes block on the box's flow control: a worker does them, then reading resumes.
            net::post(state_.workers, [self = this->shared_from_this(), data = std::move(data),
                                       guard = net::make_work_guard(state_.ioc)] {
                if (auto written = self->exec_->write_stdin(data); !written) {
                    self->enqueue_text(error_frame(written.error().to_string()));
                }
                net::post(self->ws_.get_executor(), [self] { self->read(); });
            });
            return;
        }
        const auto text = beast::buffers_to_string(in_.data());
        in_.consume(in_.size());
        handle_control(text);
        read();
    }

    static std::string error_frame(std::string_view message) {
        return nlohmann::json{{"type", "error"}, {"message", message}}.dump(-1, ' ', false,
                                                                            nlohmann::json::error_handler_t::replace);
    }

    void handle_control(const std::string& text) {
        const auto message = nlohmann::json::parse(text, nullptr, false);
        if (message.is_discarded() || !message.is_object() || !message.contains("type") ||
            !message["type"].is_string()) {
            return enqueue_text(
                error_frame("a text frame must be a JSON object with a \"type\" (resize, signal, stdin_eof)"));
        }
        const auto type = message["type"].get<std::string>();
        auto number = [&](const char* key) -> std::optional<std::int64_t> {
            if (!message.contains(key) || !message[key].is_number_integer()) return std::nullopt;
            return message[key].get<std::int64_t>();
        };
        if (type == "resize") {
            const auto rows = number("rows");
            const auto cols = number("cols");
            if (!rows || !cols || *rows < 1 || *cols < 1 || *rows > 65535 || *cols > 65535) {
                return enqueue_text(error_frame("resize needs integer rows and cols from 1 to 65535"));
            }
            if (!exec_->tty())
                return enqueue_text(error_frame("the execution has no terminal (exec with \"tty\": true)"));
            if (auto done = exec_->resize(static_cast<std::uint16_t>(*rows), static_cast<std::uint16_t>(*cols));
                !done) {
                enqueue_text(error_frame(done.error().to_string()));
            }
        } else if (type == "signal") {
            const auto sig = number("sig");
            if (!sig || !is_allowed_signal(static_cast<int>(*sig))) {
                return enqueue_text(error_frame("signal not allowed (allowed: 1, 2, 3, 6, 10, 12, 15, 28)"));
            }
            if (auto done = exec_->signal(static_cast<int>(*sig)); !done)
                enqueue_text(error_frame(done.error().to_string()));
        } else if (type == "stdin_eof") {
            if (auto done = exec_->close_stdin(); !done) enqueue_text(error_frame(done.error().to_string()));
        } else {
            enqueue_text(
                error_frame(fmt::format("unknown frame type '{}' (allowed: resize, signal, stdin_eof)", type)));
        }
    }

    void write_next() {
        if (!accepted_ || writing_ || finished_) return;
        Outgoing next;
        {
            std::lock_guard lock(queue_mutex_);
            if (queue_.empty()) return;
            next = std::move(queue_.front());
            queue_.pop_front();
        }
        writing_ = true;
        auto data = std::make_shared<Outgoing>(std::move(next));
        ws_.binary(data->binary);
        ws_.async_write(net::buffer(data->data), [self = this->shared_from_this(), data](error_code ec, std::size_t) {
            self->writing_ = false;
            {
                std::lock_guard lock(self->queue_mutex_);
                self->queued_bytes_ -= data->data.size();
            }
            self->drained_.notify_all();
            if (ec) return self->finish();
            if (data->close_after) return self->shutdown(websocket::close_code::normal);
            self->write_next();
        });
    }

    void shutdown(websocket::close_code code) {
        if (finished_ || closing_) return;
        closing_ = true;
        if (!accepted_) return finish();
        ws_.async_close(code, [self = this->shared_from_this()](error_code) { self->finish(); });
    }

    /// The client is gone: the execution keeps running, and another client may attach.
    void finish() {
        if (finished_) return;
        finished_ = true;
        {
            std::lock_guard lock(queue_mutex_);
            closed_ = true;
            queue_.clear();
            queued_bytes_ = 0;
        }
        drained_.notify_all();
        if (attached_) exec_->detach();
        error_code ignored;
        beast::get_lowest_layer(ws_).socket().close(ignored);
    }

    ServerState& state_;
    ConnectionSlot slot_;
    websocket::stream<Stream> ws_;
    beast::flat_buffer buffer_;
    beast::flat_buffer in_;
    std::shared_ptr<ExecSession> exec_;
    http::request<http::string_body> request_;
    net::steady_timer retry_timer_{ws_.get_executor()};
    std::chrono::steady_clock::time_point attach_deadline_;

    std::mutex queue_mutex_;
    std::condition_variable drained_;
    std::deque<Outgoing> queue_;
    std::size_t queued_bytes_ = 0;
    bool closed_ = false;

    bool attached_ = false;
    bool accepted_ = false;
    bool writing_ = false;
    bool closing_ = false;
    bool finished_ = false;
    bool registered_ = false;
    std::list<std::function<void()>>::iterator closer_;
};

template <class Stream>
void HttpSession<Stream>::upgrade(http::request<http::string_body> request) {
    auto api_request = to_api_request(request);
    // Looking the execution up touches the runtime (the box by id or name): a worker does it.
    net::post(state_.workers, [self = this->shared_from_this(), api_request = std::move(api_request),
                               request = std::move(request), guard = net::make_work_guard(state_.ioc)]() mutable {
        auto target = self->state_.api.attach_target(api_request);
        net::post(self->stream_.get_executor(), [self, target = std::move(target), request = std::move(request),
                                                 id = api_request.request_id]() mutable {
            if (!target) {
                auto response = std::move(target).error();
                response.headers.emplace_back("X-Request-Id", id);
                self->keep_alive_ = false;
                return self->reply(std::move(response), false);
            }
            std::make_shared<WebSocketSession<Stream>>(self->state_, std::move(self->stream_), std::move(self->buffer_),
                                                       std::move(*target))
                ->run(std::move(request));
        });
    });
}

/// Accepts connections until shutdown; over the cap, a connection is answered 503 and closed.
class Listener : public std::enable_shared_from_this<Listener> {
public:
    Listener(ServerState& state, tcp::acceptor acceptor) : state_(state), acceptor_(std::move(acceptor)) {}

    void accept() {
        acceptor_.async_accept(net::make_strand(state_.ioc),
                               beast::bind_front_handler(&Listener::on_accept, shared_from_this()));
    }

    /// Closes the listening socket. Connections the kernel has already completed but nobody has
    /// accepted yet are accepted and closed first: a listener that closes with them still queued
    /// makes the kernel reset them, and their clients would read "connection reset" instead of an
    /// orderly end.
    void stop() {
        net::dispatch(acceptor_.get_executor(), [self = shared_from_this()] {
            if (!self->acceptor_.is_open()) return;
            for (;;) {
                const int fd = ::accept4(self->acceptor_.native_handle(), nullptr, nullptr,
                                         SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) break;  // EAGAIN: the queue is empty
                close_gracefully(fd);
            }
            error_code ec;
            self->acceptor_.close(ec);
        });
    }

private:
    /// Ends a connection with FIN, not RST: whatever the client already sent is read and dropped
    /// first (closing a socket with unread data resets it).
    static void close_gracefully(int fd) {
        char sink[4096];
        while (::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {}
        ::shutdown(fd, SHUT_RDWR);
        ::close(fd);
    }

    void on_accept(error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
        if (!ec) {
            if (state_.connections.load() >= state_.options.max_connections) {
                // A short answer written without waiting (a full socket buffer just drops it).
                const auto body = error_response(503, "ResourceExhaustedError", "resource_exhausted",
                                                 fmt::format("too many connections (at most {})",
                                                             state_.options.max_connections))
                                      .body;
                const auto busy = fmt::format(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    "Content-Length: {}\r\n\r\n{}",
                    body.size(), body);
                error_code ignored;
                socket.non_blocking(true, ignored);
                net::write(socket, net::buffer(busy), ignored);
                socket.close(ignored);
            } else {
                socket.set_option(tcp::no_delay(true), ec);
                if (state_.tls) {
                    std::make_shared<HttpSession<beast::ssl_stream<beast::tcp_stream>>>(
                        state_, beast::ssl_stream<beast::tcp_stream>(beast::tcp_stream(std::move(socket)), *state_.tls))
                        ->run();
                } else {
                    std::make_shared<HttpSession<beast::tcp_stream>>(state_, beast::tcp_stream(std::move(socket)))
                        ->run();
                }
            }
        }
        accept();
    }

    ServerState& state_;
    tcp::acceptor acceptor_;
};

}  // namespace

bool is_loopback_host(const std::string& host) {
    if (host == "localhost") return true;
    error_code ec;
    const auto address = net::ip::make_address(host, ec);
    return !ec && address.is_loopback();
}

BoxliteResult<void> validate(const ServeOptions& options) {
    error_code ec;
    if (options.host != "localhost") {
        net::ip::make_address(options.host, ec);
        if (ec) return fail(ErrorKind::InvalidArgument, "--host '{}' is not an IPv4 or IPv6 address", options.host);
    }
    if (options.api_key && options.api_key->empty()) {
        return fail(ErrorKind::InvalidArgument, "the API key is empty (--api-key or BOXLITE_SERVE_API_KEY)");
    }
    if (!is_loopback_host(options.host) && !options.api_key) {
        return fail(ErrorKind::InvalidArgument,
                    "refusing to serve on {} without an API key: anyone who reaches it could run code on this "
                    "host. Give --api-key KEY (or BOXLITE_SERVE_API_KEY), or bind a loopback address",
                    options.host);
    }
    if (options.tls_cert.has_value() != options.tls_key.has_value()) {
        return fail(ErrorKind::InvalidArgument, "--tls-cert and --tls-key go together");
    }
    if (options.max_connections == 0 || options.io_threads == 0 || options.worker_threads == 0) {
        return fail(ErrorKind::InvalidArgument, "connection and thread counts must be at least 1");
    }
    return {};
}

BoxliteResult<void> serve(BoxliteRuntime runtime, const ServeOptions& options,
                          std::function<void(std::uint16_t)> on_listening) {
    BOXLITE_TRY_VOID(validate(options));
    RestApi api(std::move(runtime), options);
    ServerState state(options, api);
    if (options.tls_cert) {
        state.tls.emplace(ssl::context::tls_server);
        state.tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                               ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
        error_code ec;
        state.tls->use_certificate_chain_file(*options.tls_cert, ec);
        if (ec) return fail(ErrorKind::InvalidArgument, "--tls-cert {}: {}", *options.tls_cert, ec.message());
        state.tls->use_private_key_file(*options.tls_key, ssl::context::pem, ec);
        if (ec) return fail(ErrorKind::InvalidArgument, "--tls-key {}: {}", *options.tls_key, ec.message());
    }
    error_code ec;
    const auto address = net::ip::make_address(options.host == "localhost" ? "127.0.0.1" : options.host, ec);
    tcp::acceptor acceptor(state.ioc);
    const tcp::endpoint endpoint(address, options.port);
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
        return fail(ErrorKind::Network, "cannot listen on {}:{}: {}", options.host, options.port, ec.message());
    }
    const auto port = acceptor.local_endpoint().port();
    auto listener = std::make_shared<Listener>(state, std::move(acceptor));
    listener->accept();

    net::signal_set signals(state.ioc, SIGINT, SIGTERM);
    signals.async_wait([&](error_code error, int) {
        if (error) return;
        state.stopping = true;
        listener->stop();
        // Called on a copy, with the lock released: a closer may drop the last reference to its
        // session, whose destructor takes the lock to unregister (holding it here deadlocked this
        // thread, and erasing from the list being walked would be undefined).
        std::vector<std::function<void()>> closers;
        {
            std::lock_guard lock(state.sessions_mutex);
            closers.assign(state.closers.begin(), state.closers.end());
        }
        for (auto& closer : closers) closer();
    });
    if (on_listening) on_listening(port);

    std::vector<std::thread> threads;
    for (unsigned i = 1; i < options.io_threads; ++i) threads.emplace_back([&] { state.ioc.run(); });
    state.ioc.run();
    for (auto& t : threads) t.join();
    state.workers.join();
    return {};
}

}  // namespace boxlite::server
