// Booting a qemu box (issue 20's benchmark items), under QEMU TCG on this machine (its /dev/kvm
// cannot run a 64-bit guest):
//
//   boot create_to_first_exec  ours: runtime.create() + start() + the first exec's output (`echo`)
//                              of a busybox box on the qemu engine; peer: a bare QEMU boot of the
//                              same kernel and initramfs with the same machine, memory and kernel
//                              command line, to an init (bare_init.c, rdinit=) that prints a marker
//                              on the console — timed until the marker arrives. The bare argv is
//                              our own QEMU's, read from /proc while the check run's box runs, with
//                              our devices (vhost-user vsock/blk/net) left out. Sides alternate.
//   boot guest time            the guest's own clock (CLOCK_BOOTTIME) when our agent listens (its
//                              console line) and when the bare init runs, and BoxMetrics' stages.
//   boot idle memory           per idle box, excluding guest RAM (the memfd both map): the shim's
//                              PSS and RSS, and QEMU's own PSS; guest RAM touched so far.
#include <boxlite/boxlite.hpp>

#include "harness.hpp"
#include "support/support.hpp"

#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.hpp"
#include "base/spawn.hpp"

using namespace boxlite;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::string slurp(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<std::string> proc_cmdline(pid_t pid) {
    const auto raw = slurp(fmt::format("/proc/{}/cmdline", pid));
    std::vector<std::string> argv;
    std::string current;
    for (char c : raw) {
        if (c == '\0') {
            argv.push_back(current);
            current.clear();
        } else {
            current.push_back(c);
        }
    }
    return argv;
}

/// The QEMU process whose command line names box `id` (boxlite.box_id=<id>), or 0.
pid_t find_qemu(const std::string& id) {
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
        const auto argv = proc_cmdline(std::stoi(name));
        if (argv.empty() || argv[0].find("qemu-system") == std::string::npos) continue;
        for (const auto& a : argv) {
            if (a.find("boxlite.box_id=" + id) != std::string::npos) return std::stoi(name);
        }
    }
    return 0;
}

pid_t parent_of(pid_t pid) {
    std::istringstream status(slurp(fmt::format("/proc/{}/status", pid)));
    for (std::string line; std::getline(status, line);) {
        if (line.starts_with("PPid:")) return std::atoi(line.c_str() + 5);
    }
    return 0;
}

struct Memory {
    double pss_kib = 0;        ///< outside guest RAM
    double rss_kib = 0;        ///< outside guest RAM
    double guest_rss_kib = 0;  ///< guest RAM (the memfd mapping) resident
};

/// From /proc/<pid>/smaps: guest RAM is the shared memfd ("/memfd:mem"), everything else is the
/// process's own.
Memory memory_of(pid_t pid) {
    Memory m;
    std::istringstream smaps(slurp(fmt::format("/proc/{}/smaps", pid)));
    bool guest = false;
    for (std::string line; std::getline(smaps, line);) {
        // A mapping's header starts with its range, "<lowercase hex>-<lowercase hex> ".
        const auto space = line.find(' ');
        const auto range = line.substr(0, space);
        if (space != std::string::npos && range.find('-') != std::string::npos &&
            range.find_first_not_of("0123456789abcdef-") == std::string::npos) {
            guest = line.find("memfd:") != std::string::npos;
            continue;
        }
        const bool pss = line.starts_with("Pss:");
        const bool rss = line.starts_with("Rss:");
        if (!pss && !rss) continue;
        const double kib = std::atof(line.c_str() + 4);
        if (guest) {
            if (rss) m.guest_rss_kib += kib;
        } else {
            (pss ? m.pss_kib : m.rss_kib) += kib;
        }
    }
    return m;
}

/// The guest's clock (ms) on the agent's console line `what` (its first one), or -1.
long long agent_line_guest_ms(const std::string& console, const std::string& what) {
    const std::regex line(R"(boxlite-agent: \[(\d+) ms\] )" + what);
    std::smatch m;
    if (!std::regex_search(console, m, line)) return -1;
    return std::stoll(m[1].str());
}

struct Fixture {
    bench::TempHome home;
    std::optional<BoxliteRuntime> runtime;
    std::optional<fs::path> rootfs;
    std::string why_not;

