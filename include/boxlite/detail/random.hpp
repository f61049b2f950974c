// The random bits behind BoxID and ContainerID: one generator per thread, seeded from the OS,
// and seeded again in a forked child — which would otherwise carry on its parent's sequence and
// hand out the same ids as its parent and its siblings (a ULID differs only in those bits
// within one millisecond).
#pragma once

#include <boxlite/detail/process.hpp>

#include <cstdint>
#include <random>

namespace boxlite::detail {

[[nodiscard]] inline std::mt19937_64& id_random() {
    thread_local std::mt19937_64 engine;
    thread_local std::int32_t seeded_for = 0;
    const std::int32_t pid = current_process_id();
    if (seeded_for != pid) {
        std::random_device device;
        std::seed_seq seed{device(), device(), device(), device(), device(), device(), device(), device()};
        engine.seed(seed);
        seeded_for = pid;
    }
    return engine;
}

}  // namespace boxlite::detail
