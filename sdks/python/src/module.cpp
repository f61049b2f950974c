// boxlite._core: the native half of the Python SDK, a thin layer over the C++ core.
//
// Every call that can wait releases the GIL. The pure-Python layer (boxlite/*.py) builds the
// async and sync APIs on top of three kinds of call:
//   - short blocking calls (create, start, stop, exec, copy, ...): the sync API calls them
//     directly; the async API runs them on its runtime's small, bounded thread pool;
//   - try_ calls on executions and their streams, which never wait: the async API retries them
//     when the execution's Reactor token comes out of Reactor.drain() (its eventfd is watched
//     by the asyncio loop itself, so no thread waits per execution);
//   - blocking stream calls for the sync API (read, write, wait), which wake every 100 ms to let
//     Python run its signal handlers, so Ctrl-C interrupts them.
#include <boxlite/boxlite.hpp>
#include <boxlite/detail/time.hpp>
#include <boxlite/image/image_store.hpp>
#include <boxlite/transport/unix_transport.hpp>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;

namespace boxlite::python {
namespace {

// --- errors ---------------------------------------------------------------------------------

/// A core error on its way to Python: the translator raises the class registered for its kind.
struct NativeError {
    BoxliteError error;
};

/// ErrorKind identifier -> Python class; set once by boxlite/errors.py (strong references,
/// deliberately never released: they live as long as the interpreter).
std::map<std::string, PyObject*>& error_classes() {
    static auto* classes = new std::map<std::string, PyObject*>();
    return *classes;
}

[[noreturn]] void raise(const BoxliteError& error) { throw NativeError{error}; }

void check_max_output_bytes(std::size_t max_output_bytes) {
    if (max_output_bytes == 0) raise(BoxliteError(ErrorKind::InvalidArgument, "max_output_bytes must be at least 1"));
}

/// `bytes` as well-formed UTF-8: each byte that does not start a well-formed sequence becomes
/// U+FFFD. Messages and output from the agent may hold any bytes, and Python's strict decoding
/// of std::string would turn them into a UnicodeDecodeError in place of the error they carry.
std::string well_formed_utf8(std::string_view bytes) {
    // The length of the well-formed sequence at i (Unicode table 3-7), or 0.
    const auto sequence = [&](std::size_t i) -> std::size_t {
        const auto at = [&](std::size_t k) { return static_cast<unsigned char>(bytes[k]); };
        const unsigned char b = at(i);
        if (b < 0x80) return 1;
        std::size_t n = 0;
        unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range
        if (b >= 0xC2 && b <= 0xDF) n = 2;
        else if (b == 0xE0) n = 3, lo = 0xA0;
        else if (b == 0xED) n = 3, hi = 0x9F;
        else if (b >= 0xE1 && b <= 0xEF) n = 3;
        else if (b == 0xF0) n = 4, lo = 0x90;
        else if (b == 0xF4) n = 4, hi = 0x8F;
        else if (b >= 0xF1 && b <= 0xF3) n = 4;
        else return 0;
        if (i + n > bytes.size() || at(i + 1) < lo || at(i + 1) > hi) return 0;
        for (std::size_t k = 2; k < n; ++k) {
            if (at(i + k) < 0x80 || at(i + k) > 0xBF) return 0;
        }
        return n;
    };
    std::string out;
    std::size_t copied = 0;  // bytes[0, copied) are in out, when out is in use
    for (std::size_t i = 0; i < bytes.size();) {
        if (const auto n = sequence(i); n != 0) {
            i += n;
            continue;
        }
        out.append(bytes.substr(copied, i - copied)).append("\xEF\xBF\xBD");
        copied = ++i;
    }
    if (copied == 0) return std::string(bytes);
    return out.append(bytes.substr(copied));
}

template <class T>
T unwrap(BoxliteResult<T>&& result) {
    if (!result) raise(result.error());
    return std::move(*result);
}
inline void unwrap(BoxliteResult<void>&& result) {
    if (!result) raise(result.error());
}

void check_signals() {
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
}

// --- the reactor: wake-ups for the asyncio loop ---------------------------------------------

/// Tokens of executions that may have progressed, and an eventfd that is readable while there
/// are any. Posted to by session wakers (under the session's lock: post() only takes its own).
class ReactorCore {
public:
    ReactorCore() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
        if (fd_ < 0) raise(BoxliteError(ErrorKind::Internal, fmt::format("eventfd: {}", std::strerror(errno))));
    }
    ~ReactorCore() { ::close(fd_); }
    ReactorCore(const ReactorCore&) = delete;
    ReactorCore& operator=(const ReactorCore&) = delete;

    [[nodiscard]] int fd() const noexcept { return fd_; }

    void post(std::uint64_t token) {
        std::lock_guard lock(mutex_);
        const bool was_empty = ready_.empty();
        ready_.insert(token);
        if (was_empty) {
            const std::uint64_t one = 1;
            (void)!::write(fd_, &one, sizeof one);
        }
    }

    std::vector<std::uint64_t> drain() {
        std::lock_guard lock(mutex_);
        std::uint64_t count = 0;
        (void)!::read(fd_, &count, sizeof count);
        std::vector<std::uint64_t> tokens(ready_.begin(), ready_.end());
        ready_.clear();
        return tokens;
    }

private:
    int fd_;
    std::mutex mutex_;
    std::set<std::uint64_t> ready_;
};

class Reactor {
public:
    Reactor() : core_(std::make_shared<ReactorCore>()) {}
    [[nodiscard]] int fd() const noexcept { return core_->fd(); }
    std::vector<std::uint64_t> drain() { return core_->drain(); }
    [[nodiscard]] const std::shared_ptr<ReactorCore>& core() const noexcept { return core_; }

private:
    std::shared_ptr<ReactorCore> core_;
};

/// One execution's change notices: a generation counter for blocking (sync) waiters and,
/// once attached, a reactor token for the asyncio loop.
struct Notifier {
    std::mutex mutex;
    std::condition_variable cv;
    std::uint64_t generation = 0;
    std::shared_ptr<ReactorCore> reactor;
    std::uint64_t token = 0;

    void notify() {
        std::lock_guard lock(mutex);
        ++generation;
        cv.notify_all();
        if (reactor) reactor->post(token);
    }
    std::uint64_t current() {
        std::lock_guard lock(mutex);
        return generation;
    }
    /// Waits (GIL released) up to 100 ms for a change after `seen`, then runs Python's signal
    /// handlers, so Ctrl-C interrupts a sync call.
    void wait_change(std::uint64_t seen) {
        {
            nb::gil_scoped_release release;
            std::unique_lock lock(mutex);
            cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return generation != seen; });
        }
        check_signals();
    }
};

// --- conversions to Python ------------------------------------------------------------------

std::string rfc3339(std::chrono::system_clock::time_point tp) { return detail::format_rfc3339(tp); }

