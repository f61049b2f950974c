// Volume I/O per engine (issue 12): the same workload (volume_io, a static program that times
// itself) run in a box on a read-write volume, and on the host on the same folder directly; on
// the namespace engine (a bind mount: volume_*) and on the qemu engine (virtiofsd under a TCG
// guest: qemu_volume_*). Interleaved, one ratio line each (< 1: the volume is faster; the aim is >= 0.95x the
// host's speed, i.e. a time ratio <= 1.05):
//
//   volume_seq_write   write a file in 1 MiB blocks, then fdatasync
//   volume_seq_read    read it back from the disk (its cached pages dropped first)
//   volume_walk_stat   walk 10,000 files of 512 bytes in folders of 100, fstatat on each entry
//                      (the dentries and inodes are cached: this is the VFS cost, not the disk's)
//
// The file is 1 GiB by default (BOXLITE_BENCH_VOLUME_MIB sets another size in MiB); each run
// writes it with fdatasync and reads it back from the disk. The box has 4 GiB of memory, so its
// memory cgroup does not throttle its page cache and the comparison is the volume's alone.
// Both sides run as root on the same folder of the same file system; the box's side goes through
// the bind mount the shim made (the namespace engine has no other layer in between).
//
// qemu: the file is 256 MiB by default (BOXLITE_BENCH_QEMU_VOLUME_MIB): every byte crosses a TCG
// guest's FUSE requests to virtiofsd, so 1 GiB would take minutes a run. Before the box reads,
// the host's cached pages of the file are dropped too (virtiofsd reads through the host's page
// cache), so both sides read from the disk. The VM has 1 GiB of RAM. The guest finds the
// benchmark program in a read-only volume. Skipped (no ratio) where the qemu engine cannot run.
#include <boxlite/boxlite.hpp>

#include "harness.hpp"
#include "support/support.hpp"

#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

using namespace boxlite;
namespace fs = std::filesystem;

namespace {

struct VolumeFixture {
    EngineKind engine;
    bench::TempHome home;
    bench::TempHome data;  // the shared folder
    std::optional<BoxliteRuntime> runtime;
    std::optional<LiteBox> box;
    fs::path io;  // volume_io on the host
    std::string why_not;

    explicit VolumeFixture(EngineKind kind) : engine(kind) {
        if (::geteuid() != 0) {
            why_not = kind == EngineKind::Qemu ? "needs root (virtiofsd)" : "needs root (the namespace engine)";
            return;
        }
        auto rootfs = test::busybox_rootfs();
        if (!rootfs) {
            why_not = "busybox-static missing";
            return;
        }
        std::error_code ec;
        io = fs::read_symlink("/proc/self/exe", ec).parent_path() / "boxlite_volume_io";
        if (ec || !fs::exists(io)) {
            why_not = "boxlite_volume_io is not built next to this benchmark";
            return;
        }
        if (const char* build = std::getenv("BOXLITE_BENCH_BUILD_DIR")) {
            ::setenv("BOXLITE_SHIM", (fs::path(build) / "bin/boxlite-shim").c_str(), 0);
            ::setenv("BOXLITE_AGENT", (fs::path(build) / "bin/boxlite-agent").c_str(), 0);
            ::setenv("BOXLITE_SHIM_QEMU", (fs::path(build) / "bin/boxlite-shim-qemu").c_str(), 0);
        }
        BoxliteOptions options;
        options.home_dir = home.path();
        options.engine = kind;
        auto rt = open_runtime(options);
        if (!rt || !rt->engine().available()) {
            why_not = rt ? rt->engine().available().error().to_string() : rt.error().to_string();
            return;
        }
        runtime.emplace(std::move(*rt));
        BoxOptions o;
        o.rootfs = RootfsSpec::path(*rootfs);
        // Room for the file's page cache: the box's memory cgroup must not throttle one side only
        // (this compares the volume, not the memory limit).
        o.memory_mib = kind == EngineKind::Qemu ? 1024 : 4096;
        if (kind == EngineKind::Qemu) o.disk_size_gb = 2;  // room for the qemu_boxdisk_* file
        o.volumes = {{data.path().string(), "/vol", false}, {io.parent_path().string(), "/bench", true}};
        auto created = runtime->create(o);
        if (!created || !created->start()) {
            why_not = created ? "the box did not start" : created.error().to_string();
            return;
        }
        box.emplace(std::move(*created));
    }

