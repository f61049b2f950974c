// The box network on the namespace engine (issue 19), in a network namespace this suite makes
// (loopback, and a tap nobody reads carrying 198.51.100.1/24 with the default route: no packet
// leaves the machine). Interleaved, one ratio line each:
//
//   net_tcp_box_to_host   N MiB from the box to a sink, a service on the host's 127.0.0.1 at a
//                         fixed port that the box has reached before: ours through
//                         host.boxlite.internal, spliced (the box's connect hook, the forwarder),
//                         peer pasta (its tap and TCP translation) through its gateway; timed by
//                         the sink from accept to the last byte
//   net_tcp_box_to_host_first  the same to a port the host never served the box before: ours
//                         through eth0, the shim's pump and firewall, and passt (the same passt
//                         code as pasta's, on its own tap)
//   net_tcp_host_to_box   N MiB from the host's loopback into a published port (ours -p, pasta
//                         -t), the box counting them; timed from connect to the count's arrival.
//                         pasta splices a connection from the host's loopback to the namespace's
//                         loopback (two sockets and splice(): no tap, no TCP translation)
//   net_tcp_host_to_box_tap  the same, pasta's side entered from the bench namespace's other
//                         address (198.51.100.2), so that pasta takes its tap path as ours does:
//                         passt's code against passt's code (this pasta resets some of these
//                         connections on a loaded machine; a run is retried twice)
//   net_connect_firewall  connection set-up box -> 198.51.100.2 (through passt), 50 connections
//                         one after the other (a static probe in the box): ours with an allow
//                         list (that address listed: every SYN checked) vs without one
//   net_connect_host      connection set-up box -> a host service on 127.0.0.1, 50 connections:
//                         ours through host.boxlite.internal (spliced) vs pasta's gateway
//
// and the memory the network adds to a box (Pss of the pump and passt) next to pasta's.
//
// Both sides' in-box ends are the same static boxlite_net_probe (`send`, and `count` under
// `nc -l -e`, which answers at the end of the data): with the box's busybox `wc -c` and `head -c` on
// our side and the host's coreutils on pasta's, the box's end was the bottleneck (busybox wc -c:
// ~0.4 GB/s on a pipe, coreutils' ~2.3 GB/s) and the ratio measured the tools, not the path.
// The end of the data is the host's half-close (`count N`, answering after N bytes with no
// half-close, made this pasta reset or close most of its connections before the answer).
// N is 256 MiB by default (BOXLITE_BENCH_NET_MIB).
#include <boxlite/boxlite.hpp>

#include "harness.hpp"
#include "support/support.hpp"
#include "tcp_transfer.hpp"

#include <benchmark/benchmark.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace boxlite;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint16_t kOursPort = 18180;   // ours: host 127.0.0.1:18180 -> box 8000
constexpr std::uint16_t kPastaPort = 18181;  // pasta: host 18181 -> namespace 18181
constexpr std::uint16_t kSinkPort = 18182;   // the host's service that the boxes send to
constexpr const char* kPastaGateway = "198.51.100.254";
// The bench namespace's second address (net_tcp_host_to_box_tap): a connection to it is not
// from the host's loopback, so pasta does not splice it. Not .1, the address pasta copies into
// its namespace.
constexpr const char* kBenchHostAddress = "198.51.100.2";

long long net_mib() { return bench::net::transfer_mib("BOXLITE_BENCH_NET_MIB", 256); }

using bench::net::listen_loopback;
using bench::net::listen_on;
using bench::net::sink;

using bench::net::push;

/// Pss (kB) of `pid`, from smaps_rollup; 0 when unreadable.
long pss_kb(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
    std::string key;
    long value = 0;
    while (in >> key) {
        if (key == "Pss:") {
            in >> value;
            return value;
        }
        in.ignore(4096, '\n');
    }
    return 0;
}