nb::dict info_dict(const BoxInfo& info) {
    nb::dict d;
    d["id"] = info.id.str();
    d["name"] = info.name;
    d["status"] = std::string(to_string(info.status));
    d["running"] = is_running(info.status);
    d["pid"] = info.pid;
    d["created_at"] = rfc3339(info.created_at);
    d["last_updated"] = rfc3339(info.last_updated);
    d["started_at"] = info.started_at ? std::optional<std::string>(rfc3339(*info.started_at)) : std::nullopt;
    d["image"] = info.image;
    d["cpus"] = info.cpus;
    d["memory_mib"] = info.memory_mib;
    d["engine"] = info.engine;
    d["container_id"] = info.container_id ? std::optional<std::string>(info.container_id->str()) : std::nullopt;
    nb::dict labels;
    for (const auto& [key, value] : info.labels) labels[nb::str(key.c_str())] = value;
    d["labels"] = labels;
    return d;
}

nb::dict box_metrics_dict(const BoxMetrics& m) {
    nb::dict d;
    d["commands_executed_total"] = m.commands_executed_total;
    d["exec_errors_total"] = m.exec_errors_total;
    d["bytes_sent_total"] = m.bytes_sent_total;
    d["bytes_received_total"] = m.bytes_received_total;
    d["cpu_percent"] = m.cpu_percent;
    d["memory_bytes"] = m.memory_bytes;
    d["cpu_time_ns"] = m.cpu_time_ns;
    d["process_count"] = m.process_count;
    d["network_bytes_sent"] = m.network_bytes_sent;
    d["network_bytes_received"] = m.network_bytes_received;
    d["network_tcp_connections"] = m.network_tcp_connections;
    d["network_tcp_errors"] = m.network_tcp_errors;
    d["total_create_duration_ms"] = m.total_create_duration_ms;
    d["guest_boot_duration_ms"] = m.guest_boot_duration_ms;
    d["stage_filesystem_setup_ms"] = m.stage_filesystem_setup_ms;
    d["stage_image_prepare_ms"] = m.stage_image_prepare_ms;
    d["stage_guest_rootfs_ms"] = m.stage_guest_rootfs_ms;
    d["stage_box_config_ms"] = m.stage_box_config_ms;
    d["stage_box_spawn_ms"] = m.stage_box_spawn_ms;
    d["stage_container_init_ms"] = m.stage_container_init_ms;
    return d;
}

nb::dict runtime_metrics_dict(const RuntimeMetrics& m) {
    nb::dict d;
    d["boxes_created_total"] = m.boxes_created_total;
    d["boxes_failed_total"] = m.boxes_failed_total;
    d["num_running_boxes"] = m.num_running_boxes;
    d["total_commands_executed"] = m.total_commands_executed;
    d["total_exec_errors"] = m.total_exec_errors;
    return d;
}

nb::dict image_dict(const image::ImageInfo& image) {
    nb::dict d;
    d["reference"] = image.reference;
    d["id"] = image.id();
    d["manifest_digest"] = image.manifest_digest;
    d["layer_count"] = image.layers.size();
    d["size_bytes"] = image.size;
    d["cached_at"] = rfc3339(std::chrono::system_clock::time_point(std::chrono::seconds(image.stored_at)));
    return d;
}

using ExitTuple = std::tuple<int, std::optional<std::string>, bool>;

ExitTuple exit_tuple(const ExecResult& result) {
    std::optional<std::string> message;
    if (result.error_message) message = well_formed_utf8(*result.error_message);
    return {result.exit_code, std::move(message), result.timed_out};
}

// --- executions -----------------------------------------------------------------------------

constexpr std::size_t kMaxRead = 256 * 1024;

class OutputStream {
public:
    OutputStream(ExecOutputStream stream, std::shared_ptr<Notifier> notifier)
        : stream_(std::move(stream)), notifier_(std::move(notifier)) {}

    /// Up to max_bytes without waiting: None while nothing has arrived, b"" at the end.
    std::optional<nb::bytes> try_read(std::size_t max_bytes) {
        if (!stream_) return nb::bytes("", 0);  // discarded: at its end
        // One buffer per thread, not per stream: a new stream costs no 256 KiB allocation.
        thread_local std::vector<char> buffer(kMaxRead);
        const auto view = std::span(buffer).first(std::clamp<std::size_t>(max_bytes, 1, kMaxRead));
        auto n = unwrap(stream_->try_read_some(std::as_writable_bytes(view)));
        if (!n) return std::nullopt;
        return nb::bytes(buffer.data(), *n);
    }

    /// Up to max_bytes, waiting for them (interruptible by Ctrl-C); b"" at the end.
    nb::bytes read(std::size_t max_bytes) {
        while (true) {
            const auto seen = notifier_->current();
            if (auto chunk = try_read(max_bytes)) return std::move(*chunk);
            notifier_->wait_change(seen);
        }
    }

    /// Drops what is buffered and whatever else arrives (flow-control credit keeps flowing, so
    /// the command's exit can come); reads then see the end.
    void discard() { stream_.reset(); }

private:
    std::optional<ExecOutputStream> stream_;
    std::shared_ptr<Notifier> notifier_;
};

class InputStream {
public:
    InputStream(ExecStdin stdin_stream, std::shared_ptr<Notifier> notifier)
        : stdin_(std::move(stdin_stream)), notifier_(std::move(notifier)) {}

    /// Sends what the box can take now; returns the count (0 when it must wait).
    std::size_t try_write(nb::bytes data, std::size_t offset) {
        if (offset > data.size()) raise(BoxliteError(ErrorKind::InvalidArgument, "offset past the end of the data"));
        const auto* begin = static_cast<const std::byte*>(data.data()) + offset;
        return unwrap(stdin_.try_write_some(std::span(begin, data.size() - offset)));
    }

    void write(nb::bytes data) {
        std::size_t offset = 0;
        while (offset < data.size()) {
            const auto seen = notifier_->current();
            const auto n = try_write(data, offset);
            offset += n;
            if (n == 0) notifier_->wait_change(seen);
        }
    }

    void close() { unwrap(stdin_.close()); }

private:
    ExecStdin stdin_;
    std::shared_ptr<Notifier> notifier_;
};

class NativeExecution {
public:
    explicit NativeExecution(Execution execution, std::shared_ptr<Notifier> notifier = std::make_shared<Notifier>())
        : execution_(std::move(execution)), notifier_(std::move(notifier)) {
        execution_.set_waker([n = notifier_] { n->notify(); });
    }

    [[nodiscard]] std::string id() const { return execution_.id(); }
    [[nodiscard]] std::int32_t pid() const { return execution_.pid(); }

    /// Routes this execution's change notices to `reactor` as `token`. Nothing is posted for
    /// what happened before: the caller (_ExecIO.until) polls right after attaching, and a
    /// post here cost every exec one more wake-up of the event loop.
    void attach(const Reactor& reactor, std::uint64_t token) {
        std::lock_guard lock(notifier_->mutex);
        notifier_->reactor = reactor.core();
        notifier_->token = token;
    }

