// The shared state behind BasicRuntime and its box handles (BasicBox): engine, transport,
// storage, options, and the per-box locks and counters. A runtime and every box handle it gives
// out hold a shared_ptr to one RuntimeCore, so a box handle stays usable after the runtime
// object that made it is gone.
//
// Concurrency: lifecycle operations on one box (start, stop, remove, implicit start on exec)
// are serialized by that box's mutex; operations on different boxes run in parallel. Storage
// calls go through `storage_mutex`, so any Storage works; engines and transports must accept
// calls for different boxes from several threads (every engine and transport in BoxLite does).
// Other processes share the storage only: state is re-read from storage at the start of every
// operation, never cached.
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/box_info.hpp>
#include <boxlite/box_metrics.hpp>
#include <boxlite/box_options.hpp>
#include <boxlite/box_state.hpp>
#include <boxlite/boxlite_options.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/detail/process.hpp>
#include <boxlite/error.hpp>
#include <boxlite/rootfs_provider.hpp>
#include <boxlite/runtime_metrics.hpp>
#include <boxlite/storage/home_layout.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace boxlite {

/// Tunables of a runtime beyond BoxliteOptions.
struct RuntimeSettings {
    /// Turns RootfsSpec::Image into a root filesystem (see rootfs_provider.hpp).
    ImageRootfsProvider image_provider = default_image_rootfs_provider();
    /// How long stop() lets a box shut down gracefully before killing it.
    std::chrono::milliseconds stop_timeout{10'000};
    /// How long connect_agent() waits for the guest agent to accept.
    std::chrono::milliseconds connect_timeout{30'000};
    /// The upper bound of BoxOptions::cpus (the host's CPU count by default).
    std::uint32_t host_cpus = host_cpu_count();
};

namespace detail {

/// Per-box counters kept by this process (BoxMetrics' counters and stage timings).
struct BoxCounters {
    std::atomic<std::uint64_t> commands_executed{0};
    std::atomic<std::uint64_t> exec_errors{0};
    std::atomic<std::uint64_t> bytes_sent{0};
    std::atomic<std::uint64_t> bytes_received{0};
    std::mutex timings_mutex;
    BoxMetrics timings;  // only the *_ms fields are used
};

template <Engine E, Transport T, Storage S>
class RuntimeCore {
public:
    using Clock = std::chrono::steady_clock;

    RuntimeCore(BoxliteOptions options, E engine, T transport, S storage, RuntimeSettings settings)
        : options_(std::move(options)),
          layout_(options_.home_dir),
          engine_(std::move(engine)),
          transport_(std::move(transport)),
          storage_(std::move(storage)),
          settings_(std::move(settings)) {}

    RuntimeCore(const RuntimeCore&) = delete;
    RuntimeCore& operator=(const RuntimeCore&) = delete;

    /// Boxes created with detach=false die with the runtime that started them.
    ~RuntimeCore() {
        std::set<BoxID> attached;
        {
            std::lock_guard lock(locks_mutex_);
            attached.swap(started_attached_);
        }
        for (const auto& id : attached) (void)stop(id);
    }

    [[nodiscard]] const BoxliteOptions& options() const noexcept { return options_; }
    [[nodiscard]] const HomeLayout& layout() const noexcept { return layout_; }
    [[nodiscard]] const RuntimeSettings& settings() const noexcept { return settings_; }
    E& engine() noexcept { return engine_; }
    T& transport() noexcept { return transport_; }
    S& storage() noexcept { return storage_; }

    // --- runtime operations -------------------------------------------------------------

    BoxliteResult<BoxRecord> create(const BoxOptions& box_options, std::optional<std::string> name) {
        // Everything is checked before anything is written: a rejected create leaves no trace.
        if (auto ok = validate_box_options(box_options, settings_.host_cpus); !ok) {
            ++boxes_failed_;
            return fail(ok.error());
        }
        if (name) {
            if (auto ok = validate_name(*name); !ok) {
                ++boxes_failed_;
                return fail(ok.error());
            }
        }
        BoxConfig config;
        config.name = std::move(name);
        config.options = box_options;
        config.engine = std::string(engine_.kind());
        // An image is pulled now, as `docker create` does, and pinned to the box: a start never
        // waits for the network, and a tag moved later does not change what the box runs.
        const auto t_image = Clock::now();
        const auto* image = config.options.rootfs.as_image();
        if (image != nullptr) {
            auto prepared = prepare_rootfs(config);
            if (!prepared) {
                ++boxes_failed_;
                return fail(prepared.error());
            }
        }
        const auto image_ms = ms_between(t_image, Clock::now());
        BoxState state;
        state.status = BoxStatus::Configured;
        auto inserted = with_storage([&](S& s) { return s.insert(config, state); });
        if (!inserted) {
            ++boxes_failed_;
            if (image != nullptr) release_image(config);
            return fail(inserted.error());
        }
        if (image != nullptr) {
            auto counters = counters_for(config.id);
            std::lock_guard lock(counters->timings_mutex);
            counters->timings.stage_image_prepare_ms = image_ms;
        }
        ++boxes_created_;
        return BoxRecord{std::move(config), std::move(state)};
    }

    /// By exact name, full id, or unique id prefix; the state is refreshed (a dead engine
    /// process makes a Running box Stopped).
    BoxliteResult<BoxRecord> lookup(std::string_view id_or_name) {
        BOXLITE_TRY(auto record, with_storage([&](S& s) { return s.lookup(id_or_name); }));
        return refresh(std::move(record));
    }

    BoxliteResult<BoxRecord> get(const BoxID& id) {
        BOXLITE_TRY(auto record, with_storage([&](S& s) { return s.get(id); }));
        return refresh(std::move(record));
    }

    BoxliteResult<std::vector<BoxInfo>> list_info() {
        BOXLITE_TRY(auto records, with_storage([](S& s) { return s.list(); }));
        std::vector<BoxInfo> out;
        out.reserve(records.size());
        for (auto& record : records) {
            BOXLITE_TRY(auto fresh, refresh(std::move(record)));
            out.push_back(BoxInfo::from(fresh.config, fresh.state));
        }
        return out;
    }

    BoxliteResult<void> remove(std::string_view id_or_name, bool force) {
        BOXLITE_TRY(auto found, with_storage([&](S& s) { return s.lookup(id_or_name); }));
        BOXLITE_TRY(auto box_lock, lock_box(found.config.id));
        return remove_locked(found.config.id, force);
    }

    BoxliteResult<RuntimeMetrics> metrics() {
        RuntimeMetrics m;
        m.boxes_created_total = boxes_created_.load();
        m.boxes_failed_total = boxes_failed_.load();
        m.total_commands_executed = commands_executed_.load();
        m.total_exec_errors = exec_errors_.load();
        BOXLITE_TRY(auto boxes, list_info());
        for (const auto& info : boxes) m.num_running_boxes += info.running() ? 1U : 0U;
        return m;
    }

    // --- box operations (BasicBox forwards here) ------------------------------------------

    BoxliteResult<void> start(const BoxID& id) {
        BOXLITE_TRY(auto box_lock, lock_box(id));
        return start_locked(id).map([](const EngineHandle&) {});
    }

    BoxliteResult<void> stop(const BoxID& id) {
        BOXLITE_TRY(auto box_lock, lock_box(id));
        BOXLITE_TRY(auto record, get(id));
        auto& state = record.state;
        switch (state.status) {
            case BoxStatus::Stopped:
                return {};  // idempotent, as `boxlite stop` on a stopped box
            case BoxStatus::Stopping:
                return fail(ErrorKind::InvalidState, "cannot stop box {}: it is already stopping", id);
            case BoxStatus::Unknown:
                return fail(ErrorKind::InvalidState,
                            "cannot stop box {} in unknown state (remove it with force=true)", id);
            case BoxStatus::Configured:
                BOXLITE_TRY_VOID(state.transition_to(BoxStatus::Stopped));
                BOXLITE_TRY_VOID(with_storage([&](S& s) { return s.update_state(id, state); }));
                break;
            case BoxStatus::Running: {
                const auto handle = state.handle.value_or(EngineHandle{});
                BOXLITE_TRY_VOID(state.transition_to(BoxStatus::Stopping));
                BOXLITE_TRY_VOID(with_storage([&](S& s) { return s.update_state(id, state); }));
                auto stopped = stop_engine(record.config, handle);
                if (!stopped) {
                    // The engine refused both stop and kill: we no longer know what runs.
                    (void)state.transition_to(BoxStatus::Unknown);
                    (void)with_storage([&](S& s) { return s.update_state(id, state); });
                    return fail(stopped.error().with_context(fmt::format("stopping box {}", id)));
                }
                BOXLITE_TRY_VOID(state.transition_to(BoxStatus::Stopped));
                state.handle.reset();
                BOXLITE_TRY_VOID(with_storage([&](S& s) { return s.update_state(id, state); }));
                break;
            }
        }
        {
            std::lock_guard lock(locks_mutex_);
            started_attached_.erase(id);
        }
        if (record.config.options.auto_remove) return remove_locked(id, false);
        return {};
    }

    BoxliteResult<BoxMetrics> box_metrics(const BoxID& id) {
        BOXLITE_TRY(auto record, get(id));
        auto counters = counters_for(id);
        BoxMetrics m;
        {
            std::lock_guard lock(counters->timings_mutex);
            m = counters->timings;
        }
        m.commands_executed_total = counters->commands_executed.load();
        m.exec_errors_total = counters->exec_errors.load();
        m.bytes_sent_total = counters->bytes_sent.load();
        m.bytes_received_total = counters->bytes_received.load();
        if (is_running(record.state.status) && record.state.handle && record.config.engine == engine_.kind()) {
            if (auto em = engine_.metrics(*record.state.handle)) {
                m.memory_bytes = em->memory_bytes;
                m.cpu_time_ns = em->cpu_time_ns;
                m.process_count = em->process_count;
            }
        }
        return m;
    }

    /// A running box's agent endpoint, starting the box first when it can run commands but is
    /// not running (Configured, Stopped).
    BoxliteResult<EngineHandle> ensure_running(const BoxID& id) {
        BOXLITE_TRY(auto box_lock, lock_box(id));
        return start_locked(id, /*for_exec=*/true);
    }

    BoxliteResult<typename T::stream_type> connect_agent(const BoxID& id) {
        BOXLITE_TRY(auto handle, ensure_running(id));
        auto stream = transport_.connect(handle.endpoint, settings_.connect_timeout);
        if (!stream) return fail(stream.error().with_context(fmt::format("connecting to the agent of box {}", id)));
        return stream;
    }

    void record_command(const BoxID& id, bool succeeded) {
        auto counters = counters_for(id);
        ++counters->commands_executed;
        ++commands_executed_;
        if (!succeeded) {
            ++counters->exec_errors;
            ++exec_errors_;
        }
    }

    void record_bytes(const BoxID& id, std::uint64_t sent, std::uint64_t received) {
        auto counters = counters_for(id);
        counters->bytes_sent += sent;
        counters->bytes_received += received;
    }

    /// Box names: 1..128 characters of [A-Za-z0-9_.-], starting with a letter or digit (as
    /// container names), so they are safe in paths, URLs and shell commands.
    static BoxliteResult<void> validate_name(std::string_view name) {
        constexpr std::size_t kMaxName = 128;
        auto ok_char = [](char c, bool first) {
            const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
            return alnum || (!first && (c == '_' || c == '.' || c == '-'));
        };
        bool valid = !name.empty() && name.size() <= kMaxName;
        for (std::size_t i = 0; valid && i < name.size(); ++i) valid = ok_char(name[i], i == 0);
        if (!valid) {
            return fail(ErrorKind::InvalidArgument,
                        "box name '{}' must be 1 to {} characters of [A-Za-z0-9_.-] starting with a letter or digit",
                        name, kMaxName);
        }
        return {};
    }

private:
    template <class F>
    auto with_storage(F&& f) {
        std::lock_guard lock(storage_mutex_);
        return std::forward<F>(f)(storage_);
    }

    /// Holds one box for a lifecycle operation: its in-process mutex (threads), then an flock on
    /// <home>/boxes/<id>/.lock (other processes sharing the home), so two processes never start
    /// or stop one box at once. Owns a reference so a removed box's mutex outlives its holder.
    class BoxLock {
    public:
        BoxLock(std::shared_ptr<std::mutex> mutex, std::unique_lock<std::mutex> held, int fd)
            : mutex_(std::move(mutex)), held_(std::move(held)), fd_(fd) {}
        BoxLock(BoxLock&& other) noexcept
            : mutex_(std::move(other.mutex_)), held_(std::move(other.held_)), fd_(std::exchange(other.fd_, -1)) {}
        BoxLock& operator=(BoxLock&&) = delete;
        BoxLock(const BoxLock&) = delete;
        BoxLock& operator=(const BoxLock&) = delete;
        ~BoxLock() {
            if (fd_ >= 0) ::close(fd_);  // releases the flock before the mutex (members unwind after)
        }

    private:
        std::shared_ptr<std::mutex> mutex_;
        std::unique_lock<std::mutex> held_;
        int fd_;
    };

    BoxliteResult<BoxLock> lock_box(const BoxID& id) {
        std::shared_ptr<std::mutex> mutex;
        {
            std::lock_guard lock(locks_mutex_);
            auto& slot = box_locks_[id];
            if (!slot) slot = std::make_shared<std::mutex>();
            mutex = slot;
        }
        std::unique_lock<std::mutex> held(*mutex);
        const auto dir = layout_.box_dir(id);
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        const auto path = dir / ".lock";
        const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("opening lock {}", path.string()), errno);
        while (::flock(fd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                const int saved = errno;
                ::close(fd);
                return fail_errno(ErrorKind::Storage, fmt::format("locking {}", path.string()), saved);
            }
        }
        return BoxLock(std::move(mutex), std::move(held), fd);
    }

    std::shared_ptr<BoxCounters> counters_for(const BoxID& id) {
        std::lock_guard lock(locks_mutex_);
        auto& slot = counters_[id];
        if (!slot) slot = std::make_shared<BoxCounters>();
        return slot;
    }

    bool handle_alive(const BoxConfig& config, const EngineHandle& handle) const {
        if (config.engine == engine_.kind()) return engine_.is_alive(handle);
        // Another engine's box (another process runs it): judge by its process identity.
        return process_alive(handle.pid, handle.pid_start_time);
    }

    /// A Running or Stopping box whose engine process is gone is Stopped: a dead shim is never
    /// Running. Persisted so every process sees the same.
    BoxliteResult<BoxRecord> refresh(BoxRecord record) {
        auto& state = record.state;
        if ((is_running(state.status) || is_transient(state.status)) &&
            (!state.handle || !handle_alive(record.config, *state.handle))) {
            BOXLITE_TRY_VOID(state.transition_to(BoxStatus::Stopped));
            state.handle.reset();
            auto updated = with_storage([&](S& s) { return s.update_state(record.config.id, state); });
            if (!updated && updated.error().kind() != ErrorKind::NotFound) return fail(updated.error());
        }
        return record;
    }

    BoxliteResult<void> stop_engine(const BoxConfig& config, const EngineHandle& handle) {
        if (config.engine != engine_.kind()) return kill_foreign(config, handle);
        auto stopped = engine_.stop(handle, settings_.stop_timeout);
        if (stopped) return {};
        auto killed = engine_.kill(handle);
        if (killed) return {};
        return stopped;
    }

    /// A box run by another engine kind: the best this runtime can do is end its process.
    BoxliteResult<void> kill_foreign(const BoxConfig& config, const EngineHandle& handle) {
        if (!process_alive(handle.pid, handle.pid_start_time)) return {};
        if (::kill(handle.pid, SIGKILL) != 0 && errno != ESRCH) {
            return fail_errno(ErrorKind::Engine,
                              fmt::format("killing pid {} of box {} (engine {})", handle.pid, config.id, config.engine),
                              errno);
        }
        return {};
    }

    BoxliteResult<EngineHandle> start_locked(const BoxID& id, bool for_exec = false) {
        const auto t0 = Clock::now();
        BOXLITE_TRY(auto record, get(id));
        auto& state = record.state;
        const auto& config = record.config;
        if (is_running(state.status) && state.handle) return *state.handle;
        if (!can_start(state.status)) {
            if (for_exec) {
                return fail(ErrorKind::InvalidState, "cannot execute on {} box {}", state.status, id);
            }
            return fail(ErrorKind::InvalidState, "cannot start box {}: it is {} (allowed from configured or stopped)",
                        id, state.status);
        }
        if (config.engine != engine_.kind()) {
            return fail(ErrorKind::UnsupportedEngine,
                        "box {} was created for the {} engine, but this runtime runs the {} engine", id,
                        config.engine, engine_.kind());
        }
        auto fail_start = [&](const BoxliteError& error) {
            ++boxes_failed_;
            return fail(error.with_context(fmt::format("starting box {}", id)));
        };
        if (auto ok = engine_.available(); !ok) return fail_start(ok.error());

        std::error_code ec;
        const auto box_dir = layout_.box_dir(id);
        std::filesystem::create_directories(box_dir, ec);
        if (ec) {
            return fail_start(BoxliteError(ErrorKind::Storage,
                                           fmt::format("creating {}: {}", box_dir.string(), ec.message())));
        }
        const auto t_fs = Clock::now();

        auto prepared = prepare_rootfs(config);
        if (!prepared) return fail_start(prepared.error());
        const auto t_image = Clock::now();

        EngineLaunch launch;
        launch.config = &config;
        launch.box_dir = box_dir;
        launch.rootfs = prepared->path;
        merge_launch_defaults(config.options, prepared->defaults, launch);
        const auto t_config = Clock::now();

        auto handle = engine_.start(launch);
        if (!handle) return fail_start(handle.error());
        const auto t_spawn = Clock::now();

        if (auto moved = state.transition_to(BoxStatus::Running); !moved) {
            (void)engine_.kill(*handle);
            return fail_start(moved.error());
        }
        state.handle = *handle;
        state.started_at = std::chrono::system_clock::now();
        if (auto saved = with_storage([&](S& s) { return s.update_state(id, state); }); !saved) {
            (void)engine_.kill(*handle);  // never leave a box running that storage does not know
            return fail_start(saved.error());
        }
        if (!config.options.detach) {
            std::lock_guard lock(locks_mutex_);
            started_attached_.insert(id);
        }
        const auto ms = [](auto a, auto b) { return ms_between(a, b); };
        auto counters = counters_for(id);
        std::lock_guard lock(counters->timings_mutex);
        auto& m = counters->timings;
        m.stage_filesystem_setup_ms = ms(t0, t_fs);
        m.stage_image_prepare_ms = ms(t_fs, t_image);
        m.stage_box_config_ms = ms(t_image, t_config);
        m.stage_box_spawn_ms = ms(t_config, t_spawn);
        m.guest_boot_duration_ms = ms(t_config, t_spawn);
        m.total_create_duration_ms = ms(t0, Clock::now());
        return *handle;
    }

    static std::uint64_t ms_between(Clock::time_point a, Clock::time_point b) {
        return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count());
    }

    BoxliteResult<PreparedRootfs> prepare_rootfs(const BoxConfig& config) {
        const auto kind = engine_.rootfs_kind();
        if (const auto* image = config.options.rootfs.as_image()) {
            if (!settings_.image_provider.prepare) {
                return fail(ErrorKind::Unsupported, "this runtime has no image provider, so image '{}' cannot be used",
                            image->reference);
            }
            return settings_.image_provider.prepare(*image, kind, options_, config.id);
        }
        const auto* path_spec = config.options.rootfs.as_path();
        if (path_spec == nullptr) return fail(ErrorKind::Internal, "box {} has no rootfs", config.id);
        const auto& dir = path_spec->path;
        std::error_code ec;
        if (!std::filesystem::is_directory(dir, ec)) {
            return fail(ErrorKind::Storage, "rootfs path {} of box {} is no longer a directory", dir.string(),
                        config.id);
        }
        if (kind != RootfsKind::Directory) {
            return fail(ErrorKind::Unsupported,
                        "the {} engine boots from a disk image; a rootfs path needs one built from it, "
                        "which this build cannot do (use an image reference)",
                        engine_.kind());
        }
        return PreparedRootfs{dir, {}, {}};
    }

    BoxliteResult<void> remove_locked(const BoxID& id, bool force) {
        BOXLITE_TRY(auto record, get(id));
        const auto status = record.state.status;
        if (!can_remove(status)) {
            if (!force) {
                return fail(ErrorKind::InvalidState,
                            "cannot remove {} box {} (stop it first, or remove with force=true)", status, id);
            }
            if (record.state.handle) {
                BoxliteResult<void> killed = record.config.engine == engine_.kind()
                                                 ? engine_.kill(*record.state.handle)
                                                 : kill_foreign(record.config, *record.state.handle);
                if (!killed) return fail(killed.error().with_context(fmt::format("removing box {}", id)));
            }
        }
        BOXLITE_TRY_VOID(with_storage([&](S& s) { return s.remove(id); }));
        release_image(record.config);
        std::error_code ec;
        std::filesystem::remove_all(layout_.box_dir(id), ec);  // best effort: the record is gone
        std::lock_guard lock(locks_mutex_);
        started_attached_.erase(id);
        counters_.erase(id);
        box_locks_.erase(id);
        return {};
    }

    /// Best effort: the box record is already gone, so a failure only leaves a stale pin, which
    /// the image store drops on a gc that is told the live boxes (`boxlite image prune`).
    void release_image(const BoxConfig& config) {
        if (config.options.rootfs.as_image() != nullptr && settings_.image_provider.release) {
            (void)settings_.image_provider.release(config.id, options_);
        }
    }

    BoxliteOptions options_;
    HomeLayout layout_;
    E engine_;
    T transport_;
    S storage_;
    RuntimeSettings settings_;

    std::mutex storage_mutex_;
    std::mutex locks_mutex_;
    std::map<BoxID, std::shared_ptr<std::mutex>> box_locks_;
    std::map<BoxID, std::shared_ptr<BoxCounters>> counters_;
    std::set<BoxID> started_attached_;

    std::atomic<std::uint64_t> boxes_created_{0};
    std::atomic<std::uint64_t> boxes_failed_{0};
    std::atomic<std::uint64_t> commands_executed_{0};
    std::atomic<std::uint64_t> exec_errors_{0};
};

}  // namespace detail
}  // namespace boxlite
