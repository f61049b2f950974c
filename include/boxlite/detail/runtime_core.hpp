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
//
// A box keeps the engine it was created with (BoxConfig::engine): every operation on it goes to
// engine_for(config.engine). The runtime's own engine (BoxliteOptions::engine) is the engine of
// new boxes; boxes of another kind are driven by an engine of their kind when E is a
// PerKindEngine (engine.hpp: AnyEngine, so BoxliteRuntime), made once, on first need, and kept.
// Otherwise such a box can be listed, inspected and removed, but not started.
//
// Looking at a box (get, lookup, list_info, info, metrics) never takes its lock, yet may find
// its engine dead and record it Stopped: that write is a compare-and-swap
// (Storage::update_state_if), so it never overwrites what a concurrent start() or stop() wrote.
// A box found dead with auto_remove is then removed, under its lock, as stop() would have done.
//
// Surviving kill -9: a stop or remove holds the box's lock (in-process mutex + flock) from the
// moment it writes Stopping or Removing until it is done, and the kernel drops an flock with
// its holder. So whoever takes the lock and still finds Stopping or Removing knows the process
// that wrote it died half-way, and finishes its work (load_locked). A remove deletes the row
// last: a Removing row is what tells the next process (a look at the box, or opening the home)
// that the processes, folder and image pins of that box are still to be removed.
#pragma once

#include <boxlite/box_config.hpp>
#include <boxlite/box_info.hpp>
#include <boxlite/box_metrics.hpp>
#include <boxlite/box_options.hpp>
#include <boxlite/box_state.hpp>
#include <boxlite/boxlite_options.hpp>
#include <boxlite/concepts.hpp>
#include <boxlite/detail/lock_file.hpp>
#include <boxlite/detail/process.hpp>
#include <boxlite/error.hpp>
#include <boxlite/rootfs_provider.hpp>
#include <boxlite/runtime_metrics.hpp>
#include <boxlite/storage/home_layout.hpp>

#include <algorithm>
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
    /// Boxes this runtime starts outlive it even when their BoxOptions::detach is false. For
    /// processes that start boxes on someone else's behalf (the CLI's `start`, `exec`): a box
    /// made by a foreground `boxlite run` (detach=false: it dies with that CLI) may be started
    /// again later by a `boxlite start` that exits at once.
    bool start_detached = false;
};

namespace detail {

/// Per-box counters kept by this process (BoxMetrics' counters; the stage timings are stored
/// with the box's state).
struct BoxCounters {
    std::atomic<std::uint64_t> commands_executed{0};
    std::atomic<std::uint64_t> exec_errors{0};
    std::atomic<std::uint64_t> bytes_sent{0};
    std::atomic<std::uint64_t> bytes_received{0};
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
          settings_(std::move(settings)) {
        finish_interrupted_removals();
    }

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
    /// The engine of new boxes (BoxliteOptions::engine).
    E& engine() noexcept { return engine_; }
    T& transport() noexcept { return transport_; }
    S& storage() noexcept { return storage_; }

    // --- runtime operations -------------------------------------------------------------