    std::optional<InputStream> take_stdin() {
        auto s = execution_.stdin();
        if (!s) return std::nullopt;
        return InputStream(std::move(*s), notifier_);
    }
    std::optional<OutputStream> take_stdout() {
        auto s = execution_.stdout();
        if (!s) return std::nullopt;
        return OutputStream(std::move(*s), notifier_);
    }
    std::optional<OutputStream> take_stderr() {
        auto s = execution_.stderr();
        if (!s) return std::nullopt;
        return OutputStream(std::move(*s), notifier_);
    }

    /// (exit_code, error_message, timed_out) once ended; None while the process runs.
    std::optional<ExitTuple> try_wait() {
        auto result = execution_.try_wait();
        if (!result) return std::nullopt;
        return exit_tuple(unwrap(std::move(*result)));
    }

    ExitTuple wait() {
        while (true) {
            const auto seen = notifier_->current();
            if (auto result = try_wait()) return *result;
            notifier_->wait_change(seen);
        }
    }

    /// Closes stdin, reads stdout and stderr to their ends and waits (interruptible by Ctrl-C):
    /// (stdout, stderr, (exit_code, error_message, timed_out)). For the sync SimpleBox.exec.
    std::tuple<nb::bytes, nb::bytes, ExitTuple> collect(std::size_t max_output_bytes) {
        check_max_output_bytes(max_output_bytes);
        auto in = execution_.stdin();
        auto out = execution_.stdout();
        auto err = execution_.stderr();
        if (!in || !out || !err) {
            raise(BoxliteError(ErrorKind::InvalidState, "collect() needs stdin, stdout and stderr, but one was taken"));
        }
        unwrap(in->close());
        std::string texts[2];
        ExecOutputStream* streams[2] = {&*out, &*err};
        bool open[2] = {true, true};
        thread_local std::vector<std::byte> buffer(kMaxRead);
        while (true) {
            const auto seen = notifier_->current();
            for (int i = 0; i < 2; ++i) {
                while (open[i]) {
                    auto n = unwrap(streams[i]->try_read_some(buffer));
                    if (!n) break;
                    if (*n == 0) {
                        open[i] = false;
                    } else if (texts[0].size() + texts[1].size() + *n > max_output_bytes) {
                        (void)execution_.kill();  // the rest is dropped as the streams close
                        raise(boxlite::detail::output_limit_exceeded(max_output_bytes));
                    } else {
                        texts[i].append(reinterpret_cast<const char*>(buffer.data()), *n);
                    }
                }
            }
            if (!open[0] && !open[1]) {
                if (auto status = try_wait()) {
                    return {nb::bytes(texts[0].data(), texts[0].size()), nb::bytes(texts[1].data(), texts[1].size()),
                            *status};
                }
            }
            notifier_->wait_change(seen);
        }
    }

    void kill() { unwrap(execution_.kill()); }
    void signal(int signo) { unwrap(execution_.signal(signo)); }
    void resize_tty(int rows, int cols) {
        if (rows < 1 || rows > 65535 || cols < 1 || cols > 65535) {
            raise(BoxliteError(ErrorKind::InvalidArgument,
                               fmt::format("tty size {}x{} must be between 1x1 and 65535x65535", rows, cols)));
        }
        unwrap(execution_.resize_tty(static_cast<std::uint16_t>(rows), static_cast<std::uint16_t>(cols)));
    }

private:
    Execution execution_;
    std::shared_ptr<Notifier> notifier_;
};

/// An exec the agent has been asked to start (Box.begin_exec): the asyncio layer polls it on
/// its reactor token, so starting a process needs no thread either.
class NativePending {
public:
    NativePending(protocol::PendingExecution pending, std::shared_ptr<Notifier> notifier, LiteBox box,
                  std::string program)
        : pending_(std::move(pending)),
          notifier_(std::move(notifier)),
          box_(std::move(box)),
          program_(std::move(program)) {}

    /// As NativeExecution::attach: no post, the caller polls right after.
    void attach(const Reactor& reactor, std::uint64_t token) {
        std::lock_guard lock(notifier_->mutex);
        notifier_->reactor = reactor.core();
        notifier_->token = token;
    }

    /// None while the agent has not answered; then the Execution, or the refusal raised.
    std::optional<NativeExecution> try_started() {
        auto started = pending_.poll();
        if (!started) return std::nullopt;
        box_.record_command(started->has_value());
        if (!*started) {
            raise(started->error().with_context(fmt::format("running '{}' in box {}", program_, box_.id())));
        }
        return NativeExecution(std::move(**started), notifier_);
    }

    void abandon() { pending_.abandon(); }

private:
    protocol::PendingExecution pending_;
    std::shared_ptr<Notifier> notifier_;
    LiteBox box_;
    std::string program_;
};

// --- boxes and the runtime ------------------------------------------------------------------

/// A box handle plus one agent connection shared by its executions: a box's executions are
/// multiplexed over one connection (one reader thread per box, not per execution). A dead
/// connection (the box was stopped) is replaced on the next exec.
class NativeBox {
public:
    explicit NativeBox(LiteBox box) : box_(std::move(box)), agent_(std::make_shared<SharedAgent>()) {}

    [[nodiscard]] std::string id() const { return box_.id().str(); }
    [[nodiscard]] std::optional<std::string> name() const { return box_.name(); }

    nb::dict info() {
        BoxliteResult<BoxInfo> info = [&] {
            nb::gil_scoped_release release;
            return box_.info();
        }();
        return info_dict(unwrap(std::move(info)));
    }
    void start() {
        nb::gil_scoped_release release;
        unwrap(box_.start());
    }
    void stop() {
        nb::gil_scoped_release release;
        {
            std::lock_guard lock(agent_->mutex);
            agent_->client.reset();
        }
        unwrap(box_.stop());
    }
    nb::dict metrics() {
        BoxliteResult<BoxMetrics> metrics = [&] {
            nb::gil_scoped_release release;
            return box_.metrics();
        }();
        return box_metrics_dict(unwrap(std::move(metrics)));
    }

    NativeExecution exec(const std::string& program, const std::vector<std::string>& args,
                         const std::vector<std::pair<std::string, std::string>>& env, bool tty,
                         const std::optional<std::string>& user, const std::optional<std::string>& cwd,
                         std::optional<double> timeout_secs) {
        const auto command = make_command(program, args, env, tty, user, cwd, timeout_secs);
        BoxliteResult<Execution> execution = [&] {
            nb::gil_scoped_release release;
            return exec_on_shared_agent(command);
        }();
        return NativeExecution(unwrap(std::move(execution)));
    }

    /// Whether the shared agent connection is open (begin_exec needs it; ensure_agent opens it).
    [[nodiscard]] bool agent_alive() {
        std::lock_guard lock(agent_->mutex);
        return agent_->client && agent_->client->alive();
    }

    void ensure_agent() {
        nb::gil_scoped_release release;
        std::lock_guard lock(agent_->mutex);
        if (agent_->client && agent_->client->alive()) return;
        agent_->client.reset();
        agent_->client = unwrap(box_.open_agent());
    }

