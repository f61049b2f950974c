// boxlite-shim-kvm: the kvm mode of boxlite-shim as its own executable.
//
//   boxlite-shim-kvm [--config-fd N] [--ready-fd N] [--watchdog-fd N]
//
// The config (JSON, lib/engine/kvm/launch.hpp) is read from --config-fd (default 0, stdin) to
// EOF; one line goes to --ready-fd: "ok <pid>" once the vCPUs run, or "error <message>". EOF on
// --watchdog-fd stops the VM (detach=false).
#include "kvm_mode.hpp"

int main(int argc, char** argv) { return boxlite::shim::run_kvm_shim(argc - 1, argv + 1); }
