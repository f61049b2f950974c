// boxlite-shim entry point: parses the options shared by every mode and runs the mode.
#include "shim.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>

namespace {

using boxlite::shim::ShimOptions;

bool parse_u64(const char* text, std::uint64_t& out) {
    char* end = nullptr;
    errno = 0;
    const auto v = std::strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') return false;
    out = v;
    return true;
}

int usage(const std::string& problem) {
    std::fprintf(
        stderr,
        "boxlite-shim: %s\n"
        "usage: boxlite-shim kvm|qemu [--config-fd N] [--ready-fd N] [--watchdog-fd N]   (VM config: JSON on the "
        "config fd)\n"
        "       boxlite-shim namespace --box-id ID --hostname NAME --box-dir DIR --rootfs DIR --agent PATH\n"
        "         --socket PATH [--ready-fd N] [--watchdog-fd N] [--memory BYTES] [--cpus N] [--pids N]\n"
        "         [--nofile N] [--fsize BYTES] [--cpu-time SECONDS] [--log-max-bytes N] [--disk-bytes N] [--volume HOST --volume-target GUEST [--volume-mode ro|rw]]... [--env K=V]... [--workdir DIR] [--user USER]\n"
        "         [--capabilities box|all] [--seccomp on|off] [--upper volatile|durable]\n",
        problem.c_str());
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) return usage("missing mode");
    ShimOptions o;
    o.mode = argv[1];
    // kvm and qemu modes are boxlite-shim-kvm and boxlite-shim-qemu, installed beside this
    // executable: this one links no VMM and no device model.
    if (o.mode == "kvm" || o.mode == "qemu") {
        const std::string helper = "boxlite-shim-" + o.mode;
        std::error_code ec;
        const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
        if (ec) return usage("cannot find " + helper + ": /proc/self/exe: " + ec.message());
        const auto path = (self.parent_path() / helper).string();
        argv[1] = argv[0];
        ::execv(path.c_str(), argv + 1);
        std::fprintf(stderr, "boxlite-shim: cannot execute %s: %s\n", path.c_str(), std::strerror(errno));
        return 127;
    }
    for (int i = 2; i < argc; ++i) {
        const std::string flag = argv[i];
        if (i + 1 >= argc) return usage("option " + flag + " needs a value");
        const char* value = argv[++i];
        std::uint64_t number = 0;
        const bool numeric = parse_u64(value, number);
        auto need_number = [&]() {
            return numeric ? 0 : usage("option " + flag + " needs a number, got '" + value + "'");
        };
        if (flag == "--box-id") o.box_id = value;
        else if (flag == "--hostname") o.hostname = value;
        else if (flag == "--box-dir") o.box_dir = value;
        else if (flag == "--rootfs") o.rootfs = value;
        else if (flag == "--agent") o.agent = value;
        else if (flag == "--socket") o.socket = value;
        else if (flag == "--env") o.env.emplace_back(value);
        else if (flag == "--workdir") o.workdir = value;
        else if (flag == "--user") o.user = value;
        else if (flag == "--capabilities") {
            const std::string v = value;
            if (v != "box" && v != "all") return usage("--capabilities must be 'box' or 'all', got '" + v + "'");
            o.all_capabilities = v == "all";
        } else if (flag == "--ready-ack") {
            const std::string v = value;
            if (v != "on" && v != "off") return usage("--ready-ack must be 'on' or 'off', got '" + v + "'");
            o.ready_ack = v == "on";
        } else if (flag == "--upper") {
            const std::string v = value;
            if (v != "volatile" && v != "durable")
                return usage("--upper must be 'volatile' or 'durable', got '" + v + "'");
            o.volatile_upper = v == "volatile";
        } else if (flag == "--seccomp") {
            const std::string v = value;
            if (v != "on" && v != "off") return usage("--seccomp must be 'on' or 'off', got '" + v + "'");
            o.seccomp = v == "on";
        } else if (flag == "--network") {
            const std::string v = value;
            if (v != "on" && v != "off") return usage("--network must be 'on' or 'off', got '" + v + "'");
            o.network = v == "on";
        } else if (flag == "--allow-net") {
            o.allow_net.emplace_back(value);
        } else if (flag == "--passt") {
            o.passt = value;
        } else if (flag == "--dns") {
            o.dns = value;
        } else if (flag == "--publish-tcp" || flag == "--publish-udp") {
            o.publish.push_back({flag == "--publish-udp", value});
        } else if (flag == "--volume") {
            o.volumes.push_back({value, "", false});
        } else if (flag == "--volume-target" || flag == "--volume-mode") {
            if (o.volumes.empty()) return usage(flag + " must follow --volume HOST");
            if (flag == "--volume-target") {
                o.volumes.back().guest_path = value;
            } else {
                const std::string v = value;
                if (v != "ro" && v != "rw") return usage("--volume-mode must be 'ro' or 'rw', got '" + v + "'");
                o.volumes.back().read_only = v == "ro";
            }
        } else {
            if (int rc = need_number(); rc != 0) return rc;
            if (flag == "--ready-fd") o.ready_fd = static_cast<int>(number);
            else if (flag == "--watchdog-fd") o.watchdog_fd = static_cast<int>(number);
            else if (flag == "--lock-fd") {
                o.lock_fd = static_cast<int>(number);
                ::fcntl(o.lock_fd, F_SETFD, FD_CLOEXEC);  // never inherited by the box's processes
            } else if (flag == "--memory") o.memory_bytes = number;
            else if (flag == "--cpus") o.cpus = static_cast<std::uint32_t>(number);
            else if (flag == "--pids") o.pids = number;
            else if (flag == "--nofile") o.nofile = number;
            else if (flag == "--fsize") o.fsize = number;
            else if (flag == "--cpu-time") o.cpu_time = number;
            else if (flag == "--log-max-bytes") o.log_max_bytes = number;
            else if (flag == "--disk-bytes") o.disk_bytes = number;
            else return usage("unknown option " + flag);
        }
    }
    if (o.mode == "namespace") return boxlite::shim::run_namespace_mode(o);
    return usage("unknown mode '" + o.mode + "' (available: namespace, kvm, qemu)");
}
