// Pull + unpack of the same images from a local docker-registry (127.0.0.1), cold every time
// (a fresh store per run): BoxLite's ImageStore::pull + rootfs_directory against the peers
// `skopeo copy docker://… oci:…` + `umoci raw unpack`, each run directly (no shell). Both sides
// download, verify and unpack the same bytes from the same registry. Three comparisons per image,
// interleaved runs, ratio = ours / peer (< 1: BoxLite is faster):
//   pull+unpack  peer skopeo copy + umoci raw unpack: a rootfs and nothing else, as ours
//   pull+unpack  peer skopeo copy + umoci unpack: also writes an mtree manifest, hashing every
//                file (work we do not do; `umoci unpack` has no option to skip it)
//   pull         ours ImageStore::pull alone, peer skopeo copy alone
// Only the work itself is timed: making and removing the empty store/bundle directories is not.
//
// Images: "small" is the busybox test image (1 layer, ~1 MB); "python" adds Debian's
// /usr/lib/python3.* tree as a second layer (thousands of files, tens of MB).
#include <boxlite/image/image_store.hpp>

#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.hpp"

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace boxlite;

const std::string kHarness = BOXLITE_IMAGE_HARNESS;

/// Set-up only (never timed): a bash command line; "" or what failed.
std::string setup(const std::string& command) {
    const auto result = bench::run_program({"bash", "-c", command});
    return result.ok() ? std::string() : fmt::format("`{}` failed: {}", command, result.describe());
}

bool rootless() { return ::geteuid() != 0; }

// The registry and the images. Each image is ready on its own: a machine without Debian's Python
// still measures the small image.
struct Environment {
    bench::TempHome work;
    int port = 0;
    std::string why_not;                         ///< why nothing can run
    std::map<std::string, std::string> missing;  ///< image -> why it is not pushed
    bool registry_started = false;

    Environment() {
        for (const char* tool : {"docker-registry", "skopeo", "umoci"}) {
            if (!bench::on_path(tool)) {
                why_not = fmt::format("{} is not installed", tool);
                return;
            }
        }
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
        socklen_t len = sizeof addr;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
        ::close(fd);
        port = ntohs(addr.sin_port);
        const auto w = work.path().string();
        if (auto why = setup(fmt::format("bash {} build {w}/img >{w}/build.log 2>&1", kHarness, fmt::arg("w", w)));
            !why.empty()) {
            why_not = "could not build the test images (see " + w + "/build.log): " + why;
            return;
        }
        if (auto why = setup(fmt::format("bash {} start {}/registry {}", kHarness, w, port)); !why.empty()) {
            why_not = "could not start docker-registry: " + why;
            return;
        }
        registry_started = true;
        if (auto why = setup(fmt::format("bash {} push {}/img/oci single {} bench/small:1", kHarness, w, port));
            !why.empty()) {
            missing["small"] = "could not push the small image: " + why;
        }
        const std::string python = "$(ls -d /usr/lib/python3.* 2>/dev/null | head -1)";
        if (!setup("ls -d /usr/lib/python3.* >/dev/null 2>&1").empty()) {
            missing["python"] = "no /usr/lib/python3.* on this machine to build the python image from";
        } else if (auto why = setup(
                       fmt::format("cd {w}/img && umoci unpack {rootless}--image oci:single b >>{w}/build.log 2>&1 && "
                                   "mkdir -p b/rootfs/usr/lib && cp -a {py} b/rootfs/usr/lib/ && "
                                   "umoci repack --image oci:python b >>{w}/build.log 2>&1 && rm -rf b && "
                                   "bash {h} push {w}/img/oci python {port} bench/python:1",
                                   fmt::arg("w", w), fmt::arg("py", python),
                                   fmt::arg("rootless", rootless() ? "--rootless " : ""), fmt::arg("h", kHarness),
                                   fmt::arg("port", port)));
                   !why.empty()) {
            missing["python"] = "could not build or push the python image (see " + w + "/build.log): " + why;
        }
    }
    ~Environment() {
        if (registry_started) (void)setup(fmt::format("bash {} stop {}/registry", kHarness, work.path().string()));
    }

    /// Empty when `image` can be measured, else why not.
    std::string unavailable(const std::string& image) const {
        if (!why_not.empty()) return why_not;
        const auto it = missing.find(image);
        return it == missing.end() ? std::string() : it->second;
    }
};

Environment& environment() {
    static Environment env;
    return env;
}

std::string reference(const std::string& image) {
    return fmt::format("127.0.0.1:{}/bench/{}:1", environment().port, image);
}