    /// exec without waiting for the process to start, on the open shared connection; None when
    /// that connection is not open (ensure_agent() first).
    std::optional<NativePending> begin_exec(const std::string& program, const std::vector<std::string>& args,
                                            const std::vector<std::pair<std::string, std::string>>& env, bool tty,
                                            const std::optional<std::string>& user,
                                            const std::optional<std::string>& cwd, std::optional<double> timeout_secs) {
        const auto command = make_command(program, args, env, tty, user, cwd, timeout_secs);
        std::optional<protocol::AgentClient> agent;
        {
            std::lock_guard lock(agent_->mutex);
            if (!agent_->client || !agent_->client->alive()) return std::nullopt;
            agent = *agent_->client;
        }
        auto notifier = std::make_shared<Notifier>();
        auto pending = agent->begin_exec(command, [notifier] { notifier->notify(); });
        if (!pending) {
            box_.record_command(false);
            raise(pending.error().with_context(fmt::format("running '{}' in box {}", program, box_.id())));
        }
        return NativePending(std::move(*pending), std::move(notifier), box_, program);
    }

    static BoxCommand make_command(const std::string& program, const std::vector<std::string>& args,
                                   const std::vector<std::pair<std::string, std::string>>& env, bool tty,
                                   const std::optional<std::string>& user, const std::optional<std::string>& cwd,
                                   std::optional<double> timeout_secs) {
        BoxCommand command(program);
        command.args(args).tty(tty);
        for (const auto& [key, value] : env) command.env(key, value);
        if (user) command.user(*user);
        if (cwd) command.working_dir(*cwd);
        if (timeout_secs) {
            if (!(*timeout_secs >= 0)) {
                raise(BoxliteError(ErrorKind::InvalidArgument,
                                   fmt::format("timeout must be a number of seconds >= 0, got {}", *timeout_secs)));
            }
            command.timeout(std::chrono::milliseconds(static_cast<std::int64_t>(*timeout_secs * 1000.0)));
        }
        return command;
    }

    void copy_in(const std::string& host_path, const std::string& box_path) {
        nb::gil_scoped_release release;
        unwrap(box_.copy_in(host_path, box_path));
    }
    void copy_out(const std::string& box_path, const std::string& host_path) {
        nb::gil_scoped_release release;
        unwrap(box_.copy_out(box_path, host_path));
    }

    [[nodiscard]] LiteBox& lite() noexcept { return box_; }

    /// The C++ side of benchmark/python: `n` round trips of exec + collect of `program` over the
    /// same shared agent connection the Python API uses; nanoseconds of each.
    std::vector<double> bench_cpp_roundtrips(const std::string& program, int n) {
        nb::gil_scoped_release release;
        std::vector<double> out;
        for (int i = 0; i < n; ++i) {
            const auto t0 = std::chrono::steady_clock::now();
            auto execution = unwrap(exec_on_shared_agent(BoxCommand(program)));
            (void)unwrap(execution.collect());
            out.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
        }
        return out;
    }

    /// The C++ side of the stdout throughput benchmark: reads all of `sh -c script`'s stdout
    /// with read_some into a 256 KiB buffer; returns (bytes, nanoseconds).
    std::pair<std::uint64_t, double> bench_cpp_stdout(const std::string& script) {
        nb::gil_scoped_release release;
        const auto t0 = std::chrono::steady_clock::now();
        auto execution = unwrap(exec_on_shared_agent(BoxCommand("sh").args({"-c", script})));
        auto out = std::move(*execution.stdout());
        std::vector<std::byte> buffer(kMaxRead);
        std::uint64_t total = 0;
        while (const auto n = unwrap(out.read_some(buffer))) total += n;
        (void)unwrap(execution.wait());
        return {total, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count()};
    }

private:
    BoxliteResult<Execution> exec_on_shared_agent(const BoxCommand& command) {
        std::optional<protocol::AgentClient> agent;
        {
            std::lock_guard lock(agent_->mutex);
            auto& client = agent_->client;
            if (!client || !client->alive()) {
                client.reset();
                auto opened = box_.open_agent();
                if (!opened) {
                    box_.record_command(false);
                    return fail(opened.error());
                }
                client = std::move(*opened);
            }
            agent = *client;
        }
        auto execution = agent->exec(command);
        box_.record_command(execution.has_value());
        if (!execution) {
            return fail(
                execution.error().with_context(fmt::format("running '{}' in box {}", command.program(), box_.id())));
        }
        return execution;
    }

    struct SharedAgent {
        std::mutex mutex;
        std::optional<protocol::AgentClient> client;
    };
    LiteBox box_;
    std::shared_ptr<SharedAgent> agent_;
};

/// A box's agent connection driven by one asyncio loop's own thread, for SimpleBox.exec: no
/// reader thread and no cross-thread wake-up. The loop watches fd() (loop.add_reader, and
/// loop.add_writer while wants_write); exec() queues an Exec and a StdinClose frame, and
/// on_readable() receives what the socket holds, decodes the frames and resolves the future of
/// each execution that ended with an ExecResult holding everything it printed. Nothing here blocks but open() (connect and
/// handshake, called off the loop with the GIL released): the socket is non-blocking after it.
/// Frames from the agent are hostile, checked as protocol::Session checks them; a bad one ends
/// the connection, and every execution on it ends with the reason.
class LoopAgent {
public:
    /// `result_type` is called as result_type(exit_code, stdout, stderr, error_message, timed_out)
    /// for each execution that ends (boxlite.ExecResult).
    static std::unique_ptr<LoopAgent> open(NativeBox& box, nb::object result_type) {
        BoxliteResult<std::unique_ptr<LoopAgent>> opened = [&]() -> BoxliteResult<std::unique_ptr<LoopAgent>> {
            nb::gil_scoped_release release;
            auto& lite = box.lite();
            auto stream = lite.connect_agent();
            if (!stream) return fail(stream.error().with_context(fmt::format("agent of box {}", lite.id())));
            auto agent = std::unique_ptr<LoopAgent>(new LoopAgent(lite, std::move(*stream)));
            if (auto shaken = agent->handshake(); !shaken) {
                return fail(shaken.error().with_context(fmt::format("agent of box {}", lite.id())));
            }
            return agent;
        }();
        auto agent = unwrap(std::move(opened));
        agent->result_type_ = std::move(result_type);
        return agent;
    }

    /// For the hostile-agent fuzz test (tests/test_loop_agent_fuzz.py): a LoopAgent over a duplicate
    /// of `fd`, one end of a socket pair whose other end a fake agent serves; no box behind it.
    static std::unique_ptr<LoopAgent> over_socket(int fd, nb::object result_type) {
        BoxliteResult<std::unique_ptr<LoopAgent>> opened = [&]() -> BoxliteResult<std::unique_ptr<LoopAgent>> {
            nb::gil_scoped_release release;
            const int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
            if (own < 0) return fail(ErrorKind::InvalidArgument, "fd {}: {}", fd, std::strerror(errno));
            auto agent = std::unique_ptr<LoopAgent>(new LoopAgent(std::nullopt, AnyStream(UnixStream(own))));
            BOXLITE_TRY_VOID(agent->handshake());
            return agent;
        }();
        auto agent = unwrap(std::move(opened));
        agent->result_type_ = std::move(result_type);
        return agent;
    }

