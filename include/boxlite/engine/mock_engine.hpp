// MockEngine: a compile-time Engine for unit tests and benchmarks. Nothing runs: start()
// records the launch and hands back a handle whose endpoint is "<scheme>:<box id>", so a
// test can put a PipeTransport listener (scheme "pipe") behind it and play the guest agent.
//
// Copies share their state, so a test keeps one copy and inspects what the runtime's copy saw.
// Faults are injected explicitly (fail_next_start, set_unavailable, crash), never at random.
#pragma once

#include <boxlite/detail/process.hpp>
#include <boxlite/engine.hpp>
#include <boxlite/error.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite {

class MockEngine {
public:
    struct Options {
        RootfsKind rootfs_kind = RootfsKind::Directory;
        /// Endpoints are "<endpoint_scheme>:<box id>"; "pipe" pairs with PipeTransport.
        std::string endpoint_scheme = "mock";
    };

    MockEngine() : MockEngine(Options{}) {}
    explicit MockEngine(Options options) : state_(std::make_shared<State>()) { state_->options = std::move(options); }

    [[nodiscard]] std::string_view kind() const noexcept { return "mock"; }
    [[nodiscard]] RootfsKind rootfs_kind() const noexcept { return state_->options.rootfs_kind; }

    [[nodiscard]] BoxliteResult<void> available() const {
        std::lock_guard lock(state_->mutex);
        if (state_->unavailable) return fail(*state_->unavailable);
        return {};
    }

    BoxliteResult<EngineHandle> start(const EngineLaunch& launch) {
        std::lock_guard lock(state_->mutex);
        if (state_->unavailable) return fail(*state_->unavailable);
        if (state_->fail_next_start) {
            auto error = std::move(*state_->fail_next_start);
            state_->fail_next_start.reset();
            return fail(std::move(error));
        }
        if (launch.config == nullptr) return fail(ErrorKind::InvalidArgument, "mock engine: launch without a config");
        EngineHandle handle;
        handle.pid = detail::current_process_id();
        handle.pid_start_time = ++state_->generation;  // distinguishes restarts of one box
        handle.endpoint = fmt::format("{}:{}", state_->options.endpoint_scheme, launch.config->id);
        state_->alive.insert(key(handle));
        state_->launches.push_back(Launch{launch.config->id, launch.box_dir, launch.rootfs, launch.init_command});
        ++state_->starts;
        return handle;
    }

    BoxliteResult<void> stop(const EngineHandle& handle, std::chrono::milliseconds /*timeout*/) {
        std::lock_guard lock(state_->mutex);
        state_->alive.erase(key(handle));
        ++state_->stops;
        return {};
    }

    BoxliteResult<void> kill(const EngineHandle& handle) {
        std::lock_guard lock(state_->mutex);
        state_->alive.erase(key(handle));
        ++state_->kills;
        return {};
    }

    [[nodiscard]] bool is_alive(const EngineHandle& handle) const {
        std::lock_guard lock(state_->mutex);
        return state_->alive.contains(key(handle));
    }

    BoxliteResult<EngineMetrics> metrics(const EngineHandle& handle) {
        std::lock_guard lock(state_->mutex);
        if (!state_->alive.contains(key(handle))) {
            return fail(ErrorKind::Engine, "mock engine: {} is not running", handle.endpoint);
        }
        return EngineMetrics{64ULL << 20, 1'000'000, 1};
    }

    // --- test controls -------------------------------------------------------------------

    struct Launch {
        BoxID id;
        std::filesystem::path box_dir;
        std::filesystem::path rootfs;
        std::vector<std::string> init_command;
    };

    /// The next start() fails with `error` (once).
    void fail_next_start(BoxliteError error) {
        std::lock_guard lock(state_->mutex);
        state_->fail_next_start = std::move(error);
    }
    /// available() and start() fail with `why` until cleared with nullopt.
    void set_unavailable(std::optional<BoxliteError> why) {
        std::lock_guard lock(state_->mutex);
        state_->unavailable = std::move(why);
    }
    /// The box's engine "dies": is_alive() turns false, as after a shim crash.
    void crash(const EngineHandle& handle) {
        std::lock_guard lock(state_->mutex);
        state_->alive.erase(key(handle));
    }

    [[nodiscard]] std::size_t starts() const {
        std::lock_guard lock(state_->mutex);
        return state_->starts;
    }
    [[nodiscard]] std::size_t stops() const {
        std::lock_guard lock(state_->mutex);
        return state_->stops;
    }
    [[nodiscard]] std::size_t kills() const {
        std::lock_guard lock(state_->mutex);
        return state_->kills;
    }
    [[nodiscard]] std::size_t running() const {
        std::lock_guard lock(state_->mutex);
        return state_->alive.size();
    }
    [[nodiscard]] std::vector<Launch> launches() const {
        std::lock_guard lock(state_->mutex);
        return state_->launches;
    }

private:
    static std::string key(const EngineHandle& h) { return fmt::format("{}#{}", h.endpoint, h.pid_start_time); }

    struct State {
        mutable std::mutex mutex;
        Options options;
        std::set<std::string> alive;
        std::vector<Launch> launches;
        std::optional<BoxliteError> fail_next_start;
        std::optional<BoxliteError> unavailable;
        std::uint64_t generation = 0;
        std::size_t starts = 0, stops = 0, kills = 0;
    };
    std::shared_ptr<State> state_;
};

static_assert(Engine<MockEngine>);

}  // namespace boxlite
