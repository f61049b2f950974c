// A program that only uses the image store, as an embedding application would: the registry test
// runs it with libcurl or libarchive made unloadable (bind-mounted over in a private mount
// namespace) and checks what the user is told.
//
//   boxlite_image_probe pull <home> <reference>
//   boxlite_image_probe load <home> <archive>
//   boxlite_image_probe libs <home> -      opens the store, then says whether libcrypto is mapped
//
// Prints "ok" or the error's message; exits 0 on success, 1 on an error, 2 on bad usage.
#include <boxlite/image/image_store.hpp>

#include <fmt/format.h>

#include <fstream>
#include <string>

int main(int argc, char** argv) {
    using namespace boxlite::image;
    if (argc != 4) {
        fmt::print(stderr, "usage: boxlite_image_probe pull|load|libs <home> <reference|archive|->\n");
        return 2;
    }
    const std::string command = argv[1];
    RegistryOptions registry;
    registry.search_registries = {};
    registry.max_attempts = 1;
    auto store = ImageStore::open({argv[2], registry, {}});
    if (!store) {
        fmt::print("{}\n", store.error().message());
        return 1;
    }
    boxlite::BoxliteResult<void> result;
    if (command == "pull") {
        auto pulled = store->pull(argv[3]);
        if (!pulled) result = boxlite::fail(pulled.error());
    } else if (command == "load") {
        auto loaded = store->load(argv[3]);
        if (!loaded) result = boxlite::fail(loaded.error());
    } else if (command == "libs") {
        std::ifstream maps("/proc/self/maps");
        bool crypto = false;
        for (std::string line; std::getline(maps, line);)
            crypto = crypto || line.find("libcrypto.so") != std::string::npos;
        fmt::print("libcrypto {}\n", crypto ? "mapped" : "not mapped");
        return 0;
    } else {
        return 2;
    }
    if (!result) {
        fmt::print("{}\n", result.error().message());
        return 1;
    }
    fmt::print("ok\n");
    return 0;
}