    ~LoopAgent() {
        if (!dead_) record_bytes();
        stream_.close();
    }
    LoopAgent(const LoopAgent&) = delete;
    LoopAgent& operator=(const LoopAgent&) = delete;

    [[nodiscard]] int fd() { return fd_; }
    [[nodiscard]] bool alive() const noexcept { return !dead_; }
    /// alive, and the peer has not hung up (a box stopped elsewhere): a zero-timeout poll.
    [[nodiscard]] bool usable() const noexcept {
        if (dead_) return false;
        pollfd p{fd_, POLLRDHUP, 0};
        return ::poll(&p, 1, 0) == 0 || (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0;
    }
    [[nodiscard]] bool wants_write() const noexcept { return !dead_ && sent_ < out_.size(); }

    /// Queues the command (stdin closed at once) and returns its stream id; `future` (an asyncio
    /// future of this loop) gets the result or the exception from on_readable() or close().
    std::uint32_t exec(nb::object future, const std::string& program, const std::vector<std::string>& args,
                       const std::vector<std::pair<std::string, std::string>>& env,
                       const std::optional<std::string>& user, const std::optional<std::string>& cwd,
                       std::optional<double> timeout_secs, std::size_t max_output_bytes) {
        const auto command = NativeBox::make_command(program, args, env, false, user, cwd, timeout_secs);
        check_max_output_bytes(max_output_bytes);
        if (auto valid = protocol::validate_command(command); !valid) {
            raise(valid.error().with_context(fmt::format("running '{}' in box {}", program, box_id())));
        }
        if (dead_) raise(dead_->with_context(fmt::format("running '{}' in box {}", program, box_id())));
        const auto id = next_id_++;
        if (next_id_ == 0) next_id_ = 1;
        auto& e = executions_[id];
        e.program = program;
        e.future = std::move(future);
        e.max_output_bytes = max_output_bytes;
        queue(protocol::FrameType::Exec, id, protocol::make_exec_request(command).encode());
        queue(protocol::FrameType::StdinClose, id, {});
        flush();
        return id;
    }

    /// The awaiting task was cancelled: the execution is killed (now, or when it has started)
    /// and whatever else arrives for it is dropped.
    void cancel(std::uint32_t id) {
        auto it = executions_.find(id);
        if (it == executions_.end() || dead_) return;
        it->second.abandoned = true;
        it->second.future = nb::object();
        if (it->second.started) {
            queue(protocol::FrameType::Signal, id, protocol::SignalRequest{9}.encode());
            flush();
        }
    }

    void on_writable() { flush(); }

    /// Receives what is readable and resolves the futures of the executions that ended: with
    /// their result, or with the exception when the start was refused or the connection was lost
    /// before it started. Returns 2 once the connection has ended, else 1 while wants_write.
    int on_readable() {
        if (dead_) return 2;
        Completions done;
        // Bounded, so that a flood of output cannot hold the loop: the socket stays readable.
        for (int round = 0; round < 16 && !dead_; ++round) {
            auto space = decoder_.prepare(kMaxRead);
            const auto n = ::recv(fd_, space.data(), space.size(), MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                die(BoxliteError(ErrorKind::RpcTransport, fmt::format("agent connection: {}", std::strerror(errno))),
                    done);
                break;
            }
            if (n == 0) {
                die(BoxliteError(ErrorKind::RpcTransport, "the agent closed the connection"), done);
                break;
            }
            decoder_.commit(static_cast<std::size_t>(n));
            bytes_out_ += static_cast<std::uint64_t>(n);
            while (!dead_) {
                auto frame = decoder_.next_view();
                if (!frame) {
                    die(frame.error(), done);
                    break;
                }
                if (!*frame) break;
                if (auto handled = dispatch(**frame, done); !handled) die(handled.error(), done);
            }
            if (static_cast<std::size_t>(n) < space.size()) break;  // drained
        }
        flush();
        resolve(done);
        return dead_ ? 2 : wants_write() ? 1 : 0;
    }

    /// Ends the connection; executions still running end with an error.
    void close() {
        Completions done;
        if (!dead_) die(BoxliteError(ErrorKind::RpcTransport, "the connection was closed"), done);
        resolve(done);
    }

private:
    struct Exec {
        std::string program;
        nb::object future;  // None once cancelled
        bool started = false;
        bool abandoned = false;
        std::size_t max_output_bytes = kDefaultMaxOutputBytes;  // stdout and stderr together
        std::string texts[2];
        std::uint32_t credit[2] = {protocol::kDefaultWindow, protocol::kDefaultWindow};  // the agent may send
        std::uint32_t owed[2] = {0, 0};  // received, not yet granted back
    };

    LoopAgent(std::optional<LiteBox> box, AnyStream stream) : box_(std::move(box)), stream_(std::move(stream)) {
        fd_ = stream_.native_handle();
    }

    // The box's counters and name; none for over_socket()'s test connections.
    void record_command(bool ok) {
        if (box_) box_->record_command(ok);
    }
    void record_bytes() {
        if (box_) box_->record_bytes(bytes_in_, bytes_out_);
    }
    [[nodiscard]] std::string box_id() const { return box_ ? box_->id().str() : std::string("(none)"); }

    BoxliteResult<void> handshake() {
        if (fd_ < 0) return fail(ErrorKind::Unsupported, "the agent connection has no descriptor to poll");
        BOXLITE_TRY_VOID(
            stream_.write_all(protocol::encode_frame(protocol::FrameType::Hello, 0, protocol::Hello{}.encode())));
        const auto deadline = std::chrono::steady_clock::now() + protocol::AgentClient::kControlTimeout;
        while (true) {
            auto frame = decoder_.next();
            if (!frame) return fail(frame.error());
            if (*frame) {
                const auto& f = **frame;
                if (f.type == protocol::FrameType::Error && f.stream == 0) {
                    auto e = protocol::ErrorMessage::decode(f.payload);
                    return fail(ErrorKind::Portal, "the agent refused the connection: {}",
                                e ? e->message : std::string("(malformed error)"));
                }
                if (f.type != protocol::FrameType::HelloAck || f.stream != 0) {
                    return fail(ErrorKind::Portal, "expected hello-ack, got {} on stream {}", to_string(f.type),
                                f.stream);
                }
                BOXLITE_TRY(auto ack, protocol::HelloAck::decode(f.payload));
                if (ack.version < protocol::kMinVersion || ack.version > protocol::kMaxVersion) {
                    return fail(ErrorKind::Portal, "the agent chose protocol version {}, this host speaks {}-{}",
                                ack.version, protocol::kMinVersion, protocol::kMaxVersion);
                }
                break;
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                                    std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                return fail(ErrorKind::Rpc, "the agent did not answer the protocol handshake within {} ms",
                            protocol::AgentClient::kControlTimeout.count());
            }
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
                return fail(ErrorKind::RpcTransport, "poll: {}", std::strerror(errno));
            }
            std::byte buf[4096];
            BOXLITE_TRY(auto n, stream_.read_some(buf));
            if (n == 0) return fail(ErrorKind::RpcTransport, "the agent closed the connection during the handshake");
            decoder_.feed(std::span<const std::byte>(buf, n));
        }
        const int flags = ::fcntl(fd_, F_GETFL);
        if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK) < 0) {
            return fail(ErrorKind::RpcTransport, "fcntl(O_NONBLOCK): {}", std::strerror(errno));
        }
        return {};
    }

    void queue(protocol::FrameType type, std::uint32_t stream, std::span<const std::byte> payload) {
        if (sent_ == out_.size()) {
            out_.clear();
            sent_ = 0;
        }
        const auto header = protocol::encode_header(type, stream, static_cast<std::uint32_t>(payload.size()));
        out_.insert(out_.end(), header.begin(), header.end());
        out_.insert(out_.end(), payload.begin(), payload.end());
    }

    void flush() {
        while (!dead_ && sent_ < out_.size()) {
            const auto n = ::send(fd_, out_.data() + sent_, out_.size() - sent_, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // the loop's writer callback resumes
                // The reader sees the end of the connection and ends the executions with it.
                ::shutdown(fd_, SHUT_RDWR);
                return;
            }
            sent_ += static_cast<std::size_t>(n);
            bytes_in_ += static_cast<std::uint64_t>(n);
        }
    }

    struct Completion {
        nb::object future;
        nb::object value;
        bool failed = false;
    };
    using Completions = std::vector<Completion>;

    /// After the frames are handled: resolving a future only schedules its callbacks.
    static void resolve(Completions& done) {
        for (auto& c : done) {
            if (nb::cast<bool>(c.future.attr("done")())) continue;  // cancelled meanwhile
            c.future.attr(c.failed ? "set_exception" : "set_result")(c.value);
        }
    }

    /// The exception of `error`'s kind (boxlite.ExecutionError, …) for execution `e`.
    nb::object exception_for(const Exec& e, const BoxliteError& error) {
        auto& registry = error_classes();
        const auto it = registry.find(std::string(to_identifier(error.kind())));
        PyObject* cls = it != registry.end() ? it->second : PyExc_RuntimeError;
        const auto contexted = error.with_context(fmt::format("running '{}' in box {}", e.program, box_id()));
        nb::object exception = nb::steal(
            PyObject_CallFunction(cls, "s", well_formed_utf8(contexted.to_string()).c_str()));
        if (!exception.is_valid()) throw nb::python_error();
        return exception;
    }

    void finish_error(Exec& e, const BoxliteError& error, Completions& done) {
        if (e.abandoned) return;
        if (!e.started) {
            done.push_back({std::move(e.future), exception_for(e, error), true});
            return;
        }
        // As Execution.wait() reports a lost connection: exit code -1 with the reason.
        done.push_back({std::move(e.future), result_type_(-1, text(e.texts[0]), text(e.texts[1]),
                                                          well_formed_utf8(error.to_string()), false)});
    }

    static nb::object text(const std::string& bytes) {
        nb::object s = nb::steal(PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "replace"));
        if (!s.is_valid()) throw nb::python_error();
        return s;
    }

    void die(const BoxliteError& reason, Completions& done) {
        if (dead_) return;
        dead_ = reason;
        ::shutdown(fd_, SHUT_RDWR);
        record_bytes();
        auto executions = std::move(executions_);
        executions_.clear();
        for (auto& entry : executions) {
            auto& e = entry.second;
            if (!e.started && !e.abandoned) record_command(false);
            finish_error(e, reason, done);
        }
    }

    BoxliteResult<void> dispatch(const protocol::FrameView& f, Completions& done) {
        using protocol::FrameType;
        if (!protocol::agent_may_send(f.type) || f.type == FrameType::HelloAck) {
            return fail(ErrorKind::Portal, "the agent sent a {} frame, which it may not send here", to_string(f.type));
        }
        switch (f.type) {
            case FrameType::Pong:
            case FrameType::MetricsReply:
            case FrameType::ShutdownAck: return {};
            case FrameType::Error:
                if (f.stream == 0) {
                    BOXLITE_TRY(auto m, protocol::ErrorMessage::decode(f.payload));
                    return fail(ErrorKind::Rpc, "the agent ended the connection: {}", m.message);
                }
                break;
            default: break;  // the execution's own frames
        }
        auto it = executions_.find(f.stream);
        if (it == executions_.end()) {
            return fail(ErrorKind::Portal, "the agent sent {} for unknown execution {}", to_string(f.type), f.stream);
        }
        auto& e = it->second;
        switch (f.type) {
            case FrameType::Error: {
                BOXLITE_TRY(auto m, protocol::ErrorMessage::decode(f.payload));
                if (!e.started) record_command(false);
                const BoxliteError error(e.started ? ErrorKind::Rpc : ErrorKind::Execution, m.message);
                finish_error(e, error, done);
                executions_.erase(it);
                return {};
            }
            case FrameType::Started: {
                if (e.started) return fail(ErrorKind::Portal, "the agent started execution {} twice", f.stream);
                BOXLITE_TRY(auto m, protocol::Started::decode(f.payload));
                (void)m;
                e.started = true;
                record_command(true);
                if (e.abandoned) queue(FrameType::Signal, f.stream, protocol::SignalRequest{9}.encode());
                return {};
            }
            case FrameType::Stdout:
            case FrameType::Stderr: {
                if (!e.started)
                    return fail(ErrorKind::Portal, "the agent sent output before execution {} started", f.stream);
                const int i = f.type == FrameType::Stderr ? 1 : 0;
                const auto size = static_cast<std::uint32_t>(f.payload.size());
                if (size > e.credit[i]) {
                    return fail(ErrorKind::Portal,
                                "the agent sent {} bytes on execution {} with only {} bytes of credit", size, f.stream,
                                e.credit[i]);
                }
                e.credit[i] -= size;
                e.owed[i] += size;
                if (!e.abandoned && e.texts[0].size() + e.texts[1].size() + size > e.max_output_bytes) {
                    // As Execution::collect: killed, its future failed, the rest of it dropped.
                    done.push_back({std::move(e.future),
                                    exception_for(e, boxlite::detail::output_limit_exceeded(e.max_output_bytes)),
                                    true});
                    e.abandoned = true;
                    e.texts[0] = std::string();
                    e.texts[1] = std::string();
                    queue(FrameType::Signal, f.stream, protocol::SignalRequest{9}.encode());
                }
                if (!e.abandoned) e.texts[i].append(reinterpret_cast<const char*>(f.payload.data()), size);
                // Everything is kept, so credit goes back at once, a quarter window at a time.
                if (e.owed[i] >= protocol::kDefaultWindow / 4) {
                    const auto channel = i == 1 ? protocol::Channel::Stderr : protocol::Channel::Stdout;
                    queue(FrameType::Credit, f.stream, protocol::Credit{channel, e.owed[i]}.encode());
                    e.credit[i] += e.owed[i];
                    e.owed[i] = 0;
                }
                return {};
            }
            case FrameType::Credit: {
                BOXLITE_TRY(auto m, protocol::Credit::decode(f.payload));
                if (m.channel != protocol::Channel::Stdin)
                    return fail(ErrorKind::Portal, "the agent granted credit for an output channel");
                return {};  // stdin is closed at once: nothing to send
            }
            case FrameType::Exit: {
                if (!e.started)
                    return fail(ErrorKind::Portal, "the agent ended execution {} before starting it", f.stream);
                BOXLITE_TRY(auto m, protocol::ExitStatus::decode(f.payload));
                if (!e.abandoned) {
                    nb::object message = m.message.empty() ? nb::none() : text(m.message);
                    done.push_back({std::move(e.future),
                                    result_type_(m.code, text(e.texts[0]), text(e.texts[1]), message, m.timed_out)});
                }
                executions_.erase(it);
                return {};
            }
            default: return {};
        }
    }

    std::optional<LiteBox> box_;
    AnyStream stream_;
    nb::object result_type_;
    int fd_ = -1;
    protocol::FrameDecoder decoder_;
    std::vector<std::byte> out_;
    std::size_t sent_ = 0;
    std::uint32_t next_id_ = 1;
    std::map<std::uint32_t, Exec> executions_;
    std::optional<BoxliteError> dead_;
    std::uint64_t bytes_in_ = 0;
    std::uint64_t bytes_out_ = 0;
};

