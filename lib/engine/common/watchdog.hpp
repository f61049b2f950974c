// The detach=false watchdog, the same for every engine: the shim watches the read end of a pipe
// whose write end only the creating process holds. The write ends are O_CLOEXEC and never
// written: their only job is to close when this process dies (even by SIGKILL), which tells the
// shim to stop the box.
#pragma once

#include <boxlite/error.hpp>

#include <cstdint>
#include <map>
#include <mutex>

namespace boxlite::engine {

/// A fresh watchdog pipe: `read_end` goes to the shim, `write_end` to register() once the
/// shim's pid is known. Both O_CLOEXEC.
struct WatchdogPipe {
    int read_end = -1;
    int write_end = -1;
};
[[nodiscard]] BoxliteResult<WatchdogPipe> make_watchdog_pipe();

/// Write ends of the watchdog pipes, keyed by shim pid.
class WatchdogRegistry {
public:
    static WatchdogRegistry& instance();
    /// Takes `write_end` over (closing one registered before for the same pid).
    void add(std::int32_t pid, int write_end);
    /// Closes the write end of `pid`'s watchdog, if any: the box is gone or stopping.
    void release(std::int32_t pid);

private:
    std::mutex mutex_;
    std::map<std::int32_t, int> fds_;
};

}  // namespace boxlite::engine