    BoxliteResult<BoxRecord> create(const BoxOptions& box_options, std::optional<std::string> name) {
        auto reject = [this](BoxliteError error) {
            ++boxes_failed_;
            return fail(std::move(error));
        };
        // Everything is checked before anything is written: a rejected create leaves no trace.
        if (auto ok = validate_box_options(box_options, settings_.host_cpus); !ok) return reject(ok.error());
        if (name) {
            if (auto ok = validate_name(*name); !ok) return reject(ok.error());
            // Before the image is pulled and pinned, so a taken name costs nothing. insert()
            // checks again: another thread or process may take the name meanwhile.
            if (auto ok = check_name_free(*name); !ok) return reject(ok.error());
        }
        BoxConfig config;
        config.name = std::move(name);
        config.options = box_options;
        config.engine = std::string(engine_.kind());
        // An image is pulled now, as `docker create` does, and pinned to the box: a start never
        // waits for the network, and a tag moved later does not change what the box runs.
        const auto* image = config.options.rootfs.as_image();
        BoxState state;
        state.status = BoxStatus::Configured;
        auto& stages = state.stages;
        if (image != nullptr) {
            const auto t0 = Clock::now();
            auto prepared = prepare_rootfs(config, engine_, {});
            if (!prepared) return reject(prepared.error());
            const std::chrono::nanoseconds elapsed = Clock::now() - t0;
            const auto build = prepared->build_time.value_or(std::chrono::nanoseconds::zero());
            // A provider that does not time its pull: all of the call but the build was the pull.
            stages.image_prepare_ms = to_ms(prepared->pull_time.value_or(elapsed - std::min(build, elapsed)));
            if (prepared->build_time) stages.guest_rootfs_ms = to_ms(*prepared->build_time);
        }
        auto inserted = with_storage([&](S& s) { return s.insert(config, state); });
        if (!inserted) {
            // Best effort: a stale pin is dropped by a gc told the live boxes (`images prune`).
            if (image != nullptr) (void)release_image(config);
            return reject(inserted.error());
        }
        ++boxes_created_;
        return BoxRecord{std::move(config), std::move(state)};
    }

    /// By full id, then exact name, then unique id prefix; the state is refreshed (a dead engine
    /// process makes a Running box Stopped; a dead auto_remove box, or one left Removing by a
    /// remover that died, is removed: NotFound).
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
            auto fresh = refresh(std::move(record));
            if (!fresh) {
                // Removed since list() (by another thread or process, or by auto_remove just now).
                if (fresh.error().kind() == ErrorKind::NotFound) continue;
                return fail(fresh.error());
            }
            out.push_back(BoxInfo::from(fresh->config, fresh->state));
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
        return start_locked(id, box_lock).map([](const EngineHandle&) {});
    }