class NativeRuntime {
public:
    explicit NativeRuntime(BoxliteRuntime runtime) : runtime_(std::move(runtime)) {}

    static NativeRuntime open(const std::optional<std::string>& home_dir,
                              const std::optional<std::vector<std::string>>& image_registries,
                              const std::optional<std::string>& engine) {
        auto options = unwrap(BoxliteOptions::from_environment());
        if (home_dir) options.home_dir = *home_dir;
        if (image_registries) options.image_registries = *image_registries;
        if (engine) options.engine = unwrap(parse_engine_kind(*engine));
        BoxliteResult<BoxliteRuntime> runtime = [&] {
            nb::gil_scoped_release release;
            return open_runtime(std::move(options));
        }();
        return NativeRuntime(unwrap(std::move(runtime)));
    }

    static NativeRuntime default_runtime() {
        BoxliteResult<BoxliteRuntime> runtime = [] {
            nb::gil_scoped_release release;
            return boxlite::default_runtime();
        }();
        return NativeRuntime(unwrap(std::move(runtime)));
    }

    [[nodiscard]] std::string home_dir() const { return runtime_.options().home_dir.string(); }
    [[nodiscard]] std::string engine() const { return std::string(to_string(runtime_.options().engine)); }

    NativeBox create(const std::string& options_json, const std::optional<std::string>& name) {
        BoxliteResult<LiteBox> box = [&]() -> BoxliteResult<LiteBox> {
            nb::gil_scoped_release release;
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(options_json);
            } catch (const std::exception& e) {
                return fail(ErrorKind::InvalidArgument, "box options are not valid JSON: {}", e.what());
            }
            BOXLITE_TRY(auto options, from_json_value<BoxOptions>(j, "box options"));
            return runtime_.create(options, name);
        }();
        return NativeBox(unwrap(std::move(box)));
    }

    std::optional<NativeBox> get(const std::string& id_or_name) {
        BoxliteResult<LiteBox> box = [&] {
            nb::gil_scoped_release release;
            return runtime_.get(id_or_name);
        }();
        if (!box && box.error().kind() == ErrorKind::NotFound) return std::nullopt;
        return NativeBox(unwrap(std::move(box)));
    }

    std::optional<nb::dict> get_info(const std::string& id_or_name) {
        BoxliteResult<BoxInfo> info = [&] {
            nb::gil_scoped_release release;
            return runtime_.get_info(id_or_name);
        }();
        if (!info && info.error().kind() == ErrorKind::NotFound) return std::nullopt;
        return info_dict(unwrap(std::move(info)));
    }

    nb::list list_info() {
        BoxliteResult<std::vector<BoxInfo>> infos = [&] {
            nb::gil_scoped_release release;
            return runtime_.list_info();
        }();
        nb::list out;
        for (const auto& info : unwrap(std::move(infos))) out.append(info_dict(info));
        return out;
    }

    void remove(const std::string& id_or_name, bool force) {
        nb::gil_scoped_release release;
        unwrap(runtime_.remove(id_or_name, force));
    }

    nb::dict metrics() {
        BoxliteResult<RuntimeMetrics> metrics = [&] {
            nb::gil_scoped_release release;
            return runtime_.metrics();
        }();
        return runtime_metrics_dict(unwrap(std::move(metrics)));
    }

    nb::dict pull_image(const std::string& reference) {
        BoxliteResult<image::ImageInfo> pulled = [&]() -> BoxliteResult<image::ImageInfo> {
            nb::gil_scoped_release release;
            BOXLITE_TRY(auto store, image::ImageStore::open(image::store_options_for(runtime_.options())));
            return store.pull(reference);
        }();
        return image_dict(unwrap(std::move(pulled)));
    }

    nb::list list_images() {
        BoxliteResult<std::vector<image::ImageInfo>> images = [&]() -> BoxliteResult<std::vector<image::ImageInfo>> {
            nb::gil_scoped_release release;
            BOXLITE_TRY(auto store, image::ImageStore::open(image::store_options_for(runtime_.options())));
            return store.list();
        }();
        nb::list out;
        for (const auto& image : unwrap(std::move(images))) out.append(image_dict(image));
        return out;
    }

    nb::list load_images(const std::string& path, const std::optional<std::string>& reference) {
        BoxliteResult<std::vector<image::ImageInfo>> images = [&]() -> BoxliteResult<std::vector<image::ImageInfo>> {
            nb::gil_scoped_release release;
            BOXLITE_TRY(auto store, image::ImageStore::open(image::store_options_for(runtime_.options())));
            return store.load(path, reference);
        }();
        nb::list out;
        for (const auto& image : unwrap(std::move(images))) out.append(image_dict(image));
        return out;
    }