    Fixture() {
        if (::geteuid() != 0) {
            why_not = "needs root";
            return;
        }
        rootfs = test::busybox_rootfs();
        if (!rootfs) {
            why_not = "busybox-static missing";
            return;
        }
        if (const char* build = std::getenv("BOXLITE_BENCH_BUILD_DIR")) {
            ::setenv("BOXLITE_AGENT", (fs::path(build) / "bin/boxlite-agent").c_str(), 0);
            ::setenv("BOXLITE_SHIM_QEMU", (fs::path(build) / "bin/boxlite-shim-qemu").c_str(), 0);
        }
        BoxliteOptions options;
        options.home_dir = home.path();
        options.engine = EngineKind::Qemu;
        auto rt = open_runtime(options);
        if (!rt || !rt->engine().available()) {
            why_not = rt ? rt->engine().available().error().to_string() : rt.error().to_string();
            return;
        }
        runtime.emplace(std::move(*rt));
    }
};

/// What one run of ours saw (besides its time).
struct OursRun {
    std::string id;
    BoxMetrics metrics;
    long long guest_ready_ms = -1;
    long long guest_init_ms = -1;                     ///< our init's first console line until it serves (guest clock)
    double create_ms = 0, start_ms = 0, exec_ms = 0;  ///< the host's split of the timed span
    double second_exec_ms = 0;                        ///< an `echo` after it (not timed): warm
};

/// create + start + first exec of a fresh box; `inspect` runs while it is up (before removal).
std::string run_ours(Fixture& f, double& ns, OursRun& seen, const std::function<void(const LiteBox&)>& inspect = {}) {
    BoxOptions o;
    o.rootfs = RootfsSpec::path(*f.rootfs);
    const auto start = Clock::now();
    auto ms_since = [](Clock::time_point t) {
        return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
    };
    auto box = f.runtime->create(o);
    if (!box) return box.error().to_string();
    seen.create_ms = ms_since(start);
    std::string why;
    const auto t_start = Clock::now();
    auto started = box->start();
    seen.start_ms = ms_since(t_start);
    const auto t_exec = Clock::now();
    if (!started) {
        why = started.error().to_string();
    } else if (auto out = box->run(BoxCommand("echo").args({"first"})); !out) {
        why = out.error().to_string();
    } else if (out->stdout_text != "first\n") {
        why = "unexpected output: " + out->stdout_text;
    }
    seen.exec_ms = ms_since(t_exec);
    ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
    if (why.empty()) {  // outside the timed span: what the first exec paid for being first
        const auto t_second = Clock::now();
        if (auto again = box->run(BoxCommand("echo").args({"second"})); again && again->stdout_text == "second\n")
            seen.second_exec_ms = ms_since(t_second);
    }
    seen.id = box->id().str();
    if (why.empty()) {
        if (auto m = box->metrics()) seen.metrics = *m;
        const auto console = slurp(f.home.path() / "boxes" / seen.id / "console.log");
        seen.guest_ready_ms = agent_line_guest_ms(console, "listening on vsock port");
        if (const auto first = agent_line_guest_ms(console, "VM boot:"); first >= 0 && seen.guest_ready_ms >= 0)
            seen.guest_init_ms = seen.guest_ready_ms - first;
        if (inspect) inspect(*box);
    }
    (void)f.runtime->remove(seen.id, true);
    return why;
}

/// Our QEMU's argv without our devices, booting `initrd` to rdinit=/bare-init.
std::vector<std::string> bare_argv(const std::vector<std::string>& ours, const fs::path& initrd) {
    std::vector<std::string> argv;
    for (std::size_t i = 0; i < ours.size(); ++i) {
        const auto& a = ours[i];
        if ((a == "-chardev" || a == "-device" || a == "-netdev") && i + 1 < ours.size()) {
            ++i;
            continue;
        }
        argv.push_back(a);
        if (i + 1 >= ours.size()) continue;
        if (a == "-initrd") {
            argv.push_back(initrd.string());
            ++i;
        } else if (a == "-append") {
            argv.push_back(ours[i + 1] + " rdinit=/bare-init");
            ++i;
        }
    }
    return argv;
}

