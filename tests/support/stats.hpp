// The median of a set of samples and its spread, for benchmarks and for any test that summarises
// repeated measurements. Header-only, no gtest: benchmark/harness uses it too.
//
//   const auto s = boxlite::test::summarize(samples);  // s.median, s.q1, s.q3, s.min, s.max, s.count
//   boxlite::test::median(samples);                   // just the median
//
// Quartiles use linear interpolation between order statistics (Hyndman & Fan type 7, what
// numpy.percentile and R's quantile() do by default), so the median of an even count is the mean
// of the two middle samples. The interquartile range (q3 - q1) is the spread we report: unlike
// the standard deviation it is not dragged by one run that another process disturbed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

namespace boxlite::test {

/// Order statistics of a set of samples. All fields are 0 when there were no samples.
struct Summary {
    std::size_t count = 0;
    double min = 0;
    double q1 = 0;      ///< 25th percentile
    double median = 0;  ///< 50th percentile
    double q3 = 0;      ///< 75th percentile
    double max = 0;

    [[nodiscard]] double iqr() const noexcept { return q3 - q1; }
    /// The interquartile range relative to the median (0 when the median is 0).
    [[nodiscard]] double relative_iqr() const noexcept { return median != 0 ? iqr() / std::abs(median) : 0; }
};

/// The `p`-quantile (0 <= p <= 1) of samples already sorted ascending; 0 when there are none.
[[nodiscard]] inline double quantile_of_sorted(std::span<const double> sorted, double p) {
    if (sorted.empty()) return 0;
    const double position = std::clamp(p, 0.0, 1.0) * static_cast<double>(sorted.size() - 1);
    const auto below = static_cast<std::size_t>(std::floor(position));
    const auto above = std::min(below + 1, sorted.size() - 1);
    const double fraction = position - static_cast<double>(below);
    return sorted[below] + (sorted[above] - sorted[below]) * fraction;
}

[[nodiscard]] inline Summary summarize(std::vector<double> samples) {
    Summary s;
    if (samples.empty()) return s;
    std::sort(samples.begin(), samples.end());
    s.count = samples.size();
    s.min = samples.front();
    s.max = samples.back();
    s.q1 = quantile_of_sorted(samples, 0.25);
    s.median = quantile_of_sorted(samples, 0.5);
    s.q3 = quantile_of_sorted(samples, 0.75);
    return s;
}

[[nodiscard]] inline double median(std::vector<double> samples) { return summarize(std::move(samples)).median; }

/// Element-wise a[i] / b[i] over the common length; pairs whose divisor is not positive are left out.
[[nodiscard]] inline std::vector<double> ratios(std::span<const double> a, std::span<const double> b) {
    std::vector<double> out;
    const std::size_t n = std::min(a.size(), b.size());
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        if (b[i] > 0) out.push_back(a[i] / b[i]);
    }
    return out;
}

}  // namespace boxlite::test
