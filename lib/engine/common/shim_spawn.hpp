// Starting a box's shim, the same for every engine: fork + exec (base/spawn.hpp) with
//   fd 0  /dev/null, fd 1 and 2  the shim's log (appended),
//   then, in this order and only when used: the config (a socket the JSON document is written
//   to, then EOF), the ready socket (one line back: "ok ..." or "error <message>"), the read end
//   of the detach=false watchdog, then each of `extra_fds`,
// each announced to the shim as --config-fd N, --ready-fd N, --watchdog-fd N, --<name> N after
// `args`.
#pragma once

#include <boxlite/error.hpp>

#include "base/fd.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boxlite::engine {

struct ShimProcessSpawn {
    std::filesystem::path shim;
    std::vector<std::string> args;      ///< after argv[0]; the fd options are appended
    std::optional<std::string> config;  ///< written to the shim's config fd, then EOF
    std::filesystem::path log;          ///< the shim's stdout and stderr (appended, created `log_mode`)
    unsigned log_mode = 0640;
    int watchdog_read_fd = -1;  ///< taken over and closed here
    /// Descriptors the shim shares (not taken over): each is announced as "--<name> N".
    std::vector<std::pair<std::string, int>> extra_fds;
    /// Keep our end of the ready socket open after the ready line (ShimProcess::ready_channel),
    /// for an answer the shim waits for.
    bool keep_ready_channel = false;
    /// Double fork: the shim is not a child of the caller and reports its own pid.
    bool detach = false;
    std::chrono::milliseconds ready_timeout{30000};
};

struct ShimProcess {
    std::int32_t pid = 0;              ///< the shim, a child of the caller; 0 when detached
    std::optional<std::string> ready;  ///< its ready line (no newline); nullopt: EOF or silence
    base::OwnedFd ready_channel;       ///< our end of the ready socket, with keep_ready_channel
};

/// Starts the shim and waits for its ready line (or EOF, or the timeout). It does not judge the
/// line: the engine does, and kills a child that did not say "ok".
[[nodiscard]] BoxliteResult<ShimProcess> spawn_shim_process(const ShimProcessSpawn& spawn);

/// One line from `fd` within `timeout` (at most 4 KiB, without its newline); nullopt on EOF or
/// timeout.
[[nodiscard]] std::optional<std::string> read_line(int fd, std::chrono::milliseconds timeout);

}  // namespace boxlite::engine
