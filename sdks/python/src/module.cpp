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

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <sys/eventfd.h>
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

ExitTuple exit_tuple(const ExecResult& result) { return {result.exit_code, result.error_message, result.timed_out}; }

// --- executions -----------------------------------------------------------------------------

constexpr std::size_t kMaxRead = 256 * 1024;

class OutputStream {
public:
    OutputStream(ExecOutputStream stream, std::shared_ptr<Notifier> notifier)
        : stream_(std::move(stream)), notifier_(std::move(notifier)) {}

    /// Up to max_bytes without waiting: None while nothing has arrived, b"" at the end.
    std::optional<nb::bytes> try_read(std::size_t max_bytes) {
        // One buffer per thread, not per stream: a new stream costs no 256 KiB allocation.
        thread_local std::vector<char> buffer(kMaxRead);
        const auto view = std::span(buffer).first(std::clamp<std::size_t>(max_bytes, 1, kMaxRead));
        auto n = unwrap(stream_.try_read_some(std::as_writable_bytes(view)));
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

private:
    ExecOutputStream stream_;
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
    std::tuple<nb::bytes, nb::bytes, ExitTuple> collect() {
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
                    if (*n == 0) open[i] = false;
                    else texts[i].append(reinterpret_cast<const char*>(buffer.data()), *n);
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

private:
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

public:
    void copy_in(const std::string& host_path, const std::string& box_path) {
        nb::gil_scoped_release release;
        unwrap(box_.copy_in(host_path, box_path));
    }
    void copy_out(const std::string& box_path, const std::string& host_path) {
        nb::gil_scoped_release release;
        unwrap(box_.copy_out(box_path, host_path));
    }

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
            PyErr_SetString(cls, e.error.to_string().c_str());
        }
    });

    nb::class_<Reactor>(m, "Reactor").def(nb::init<>()).def_prop_ro("fd", &Reactor::fd).def("drain", &Reactor::drain);

    nb::class_<OutputStream>(m, "OutputStream")
        .def("try_read", &OutputStream::try_read, "max_bytes"_a)
        .def("read", &OutputStream::read, "max_bytes"_a);

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
        .def("collect", &NativeExecution::collect)
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
