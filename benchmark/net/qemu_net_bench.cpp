// The box network on the qemu engine (issue 19), in a network namespace this suite makes
// (loopback, and a tap nobody reads carrying 198.51.100.1/24 with the default route: no packet
// leaves the machine). Two boxes from the busybox rootfs boot once; interleaved, one ratio line
// each (time ratio, ours/peer: < 1 ours faster):
//
//   qemu_net_tcp_box_to_host  N MiB from the box to a sink on the host's 127.0.0.1. Ours: our
//                             virtio-net over vhost-user, the shim's pump and firewall, passt,
//                             through host.boxlite.internal. Peer: QEMU's own virtio-net on
//                             `-netdev stream` straight to the same passt (the shim's
//                             BOXLITE_QEMU_NET_PEER=stream), through passt's gateway. Timed by the
//                             sink from accept to the last byte.
//   qemu_net_tcp_host_to_box  N MiB from the host into a published port (-p on both), the box
//                             counting them (wc -c); timed from connect to the count's arrival.
//
// Both guests run the same kernel at MTU 1500 under TCG here, so the guest's emulated CPU, not
// the path, bounds both sides. N is 8 MiB by default (BOXLITE_BENCH_QEMU_NET_MIB): this passt
// (2023-03) reset long transfers after about 24 s on both paths alike.
#include <boxlite/boxlite.hpp>

#include "harness.hpp"
#include "support/support.hpp"
#include "tcp_transfer.hpp"

#include <benchmark/benchmark.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace boxlite;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint16_t kOursPort = 18190;  // ours: host 127.0.0.1:18190 -> box 8000
constexpr std::uint16_t kPeerPort = 18191;  // peer: host 127.0.0.1:18191 -> box 8000

long long net_mib() { return bench::net::transfer_mib("BOXLITE_BENCH_QEMU_NET_MIB", 8); }

using bench::net::listen_loopback;
using bench::net::sink;

/// bench::net::push with a 300 s guard: the TCG guest moves 3-4 MB/s.
double push(std::uint16_t port, std::size_t bytes, std::string& answer) {
    return bench::net::push(port, bytes, answer, 300);
}

struct QemuNetFixture {
    bench::TempHome home;
    std::optional<BoxliteRuntime> runtime;
    std::optional<LiteBox> ours;  // our device, pump and firewall; -p 127.0.0.1:18190:8000
    std::optional<LiteBox> peer;  // QEMU's -netdev stream to passt; -p 127.0.0.1:18191:8000
    std::string why_not;

    QemuNetFixture() {
        if (::geteuid() != 0) {
            why_not = "needs root (network namespaces)";
            return;
        }
        if (::access("/usr/bin/passt", X_OK) != 0) {
            why_not = "passt missing (apt-get install passt)";
            return;
        }
        auto rootfs = test::busybox_rootfs();
        if (!rootfs) {
            why_not = "busybox-static missing";
            return;
        }
        if (!bench::net::enter_bench_netns()) {
            why_not = "could not make the benchmark's network namespace";
            return;
        }
        ::setenv("BOXLITE_NET_DNS", "127.0.0.1", 1);  // nothing answers: no query leaves
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
        auto make = [&](bool stream_peer, std::uint16_t host_port) -> std::optional<LiteBox> {
            BoxOptions o;
            o.rootfs = RootfsSpec::path(*rootfs);
            o.memory_mib = 512;
            o.ports = {PortSpec{host_port, 8000, PortProtocol::Tcp, "127.0.0.1"}};
            auto created = runtime->create(o);
            if (!created) {
                why_not = created.error().to_string();
                return std::nullopt;
            }
            // The shim reads the peer switch from the environment it starts with.
            if (stream_peer) ::setenv("BOXLITE_QEMU_NET_PEER", "stream", 1);
            auto started = created->start();
            ::unsetenv("BOXLITE_QEMU_NET_PEER");
            if (!started) {
                why_not = started.error().to_string();
                return std::nullopt;
            }
            // The count script for host -> box, and one frame out so passt learns the box's MAC
            // before a published port's first connection comes in (ours sends an ARP first; the
            // peer's guest has said nothing yet).
            auto script = created->run(
                BoxCommand("sh").args({"-c",
                                       "printf '#!/bin/sh\\nwc -c\\n' > /count.sh && chmod 755 /count.sh && "
                                       "{ nc -w 2 192.168.127.1 9 </dev/null; true; }"}));
            if (!script || script->exit_code != 0) {
                why_not = "writing /count.sh in a box";
                return std::nullopt;
            }
            return std::move(*created);
        };
        ours = make(false, kOursPort);
        if (ours) peer = make(true, kPeerPort);
    }

