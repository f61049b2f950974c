// Pull + unpack of the same images from a local docker-registry (127.0.0.1), cold every time
// (a fresh store per iteration): BoxLite's ImageStore::pull + rootfs_directory against the peers
// `skopeo copy docker://… oci:…` + `umoci unpack`. Both sides download, verify and unpack the
// same bytes from the same registry; ratio = ours / peer (< 1: BoxLite is faster).
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
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace boxlite;

const std::string kHarness = BOXLITE_IMAGE_HARNESS;

int sh(const std::string& command) {
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// umoci needs --rootless to unpack without root (it cannot chown); skopeo does not care.
std::string umoci_unpack() { return ::geteuid() == 0 ? "umoci unpack" : "umoci unpack --rootless"; }

// The registry and the images. Each image is ready on its own: a machine without Debian's Python
// still measures the small image.
struct Environment {
    bench::TempHome work;
    int port = 0;
    std::string why_not;                        ///< why nothing can run
    std::map<std::string, std::string> missing;  ///< image -> why it is not pushed

    Environment() {
        for (const char* tool : {"docker-registry", "skopeo", "umoci"}) {
            if (sh(fmt::format("command -v {} >/dev/null", tool)) != 0) {
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
        if (sh(fmt::format("bash {} build {w}/img >{w}/build.log 2>&1", kHarness, fmt::arg("w", w))) != 0 ||
            sh(fmt::format("bash {} start {}/registry {}", kHarness, w, port)) != 0) {
            why_not = "could not build the test images or start docker-registry (see " + w + "/build.log)";
            return;
        }
        if (sh(fmt::format("bash {} push {}/img/oci single {} bench/small:1", kHarness, w, port)) != 0) {
            missing["small"] = "could not push the small image";
        }
        const std::string python = "$(ls -d /usr/lib/python3.* 2>/dev/null | head -1)";
        if (sh("ls -d /usr/lib/python3.* >/dev/null 2>&1") != 0) {
            missing["python"] = "no /usr/lib/python3.* on this machine to build the python image from";
        } else if (sh(fmt::format("cd {w}/img && {unpack} --image oci:single b >>{w}/build.log 2>&1 && "
                                  "mkdir -p b/rootfs/usr/lib && cp -a {py} b/rootfs/usr/lib/ && "
                                  "umoci repack --image oci:python b >>{w}/build.log 2>&1 && rm -rf b && "
                                  "bash {h} push {w}/img/oci python {port} bench/python:1",
                                  fmt::arg("w", w), fmt::arg("py", python), fmt::arg("unpack", umoci_unpack()),
                                  fmt::arg("h", kHarness), fmt::arg("port", port))) != 0) {
            missing["python"] = "could not build or push the python image (see " + w + "/build.log)";
        }
    }
    ~Environment() { sh(fmt::format("bash {} stop {}/registry", kHarness, work.path().string())); }

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

std::map<std::string, std::vector<double>> samples;  // name -> wall ns per iteration

void record(const std::string& name, std::chrono::steady_clock::time_point start) {
    samples[name].push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count());
}

void BM_OursPullUnpack(benchmark::State& state, const std::string& image) {
    auto& env = environment();
    if (const auto why = env.unavailable(image); !why.empty()) {
        state.SkipWithError(why.c_str());
        return;
    }
    for (auto _ : state) {
        bench::TempHome home;
        const auto start = std::chrono::steady_clock::now();
        image::RegistryOptions registry;
        registry.search_registries = {};
        auto store = image::ImageStore::open({home.path(), registry, {}});
        auto pulled = store ? store->pull(fmt::format("127.0.0.1:{}/bench/{}:1", env.port, image))
                            : BoxliteResult<image::ImageInfo>(tl::unexpected(store.error()));
        auto tree = pulled ? store->rootfs_directory(*pulled) : BoxliteResult<fs::path>(tl::unexpected(pulled.error()));
        if (!tree) {
            state.SkipWithError(tree.error().to_string().c_str());
            return;
        }
        record("ours/" + image, start);
    }
}

void BM_PeerSkopeoUmoci(benchmark::State& state, const std::string& image) {
    auto& env = environment();
    if (const auto why = env.unavailable(image); !why.empty()) {
        state.SkipWithError(why.c_str());
        return;
    }
    for (auto _ : state) {
        bench::TempHome home;
        const auto start = std::chrono::steady_clock::now();
        const int rc = sh(fmt::format(
            "skopeo copy -q --src-tls-verify=false docker://127.0.0.1:{port}/bench/{img}:1 oci:{h}/oci:{img} >/dev/null && "
            "{unpack} --image {h}/oci:{img} {h}/bundle >/dev/null",
            fmt::arg("port", env.port), fmt::arg("img", image), fmt::arg("h", home.path().string()),
            fmt::arg("unpack", umoci_unpack())));
        if (rc != 0) {
            state.SkipWithError("skopeo copy + umoci unpack failed");
            return;
        }
        record("peer/" + image, start);
    }
}

BENCHMARK_CAPTURE(BM_OursPullUnpack, small, std::string("small"))->Name("pull_unpack/ours/small")->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK_CAPTURE(BM_PeerSkopeoUmoci, small, std::string("small"))->Name("pull_unpack/skopeo_umoci/small")->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK_CAPTURE(BM_OursPullUnpack, python, std::string("python"))->Name("pull_unpack/ours/python")->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(BM_PeerSkopeoUmoci, python, std::string("python"))->Name("pull_unpack/skopeo_umoci/python")->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(3);

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    for (const char* image : {"small", "python"}) {
        const auto ours = samples.find(std::string("ours/") + image);
        const auto peer = samples.find(std::string("peer/") + image);
        if (ours == samples.end() || peer == samples.end()) continue;
        bench::report_peer(fmt::format("pull+unpack {} image (skopeo copy + umoci unpack)", image), median(ours->second),
                           median(peer->second));
    }
    return 0;
}