/// Processes whose command name starts with `prefix` and whose parent is `parent` (any when 0).
std::vector<pid_t> processes(const std::string& prefix, pid_t parent = 0) {
    std::vector<pid_t> out;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream stat(entry.path() / "stat");
        std::string line;
        std::getline(stat, line);
        const auto open = line.find('(');
        const auto close = line.rfind(')');
        if (open == std::string::npos || close == std::string::npos) continue;
        if (line.compare(open + 1, prefix.size(), prefix) != 0) continue;
        std::istringstream rest(line.substr(close + 2));
        char state = 0;
        pid_t ppid = 0;
        rest >> state >> ppid;
        if (state == 'Z' || (parent != 0 && ppid != parent)) continue;
        out.push_back(static_cast<pid_t>(std::stoi(name)));
    }
    return out;
}

/// Whether `pid`'s argv[0] is `command`.
bool command_is(pid_t pid, const std::string& command) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
    std::string first;
    std::getline(in, first, '\0');
    return first == command;
}

struct NetFixture {
    bench::TempHome home;
    std::optional<BoxliteRuntime> runtime;
    std::optional<LiteBox> open_box;    // no allow list, -p 127.0.0.1:18180:8000
    std::optional<LiteBox> listed_box;  // allow list: host.boxlite.internal
    fs::path probe;                     // boxlite_net_probe on the host (pasta's side runs it)
    std::string why_not;

    NetFixture() {
        if (::geteuid() != 0) {
            why_not = "needs root (network namespaces, the namespace engine)";
            return;
        }
        if (::access("/usr/bin/passt", X_OK) != 0 || ::access("/usr/bin/pasta", X_OK) != 0) {
            why_not = "passt/pasta missing (apt-get install passt)";
            return;
        }
        auto rootfs = test::busybox_rootfs();
        if (!rootfs) {
            why_not = "busybox-static missing";
            return;
        }
        std::error_code ec;
        const auto probe_dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
        if (ec || !fs::exists(probe_dir / "boxlite_net_probe")) {
            why_not = "boxlite_net_probe is not built next to this benchmark";
            return;
        }
        if (!bench::net::enter_bench_netns()) {
            why_not = "could not make the benchmark's network namespace";
            return;
        }
        ::setenv("BOXLITE_NET_DNS", "127.0.0.1", 1);  // nothing answers: no query leaves
        if (const char* build = std::getenv("BOXLITE_BENCH_BUILD_DIR")) {
            ::setenv("BOXLITE_SHIM", (fs::path(build) / "bin/boxlite-shim").c_str(), 0);
            ::setenv("BOXLITE_AGENT", (fs::path(build) / "bin/boxlite-agent").c_str(), 0);
        }
        probe = probe_dir / "boxlite_net_probe";
        BoxliteOptions options;
        options.home_dir = home.path();
        options.engine = EngineKind::Namespace;
        auto rt = open_runtime(options);
        if (!rt || !rt->engine().available()) {
            why_not = rt ? rt->engine().available().error().to_string() : rt.error().to_string();
            return;
        }
        runtime.emplace(std::move(*rt));
        auto make = [&](bool listed) -> std::optional<LiteBox> {
            BoxOptions o;
            o.rootfs = RootfsSpec::path(*rootfs);
            o.memory_mib = 1024;
            o.volumes = {{probe_dir.string(), "/bench", true}};
            if (listed) {
                o.network.allow_net = {"host.boxlite.internal", kBenchHostAddress};
            } else {
                o.ports = {PortSpec{kOursPort, 8000, PortProtocol::Tcp, "127.0.0.1"}};
            }
            auto created = runtime->create(o);
            if (!created || !created->start()) {
                why_not = created ? "a box did not start" : created.error().to_string();
                return std::nullopt;
            }
            return std::move(*created);
        };
        open_box = make(false);
        if (open_box) listed_box = make(true);
    }

    ~NetFixture() {
        for (auto* box : {&open_box, &listed_box}) {
            if (*box) (void)runtime->remove((*box)->id().str(), true);
        }
    }

    [[nodiscard]] bool ready() const { return open_box && listed_box; }

    std::string sh(LiteBox& box, const std::string& script) {
        auto out = box.run(BoxCommand("sh").args({"-c", script}));
        if (!out) return out.error().to_string();
        if (out->exit_code != 0)
            return fmt::format("exit {}: {}{}", out->exit_code, out->stdout_text, out->stderr_text);
        return "";
    }