/// Ours: ImageStore::pull (+ rootfs_directory when `unpack`) into a fresh store under `home`.
/// "" when the tree has the image's /bin/busybox (or, pull only, when the pull succeeded).
std::string ours(const std::string& image, const fs::path& home, bool unpack) {
    image::RegistryOptions registry;
    registry.search_registries = {};
    auto store = image::ImageStore::open({home, registry, {}});
    if (!store) return "ImageStore::open: " + store.error().to_string();
    auto pulled = store->pull(reference(image));
    if (!pulled) return "pull: " + pulled.error().to_string();
    if (!unpack) return {};
    auto tree = store->rootfs_directory(*pulled);
    if (!tree) return "rootfs_directory: " + tree.error().to_string();
    std::error_code ec;
    if (!fs::exists(*tree / "bin/busybox", ec)) return "the unpacked tree " + tree->string() + " has no bin/busybox";
    return {};
}

enum class PeerUnpack { None, Raw, WithMtree };

/// The peer: `skopeo copy` into an OCI layout under `home`, then (per `unpack`) `umoci raw
/// unpack` or `umoci unpack`; each run directly and checked.
std::string peer(const std::string& image, const fs::path& home, PeerUnpack unpack) {
    const auto layout = (home / "oci").string();
    auto copy = bench::run_program({"skopeo", "copy", "-q", "--src-tls-verify=false", "docker://" + reference(image),
                                    "oci:" + layout + ":" + image});
    if (!copy.ok()) return "skopeo copy: " + copy.describe();
    if (unpack == PeerUnpack::None) return {};
    std::vector<std::string> args = {"umoci"};
    if (unpack == PeerUnpack::Raw) args.emplace_back("raw");
    args.emplace_back("unpack");
    if (rootless()) args.emplace_back("--rootless");
    args.insert(args.end(), {"--image", layout + ":" + image});
    const auto rootfs = unpack == PeerUnpack::Raw ? home / "rootfs" : home / "bundle";
    args.push_back(rootfs.string());
    auto unpacked = bench::run_program(args);
    if (!unpacked.ok())
        return fmt::format("{}: {}", unpack == PeerUnpack::Raw ? "umoci raw unpack" : "umoci unpack",
                           unpacked.describe());
    const auto busybox = unpack == PeerUnpack::Raw ? rootfs / "bin/busybox" : rootfs / "rootfs/bin/busybox";
    std::error_code ec;
    if (!fs::exists(busybox, ec)) return "umoci left no " + busybox.string();
    return {};
}

/// Runs `work` in a fresh directory and times it alone (not the directory's removal).
template <class Work>
std::string timed_in_fresh_dir(double& ns, Work&& work) {
    bench::TempHome home;
    if (home.path().empty()) return "could not make a temporary directory";
    const auto start = std::chrono::steady_clock::now();
    auto why = work(home.path());
    ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    return why;
}

void BM_OursPullUnpack(benchmark::State& state, const std::string& image) {
    if (const auto why = environment().unavailable(image); !why.empty()) return state.SkipWithError(why.c_str());
    for (auto _ : state) {
        double ns = 0;
        auto why = timed_in_fresh_dir(ns, [&](const fs::path& home) { return ours(image, home, true); });
        if (!why.empty()) return state.SkipWithError(why.c_str());
        state.SetIterationTime(ns / 1e9);
    }
}

BENCHMARK_CAPTURE(BM_OursPullUnpack, small, std::string("small"))
    ->Name("pull_unpack/ours/small")
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(5);
BENCHMARK_CAPTURE(BM_OursPullUnpack, python, std::string("python"))
    ->Name("pull_unpack/ours/python")
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);

void compare_with_skopeo_umoci() {
    for (const std::string image : {"small", "python"}) {
        const int runs = bench::peer_runs(image == "small" ? 9 : 5);
        struct Comparison {
            std::string name;
            bool unpack;
            PeerUnpack peer_unpack;
            std::string_view note;
        };
        const Comparison comparisons[] = {
            {fmt::format("pull+unpack {} image (peer: skopeo copy + umoci raw unpack)", image), true, PeerUnpack::Raw,
             "both sides make a rootfs and nothing else"},
            {fmt::format("pull+unpack {} image (peer: skopeo copy + umoci unpack)", image), true, PeerUnpack::WithMtree,
             "umoci unpack also writes an mtree manifest, hashing every file: work we do not do, and umoci "
             "unpack has no option to skip it (the raw unpack line above is the like-for-like one)"},
            {fmt::format("pull {} image (peer: skopeo copy alone)", image), false, PeerUnpack::None,
             "download and verify into a local store, no unpack"},
        };
        for (const auto& c : comparisons) {
            if (!bench::selected(c.name)) continue;
            if (const auto why = environment().unavailable(image); !why.empty()) {
                bench::report_no_ratio(c.name, why);
                continue;
            }
            const auto pairs = bench::measure_interleaved_timed(
                runs,
                [&](double& ns) {
                    return timed_in_fresh_dir(ns, [&](const fs::path& home) { return ours(image, home, c.unpack); });
                },
                [&](double& ns) {
                    return timed_in_fresh_dir(ns,
                                              [&](const fs::path& home) { return peer(image, home, c.peer_unpack); });
                });
            bench::report_comparison(c.name, pairs, {1, {}, c.note});
        }
    }
}

}  // namespace

int main(int argc, char** argv) { return bench::main(argc, argv, compare_with_skopeo_umoci); }