    /// With auto_remove the box is removed once stopped — also when it was found stopped
    /// already (its engine died).
    BoxliteResult<void> stop(const BoxID& id) {
        BOXLITE_TRY(auto box_lock, lock_box(id));
        BOXLITE_TRY(auto record, load_locked(id));
        auto& state = record.state;
        switch (state.status) {
            case BoxStatus::Stopped: break;  // idempotent, as `boxlite stop` on a stopped box
            case BoxStatus::Stopping:
            case BoxStatus::Removing:
                // load_locked() finished what a dead stopper or remover left: never seen here.
                return fail(ErrorKind::Internal, "box {} is still {} under its lock", id, state.status);
            case BoxStatus::Unknown:
                return fail(ErrorKind::InvalidState, "cannot stop box {} in unknown state (remove it with force=true)",
                            id);
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
                if (record.config.options.auto_remove) {
                    // Stopped and Removing in one write (`run --rm`): the removal follows at once,
                    // and a Removing row is what a remover killed from here on leaves for the next
                    // process to finish, as remove_locked() would have written it.
                    BOXLITE_TRY_VOID(state.transition_to(BoxStatus::Removing));
                    BOXLITE_TRY_VOID(with_storage([&](S& s) { return s.update_state(id, state); }));
                    {
                        std::lock_guard lock(locks_mutex_);
                        started_attached_.erase(id);
                    }
                    return finish_remove_locked(record);
                }
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
        const auto& stages = record.state.stages;
        m.total_create_duration_ms = stages.total_create_ms;
        m.guest_boot_duration_ms = stages.guest_boot_ms;
        m.stage_filesystem_setup_ms = stages.filesystem_setup_ms;
        m.stage_image_prepare_ms = stages.image_prepare_ms;
        m.stage_guest_rootfs_ms = stages.guest_rootfs_ms;
        m.stage_box_config_ms = stages.box_config_ms;
        m.stage_box_spawn_ms = stages.box_spawn_ms;
        m.stage_container_init_ms = stages.container_init_ms;
        m.stage_guest_assets_ms = stages.guest_assets_ms;
        m.stage_box_disk_ms = stages.box_disk_ms;
        m.commands_executed_total = counters->commands_executed.load();
        m.exec_errors_total = counters->exec_errors.load();
        m.bytes_sent_total = counters->bytes_sent.load();
        m.bytes_received_total = counters->bytes_received.load();
        if (is_running(record.state.status) && record.state.handle) {
            auto engine = engine_for(record.config.engine);
            if (auto em = engine ? (*engine)->metrics(*record.state.handle) : fail(engine.error())) {
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
        return start_locked(id, box_lock, /*for_exec=*/true);
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
    /// AlreadyExists when a box is named `name`; InvalidArgument when `name` could be taken for
    /// a box id: a valid full id, or a prefix of an existing box's id (its short id, say), since
    /// `rm`, `exec` or `cp` by that id would then be ambiguous. Through lookup(), so a dead
    /// auto_remove box that held the name is removed first and its name is free again.
    BoxliteResult<void> check_name_free(const std::string& name) {
        if (BoxID::parse(name)) {
            return fail(ErrorKind::InvalidArgument,
                        "box name '{}' is a valid box id; a name must not pass for an id (choose another name)", name);
        }
        auto existing = lookup(name);
        if (existing) {
            if (existing->config.name == name) {
                return fail(ErrorKind::AlreadyExists, "box with name '{}' already exists ({})", name,
                            existing->config.id);
            }
            return fail(ErrorKind::InvalidArgument,
                        "box name '{}' is a prefix of the id of box {}; a name must not pass for an id (choose "
                        "another name)",
                        name, existing->config.id);
        }
        const auto kind = existing.error().kind();
        if (kind == ErrorKind::NotFound) return {};
        if (kind == ErrorKind::InvalidArgument) {  // an ambiguous prefix: it is the start of several ids
            return fail(ErrorKind::InvalidArgument,
                        "box name '{}' is a prefix of the ids of several boxes ({}); a name must not pass for an id "
                        "(choose another name)",
                        name, existing.error().message());
        }
        return fail(existing.error());
    }

    /// Finishes the removals that processes killed half-way left, as opening a home does: boxes
    /// still Removing, and the folder holding only the lock file that a remove killed between
    /// deleting the row and the lock file leaves. Best effort: a box whose lock is held is being
    /// removed (or looked at) right now.
    void finish_interrupted_removals() {
        auto records = with_storage([](S& s) { return s.list(); });
        if (!records) return;
        std::set<std::string> known;
        for (auto& record : *records) {
            known.insert(record.config.id.str());
            if (is_removing(record.state.status)) (void)refresh(std::move(record));
        }
        std::error_code ec;
        for (std::filesystem::directory_iterator it(layout_.boxes_dir(), ec), end; !ec && it != end; it.increment(ec)) {
            const auto name = it->path().filename().string();
            auto id = BoxID::parse(name);
            if (!id || known.contains(name) || !only_a_lock_file(it->path())) continue;
            auto held = LockFile::acquire(it->path() / ".lock", /*wait=*/false);
            if (!held || !*held) continue;
            if (auto exists = require_exists(*id); exists) continue;  // created since list()
            remove_box_folder(it->path());
        }
    }

    static bool only_a_lock_file(const std::filesystem::path& dir) {
        std::error_code ec;
        for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
            if (it->path().filename() != ".lock") return false;
        }
        return !ec;
    }

    /// The lock file and the (then empty) folder of a box whose row is gone.
    static void remove_box_folder(const std::filesystem::path& dir) {
        std::error_code ec;
        std::filesystem::remove(dir / ".lock", ec);
        std::filesystem::remove(dir, ec);  // only when empty
    }

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
        BoxLock(std::shared_ptr<std::mutex> mutex, std::unique_lock<std::mutex> held, LockFile file)
            : mutex_(std::move(mutex)), held_(std::move(held)), file_(std::move(file)) {}
        BoxLock(BoxLock&&) noexcept = default;
        BoxLock& operator=(BoxLock&&) = delete;
        BoxLock(const BoxLock&) = delete;
        BoxLock& operator=(const BoxLock&) = delete;
        ~BoxLock() = default;

        /// The flock'ed file's descriptor (see EngineLaunch::box_lock_fd).
        [[nodiscard]] int file_fd() const noexcept { return file_.fd(); }

    private:
        std::shared_ptr<std::mutex> mutex_;
        std::unique_lock<std::mutex> held_;
        LockFile file_;  // declared last: the flock is released before the mutex
    };

    /// The box's lock, waiting for it. NotFound (and nothing created) when the box does not
    /// exist, also when it was removed while this call waited for the lock.
    BoxliteResult<BoxLock> lock_box(const BoxID& id) {
        BOXLITE_TRY(auto lock, acquire_box_lock(id, /*wait=*/true));
        if (!lock) return fail(ErrorKind::Internal, "waiting for the lock of box {} returned without it", id);
        return std::move(*lock);
    }

    /// The box's lock if nobody holds it now (nullopt when a thread or process does).
    BoxliteResult<std::optional<BoxLock>> try_lock_box(const BoxID& id) { return acquire_box_lock(id, /*wait=*/false); }

    BoxliteResult<std::optional<BoxLock>> acquire_box_lock(const BoxID& id, bool wait) {
        std::shared_ptr<std::mutex> mutex;
        {
            std::lock_guard lock(locks_mutex_);
            auto& slot = box_locks_[id];
            if (!slot) slot = std::make_shared<std::mutex>();
            mutex = slot;
        }
        std::unique_lock<std::mutex> held(*mutex, std::defer_lock);
        if (wait) held.lock();
        else if (!held.try_lock()) return std::nullopt;
        // The folder and lock file are only made for a box that exists, so a start or stop on
        // a stale handle, or the loser of a remove race, leaves no empty boxes/<id>/ behind.
        if (auto exists = require_exists(id); !exists) {
            forget_lock(id, mutex);
            return fail(exists.error());
        }
        const auto dir = layout_.box_dir(id);
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) return fail(ErrorKind::Storage, "creating {}: {}", dir.string(), ec.message());
        const auto path = dir / ".lock";
        BOXLITE_TRY(auto file, LockFile::acquire(path, wait));
        if (!file) return std::nullopt;
        // Another process may have removed the box (folder included) while we waited for its
        // lock; then the folder and lock file are ours, made after the removal: take them back.
        if (auto exists = require_exists(id); !exists) {
            file.reset();
            std::filesystem::remove(path, ec);
            std::filesystem::remove(dir, ec);  // only when empty
            forget_lock(id, mutex);
            return fail(exists.error());
        }
        return std::optional<BoxLock>(BoxLock(std::move(mutex), std::move(held), std::move(*file)));
    }

    BoxliteResult<void> require_exists(const BoxID& id) {
        return with_storage([&](S& s) { return s.get(id); }).map([](const BoxRecord&) {});
    }

    /// Drops the per-box mutex of a box that is gone (the holder keeps its own reference).
    void forget_lock(const BoxID& id, const std::shared_ptr<std::mutex>& mutex) {
        std::lock_guard lock(locks_mutex_);
        if (auto it = box_locks_.find(id); it != box_locks_.end() && it->second == mutex) box_locks_.erase(it);
    }

    std::shared_ptr<BoxCounters> counters_for(const BoxID& id) {
        std::lock_guard lock(locks_mutex_);
        auto& slot = counters_[id];
        if (!slot) slot = std::make_shared<BoxCounters>();
        return slot;
    }

    /// The engine that drives boxes of `kind`: this runtime's own engine when the kinds match;
    /// else, when E is a PerKindEngine, the one engine_for(kind) made, once, on first need
    /// (a failure is not kept: the next call asks again); else UnsupportedEngine.
    BoxliteResult<E*> engine_for(std::string_view kind) {
        // An engine that can tell it is not of `kind` is not made to find out (AnyEngine::deferred).
        bool may_be = true;
        if constexpr (requires { engine_.may_be(kind); }) may_be = engine_.may_be(kind);
        if (may_be && kind == engine_.kind()) return &engine_;
        if constexpr (PerKindEngine<E>) {
            std::lock_guard lock(engines_mutex_);
            if (auto it = engines_.find(kind); it != engines_.end()) return it->second.get();
            BOXLITE_TRY(auto made, engine_.engine_for(kind));
            auto& slot = engines_[std::string(kind)];
            slot = std::make_unique<E>(std::move(made));
            return slot.get();
        } else {
            return fail(ErrorKind::UnsupportedEngine, "this runtime runs the {} engine only, not {}", engine_.kind(),
                        kind);
        }
    }

    bool handle_alive(const BoxConfig& config, const EngineHandle& handle) {
        if (auto engine = engine_for(config.engine)) return (*engine)->is_alive(handle);
        // An engine this runtime cannot make (another process runs the box): judge by its
        // process identity.
        return process_alive(handle.pid, handle.pid_start_time);
    }

    /// Running or Stopping, but its engine process is gone.
    bool engine_gone(const BoxRecord& record) {
        const auto& state = record.state;
        return (is_running(state.status) || state.status == BoxStatus::Stopping) &&
               (!state.handle || !handle_alive(record.config, *state.handle));
    }

    /// A box that has stopped and is to be removed when it stops.
    static bool should_reap(const BoxRecord& record) {
        return record.config.options.auto_remove && is_stopped(record.state.status);
    }

    /// A Running or Stopping box whose engine process is gone is Stopped: a dead shim is never
    /// Running. Persisted so every process sees the same, by compare-and-swap: when the state
    /// changed since it was read (a start or stop, which hold the box lock, or another
    /// reader), the new state is judged instead and nothing is overwritten.
    BoxliteResult<BoxRecord> settle(BoxRecord record) {
        constexpr int kAttempts = 16;  // each retry means someone else changed the state
        for (int attempt = 0; attempt < kAttempts && engine_gone(record); ++attempt) {
            BoxState stopped = record.state;
            BOXLITE_TRY_VOID(stopped.transition_to(BoxStatus::Stopped));
            stopped.handle.reset();
            const auto& id = record.config.id;
            BOXLITE_TRY(const bool swapped,
                        with_storage([&](S& s) { return s.update_state_if(id, record.state, stopped); }));
            if (swapped) {
                record.state = std::move(stopped);
                return record;
            }
            BOXLITE_TRY(record, with_storage([&](S& s) { return s.get(id); }));
        }
        return record;
    }

    /// The current record of a box whose lock this thread holds. Every stop and remove holds
    /// the lock throughout, so Stopping or Removing found here was left by one that died: the
    /// stop is finished (the box is Stopped), the removal is finished (NotFound).
    BoxliteResult<BoxRecord> load_locked(const BoxID& id) {
        BOXLITE_TRY(auto record, with_storage([&](S& s) { return s.get(id); }));
        BOXLITE_TRY(record, settle(std::move(record)));
        if (is_removing(record.state.status)) {
            BOXLITE_TRY_VOID(finish_remove_locked(record));
            return fail(ErrorKind::NotFound, "{} (its removal was interrupted, and is finished now)", id);
        }
        if (record.state.status == BoxStatus::Stopping) {
            BOXLITE_TRY(record, finish_stop_locked(std::move(record)));
        }
        return record;
    }

    /// A stop whose stopper died: it asked the box to stop already, so the engine is killed now.
    BoxliteResult<BoxRecord> finish_stop_locked(BoxRecord record) {
        const auto& id = record.config.id;
        auto& state = record.state;
        if (state.handle) {
            if (auto killed = kill_engine(record.config, *state.handle); !killed) {
                (void)state.transition_to(BoxStatus::Unknown);
                (void)with_storage([&](S& s) { return s.update_state(id, state); });
                return fail(killed.error().with_context(fmt::format("finishing the interrupted stop of box {}", id)));
            }
        }
        BOXLITE_TRY_VOID(state.transition_to(BoxStatus::Stopped));
        state.handle.reset();
        BOXLITE_TRY_VOID(with_storage([&](S& s) { return s.update_state(id, state); }));
        return record;
    }

    /// What a look (get, lookup, list) reports: the settled record, or NotFound when the box had
    /// stopped with auto_remove and is removed now. A box left Stopping or Removing by a process
    /// that died is finished first (load_locked). Both take the box lock without waiting: when
    /// someone holds it, they decide (a start runs the box again, a stop or remove in progress
    /// finishes), and the box is reported as it is.
    BoxliteResult<BoxRecord> refresh(BoxRecord record) {
        BOXLITE_TRY(record, settle(std::move(record)));
        if (!is_transient(record.state.status) && !should_reap(record)) return record;
        const auto id = record.config.id;
        BOXLITE_TRY(auto box_lock, try_lock_box(id));
        if (!box_lock) return record;
        BOXLITE_TRY(auto current, load_locked(id));
        if (!should_reap(current)) return current;
        BOXLITE_TRY_VOID(remove_locked(id, false));
        return fail(ErrorKind::NotFound, "{} (it stopped, and auto_remove removed it)", id);
    }

    BoxliteResult<void> stop_engine(const BoxConfig& config, const EngineHandle& handle) {
        auto engine = engine_for(config.engine);
        if (!engine) return kill_unknown_engine(config, handle);
        auto stopped = (*engine)->stop(handle, settings_.stop_timeout);
        if (stopped) return {};
        auto killed = (*engine)->kill(handle);
        if (killed) return {};
        return stopped;
    }

    BoxliteResult<void> kill_engine(const BoxConfig& config, const EngineHandle& handle) {
        auto engine = engine_for(config.engine);
        if (!engine) return kill_unknown_engine(config, handle);
        return (*engine)->kill(handle);
    }

    /// A box whose engine this runtime cannot make: the best it can do is end its process.
    static BoxliteResult<void> kill_unknown_engine(const BoxConfig& config, const EngineHandle& handle) {
        return kill_process(handle.pid, handle.pid_start_time).map_error([&](const BoxliteError& error) {
            return error.with_context(fmt::format("box {} (engine {})", config.id, config.engine));
        });
    }

    BoxliteResult<EngineHandle> start_locked(const BoxID& id, const BoxLock& box_lock, bool for_exec = false) {
        const auto t0 = Clock::now();
        BOXLITE_TRY(auto record, load_locked(id));
        auto& state = record.state;
        const auto& config = record.config;
        if (is_running(state.status) && state.handle) return *state.handle;
        if (should_reap(record)) {
            // It stopped (its engine died) and was to be removed then: it is gone, as after stop().
            BOXLITE_TRY_VOID(remove_locked(id, false));
            return fail(ErrorKind::NotFound, "{} (it stopped, and auto_remove removed it)", id);
        }
        if (!can_start(state.status)) {
            if (for_exec) {
                return fail(ErrorKind::InvalidState, "cannot execute on {} box {}", state.status, id);
            }
            return fail(ErrorKind::InvalidState, "cannot start box {}: it is {} (allowed from configured or stopped)",
                        id, state.status);
        }
        auto fail_start = [&](const BoxliteError& error) {
            ++boxes_failed_;
            return fail(error.with_context(fmt::format("starting box {}", id)));
        };
        auto box_engine = engine_for(config.engine);
        if (!box_engine) {
            if constexpr (!PerKindEngine<E>) {
                return fail(ErrorKind::UnsupportedEngine,
                            "box {} was created for the {} engine, but this runtime runs the {} engine", id,
                            config.engine, engine_.kind());
            }
            return fail_start(box_engine.error());  // the reason that engine cannot run here
        }
        E& engine = **box_engine;
        if (auto ok = engine.available(); !ok) return fail_start(ok.error());

        const auto t_fs = Clock::now();
        std::error_code ec;
        const auto box_dir = layout_.box_dir(id);
        std::filesystem::create_directories(box_dir, ec);
        if (ec) {
            return fail_start(
                BoxliteError(ErrorKind::Storage, fmt::format("creating {}: {}", box_dir.string(), ec.message())));
        }
        const auto t_config = Clock::now();

        // The box's pinned image: no pull; a build only when the cached tree or disk is gone.
        auto prepared = prepare_rootfs(config, engine, box_dir);
        if (!prepared) return fail_start(prepared.error());
        // A box that must die with its creator dies with this process, unless this runtime starts
        // boxes for others (RuntimeSettings::start_detached).
        const bool attached = !config.options.detach && !settings_.start_detached;
        BoxConfig launched_config;
        if (!config.options.detach && !attached) {
            launched_config = config;
            launched_config.options.detach = true;
        }
        EngineLaunch launch;
        launch.config = attached || config.options.detach ? &config : &launched_config;
        launch.box_dir = box_dir;
        launch.rootfs = prepared->path;
        launch.kernel = options_.kernel;
        merge_launch_defaults(config.options, prepared->defaults, launch);
        EngineStartTimings engine_timings;
        launch.timings = &engine_timings;
        const auto t_spawn = Clock::now();

        // Each stage is timed where it happens; create-time stages (the pull, the first build)
        // stay unless this start redid them. They are stored with the state, so that another
        // process (inspect, serve) reports them too, in the same write as Running (one state
        // write per start): `t_ready` is when the box was recorded, that is when the engine
        // reported it up (the namespace engine records before its acknowledgement to the shim;
        // the others after start() returned, with their timings filled in).
        const auto stage_figures = [&](const BoxState& from, Clock::time_point t_ready) {
            const auto build = prepared->build_time.value_or(std::chrono::nanoseconds::zero());
            const std::chrono::nanoseconds config_time = t_spawn - t_config;
            BoxStageTimings m = from.stages;
            m.filesystem_setup_ms = to_ms(t_config - t_fs);
            if (prepared->build_time) m.guest_rootfs_ms = to_ms(build);
            m.box_config_ms = to_ms(config_time - std::min(build, config_time));
            m.box_spawn_ms = to_ms(t_ready - t_spawn);
            m.guest_boot_ms = optional_ms(engine_timings.guest_boot);
            m.container_init_ms = optional_ms(engine_timings.container_init);
            m.guest_assets_ms = optional_ms(engine_timings.guest_assets);
            m.box_disk_ms = optional_ms(engine_timings.disk);
            m.total_create_ms = to_ms(t_ready - t0);
            return m;
        };

        // Recorded Running before the engine lets the box stay (where the engine supports it):
        // a start killed at any point leaves no box running that storage does not know.
        bool recorded = false;
        auto record_running = [&](const EngineHandle& started) -> BoxliteResult<void> {
            BoxState running = state;
            BOXLITE_TRY_VOID(running.transition_to(BoxStatus::Running));
            running.handle = started;
            running.started_at = std::chrono::system_clock::now();
            running.stages = stage_figures(state, Clock::now());
            BOXLITE_TRY_VOID(with_storage([&](S& s) { return s.update_state(id, running); }));
            state = std::move(running);
            recorded = true;
            return {};
        };
        launch.record_started = record_running;
        launch.box_lock_fd = box_lock.file_fd();
        launch.log_max_bytes = options_.log_max_bytes;
        auto handle = engine.start(launch);
        if (!handle) {
            if (recorded) {  // the engine ended the box after it was recorded
                (void)state.transition_to(BoxStatus::Stopped);
                state.handle.reset();
                (void)with_storage([&](S& s) { return s.update_state(id, state); });
            }
            return fail_start(handle.error());
        }

        if (!recorded) {
            if (auto saved = record_running(*handle); !saved) {
                (void)engine.kill(*handle);  // never leave a box running that storage does not know
                return fail_start(saved.error());
            }
        }
        if (attached) {
            std::lock_guard lock(locks_mutex_);
            started_attached_.insert(id);
        }
        return *handle;
    }

    template <class Rep, class Period>
    static std::uint64_t to_ms(std::chrono::duration<Rep, Period> d) {
        const auto count = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
        return count < 0 ? 0 : static_cast<std::uint64_t>(count);
    }
    static std::optional<std::uint64_t> optional_ms(const std::optional<std::chrono::nanoseconds>& d) {
        if (!d) return std::nullopt;
        return to_ms(*d);
    }

    /// The box's root filesystem in the form `engine` (the box's) boots from. A rootfs directory
    /// for a disk-booting engine becomes the box's own `<box_dir>/rootfs.ext4`, built at its first
    /// start and kept until rm (its disk overlay sits on it).
    BoxliteResult<PreparedRootfs> prepare_rootfs(const BoxConfig& config, const E& engine,
                                                 const std::filesystem::path& box_dir) {
        const auto kind = engine.rootfs_kind();
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
            if (box_dir.empty())
                return fail(ErrorKind::Internal, "box {}: no box folder for its rootfs disk", config.id);
            const auto t0 = std::chrono::steady_clock::now();
            auto disk = image::directory_disk(dir, box_dir / "rootfs.ext4");
            if (!disk)
                return fail(disk.error().with_context(fmt::format("box {} ({} engine)", config.id, engine.kind())));
            PreparedRootfs prepared{disk->first, {}, {}, {}, {}};
            if (disk->second) prepared.build_time = std::chrono::steady_clock::now() - t0;
            return prepared;
        }
        return PreparedRootfs{dir, {}, {}, {}, {}};
    }

