// The host end of one agent connection: a reader thread that demultiplexes frames into
// per-execution state, and the senders that the public Execution / AgentClient call.
//
// Flow control, host side (the agent's side is in guest/agent.cpp):
//   - stdout/stderr: the host granted `window` bytes per stream; the reader thread only buffers,
//     so a slow consumer never stalls other streams. When the consumer has taken a quarter of
//     that channel's window out of the buffer, that many bytes of credit go back. A frame that
//     exceeds the credit outstanding is a protocol violation and ends the connection, so the
//     buffer can never exceed the window whatever the agent sends.
//   - stdin: a writer may only send as many bytes as the agent granted; it blocks for credit.
// Everything the agent sends is hostile: the decoder is bounds-checked (frame.hpp) and unknown
// streams or unexpected frame types end the connection with a Portal error. Every request/reply
// wait (handshake, Started, ping, metrics, shutdown) has a deadline, so an agent that accepts the
// connection and then says nothing cannot hang the host; only execution streams are unbounded.
#pragma once

#include <boxlite/box_id.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/error.hpp>
#include <boxlite/protocol/frame.hpp>
#include <boxlite/protocol/messages.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace boxlite::protocol {

/// A ByteStream behind std::function, so the session is not a template.
struct ErasedStream {
    std::function<BoxliteResult<std::size_t>(std::span<std::byte>)> read_some;
    std::function<BoxliteResult<void>(std::span<const std::byte>)> write_all;
    std::function<void()> close;
    std::function<int()> native_handle;  ///< the socket, for splice(2); may be empty or give -1

    template <ByteStream S>
    static ErasedStream from(S stream) {
        auto shared = std::make_shared<S>(std::move(stream));
        return ErasedStream{[shared](std::span<std::byte> b) { return shared->read_some(b); },
                            [shared](std::span<const std::byte> d) { return shared->write_all(d); },
                            [shared] { shared->close(); }, [shared] { return shared->native_handle(); }};
    }
};

/// Counters a session keeps for BoxMetrics.
struct SessionCounters {
    std::atomic<std::uint64_t> commands_run{0};
    std::atomic<std::uint64_t> command_errors{0};
    std::atomic<std::uint64_t> bytes_in{0};   ///< stdin (and copy-in) bytes sent to the box
    std::atomic<std::uint64_t> bytes_out{0};  ///< stdout/stderr (and copy-out) bytes received
};

struct OutputBuffer {
    std::deque<std::vector<std::byte>> chunks;
    std::size_t front_offset = 0;
    std::uint64_t buffered = 0;
    std::uint64_t outstanding_credit = 0;   ///< bytes the agent may still send us
    std::uint64_t unacked = 0;              ///< consumed, not yet returned as credit
    std::uint32_t window = kDefaultWindow;  ///< granted in Exec; credit returns per quarter of it
    bool discard = false;                   ///< nobody will read: drop and re-credit on arrival
    bool taken = false;
    /// The reader of this channel waits here: woken by its own output and by the end, not by
    /// the other channel's output or by stdin credit.
    std::condition_variable cv;
};

struct ExecState {
    std::uint32_t id = 0;  ///< the stream number on its connection (1, 2, ... per connection)
    /// Unique across connections, processes and boxes (a ULID): what Execution::id() returns.
    std::string execution_id;
    /// Waits for a change of state (started, ended) or for output on either channel. The
    /// stdin writer and each channel's reader wait on their own condition variable instead
    /// (stdin_cv, out.cv, err.cv), so that a Credit frame wakes only the writer and an output
    /// frame only its reader: one wake-up per frame, not one per thread of the caller.
    std::condition_variable cv;
    std::condition_variable stdin_cv;  ///< stdin credit arrived (or the execution ended)
    // Everything below is guarded by Session::mutex_.
    bool started = false;
    std::optional<BoxliteError> start_error;
    std::int32_t pid = 0;
    std::uint64_t stdin_credit = 0;
    bool stdin_closed = false;
    bool stdin_taken = false;
    /// The command reads a host pipe itself (Session::start with a stdin descriptor): nothing is
    /// written to its stdin through the connection; write_stdin fails and close_stdin does nothing.
    bool stdin_passed = false;
    OutputBuffer out;
    OutputBuffer err;
    std::optional<ExitStatus> exit;
    std::optional<BoxliteError> failure;  ///< the connection died before Exit arrived
    /// start() gave up waiting for Started: if it still comes, the process is killed.
    bool abandoned = false;
    /// Session::set_waker(): told of every change, for callers that must not block.
    std::function<void()> waker;

    [[nodiscard]] bool finished() const { return exit.has_value() || failure.has_value(); }
};

class Session : public std::enable_shared_from_this<Session> {
public:
    explicit Session(ErasedStream stream) : stream_(std::move(stream)) {}
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    ~Session() {
        stream_.close();
        if (reader_.joinable()) reader_.join();
        if (on_close_) on_close_(counters_);
    }