    static std::vector<std::string> pasta(const std::vector<std::string>& extra, const std::string& script) {
        std::vector<std::string> argv = {"pasta", "--config-net", "-q", "-4", "--runas", "0"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        argv.insert(argv.end(), {"--", "sh", "-c", script});
        return argv;
    }
};

NetFixture& fixture() {
    static NetFixture f;
    return f;
}

// A run that fails is tried again, twice at most, on either side alike: both paths have a known
// flake on a loaded machine (docs/networking.md: this passt's half-close, pasta's side counting
// nothing), and one failed run used to cost the whole ratio. Only runs that succeed are timed.
bench::TimedStep with_retries(bench::TimedStep step) {
    return [step = std::move(step)](double& ns) {
        std::string why;
        for (int attempt = 0; attempt < 3; ++attempt) {
            ns = 0;
            why = step(ns);
            if (why.empty()) break;
        }
        return why;
    };
}

void compare(const std::string& name, int runs, const bench::TimedStep& ours, const bench::TimedStep& peer,
             const bench::ReportOptions& report) {
    if (!bench::selected(name)) return;
    auto& f = fixture();
    if (!f.ready()) return bench::report_no_ratio(name, f.why_not);
    bench::report_comparison(
        name, bench::measure_interleaved_timed(bench::peer_runs(runs), with_retries(ours), with_retries(peer)), report);
}

void compare_network() {
    auto& f = fixture();
    const std::size_t bytes = static_cast<std::size_t>(net_mib()) << 20;
    const std::string amount = std::to_string(bytes);
    const auto note_out = fmt::format("{} MiB; time ratio, ours/pasta (<1: ours faster)", net_mib());

    // Box -> host: a sink on the host's loopback; ours reaches it as host.boxlite.internal, pasta
    // through its gateway (both map to the host's loopback). `service`: the sink is a service at a
    // fixed port that the box has reached before (ours: spliced, docs/networking.md "The host
    // alias, spliced"); else a port the host never served the box before (ours: through passt).
    bool warmed = false;
    auto to_host = [&](bool ours, bool service, double& ns) -> std::string {
        std::uint16_t port = service ? kSinkPort : 0;
        if (ours && service && !warmed) {
            // The box's first connection to the service goes through passt: not timed.
            const int listener = listen_loopback(port);
            if (listener < 0) return "listen on the host's loopback";
            std::thread warm([&] { (void)sink(listener, 1); });
            const auto why = f.sh(*f.open_box, fmt::format("/bench/boxlite_net_probe send 192.168.127.254 {} 1", port));
            warm.join();
            ::close(listener);
            if (!why.empty()) return why;
            warmed = true;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the forwarder takes the port
        }
        const int listener = listen_loopback(port);
        if (listener < 0) return "listen on the host's loopback";
        double timed = 0;
        std::thread sink_thread([&] { timed = sink(listener, bytes); });
        std::string why;
        if (ours) {
            // 192.168.127.254 is host.boxlite.internal (the probe takes an address, not a name).
            why = f.sh(*f.open_box,
                       fmt::format("timeout 120 /bench/boxlite_net_probe send 192.168.127.254 {} {}", port, amount));
        } else {
            const auto result = bench::run_program(
                NetFixture::pasta({}, fmt::format("timeout 120 {} send {} {} {}", f.probe.string(), kPastaGateway, port,
                                                  amount)));
            if (!result.ok()) why = result.describe();
        }
        sink_thread.join();
        ::close(listener);
        ns = timed;
        if (timed == 0) return why.empty() ? "the sink got less than it should" : why;
        return "";
    };
    compare(
        "net_tcp_box_to_host", 7, [&](double& ns) { return to_host(true, true, ns); },
        [&](double& ns) { return to_host(false, true, ns); }, {1, {}, note_out});
    compare(
        "net_tcp_box_to_host_first", 7, [&](double& ns) { return to_host(true, false, ns); },
        [&](double& ns) { return to_host(false, false, ns); }, {1, {}, note_out});

    // Host -> box: into a published port (ours -p, pasta -t), the box counting the bytes (wc -c);
    // each side's server is listening before the clock starts.
    auto to_box = [&](bool ours, const char* peer_address, double& ns) -> std::string {
        std::string answer;
        if (ours) {
            auto server = f.open_box->exec(
                BoxCommand("nc").args({"-l", "-p", "8000", "-e", "/bench/boxlite_net_probe", "count"}));
            if (!server) return server.error().to_string();
            if (auto why = f.sh(*f.open_box, "until netstat -ltn | grep -q ':8000 '; do sleep 0.05; done");
                !why.empty())
                return why;
            ns = push(kOursPort, bytes, answer);
            (void)server->wait();
        } else {
            // pasta's side says "ready" to the host once its server listens.
            std::uint16_t ready_port = 0;
            const int ready = listen_loopback(ready_port);
            if (ready < 0) return "listen on the host's loopback";
            bench::ProgramResult result;
            std::thread server([&] {
                result = bench::run_program(NetFixture::pasta(
                    {"-t", std::to_string(kPastaPort)},
                    fmt::format("busybox nc -l -p {0} -e {1} & until busybox netstat -ltn | grep -q ':{0} '; do "
                                "sleep 0.05; done; echo ready | busybox nc {2} {3}; wait",
                                kPastaPort, f.probe.string() + " count", kPastaGateway, ready_port)));
            });
            pollfd wait_ready{ready, POLLIN, 0};
            if (::poll(&wait_ready, 1, 60000) == 1) {
                ::close(::accept4(ready, nullptr, nullptr, SOCK_CLOEXEC));
                ns = push(kPastaPort, bytes, answer, 120, peer_address);
            } else {
                ns = 0;
                answer = "(pasta's server never said ready)";
            }
            server.join();
            ::close(ready);
            if (ns == 0 && !result.ok()) return result.describe();
        }
        if (ns == 0 || std::atoll(answer.c_str()) != static_cast<long long>(bytes))
            return "the box counted '" + answer + "', not " + amount;
        return "";
    };
    compare(
        "net_tcp_host_to_box", 7, [&](double& ns) { return to_box(true, "127.0.0.1", ns); },
        [&](double& ns) { return to_box(false, "127.0.0.1", ns); }, {1, {}, note_out});
    compare(
        "net_tcp_host_to_box_tap", 7, [&](double& ns) { return to_box(true, "127.0.0.1", ns); },
        [&](double& ns) { return to_box(false, kBenchHostAddress, ns); },
        {1, {}, note_out + "; pasta through its tap"});

    // Connection set-up, 50 connections one after the other, to an acceptor on `address`.
    auto with_acceptor = [&](const char* address, const std::function<void(std::uint16_t)>& body) {
        std::uint16_t port = 0;
        const int listener = listen_on(address, port);
        if (listener < 0) return;
        std::atomic<bool> stop{false};
        std::thread acceptor([&] {
            while (!stop) {
                const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
                if (fd >= 0) ::close(fd);
            }
        });
        body(port);
        stop = true;
        ::shutdown(listener, SHUT_RDWR);
        sockaddr_in in{};  // a connection wakes the acceptor if shutdown did not
        in.sin_family = AF_INET;
        in.sin_port = htons(port);
        ::inet_pton(AF_INET, address, &in.sin_addr);
        const int wake = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        (void)::connect(wake, reinterpret_cast<sockaddr*>(&in), sizeof in);
        ::close(wake);
        acceptor.join();
        ::close(listener);
    };
    auto connect_loop = [&](LiteBox& box, const char* address, std::uint16_t port, double& ns) -> std::string {
        auto out = box.run(
            BoxCommand("/bench/boxlite_net_probe").args({"connect", address, std::to_string(port), "50"}));
        if (!out) return out.error().to_string();
        if (out->exit_code != 0) return out->stderr_text;
        ns = std::atof(out->stdout_text.c_str());
        return ns > 0 ? "" : "no time printed: " + out->stdout_text;
    };
    // Through the pump and passt (an address of the bench's namespace, not the host alias), with
    // the allow list (every SYN checked against it) and without: the firewall's cost.
    with_acceptor(kBenchHostAddress, [&](std::uint16_t port) {
        compare(
            "net_connect_firewall", 9,
            [&](double& ns) { return connect_loop(*f.listed_box, kBenchHostAddress, port, ns); },
            [&](double& ns) { return connect_loop(*f.open_box, kBenchHostAddress, port, ns); },
            {1, "connect", "ours with an allow list vs ours without (the firewall's cost)"});
    });
    // To a host service through the host alias: ours spliced (after the first run's first
    // connection, through passt), pasta through its gateway.
    with_acceptor("127.0.0.1", [&](std::uint16_t port) {
        compare(
            "net_connect_host", 9, [&](double& ns) { return connect_loop(*f.open_box, "192.168.127.254", port, ns); },
            [&](double& ns) {
                const auto result = bench::run_program(
                    NetFixture::pasta({}, fmt::format("{} connect {} {} 50", f.probe.string(), kPastaGateway, port)));
                if (!result.ok()) return result.describe();
                ns = std::atof(result.out.c_str());
                return ns > 0 ? std::string() : "no time printed: " + result.out;
            },
            {1, "connect", "ours (host.boxlite.internal, spliced) vs pasta (its gateway)"});
    });

    // Memory: the Pss of the pump and passt of one box, next to one pasta's.
    if (bench::selected("net_memory_per_box")) {
        if (!f.ready()) return bench::report_no_ratio("net_memory_per_box", f.why_not);
        long pump = 0;
        long passt = 0;
        std::size_t pumps = 0;
        for (pid_t pid : processes("boxlite-shim")) {
            // A pump is a shim process holding /dev/net/tun (a box's eth0).
            std::error_code ec;
            for (const auto& fd : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
                if (fs::read_symlink(fd.path(), ec).string().find("net/tun") != std::string::npos) {
                    pump += pss_kb(pid);
                    ++pumps;
                    break;
                }
            }
        }
        // Both boxes' passt (passt and pasta are one binary, told apart by argv[0]); and its
        // keeper and init, forked from the shim, a few pages each.
        std::size_t passts = 0;
        for (pid_t pid : processes("passt")) {
            if (!command_is(pid, "/usr/bin/passt")) continue;
            passt += pss_kb(pid);
            ++passts;
        }
        if (pumps > 0) pump /= static_cast<long>(pumps);
        if (passts > 0) passt /= static_cast<long>(passts);
        bench::ProgramResult result;
        std::thread idle([&] { result = bench::run_program(NetFixture::pasta({}, "sleep 2")); });
        long pasta = 0;
        for (int i = 0; i < 100 && pasta == 0; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            for (pid_t pid : processes("passt")) {
                if (command_is(pid, "pasta")) pasta += pss_kb(pid);
            }
        }
        idle.join();
        fmt::print("net_memory_per_box: ours {} KiB Pss (pump {} KiB + passt {} KiB), pasta {} KiB Pss{}\n",
                   pump + passt, pump, passt, pasta,
                   pasta > 0 ? fmt::format(" (ratio {:.2f}x)", static_cast<double>(pump + passt) / pasta) : "");
        std::fflush(stdout);
    }
}

/// One Google Benchmark so the suite has aggregates too: a 1 MiB transfer box -> host.
void BM_BoxToHostOneMiB(benchmark::State& state) {
    auto& f = fixture();
    if (!f.ready()) return state.SkipWithError(f.why_not.c_str());
    for (auto _ : state) {
        std::uint16_t port = 0;
        const int listener = listen_loopback(port);
        std::thread sink_thread([&] { (void)sink(listener, 1 << 20); });
        (void)f.sh(*f.open_box,
                   fmt::format("head -c 1048576 /dev/zero | timeout 60 nc host.boxlite.internal {}", port));
        sink_thread.join();
        ::close(listener);
    }
}
BENCHMARK(BM_BoxToHostOneMiB)->Unit(benchmark::kMillisecond)->Iterations(5);

}  // namespace

int main(int argc, char** argv) { return bench::main(argc, argv, compare_network); }
