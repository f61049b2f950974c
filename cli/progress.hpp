// `boxlite pull` progress: one bar per layer on a terminal (redrawn in place), one plain line per
// event otherwise (logs and pipes stay readable), nothing with -q.
//
// Updates may come from the image store's parallel download threads, so every entry point locks.
// Terminal redraws are throttled; a layer finishing always redraws so the last frame is exact.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::cli {

/// "1.5MB", "512B", "3.2GB" — decimal units, as Docker prints sizes.
[[nodiscard]] inline std::string human_size(std::uint64_t bytes) {
    static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    double value = static_cast<double>(bytes);
    std::size_t unit = 0;
    while (value >= 1000.0 && unit + 1 < std::size(kUnits)) {
        value /= 1000.0;
        ++unit;
    }
    if (unit == 0) return fmt::format("{}B", bytes);
    return fmt::format("{:.3g}{}", value, kUnits[unit]);
}

/// `[=========>          ]` of `width` cells inside the brackets; an unknown total draws none.
[[nodiscard]] inline std::string progress_bar(std::uint64_t done, std::uint64_t total, std::size_t width) {
    if (total == 0 || width == 0) return {};
    const auto clamped = std::min(done, total);
    const auto filled = static_cast<std::size_t>(static_cast<long double>(clamped) * static_cast<long double>(width) /
                                                 static_cast<long double>(total));
    std::string bar = "[";
    for (std::size_t i = 0; i < width; ++i) {
        if (i < filled) {
            bar += '=';
        } else if (i == filled && clamped < total) {
            bar += '>';
        } else {
            bar += ' ';
        }
    }
    bar += ']';
    return bar;
}

class PullProgress {
public:
    enum class Mode : std::uint8_t { Terminal, Plain, Quiet };

    PullProgress(Mode mode, std::FILE* out) : mode_(mode), out_(out) {}

    [[nodiscard]] Mode mode() const noexcept { return mode_; }

    /// A layer transferred `done` of `total` bytes (total 0 = unknown).
    void update(std::string_view layer_digest, std::uint64_t done, std::uint64_t total) {
        std::lock_guard lock(mutex_);
        auto& layer = find_or_add(layer_digest, total);
        const bool first = !layer.announced;
        layer.done = done;
        if (total != 0) layer.total = total;
        if (mode_ == Mode::Plain && first) {
            layer.announced = true;
            fmt::print(out_, "{}: Downloading{}\n", layer.short_id,
                       layer.total ? fmt::format(" ({})", human_size(layer.total)) : std::string{});
            std::fflush(out_);
        }
        if (mode_ == Mode::Terminal) {
            layer.announced = true;
            const auto now = std::chrono::steady_clock::now();
            if (first || now - last_draw_ >= std::chrono::milliseconds(100)) redraw(now);
        }
    }

    /// A layer is fully downloaded and verified (or was already in the store: `cached`).
    void complete(std::string_view layer_digest, bool cached = false) {
        std::lock_guard lock(mutex_);
        auto& layer = find_or_add(layer_digest, 0);
        if (layer.complete) return;
        layer.complete = true;
        layer.cached = cached;
        if (layer.total != 0) layer.done = layer.total;
        if (mode_ == Mode::Plain) {
            fmt::print(out_, "{}: {}\n", layer.short_id, cached ? "Already exists" : "Pull complete");
            std::fflush(out_);
        } else if (mode_ == Mode::Terminal) {
            redraw(std::chrono::steady_clock::now());
        }
    }

    /// The last lines: "Digest: …" and "Status: Downloaded newer image for …" (Docker's wording).
    void finish(std::string_view reference, std::string_view digest) {
        std::lock_guard lock(mutex_);
        if (mode_ == Mode::Quiet) return;
        if (mode_ == Mode::Terminal) redraw(std::chrono::steady_clock::now());
        if (!digest.empty()) fmt::print(out_, "Digest: {}\n", digest);
        const bool all_cached = !layers_.empty() &&
                                std::all_of(layers_.begin(), layers_.end(), [](const Layer& l) { return l.cached; });
        fmt::print(out_, "Status: {} for {}\n", all_cached ? "Image is up to date" : "Downloaded newer image",
                   reference);
        std::fflush(out_);
    }

    /// The frame a terminal shows now (exposed for tests).
    [[nodiscard]] std::string frame() const {
        std::string text;
        for (const auto& layer : layers_) text += line(layer) + "\n";
        return text;
    }

private:
    struct Layer {
        std::string digest;
        std::string short_id;
        std::uint64_t done = 0;
        std::uint64_t total = 0;
        bool announced = false;
        bool complete = false;
        bool cached = false;
    };

    Layer& find_or_add(std::string_view digest, std::uint64_t total) {
        for (auto& layer : layers_) {
            if (layer.digest == digest) return layer;
        }
        Layer layer;
        layer.digest = std::string(digest);
        // Docker shows 12 hex digits of the layer digest, without the algorithm.
        auto hex = digest.substr(digest.find(':') == std::string_view::npos ? 0 : digest.find(':') + 1);
        layer.short_id = std::string(hex.substr(0, 12));
        layer.total = total;
        layers_.push_back(std::move(layer));
        return layers_.back();
    }

    static std::string line(const Layer& layer) {
        if (layer.complete)
            return fmt::format("{}: {}", layer.short_id, layer.cached ? "Already exists" : "Pull complete");
        if (layer.total == 0) return fmt::format("{}: Downloading {}", layer.short_id, human_size(layer.done));
        return fmt::format("{}: Downloading {} {}/{}", layer.short_id, progress_bar(layer.done, layer.total, 40),
                           human_size(layer.done), human_size(layer.total));
    }

    void redraw(std::chrono::steady_clock::time_point now) {
        last_draw_ = now;
        std::string text;
        // Move back over the previous frame, then rewrite every line (erasing each first).
        if (drawn_lines_ > 0) text += fmt::format("\x1b[{}A", drawn_lines_);
        for (const auto& layer : layers_) text += "\r\x1b[2K" + line(layer) + "\n";
        drawn_lines_ = layers_.size();
        std::fwrite(text.data(), 1, text.size(), out_);
        std::fflush(out_);
    }

    Mode mode_;
    std::FILE* out_;
    std::mutex mutex_;
    std::vector<Layer> layers_;
    std::size_t drawn_lines_ = 0;
    std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace boxlite::cli
