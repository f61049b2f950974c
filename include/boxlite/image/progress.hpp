// Pull progress: one event per layer state change and per chunk received, for the CLI's
// progress bars. Events for different layers arrive from different download threads, but the
// store never calls the callback concurrently: a callback needs no locking of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace boxlite::image {

enum class LayerPhase : std::uint8_t {
    Waiting,        ///< queued behind other downloads
    Downloading,    ///< bytes arriving; `current` grows towards `total`
    Verifying,      ///< all bytes here; sha256 being checked
    Complete,       ///< verified and stored
    AlreadyExists,  ///< the blob was in the store: no network used
};

constexpr std::string_view to_string(LayerPhase phase) noexcept {
    switch (phase) {
        case LayerPhase::Waiting: return "Waiting";
        case LayerPhase::Downloading: return "Downloading";
        case LayerPhase::Verifying: return "Verifying Checksum";
        case LayerPhase::Complete: return "Pull complete";
        case LayerPhase::AlreadyExists: return "Already exists";
    }
    return "Waiting";
}

struct LayerProgress {
    std::string digest;         ///< "sha256:…" of the (compressed) layer blob
    std::size_t index = 0;      ///< 0-based position of the layer in the manifest
    std::size_t count = 0;      ///< number of layers in the image
    std::uint64_t current = 0;  ///< bytes present (a resumed download starts above 0)
    std::uint64_t total = 0;    ///< the descriptor's size
    LayerPhase phase = LayerPhase::Waiting;
};

using PullProgressCallback = std::function<void(const LayerProgress&)>;

}  // namespace boxlite::image