    ~VolumeFixture() {
        if (box) (void)runtime->remove(box->id().str(), true);
    }

    /// Runs volume_io with `args` on the host (paths in the host folder).
    std::string on_host(const std::vector<std::string>& args, double& ns) {
        std::vector<std::string> argv = {io.string()};
        argv.insert(argv.end(), args.begin(), args.end());
        return parse(bench::run_program(argv), ns);
    }

    /// Runs volume_io with `args` in the box (paths under /vol).
    std::string in_box(const std::vector<std::string>& args, double& ns) {
        if (engine == EngineKind::Qemu && args.size() == 2 && args[0] == "read" && args[1].starts_with("/vol/"))
            drop_host_cache(args[1]);
        auto out = box->run(BoxCommand("/bench/boxlite_volume_io").args(args));
        if (!out) return out.error().to_string();
        bench::ProgramResult result;
        result.status = out->exit_code;
        result.out = out->stdout_text;
        result.err = out->stderr_text;
        return parse(result, ns);
    }

    /// The host's cached pages of the shared file the box names `box_path` (under /vol).
    void drop_host_cache(const std::string& box_path) const {
        const auto host = data.path() / fs::path(box_path).lexically_relative("/vol");
        const int fd = ::open(host.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return;
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        ::close(fd);
    }

    static std::string parse(const bench::ProgramResult& result, double& ns) {
        if (!result.ok()) return result.describe();
        ns = std::atof(result.out.c_str());
        return ns > 0 ? std::string() : "no time printed: " + result.out;
    }
};

VolumeFixture& volume_fixture(EngineKind kind) {
    if (kind == EngineKind::Qemu) {
        static VolumeFixture qemu(EngineKind::Qemu);
        return qemu;
    }
    static VolumeFixture ns(EngineKind::Namespace);
    return ns;
}

long long file_mib(EngineKind kind) {
    const char* env = std::getenv(kind == EngineKind::Qemu ? "BOXLITE_BENCH_QEMU_VOLUME_MIB"
                                                           : "BOXLITE_BENCH_VOLUME_MIB");
    if (env != nullptr) {
        if (const long long n = std::atoll(env); n > 0) return n;
    }
    return kind == EngineKind::Qemu ? 256 : 1024;
}

/// The box's path and the host's path of one file in the shared folder.
struct SharedPath {
    std::string box;
    std::string host;
};
SharedPath shared(const VolumeFixture& f, const std::string& name) {
    return {"/vol/" + name, (f.data.path() / name).string()};
}

void compare(EngineKind kind, const std::string& name, int runs,
             const std::function<std::vector<std::string>(bool in_box)>& args,
             const bench::ReportOptions& report = {}) {
    if (!bench::selected(name)) return;
    auto& f = volume_fixture(kind);
    if (!f.box) return bench::report_no_ratio(name, f.why_not);
    const auto pairs = bench::measure_interleaved_timed(
        bench::peer_runs(runs), [&](double& ns) { return f.in_box(args(true), ns); },
        [&](double& ns) { return f.on_host(args(false), ns); });
    bench::report_comparison(name, pairs, report);
}

void compare_volume_with_host(EngineKind kind) {
    const std::string prefix = kind == EngineKind::Qemu ? "qemu_" : "";
    if (!bench::selected(prefix + "volume_seq_write") && !bench::selected(prefix + "volume_seq_read") &&
        !bench::selected(prefix + "volume_walk_stat"))
        return;  // no box started for an engine none of whose lines is asked for
    auto& f = volume_fixture(kind);
    const auto mib = file_mib(kind);
    const auto note = fmt::format("{} MiB, ours in a volume ({}), peer the host folder", mib,
                                  kind == EngineKind::Qemu ? "qemu, virtiofsd" : "namespace, bind mount");
    // Each side writes its own file (no side reads or overwrites the other's pages), then reads it.
    const auto box_file = shared(f, "box.bin");
    const auto host_file = shared(f, "host.bin");
    compare(kind, prefix + "volume_seq_write", 7,
            [&](bool box) {
                return std::vector<std::string>{"write", box ? box_file.box : host_file.host, std::to_string(mib)};
            },
            {1, {}, note});
    compare(kind, prefix + "volume_seq_read", 7,
            [&](bool box) {
                return std::vector<std::string>{"read", box ? box_file.box : host_file.host};
            },
            {1, {}, note});
    if (f.box) {
        const auto tree = shared(f, "tree");
        std::error_code ec;
        fs::create_directory(tree.host, ec);
        if (auto populated = bench::run_program({f.io.string(), "populate", tree.host, "10000"}); !populated.ok()) {
            return bench::report_no_ratio(prefix + "volume_walk_stat", "populating the tree: " + populated.describe());
        }
        compare(kind, prefix + "volume_walk_stat", 15,
                [&](bool box) {
                    return std::vector<std::string>{"walk", box ? tree.box : tree.host};
                },
                {1, {}, "10,000 files + 100 folders, fstatat each; ours in a volume, peer the host folder"});
    } else {
        bench::report_no_ratio(prefix + "volume_walk_stat", f.why_not);
    }
}

/// What a TCG guest costs without virtiofs: the same workload on the guest's own disk (our
/// virtio-blk over QCOW2) against the host folder, to read the qemu_volume_* ratios against.
void compare_guest_disk_with_host() {
    const std::vector<std::string> names = {"qemu_boxdisk_seq_write", "qemu_boxdisk_seq_read",
                                            "qemu_boxdisk_walk_stat"};
    if (std::none_of(names.begin(), names.end(), [](const auto& n) { return bench::selected(n); })) return;
    auto& f = volume_fixture(EngineKind::Qemu);
    const auto mib = file_mib(EngineKind::Qemu);
    const auto note = fmt::format("{} MiB, ours on the guest's disk (qemu, virtio-blk, QCOW2), peer the host folder",
                                  mib);
    const auto host_file = shared(f, "host-disk.bin");
    compare(EngineKind::Qemu, names[0], 7,
            [&](bool box) {
                return std::vector<std::string>{"write", box ? "/root/disk.bin" : host_file.host, std::to_string(mib)};
            },
            {1, {}, note});
    compare(EngineKind::Qemu, names[1], 7,
            [&](bool box) {
                return std::vector<std::string>{"read", box ? "/root/disk.bin" : host_file.host};
            },
            {1, {}, note});
    if (!f.box) return bench::report_no_ratio(names[2], f.why_not);
    const auto tree = shared(f, "tree");  // populated on the host by compare_volume_with_host
    (void)f.box->run(BoxCommand("mkdir").args({"-p", "/root/tree"}));
    auto populated = f.box->run(BoxCommand("/bench/boxlite_volume_io").args({"populate", "/root/tree", "10000"}));
    if (!populated || populated->exit_code != 0) return bench::report_no_ratio(names[2], "populating /root/tree");
    compare(EngineKind::Qemu, names[2], 15,
            [&](bool box) {
                return std::vector<std::string>{"walk", box ? "/root/tree" : tree.host};
            },
            {1, {}, "10,000 files + 100 folders, fstatat each; ours on the guest's disk, peer the host folder"});
}

void compare_every_engine() {
    compare_volume_with_host(EngineKind::Namespace);
    compare_volume_with_host(EngineKind::Qemu);
    compare_guest_disk_with_host();
}

/// One Google Benchmark so the suite has aggregates too: an exec that stats the volume's root.
void BM_VolumeStatInBox(benchmark::State& state) {
    auto& f = volume_fixture(EngineKind::Namespace);
    if (!f.box) return state.SkipWithError(f.why_not.c_str());
    for (auto _ : state) {
        auto out = f.box->run(BoxCommand("stat").args({"-c", "%i", "/vol"}));
        if (!out || out->exit_code != 0) return state.SkipWithError("stat in the box failed");
    }
}
BENCHMARK(BM_VolumeStatInBox)->Unit(benchmark::kMillisecond)->Iterations(20);

}  // namespace

int main(int argc, char** argv) { return bench::main(argc, argv, compare_every_engine); }
