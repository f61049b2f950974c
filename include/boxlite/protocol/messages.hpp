// Payloads of the agent protocol's frames (see frame.hpp and docs/protocol.md).
//
// Encoding: little-endian integers; a string is u32 length + bytes; a list is u32 count + items.
// Decoders check every length against the bytes left and against per-field limits, and reject
// trailing bytes, so a hostile peer can make them fail but never over-read or over-allocate.
#pragma once

#include <boxlite/error.hpp>
#include <boxlite/protocol/frame.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite::protocol {

/// Limits on decoded fields: generous for real commands, small enough to bound memory.
inline constexpr std::uint32_t kMaxStringBytes = 256U * 1024U;
inline constexpr std::uint32_t kMaxListItems = 4096;

class PayloadWriter {
public:
    PayloadWriter& u8(std::uint8_t v) {
        bytes_.push_back(static_cast<std::byte>(v));
        return *this;
    }
    PayloadWriter& u16(std::uint16_t v) { return little_endian(v, 2); }
    PayloadWriter& u32(std::uint32_t v) { return little_endian(v, 4); }
    PayloadWriter& u64(std::uint64_t v) { return little_endian(v, 8); }
    PayloadWriter& i32(std::int32_t v) { return u32(static_cast<std::uint32_t>(v)); }
    PayloadWriter& str(std::string_view s) {
        u32(static_cast<std::uint32_t>(s.size()));
        const auto* p = reinterpret_cast<const std::byte*>(s.data());
        bytes_.insert(bytes_.end(), p, p + s.size());
        return *this;
    }
    PayloadWriter& strings(const std::vector<std::string>& list) {
        u32(static_cast<std::uint32_t>(list.size()));
        for (const auto& s : list) str(s);
        return *this;
    }
    [[nodiscard]] std::vector<std::byte> take() { return std::move(bytes_); }

private:
    PayloadWriter& little_endian(std::uint64_t v, int n) {
        for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFFU));
        return *this;
    }
    std::vector<std::byte> bytes_;
};

/// Bounds-checked reader with a sticky failure: after the first short read every getter
/// returns zero/empty and finish() reports what was being read.
class PayloadReader {
public:
    PayloadReader(std::span<const std::byte> bytes, std::string_view what) : bytes_(bytes), what_(what) {}

    std::uint8_t u8(std::string_view field) { return static_cast<std::uint8_t>(little_endian(1, field)); }
    std::uint16_t u16(std::string_view field) { return static_cast<std::uint16_t>(little_endian(2, field)); }
    std::uint32_t u32(std::string_view field) { return static_cast<std::uint32_t>(little_endian(4, field)); }
    std::uint64_t u64(std::string_view field) { return little_endian(8, field); }
    std::int32_t i32(std::string_view field) { return static_cast<std::int32_t>(u32(field)); }
    bool boolean(std::string_view field) {
        const auto v = u8(field);
        if (v > 1) set_error(field, "is not 0 or 1");
        return v == 1;
    }
    std::string str(std::string_view field) {
        const auto n = u32(field);
        if (failed_) return {};
        if (n > kMaxStringBytes) {
            set_error(field, "is longer than the string limit");
            return {};
        }
        if (n > remaining()) {
            set_error(field, "runs past the end of the payload");
            return {};
        }
        std::string s(reinterpret_cast<const char*>(bytes_.data() + offset_), n);
        offset_ += n;
        return s;
    }
    std::vector<std::string> strings(std::string_view field) {
        const auto n = u32(field);
        if (failed_) return {};
        // Each item takes at least 4 bytes, so a count larger than remaining()/4 is a lie.
        if (n > kMaxListItems || n > remaining() / 4) {
            set_error(field, "has an impossible item count");
            return {};
        }
        std::vector<std::string> out;
        out.reserve(n);
        for (std::uint32_t i = 0; i < n && !failed_; ++i) out.push_back(str(field));
        return out;
    }