/// Our initramfs with a second newc archive appended that holds /bare-init.
std::string make_bare_initrd(std::string bytes, const fs::path& dir, fs::path& out) {
    const fs::path staging = dir / "bare";
    fs::create_directories(staging);
    fs::copy_file(BOXLITE_BARE_INIT, staging / "bare-init", fs::copy_options::overwrite_existing);
    out = dir / "bare-initrd.img";
    bytes.resize((bytes.size() + 511) / 512 * 512, '\0');  // archives start 4-byte aligned
    std::ofstream(out, std::ios::binary) << bytes;
    test::shell("cd '" + staging.string() + "' && echo bare-init | cpio -o -H newc --quiet >> '" + out.string() + "'");
    return {};
}

/// One bare boot: QEMU started until the marker arrives on its console (then it powers off).
std::string run_bare(const std::vector<std::string>& argv, double& ns, long long& guest_ms) {
    int pipe[2];
    if (::pipe2(pipe, O_CLOEXEC) != 0) return "pipe failed";
    base::OwnedFd read_end(pipe[0]), write_end(pipe[1]);
    base::OwnedFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    base::SpawnOptions spawn;
    spawn.argv = argv;
    spawn.fds = {null.get(), write_end.get(), write_end.get()};
    spawn.kill_with_parent = true;
    const auto start = Clock::now();
    auto pid = base::spawn(spawn);
    if (!pid) return pid.error().to_string();
    write_end.reset();
    std::string text;
    std::string why = "no marker; console tail: ";
    char buffer[4096];
    static const std::regex marker(R"(BARE-INIT-READY (\d+) ms)");
    for (;;) {
        pollfd p{read_end.get(), POLLIN, 0};
        if (::poll(&p, 1, 120000) <= 0) break;  // a hang guard, not a timing bound
        const auto n = ::read(read_end.get(), buffer, sizeof buffer);
        if (n <= 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
        std::smatch m;
        if (std::regex_search(text, m, marker)) {
            ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
            guest_ms = std::stoll(m[1].str());
            why.clear();
            break;
        }
    }
    ::kill(*pid, SIGKILL);
    ::waitpid(*pid, nullptr, 0);
    if (!why.empty()) why += text.substr(text.size() > 800 ? text.size() - 800 : 0);
    return why;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void comparisons() {
    const std::string name = "boot create_to_first_exec (qemu engine, TCG) vs bare QEMU boot to init";
    if (!bench::selected("boot")) return;
    Fixture f;
    if (!f.runtime) return bench::report_no_ratio(name, f.why_not);

    // The check run: our QEMU's argv and the idle memory, read while the box is up.
    std::vector<std::string> qemu_argv;
    std::string our_initrd;  // its bytes: the box's initramfs goes with the box
    Memory shim_memory, qemu_memory;
    OursRun check;
    double ignored = 0;
    auto inspect = [&](const LiteBox& box) {
        const pid_t qemu = find_qemu(box.id().str());
        if (qemu == 0) return;
        qemu_argv = proc_cmdline(qemu);
        if (auto at = std::find(qemu_argv.begin(), qemu_argv.end(), "-initrd");
            at != qemu_argv.end() && at + 1 != qemu_argv.end())
            our_initrd = slurp(*(at + 1));
        std::this_thread::sleep_for(std::chrono::seconds(3));  // idle
        qemu_memory = memory_of(qemu);
        if (const pid_t shim = parent_of(qemu); shim > 1) shim_memory = memory_of(shim);
        // Where the guest's init spent its time: the agent's console lines carry the guest clock.
        std::istringstream console(slurp(f.home.path() / "boxes" / box.id().str() / "console.log"));
        for (std::string line; std::getline(console, line);) {
            if (line.starts_with("boxlite-agent: [")) fmt::print("boot check run console: {}\n", line);
        }
    };
    if (auto why = run_ours(f, ignored, check, inspect); !why.empty())
        return bench::report_no_ratio(name, "ours failed its check run: " + why);
    if (qemu_argv.empty()) return bench::report_no_ratio(name, "could not find our QEMU process in /proc");
    fmt::print(
        "boot idle memory (qemu engine, one busybox box, guest RAM excluded): shim PSS {:.2f} MiB (RSS "
        "{:.2f} MiB); QEMU's own PSS {:.2f} MiB (RSS {:.2f} MiB); guest RAM touched {:.2f} MiB\n",
        shim_memory.pss_kib / 1024, shim_memory.rss_kib / 1024, qemu_memory.pss_kib / 1024, qemu_memory.rss_kib / 1024,
        qemu_memory.guest_rss_kib / 1024);

    if (our_initrd.empty()) return bench::report_no_ratio(name, "could not read our QEMU's -initrd");
    bench::TempHome scratch;
    fs::path bare_initrd;
    if (auto why = make_bare_initrd(our_initrd, scratch.path(), bare_initrd); !why.empty())
        return bench::report_no_ratio(name, why);
    const auto argv = bare_argv(qemu_argv, bare_initrd);
    if (const char* keep = std::getenv("BOXLITE_BENCH_BOOT_KEEP")) {  // for experiments by hand
        std::error_code ec;
        fs::copy_file(bare_initrd, fs::path(keep) / "bare-initrd.img", fs::copy_options::overwrite_existing, ec);
        if (auto k = std::find(argv.begin(), argv.end(), "-kernel"); k != argv.end() && k + 1 != argv.end())
            fs::copy_file(*(k + 1), fs::path(keep) / "vmlinux", fs::copy_options::overwrite_existing, ec);
    }

    std::vector<double> ours_guest_ms, bare_guest_ms, spawn_ms, boot_ms, assets_ms, disk_ms, rootfs_ms;
    std::vector<double> create_ms, start_ms, exec_ms, second_exec_ms, init_ms;
    auto pairs = bench::measure_interleaved_timed(
        bench::peer_runs(7),
        [&](double& ns) {
            OursRun seen;
            auto why = run_ours(f, ns, seen);
            if (why.empty()) {
                ours_guest_ms.push_back(static_cast<double>(seen.guest_ready_ms));
                const auto& m = seen.metrics;
                spawn_ms.push_back(static_cast<double>(m.stage_box_spawn_ms.value_or(0)));
                boot_ms.push_back(static_cast<double>(m.guest_boot_duration_ms.value_or(0)));
                assets_ms.push_back(static_cast<double>(m.stage_guest_assets_ms.value_or(0)));
                disk_ms.push_back(static_cast<double>(m.stage_box_disk_ms.value_or(0)));
                rootfs_ms.push_back(static_cast<double>(m.stage_guest_rootfs_ms.value_or(0)));
                create_ms.push_back(seen.create_ms);
                start_ms.push_back(seen.start_ms);
                exec_ms.push_back(seen.exec_ms);
                second_exec_ms.push_back(seen.second_exec_ms);
                init_ms.push_back(static_cast<double>(seen.guest_init_ms));
            }
            return why;
        },
        [&](double& ns) {
            long long guest = -1;
            auto why = run_bare(argv, ns, guest);
            if (why.empty()) bare_guest_ms.push_back(static_cast<double>(guest));
            return why;
        });
    bench::ReportOptions options;
    options.note = "ours includes create, the agent, the box disk and the exec round trip; TCG";
    bench::report_comparison(name, pairs, options);
    if (!pairs.failure.empty()) return;
    // Leave out the check run's values (measure_interleaved_timed's first, untimed run of each side).
    for (auto* list : {&ours_guest_ms, &bare_guest_ms, &spawn_ms, &boot_ms, &assets_ms, &disk_ms, &rootfs_ms,
                       &create_ms, &start_ms, &exec_ms, &second_exec_ms, &init_ms}) {
        if (!list->empty()) list->erase(list->begin());
    }
    fmt::print(
        "boot guest time (CLOCK_BOOTTIME, median of {}): our agent listening at {:.0f} ms; the bare init "
        "at {:.0f} ms; our init (its first console line until it serves) {:.0f} ms\n",
        pairs.ours_ns.size(), median(ours_guest_ms), median(bare_guest_ms), median(init_ms));
    fmt::print(
        "boot BoxMetrics stages (median, ms): guest_rootfs {:.0f}, guest_assets {:.0f}, box_disk {:.0f}, "
        "box_spawn {:.0f}, guest_boot {:.0f}\n",
        median(rootfs_ms), median(assets_ms), median(disk_ms), median(spawn_ms), median(boot_ms));
    fmt::print(
        "boot host split of ours (median, ms): create {:.0f}, start {:.0f} (until the agent answers its hello), "
        "first exec {:.0f} (connect, exec, output, exit); a second exec after it (untimed) {:.0f}\n",
        median(create_ms), median(start_ms), median(exec_ms), median(second_exec_ms));
    fmt::print("boot qemu argv (bare side): {}\n", fmt::join(argv, " "));
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) { return bench::main(argc, argv, comparisons); }