    /// Called once when the connection's last handle goes away, with its final counters.
    void set_on_close(std::function<void(const SessionCounters&)> callback) { on_close_ = std::move(callback); }

    /// Hello / HelloAck, then the connection is ready. The reader thread starts first and the
    /// wait for HelloAck has a deadline: an agent that accepts and never answers (hung, or not
    /// an agent at all) fails the handshake instead of blocking the caller forever.
    BoxliteResult<void> handshake(std::chrono::milliseconds timeout);

    [[nodiscard]] const std::string& agent_version() const noexcept { return agent_version_; }
    [[nodiscard]] std::uint16_t version() const noexcept { return version_; }
    /// The agent's HelloAck feature bits (kFeature*); 0 for an agent that offers none.
    [[nodiscard]] std::uint32_t features() const noexcept { return features_; }
    [[nodiscard]] SessionCounters& counters() noexcept { return counters_; }
    [[nodiscard]] bool alive() {
        std::lock_guard lock(mutex_);
        return !dead_;
    }

    BoxliteResult<void> send(FrameType type, std::uint32_t stream, std::span<const std::byte> payload) {
        const auto header = encode_header(type, stream, static_cast<std::uint32_t>(payload.size()));
        std::lock_guard lock(write_mutex_);
        BOXLITE_TRY_VOID(stream_.write_all(header));
        if (!payload.empty()) BOXLITE_TRY_VOID(stream_.write_all(payload));
        return {};
    }
    BoxliteResult<void> send(FrameType type, std::uint32_t stream, const std::vector<std::byte>& payload) {
        return send(type, stream, std::span<const std::byte>(payload));
    }

    /// Sends Exec and waits up to `timeout` for Started (or the agent's refusal).
    ///
    /// `stdin_fd` (borrowed, -1 for none): a host pipe the command should read itself, as runc
    /// gives a container the caller's stdio. It is passed (SCM_RIGHTS with the Exec frame) only
    /// when the agent offered kFeatureStdinDescriptor, this connection is a UNIX socket, the
    /// command has no tty, and `stdin_fd` is a FIFO open read-only; then ExecState::stdin_passed
    /// is set, write_stdin() fails and close_stdin() is a no-op (the command reads EOF when every
    /// writer of the pipe has closed it). Otherwise stdin streams as frames, as without it. The
    /// caller keeps its descriptor and must not read it while the command runs.
    BoxliteResult<std::shared_ptr<ExecState>> start(const ExecRequest& request, std::chrono::milliseconds timeout,
                                                    int stdin_fd = -1);

    /// Whether start() can pass `fd` as a command's stdin on this connection (see start()).
    [[nodiscard]] bool can_pass_stdin(int fd);

    // ---- stdin -------------------------------------------------------------------------------
    BoxliteResult<void> write_stdin(ExecState& e, std::span<const std::byte> data);

    BoxliteResult<void> close_stdin(ExecState& e);

    /// Moves what the pipe `from_fd` holds now (up to one frame of kMaxPayload, within the credit:
    /// no copy is made here, so a frame may be larger than a copied one's kMaxChunk; blocks
    /// for credit like write_stdin) into the execution's stdin with splice(2), so the bytes never
    /// pass through this process. nullopt when it cannot: the pipe is empty (at its end, or not
    /// a pipe) or the connection has no socket; then read and write_stdin() instead. `from_fd`
    /// must have no other reader: a frame's bytes that stop short end the connection.
    BoxliteResult<std::optional<std::size_t>> splice_stdin(ExecState& e, int from_fd);

    // ---- stdout / stderr ---------------------------------------------------------------------
    /// Copies up to out.size() bytes of one channel; 0 at end of stream. Blocks until data,
    /// end of stream, or a connection failure.
    BoxliteResult<std::size_t> read_output(ExecState& e, Channel channel, std::span<std::byte> out);

    /// Stops buffering a channel nobody will read (its reader was dropped, or wait() was called
    /// without taking it), so the process is never blocked by an unread pipe.
    void discard_output(ExecState& e, Channel channel);

    /// Blocks until both channels have data or ended, for readers that serve both at once.
    void wait_any_output(ExecState& e);

    // ---- without blocking, for event loops (the Python SDK's asyncio layer) -------------------
    // An event loop must not sleep in read_output()/write_stdin()/wait_exit(): it registers a
    // waker, and on each notice retries the try_ calls, which never wait.

    /// start() without waiting: registers the execution (with `waker`, see set_waker()) and
    /// sends Exec. Started, or the agent's refusal, arrives later: see try_started().
    BoxliteResult<std::shared_ptr<ExecState>> begin(const ExecRequest& request, std::function<void()> waker);

    /// After begin(): nullopt until Started or a refusal has arrived, then the outcome (a refused
    /// execution is forgotten).
    [[nodiscard]] std::optional<BoxliteResult<void>> try_started(ExecState& e);

