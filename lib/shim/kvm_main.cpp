// boxlite-shim-kvm: the kvm mode of boxlite-shim as its own executable.
//
//   boxlite-shim-kvm [--config-fd N] [--ready-fd N]
//
// The config (JSON, lib/vmm/shim_config.hpp) is read from --config-fd (default 0, stdin) to
// EOF; one line goes to --ready-fd: "ok <pid>" once the vCPUs run, or "error <message>".
#include "kvm_mode.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
    int config_fd = 0;
    int ready_fd = -1;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (i + 1 >= argc) {
            std::fprintf(stderr, "boxlite-shim-kvm: option %s needs a value\n", flag.c_str());
            return 2;
        }
        char* end = nullptr;
        const long value = std::strtol(argv[++i], &end, 10);
        if (*end != '\0' || value < 0) {
            std::fprintf(stderr, "boxlite-shim-kvm: option %s needs a file descriptor number\n", flag.c_str());
            return 2;
        }
        if (flag == "--config-fd") {
            config_fd = static_cast<int>(value);
        } else if (flag == "--ready-fd") {
            ready_fd = static_cast<int>(value);
        } else {
            std::fprintf(stderr, "boxlite-shim-kvm: unknown option %s (allowed: --config-fd, --ready-fd)\n",
                         flag.c_str());
            return 2;
        }
    }
    return boxlite::shim::run_kvm_mode(config_fd, ready_fd);
}