    [[nodiscard]] std::size_t remaining() const noexcept { return bytes_.size() - offset_; }

    /// Ok when every byte was consumed and nothing ran short.
    [[nodiscard]] BoxliteResult<void> finish() const {
        if (failed_) return fail(ErrorKind::Portal, "malformed {} payload: field '{}' {}", what_, field_, reason_);
        if (offset_ != bytes_.size()) {
            return fail(ErrorKind::Portal, "malformed {} payload: {} trailing bytes", what_, bytes_.size() - offset_);
        }
        return {};
    }

private:
    std::uint64_t little_endian(std::size_t n, std::string_view field) {
        if (failed_) return 0;
        if (remaining() < n) {
            set_error(field, "runs past the end of the payload");
            return 0;
        }
        std::uint64_t v = 0;
        for (std::size_t i = n; i-- > 0;) v = (v << 8) | std::to_integer<std::uint64_t>(bytes_[offset_ + i]);
        offset_ += n;
        return v;
    }
    void set_error(std::string_view field, std::string_view reason) {
        if (failed_) return;
        failed_ = true;
        field_ = field;
        reason_ = reason;
    }

    std::span<const std::byte> bytes_;
    std::size_t offset_ = 0;
    std::string_view what_;
    bool failed_ = false;
    std::string_view field_;
    std::string_view reason_;
};

// ---------------------------------------------------------------------------------------------

struct Hello {
    std::uint16_t min_version = kMinVersion;
    std::uint16_t max_version = kMaxVersion;

    [[nodiscard]] std::vector<std::byte> encode() const {
        return PayloadWriter{}.u16(min_version).u16(max_version).take();
    }
    [[nodiscard]] static BoxliteResult<Hello> decode(std::span<const std::byte> p) {
        PayloadReader r(p, "hello");
        Hello m;
        m.min_version = r.u16("min_version");
        m.max_version = r.u16("max_version");
        BOXLITE_TRY_VOID(r.finish());
        return m;
    }
};

/// HelloAck feature bits: what this agent's connection can do beyond version 1.
/// kFeatureStdinDescriptor: an ExecRequest may say `stdin_descriptor` and bring the command's
/// stdin as a FIFO read end by SCM_RIGHTS (a UNIX-socket connection, the namespace engine; a
/// vsock connection of a VM never offers it).
inline constexpr std::uint32_t kFeatureStdinDescriptor = 1U << 0;

struct HelloAck {
    std::uint16_t version = kMaxVersion;
    std::string agent_version;
    /// Feature bits (kFeature*), version 2 only. Optional on the wire: sent only when non-zero
    /// (never to a version-1 host), so an agent without features answers exactly as before, and
    /// an absent field decodes as 0.
    std::uint32_t features = 0;

    [[nodiscard]] std::vector<std::byte> encode() const {
        PayloadWriter w;
        w.u16(version).str(agent_version);
        if (features != 0) w.u32(features);
        return w.take();
    }
    [[nodiscard]] static BoxliteResult<HelloAck> decode(std::span<const std::byte> p) {
        PayloadReader r(p, "hello-ack");
        HelloAck m;
        m.version = r.u16("version");
        m.agent_version = r.str("agent_version");
        if (r.remaining() > 0) m.features = r.u32("features");
        BOXLITE_TRY_VOID(r.finish());
        return m;
    }
};

struct ErrorMessage {
    std::string message;

    [[nodiscard]] std::vector<std::byte> encode() const { return PayloadWriter{}.str(message).take(); }
    [[nodiscard]] static BoxliteResult<ErrorMessage> decode(std::span<const std::byte> p) {
        PayloadReader r(p, "error");
        ErrorMessage m;
        m.message = r.str("message");
        BOXLITE_TRY_VOID(r.finish());
        return m;
    }
};

