// boxlite-shim's kvm mode: one micro-VM per process, configured by a JSON document read from a
// pipe (lib/vmm/shim_config.hpp). Reports "ok <pid>" or "error <message>" on the ready fd.
#pragma once

namespace boxlite::shim {

/// Reads the config from `config_fd` to EOF, builds and runs the VM; returns the exit code
/// (0 after a guest power-off/reset or a host stop, 1 on any failure).
int run_kvm_mode(int config_fd, int ready_fd);

}  // namespace boxlite::shim
