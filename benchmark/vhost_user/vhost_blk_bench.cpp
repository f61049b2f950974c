// Our vhost-user-blk back end (lib/vhost_user + our virtio-blk over our QCOW2 code) against
// qemu-storage-daemon's vhost-user-blk export of the same kind of image, driven from inside a
// real Debian guest under QEMU TCG: 1 MiB sequential writes and reads, 4 KiB random writes and
// reads, all O_DIRECT on /dev/vda (guest_blkbench.c, timed with the guest's clock). Each run boots
// a fresh guest on a fresh 256 MiB QCOW2 image; the sides alternate.
//
// Both sides pay the same TCG guest, virtio driver and vhost-user notification path, so the
// ratio compares the back ends, but TCG's own cost is in both numbers: read them as "how much
// our back end adds or saves", not as native disk speeds.
#include "harness.hpp"

#include "vhost_user/qemu_guest.hpp"

#include "devices/virtio/blk/device.hpp"
#include "qcow2/qcow2_image.hpp"
#include "vhost_user/backend.hpp"

#include <benchmark/benchmark.h>

#include <sys/socket.h>

#include <map>
#include <sstream>
#include <thread>

namespace {

namespace fs = std::filesystem;
using namespace boxlite;
using vhost_user::testing::build_initramfs;
using vhost_user::testing::start_qemu;
using vhost_user::testing::wait_qemu;

using Results = std::map<std::string, double>;

/// Parses "BLKBENCH key=ns ..." from the console.
std::string parse(const fs::path& console, Results& out) {
    const auto text = test::read_file(console);
    const auto at = text.find("BLKBENCH ");
    if (at == std::string::npos)
        return "no BLKBENCH line; console tail: " + text.substr(text.size() > 600 ? text.size() - 600 : 0);
    std::istringstream line(text.substr(at + 9, text.find('\n', at) - at - 9));
    for (std::string item; line >> item;) {
        const auto eq = item.find('=');
        if (eq != std::string::npos) out[item.substr(0, eq)] = std::stod(item.substr(eq + 1));
    }
    return {};
}

std::string fresh_image(const fs::path& path) {
    std::error_code ec;
    fs::remove(path, ec);
    qcow2::CreateOptions create;
    create.size = 256 << 20;
    auto image = qcow2::Qcow2Image::create(path, create);
    if (!image) return image.error().to_string();
    if (auto closed = (*image)->close(); !closed) return closed.error().to_string();
    return {};
}

std::string run_ours(const fs::path& dir, const std::string& kernel, Results& out) {
    if (auto why = fresh_image(dir / "disk.qcow2"); !why.empty()) return why;
    auto image = qcow2::Qcow2Image::open(dir / "disk.qcow2");
    if (!image) return image.error().to_string();
    std::shared_ptr<qcow2::Qcow2Image> disk(std::move(*image));
    vhost_user::Backend backend(std::make_shared<devices::virtio::BlockDevice>(disk, "bench"));
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return "socketpair failed";
    base::OwnedFd ours(pair[0]), theirs(pair[1]);
    BoxliteResult<void> served;
    std::thread server([&] { served = backend.serve(std::move(ours)); });
    auto qemu = start_qemu(dir, kernel, {"-chardev", "socket,id=blk0,fd=3", "-device", "vhost-user-blk,chardev=blk0"},
                           {theirs.get()});
    theirs.reset();
    if (!qemu) {
        backend.stop();
        server.join();
        return qemu.error().to_string();
    }
    wait_qemu(*qemu);
    server.join();
    if (!served) return "our back end: " + served.error().to_string();
    return parse(dir / "console.log", out);
}

std::string run_peer(const fs::path& dir, const std::string& kernel, Results& out) {
    if (auto why = fresh_image(dir / "disk.qcow2"); !why.empty()) return why;
    const fs::path socket = dir / "qsd.sock";
    std::error_code ec;
    fs::remove(socket, ec);
    base::SpawnOptions spawn;
    spawn.argv = {"/usr/bin/qemu-storage-daemon",
                  "--blockdev",
                  "driver=file,node-name=file,filename=" + (dir / "disk.qcow2").string(),
                  "--blockdev",
                  "driver=qcow2,node-name=disk,file=file",
                  "--export",
                  "type=vhost-user-blk,id=exp,node-name=disk,writable=on,addr.type=unix,addr.path=" + socket.string()};
    base::OwnedFd log(::open((dir / "qsd.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    base::OwnedFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    spawn.fds = {null.get(), log.get(), log.get()};
    spawn.kill_with_parent = true;
    auto qsd = base::spawn(spawn);
    if (!qsd) return qsd.error().to_string();
    for (int i = 0; i < 200 && !fs::exists(socket); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    std::string why;
    auto qemu = start_qemu(dir, kernel,
                           {"-chardev", "socket,id=blk0,path=" + socket.string(), "-device",
                            "vhost-user-blk,chardev=blk0"});
    if (!qemu) why = qemu.error().to_string();
    else wait_qemu(*qemu);
    ::kill(*qsd, SIGTERM);
    ::waitpid(*qsd, nullptr, 0);
    if (!why.empty()) return why;
    return parse(dir / "console.log", out);
}

void comparisons() {
    const std::string name = "vhost-user-blk in a TCG guest vs qemu-storage-daemon";
    if (!bench::selected("vhost_blk")) return;
    std::string why;
    const auto kernel = vhost_user::testing::guest_kernel(why);
    if (kernel.empty()) return bench::report_no_ratio(name, why);
    if (!fs::exists("/usr/bin/qemu-storage-daemon"))
        return bench::report_no_ratio(name, "no /usr/bin/qemu-storage-daemon (qemu-system-common)");
    test::TempDir dir("bvub");
    const fs::path blkbench = fs::path(BOXLITE_GUEST_BLKBENCH);
    if (auto failed = build_initramfs(dir.path(), "/bin/blkbench", {{blkbench, "bin/blkbench"}}); !failed.empty())
        return bench::report_no_ratio(name, failed);
    const int runs = bench::peer_runs(3);
    std::map<std::string, bench::Pairs> pairs;
    for (int i = 0; i <= runs; ++i) {  // run 0 checks both sides and warms the caches
        for (int side = 0; side < 2; ++side) {
            const bool ours = (side == 0) == (i % 2 == 0);
            Results results;
            auto failed = ours ? run_ours(dir.path(), kernel, results) : run_peer(dir.path(), kernel, results);
            if (!failed.empty()) return bench::report_no_ratio(name, (ours ? "ours: " : "peer: ") + failed);
            if (i == 0) continue;
            for (const auto& [key, ns] : results) {
                if (key.rfind("ops_", 0) == 0) continue;
                (ours ? pairs[key].ours_ns : pairs[key].peer_ns).push_back(ns);
            }
        }
    }
    for (const auto& [key, p] : pairs) {
        bench::ReportOptions options;
        const bool big = key.find("1m") != std::string::npos;
        options.divisor = big ? 64 : 2048;
        options.per = big ? "MiB" : "op";
        bench::report_comparison("vhost_blk " + key + " (guest O_DIRECT, TCG)", p, options);
    }
}

}  // namespace

int main(int argc, char** argv) { return bench::main(argc, argv, comparisons); }