    /// Gives up on a begun execution nobody will use: its output is dropped, and it is killed
    /// when it has started or as soon as it starts.
    void abandon(ExecState& e);

    /// `waker` is called whenever the execution's state may have changed (output or stdin credit
    /// arrived, the process ended, the connection died), and once right away. It runs with the
    /// session locked, often on the session's reader thread: it may only post a notice (write an
    /// eventfd, queue a token), never call back into the session. An empty function unregisters.
    void set_waker(ExecState& e, std::function<void()> waker);

    /// read_output() without waiting: nullopt while the channel has no data and has not ended.
    BoxliteResult<std::optional<std::size_t>> try_read_output(ExecState& e, Channel channel, std::span<std::byte> out);

    /// Sends what stdin credit allows now (possibly nothing) and returns how many bytes it sent.
    BoxliteResult<std::size_t> try_write_stdin(ExecState& e, std::span<const std::byte> data);

    /// The exit status once the execution has ended (or the failure that ended it); nullopt while
    /// it runs.
    [[nodiscard]] std::optional<BoxliteResult<ExitStatus>> try_exit(ExecState& e);

    [[nodiscard]] bool finished(ExecState& e) {
        std::lock_guard lock(mutex_);
        return e.finished();
    }

    [[nodiscard]] std::uint64_t buffered(ExecState& e, Channel channel) {
        std::lock_guard lock(mutex_);
        return channel == Channel::Stderr ? e.err.buffered : e.out.buffered;
    }

    BoxliteResult<ExitStatus> wait_exit(ExecState& e, std::optional<std::chrono::milliseconds> timeout = std::nullopt);

    void forget(std::uint32_t id) {
        std::lock_guard lock(mutex_);
        executions_.erase(id);
    }

    // ---- connection-level requests -----------------------------------------------------------
    BoxliteResult<void> ping(std::chrono::milliseconds timeout);

    BoxliteResult<GuestMetrics> metrics(std::chrono::milliseconds timeout);

    BoxliteResult<void> shutdown(std::chrono::milliseconds timeout);

private:
    BoxliteResult<void> request_and_wait(FrameType type, std::uint64_t& sent, const std::uint64_t& answered,
                                         std::string_view what, std::chrono::milliseconds timeout);
    static std::size_t take(OutputBuffer& buf, std::span<std::byte> out);
    /// Takes buffered output (mutex_ held) and returns the credit to give back, if any is due.
    static std::uint32_t take_and_credit(ExecState& e, OutputBuffer& buf, std::span<std::byte> out,
                                         std::size_t& copied);
    /// What a frame changed, for the condition variables it must wake.
    enum class Change { State, Stdout, Stderr, StdinCredit };
    static void notify_waiters(ExecState& e, Change change) {
        switch (change) {
            case Change::StdinCredit: e.stdin_cv.notify_all(); return;
            case Change::Stdout:
                e.out.cv.notify_all();
                e.cv.notify_all();
                return;
            case Change::Stderr:
                e.err.cv.notify_all();
                e.cv.notify_all();
                return;
            case Change::State:
                e.cv.notify_all();
                e.stdin_cv.notify_all();
                e.out.cv.notify_all();
                e.err.cv.notify_all();
                return;
        }
    }
    static void notify(ExecState& e, Change change = Change::State) {
        notify_waiters(e, change);
        if (e.waker) e.waker();
    }
    /// A new execution's state (its id, windows and credit), not yet registered.
    std::shared_ptr<ExecState> new_execution_state(const ExecRequest& request);
    /// Sends the Stdin frames for `data`, whose credit is already taken.
    BoxliteResult<void> send_stdin(ExecState& e, std::span<const std::byte> data);
    /// Waits for stdin credit and takes up to `most` bytes of it (fails once stdin is closed or
    /// the execution has ended).
    BoxliteResult<std::size_t> take_stdin_credit(ExecState& e, std::uint64_t most);

    void read_loop();

    /// The only frames allowed before HelloAck: HelloAck itself or a refusal.
    BoxliteResult<void> dispatch_handshake(const Frame& f);

    BoxliteResult<void> dispatch(Frame f);

    ErasedStream stream_;
    std::mutex write_mutex_;
    std::mutex mutex_;
    std::condition_variable control_cv_;
    std::thread reader_;
    std::map<std::uint32_t, std::shared_ptr<ExecState>> executions_;
    std::uint32_t next_id_ = 1;
    std::optional<BoxliteError> dead_;
    std::uint64_t pings_sent_ = 0, pongs_ = 0;
    std::uint64_t metrics_sent_ = 0, metrics_received_ = 0;
    GuestMetrics last_metrics_;
    bool shutdown_acked_ = false;
    bool handshake_done_ = false;
    std::uint16_t version_ = 0;
    std::string agent_version_;
    std::uint32_t features_ = 0;
    SessionCounters counters_;
    std::function<void(const SessionCounters&)> on_close_;
};

}  // namespace boxlite::protocol