private:
    BoxliteRuntime runtime_;
};

}  // namespace
}  // namespace boxlite::python

NB_MODULE(_core, m) {
    using namespace boxlite;
    using namespace boxlite::python;

    m.attr("__version__") = std::string(boxlite::version());
    m.attr("ERROR_KINDS") = [] {
        std::vector<std::string> kinds;
        for (int k = 0; k <= static_cast<int>(ErrorKind::Stopped); ++k)
            kinds.emplace_back(to_identifier(static_cast<ErrorKind>(k)));
        return kinds;
    }();

    m.def(
        "_register_errors",
        [](nb::dict classes) {
            auto& registry = error_classes();
            for (auto [key, value] : classes) {
                PyObject* cls = value.ptr();
                Py_INCREF(cls);
                registry[nb::cast<std::string>(key)] = cls;
            }
        },
        "classes"_a, "ErrorKind identifier -> exception class (boxlite/errors.py calls this once).");
    m.attr("DEFAULT_MAX_OUTPUT_BYTES") = kDefaultMaxOutputBytes;
    m.def(
        "_raise_output_limit",
        [](std::size_t max_output_bytes) { raise(boxlite::detail::output_limit_exceeded(max_output_bytes)); },
        "max_output_bytes"_a,
        "Raises the ExecutionError of a collected execution that printed more than `max_output_bytes`.");
    m.def(
        "_raise_for_test",
        [](const std::string& kind, const std::string& message) {
            for (int k = 0; k <= static_cast<int>(ErrorKind::Stopped); ++k) {
                if (to_identifier(static_cast<ErrorKind>(k)) == kind)
                    raise(BoxliteError(static_cast<ErrorKind>(k), message));
            }
            throw nb::value_error("unknown error kind");
        },
        "kind"_a, "message"_a, "Raises the core error of `kind` as it would reach Python (for tests).");

    nb::register_exception_translator([](const std::exception_ptr& p, void*) {
        try {
            std::rethrow_exception(p);
        } catch (const NativeError& e) {
            auto& registry = error_classes();
            const auto it = registry.find(std::string(to_identifier(e.error.kind())));
            PyObject* cls = it != registry.end() ? it->second : PyExc_RuntimeError;
            PyErr_SetString(cls, well_formed_utf8(e.error.to_string()).c_str());
        }
    });

    nb::class_<Reactor>(m, "Reactor").def(nb::init<>()).def_prop_ro("fd", &Reactor::fd).def("drain", &Reactor::drain);

    nb::class_<OutputStream>(m, "OutputStream")
        .def("try_read", &OutputStream::try_read, "max_bytes"_a)
        .def("read", &OutputStream::read, "max_bytes"_a)
        .def("discard", &OutputStream::discard);

    nb::class_<InputStream>(m, "InputStream")
        .def("try_write", &InputStream::try_write, "data"_a, "offset"_a = 0)
        .def("write", &InputStream::write, "data"_a)
        .def("close", &InputStream::close);

    nb::class_<NativeExecution>(m, "Execution")
        .def_prop_ro("id", &NativeExecution::id)
        .def_prop_ro("pid", &NativeExecution::pid)
        .def("attach", &NativeExecution::attach, "reactor"_a, "token"_a)
        .def("take_stdin", &NativeExecution::take_stdin)
        .def("take_stdout", &NativeExecution::take_stdout)
        .def("take_stderr", &NativeExecution::take_stderr)
        .def("try_wait", &NativeExecution::try_wait)
        .def("wait", &NativeExecution::wait)
        .def("collect", &NativeExecution::collect, "max_output_bytes"_a = kDefaultMaxOutputBytes)
        .def("kill", &NativeExecution::kill)
        .def("signal", &NativeExecution::signal, "signo"_a)
        .def("resize_tty", &NativeExecution::resize_tty, "rows"_a, "cols"_a);

    nb::class_<NativePending>(m, "PendingExecution")
        .def("attach", &NativePending::attach, "reactor"_a, "token"_a)
        .def("try_started", &NativePending::try_started)
        .def("abandon", &NativePending::abandon);

    nb::class_<NativeBox>(m, "Box")
        .def_prop_ro("id", &NativeBox::id)
        .def_prop_ro("name", &NativeBox::name)
        .def("info", &NativeBox::info)
        .def("start", &NativeBox::start)
        .def("stop", &NativeBox::stop)
        .def("metrics", &NativeBox::metrics)
        .def("exec", &NativeBox::exec, "program"_a, "args"_a, "env"_a, "tty"_a, "user"_a.none(), "cwd"_a.none(),
             "timeout_secs"_a.none())
        .def("copy_in", &NativeBox::copy_in, "host_path"_a, "box_path"_a)
        .def("copy_out", &NativeBox::copy_out, "box_path"_a, "host_path"_a)
        .def("agent_alive", &NativeBox::agent_alive)
        .def("ensure_agent", &NativeBox::ensure_agent)
        .def("begin_exec", &NativeBox::begin_exec, "program"_a, "args"_a, "env"_a, "tty"_a, "user"_a.none(),
             "cwd"_a.none(), "timeout_secs"_a.none())
        .def("_bench_cpp_roundtrips", &NativeBox::bench_cpp_roundtrips, "program"_a, "n"_a)
        .def("_bench_cpp_stdout", &NativeBox::bench_cpp_stdout, "script"_a);

    nb::class_<LoopAgent>(m, "LoopAgent")
        .def_static("open", &LoopAgent::open, "box"_a, "result_type"_a)
        .def_static("_over_socket", &LoopAgent::over_socket, "fd"_a, "result_type"_a)
        .def_prop_ro("fd", &LoopAgent::fd)
        .def_prop_ro("alive", &LoopAgent::alive)
        .def_prop_ro("wants_write", &LoopAgent::wants_write)
        .def("usable", &LoopAgent::usable)
        .def("exec", &LoopAgent::exec, "future"_a, "program"_a, "args"_a, "env"_a, "user"_a.none(), "cwd"_a.none(),
             "timeout_secs"_a.none(), "max_output_bytes"_a = kDefaultMaxOutputBytes)
        .def("cancel", &LoopAgent::cancel, "id"_a)
        .def("on_readable", &LoopAgent::on_readable)
        .def("on_writable", &LoopAgent::on_writable)
        .def("close", &LoopAgent::close);

    nb::class_<NativeRuntime>(m, "Runtime")
        .def_static("open", &NativeRuntime::open, "home_dir"_a.none(), "image_registries"_a.none(), "engine"_a.none())
        .def_static("default", &NativeRuntime::default_runtime)
        .def_prop_ro("home_dir", &NativeRuntime::home_dir)
        .def_prop_ro("engine", &NativeRuntime::engine)
        .def("create", &NativeRuntime::create, "options_json"_a, "name"_a.none())
        .def("get", &NativeRuntime::get, "id_or_name"_a)
        .def("get_info", &NativeRuntime::get_info, "id_or_name"_a)
        .def("list_info", &NativeRuntime::list_info)
        .def("remove", &NativeRuntime::remove, "id_or_name"_a, "force"_a = false)
        .def("metrics", &NativeRuntime::metrics)
        .def("pull_image", &NativeRuntime::pull_image, "reference"_a)
        .def("list_images", &NativeRuntime::list_images)
        .def("load_images", &NativeRuntime::load_images, "path"_a, "reference"_a.none() = nb::none());
}
