// boxlite-shim's kvm mode: one micro-VM per process, configured by a JSON document read from a
// pipe (lib/engine/kvm/launch.hpp). Reports "ok <pid>" or "error <message>" on the ready fd.
#pragma once

namespace boxlite::shim {

/// Reads the config from `config_fd` to EOF, builds and runs the VM; returns the exit code
/// (0 after a guest power-off/reset or a host stop, 1 on any failure). `watchdog_fd` (or -1)
/// is the read end of a pipe nobody writes to: its EOF (detach=false: the process that started
/// the box is gone) stops the VM.
int run_kvm_mode(int config_fd, int ready_fd, int watchdog_fd = -1);

/// The command line of the kvm mode: `[--config-fd N] [--ready-fd N] [--watchdog-fd N]`
/// (config defaults to stdin). Used by boxlite-shim-kvm's main and by `boxlite-shim kvm ...`.
int run_kvm_shim(int argc, char** argv);

}  // namespace boxlite::shim