/// What an Exec stream does. Copies are executions too, so they share stdio streaming and
/// flow control: copy-in reads a tar from stdin, copy-out writes a tar to stdout.
enum class ExecKind : std::uint8_t { Command = 0, CopyIn = 1, CopyOut = 2 };

struct ExecRequest {
    ExecKind kind = ExecKind::Command;
    std::string program;
    std::vector<std::string> args;  ///< argv[1..]
    std::vector<std::string> env;   ///< "KEY=VALUE"
    std::string working_dir;        ///< empty: "/"
    std::string user;               ///< empty: the box default (the agent's --user, else root);
                                    ///< else a name from the box's /etc/passwd or a uid, ":gid" optional
    bool tty = false;
    std::uint16_t rows = 24;
    std::uint16_t cols = 80;
    std::uint64_t timeout_ms = 0;  ///< 0: none; else the agent kills the process group after it
    std::uint32_t stdout_window = kDefaultWindow;
    std::uint32_t stderr_window = kDefaultWindow;
    std::string path;  ///< copy-in: destination directory; copy-out: source path
    /// The command's stdin is a descriptor sent by SCM_RIGHTS with this frame's first byte (only
    /// to an agent that offered kFeatureStdinDescriptor; only for a command without a tty). The
    /// agent refuses the exec unless exactly one descriptor came, a FIFO not open for writing.
    /// Optional on the wire: a trailing u8 sent only when set.
    bool stdin_descriptor = false;

    [[nodiscard]] std::vector<std::byte> encode() const {
        PayloadWriter w;
        w.u8(static_cast<std::uint8_t>(kind)).str(program).strings(args).strings(env).str(working_dir).str(user);
        w.u8(tty ? 1 : 0).u16(rows).u16(cols).u64(timeout_ms).u32(stdout_window).u32(stderr_window).str(path);
        if (stdin_descriptor) w.u8(1);
        return w.take();
    }
    [[nodiscard]] static BoxliteResult<ExecRequest> decode(std::span<const std::byte> p) {
        PayloadReader r(p, "exec");
        ExecRequest m;
        const auto kind = r.u8("kind");
        m.program = r.str("program");
        m.args = r.strings("args");
        m.env = r.strings("env");
        m.working_dir = r.str("working_dir");
        m.user = r.str("user");
        m.tty = r.boolean("tty");
        m.rows = r.u16("rows");
        m.cols = r.u16("cols");
        m.timeout_ms = r.u64("timeout_ms");
        m.stdout_window = r.u32("stdout_window");
        m.stderr_window = r.u32("stderr_window");
        m.path = r.str("path");
        if (r.remaining() > 0) m.stdin_descriptor = r.boolean("stdin_descriptor");
        BOXLITE_TRY_VOID(r.finish());
        if (kind > 2)
            return fail(ErrorKind::Portal, "exec kind {} is unknown (allowed: 0 command, 1 copy-in, 2 copy-out)", kind);
        m.kind = static_cast<ExecKind>(kind);
        return m;
    }
};

struct Started {
    std::int32_t pid = 0;
    std::uint32_t stdin_window = kDefaultWindow;

    [[nodiscard]] std::vector<std::byte> encode() const { return PayloadWriter{}.i32(pid).u32(stdin_window).take(); }
    [[nodiscard]] static BoxliteResult<Started> decode(std::span<const std::byte> p) {
        PayloadReader r(p, "started");
        Started m;
        m.pid = r.i32("pid");
        m.stdin_window = r.u32("stdin_window");
        BOXLITE_TRY_VOID(r.finish());
        return m;
    }
};

enum class Channel : std::uint8_t { Stdin = 0, Stdout = 1, Stderr = 2 };

struct Credit {
    Channel channel = Channel::Stdout;
    std::uint32_t bytes = 0;

