// Secret: a value the box never sees in clear; requests to `hosts` get the placeholder
// replaced by the value on the way out.
#pragma once

#include <string>
#include <vector>

namespace boxlite {

struct Secret {
    std::string name;
    std::string value;
    std::vector<std::string> hosts;
    /// Empty means the default, "<BOXLITE_SECRET:name>" (see `effective_placeholder`).
    std::string placeholder;

    [[nodiscard]] std::string effective_placeholder() const {
        return placeholder.empty() ? "<BOXLITE_SECRET:" + name + ">" : placeholder;
    }

    friend bool operator==(const Secret&, const Secret&) = default;
};

}  // namespace boxlite