    ~QemuNetFixture() {
        for (auto* box : {&ours, &peer}) {
            if (*box) (void)runtime->remove((*box)->id().str(), true);
        }
    }

    [[nodiscard]] bool ready() const { return ours && peer; }

    static std::string sh(LiteBox& box, const std::string& script) {
        auto out = box.run(BoxCommand("sh").args({"-c", script}));
        if (!out) return out.error().to_string();
        if (out->exit_code != 0)
            return fmt::format("exit {}: {}{}", out->exit_code, out->stdout_text, out->stderr_text);
        return "";
    }
};

QemuNetFixture& fixture() {
    static QemuNetFixture f;
    return f;
}

void compare(const std::string& name, int runs, const bench::TimedStep& ours, const bench::TimedStep& peer,
             const bench::ReportOptions& report) {
    if (!bench::selected(name)) return;
    auto& f = fixture();
    if (!f.ready()) return bench::report_no_ratio(name, f.why_not);
    bench::report_comparison(name, bench::measure_interleaved_timed(bench::peer_runs(runs), ours, peer), report);
}

void compare_qemu_network() {
    auto& f = fixture();
    const std::size_t bytes = static_cast<std::size_t>(net_mib()) << 20;
    const std::string amount = std::to_string(bytes);
    const auto note = fmt::format("{} MiB, TCG guest; time ratio, ours/QEMU -netdev stream (<1: ours faster)",
                                  net_mib());

    // Box -> host: ours reaches the host's loopback as host.boxlite.internal (the pump maps it to
    // passt's gateway), the peer through passt's gateway itself (no firewall on its path).
    auto to_host = [&](bool ours, double& ns) -> std::string {
        std::uint16_t port = 0;
        const int listener = listen_loopback(port);
        if (listener < 0) return "listen on the host's loopback";
        double timed = 0;
        std::thread sink_thread([&] { timed = sink(listener, bytes); });
        const auto why = QemuNetFixture::sh(ours ? *f.ours : *f.peer,
                                            fmt::format("head -c {} /dev/zero | timeout 300 nc {} {}", amount,
                                                        ours ? "host.boxlite.internal" : "192.168.127.1", port));
        sink_thread.join();
        ::close(listener);
        ns = timed;
        if (timed == 0) return why.empty() ? "the sink got less than it should" : why;
        return "";
    };
    compare(
        "qemu_net_tcp_box_to_host", 5, [&](double& ns) { return to_host(true, ns); },
        [&](double& ns) { return to_host(false, ns); }, {1, {}, note});

    // Host -> box: into each box's published port, the box counting the bytes.
    auto to_box = [&](bool ours, double& ns) -> std::string {
        LiteBox& box = ours ? *f.ours : *f.peer;
        auto server = box.exec(BoxCommand("nc").args({"-l", "-p", "8000", "-e", "/count.sh"}));
        if (!server) return server.error().to_string();
        if (auto why = QemuNetFixture::sh(box, "until netstat -ltn | grep -q ':8000 '; do sleep 0.05; done");
            !why.empty())
            return why;
        std::string answer;
        ns = push(ours ? kOursPort : kPeerPort, bytes, answer);
        if (ns == 0) (void)server->kill();  // nothing reached it: it would listen for ever
        (void)server->wait();
        if (ns == 0 || std::atoll(answer.c_str()) != static_cast<long long>(bytes))
            return "the box counted '" + answer + "', not " + amount;
        return "";
    };
    compare(
        "qemu_net_tcp_host_to_box", 5, [&](double& ns) { return to_box(true, ns); },
        [&](double& ns) { return to_box(false, ns); }, {1, {}, note});
}

/// One Google Benchmark so the suite has aggregates too: 1 MiB box -> host through our path.
void BM_QemuBoxToHostOneMiB(benchmark::State& state) {
    auto& f = fixture();
    if (!f.ready()) return state.SkipWithError(f.why_not.c_str());
    for (auto _ : state) {
        std::uint16_t port = 0;
        const int listener = listen_loopback(port);
        std::thread sink_thread([&] { (void)sink(listener, 1 << 20); });
        (void)QemuNetFixture::sh(*f.ours,
                                 fmt::format("head -c 1048576 /dev/zero | timeout 60 nc host.boxlite.internal {}",
                                             port));
        sink_thread.join();
        ::close(listener);
    }
}
BENCHMARK(BM_QemuBoxToHostOneMiB)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

int main(int argc, char** argv) { return bench::main(argc, argv, compare_qemu_network); }