    [[nodiscard]] std::vector<std::byte> encode() const {
        return PayloadWriter{}.u8(static_cast<std::uint8_t>(channel)).u32(bytes).take();
    }
    [[nodiscard]] static BoxliteResult<Credit> decode(std::span<const std::byte> p) {
        PayloadReader r(p, "credit");
        const auto channel = r.u8("channel");
        Credit m;
        m.bytes = r.u32("bytes");
        BOXLITE_TRY_VOID(r.finish());
        if (channel > 2) return fail(ErrorKind::Portal, "credit for unknown channel {} (allowed: 0-2)", channel);
        m.channel = static_cast<Channel>(channel);
        return m;
    }
};

struct SignalRequest {
    std::int32_t signo = 0;

    [[nodiscard]] std::vector<std::byte> encode() const { return PayloadWriter{}.i32(signo).take(); }
    [[nodiscard]] static BoxliteResult<SignalRequest> decode(std::span<const std::byte> p) {
        PayloadReader r(p, "signal");
        SignalRequest m;
        m.signo = r.i32("signo");
        BOXLITE_TRY_VOID(r.finish());
        if (m.signo < 1 || m.signo > 64)
            return fail(ErrorKind::InvalidArgument, "signal {} is out of range 1-64", m.signo);
        return m;
    }
};

struct ResizeRequest {
    std::uint16_t rows = 24;
    std::uint16_t cols = 80;

    [[nodiscard]] std::vector<std::byte> encode() const { return PayloadWriter{}.u16(rows).u16(cols).take(); }
    [[nodiscard]] static BoxliteResult<ResizeRequest> decode(std::span<const std::byte> p) {
        PayloadReader r(p, "resize");
        ResizeRequest m;
        m.rows = r.u16("rows");
        m.cols = r.u16("cols");
        BOXLITE_TRY_VOID(r.finish());
        return m;
    }
};

/// The end of an execution. `code` as the reference's ExecResult: the exit status, or -N when
/// signal N killed it. `message` is non-empty when the agent itself failed the execution
/// (e.g. a copy whose tar was refused, or a timeout).
struct ExitStatus {
    std::int32_t code = 0;
    bool timed_out = false;
    std::string message;

    [[nodiscard]] std::vector<std::byte> encode() const {
        return PayloadWriter{}.i32(code).u8(timed_out ? 1 : 0).str(message).take();
    }
    [[nodiscard]] static BoxliteResult<ExitStatus> decode(std::span<const std::byte> p) {
        PayloadReader r(p, "exit");
        ExitStatus m;
        m.code = r.i32("code");
        m.timed_out = r.boolean("timed_out");
        m.message = r.str("message");
        BOXLITE_TRY_VOID(r.finish());
        return m;
    }
};

/// What the agent measures inside the box.
struct GuestMetrics {
    std::uint64_t memory_total_bytes = 0;
    std::uint64_t memory_available_bytes = 0;
    std::uint64_t cpu_time_ns = 0;    ///< user+system time of every process the agent started
    std::uint32_t process_count = 0;  ///< processes visible in the box
    std::uint64_t uptime_ms = 0;      ///< since the agent started
    std::uint64_t executions_started = 0;

    [[nodiscard]] std::vector<std::byte> encode() const {
        return PayloadWriter{}
            .u64(memory_total_bytes)
            .u64(memory_available_bytes)
            .u64(cpu_time_ns)
            .u32(process_count)
            .u64(uptime_ms)
            .u64(executions_started)
            .take();
    }
    [[nodiscard]] static BoxliteResult<GuestMetrics> decode(std::span<const std::byte> p) {
        PayloadReader r(p, "metrics");
        GuestMetrics m;
        m.memory_total_bytes = r.u64("memory_total_bytes");
        m.memory_available_bytes = r.u64("memory_available_bytes");
        m.cpu_time_ns = r.u64("cpu_time_ns");
        m.process_count = r.u32("process_count");
        m.uptime_ms = r.u64("uptime_ms");
        m.executions_started = r.u64("executions_started");
        BOXLITE_TRY_VOID(r.finish());
        return m;
    }
};

}  // namespace boxlite::protocol