    BoxliteResult<void> remove_locked(const BoxID& id, bool force) {
        {
            // Removing already (its remover died, or could not finish): this remove finishes it.
            BOXLITE_TRY(auto stored, with_storage([&](S& s) { return s.get(id); }));
            if (is_removing(stored.state.status)) return finish_remove_locked(stored);
        }
        BOXLITE_TRY(auto record, load_locked(id));
        const auto status = record.state.status;
        if (!can_remove(status) && !force) {
            return fail(ErrorKind::InvalidState, "cannot remove {} box {} (stop it first, or remove with force=true)",
                        status, id);
        }
        // Marked first, the row deleted last: a remove killed anywhere in between leaves a
        // Removing row, and the next process that sees the box finishes the removal.
        BOXLITE_TRY_VOID(record.state.transition_to(BoxStatus::Removing));
        BOXLITE_TRY_VOID(with_storage([&](S& s) { return s.update_state(id, record.state); }));
        return finish_remove_locked(record);
    }

    /// The removal of a Removing box whose lock this thread holds: its processes, its image
    /// pins, its folder, then its row. Every step may have been done already (by a remover that
    /// died after it).
    BoxliteResult<void> finish_remove_locked(const BoxRecord& record) {
        const auto& id = record.config.id;
        if (record.state.handle) {
            auto killed = kill_engine(record.config, *record.state.handle);
            if (!killed) return fail(killed.error().with_context(fmt::format("removing box {}", id)));
        }
        // A pin left behind would keep `images rm` refusing the image: the row (still Removing)
        // stays until the pin is gone, and the next remove or look tries again.
        if (auto released = release_image(record.config); !released) {
            return fail(released.error().with_context(fmt::format("removing box {}: releasing its image", id)));
        }
        // The folder but its lock file, then the row, then the lock file: while the row exists,
        // anyone waiting for the box's lock waits on this very file, and once they have it they
        // find the box gone (or Removing, and finish it) and take their lock file back.
        const auto dir = layout_.box_dir(id);
        std::error_code ec;
        for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
            if (it->path().filename() == ".lock") continue;
            std::error_code removal;
            std::filesystem::remove_all(it->path(), removal);
            if (removal) {
                return fail(ErrorKind::Storage, "removing box {}: removing {}: {}", id, it->path().string(),
                            removal.message());
            }
        }
        // An auto-remove box's delete need not survive a power loss (RemoveSync).
        const auto sync = record.config.options.auto_remove ? RemoveSync::Relaxed : RemoveSync::Durable;
        if (auto removed = with_storage([&](S& s) { return s.remove(id, sync); });
            !removed && removed.error().kind() != ErrorKind::NotFound) {
            return fail(removed.error());
        }
        remove_box_folder(dir);
        std::lock_guard lock(locks_mutex_);
        started_attached_.erase(id);
        counters_.erase(id);
        box_locks_.erase(id);
        return {};
    }

    /// Drops the box's pin on its image (idempotent).
    BoxliteResult<void> release_image(const BoxConfig& config) {
        if (config.options.rootfs.as_image() != nullptr && settings_.image_provider.release) {
            return settings_.image_provider.release(config.id, options_);
        }
        return {};
    }

    BoxliteOptions options_;
    HomeLayout layout_;
    E engine_;
    std::mutex engines_mutex_;
    std::map<std::string, std::unique_ptr<E>, std::less<>> engines_;  // other kinds (PerKindEngine)
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
