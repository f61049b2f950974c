// Secret: a value the box never sees in clear; requests to `hosts` get the placeholder
// replaced by the value on the way out.
#pragma once

#include <boxlite/detail/validate.hpp>
#include <boxlite/error.hpp>
#include <boxlite/network_spec.hpp>

#include <fmt/ranges.h>

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

/// name: an environment-style identifier (it becomes part of the placeholder); hosts: at
/// least one, each an allow_net-style pattern (the secret is only ever sent to those).
[[nodiscard]] inline BoxliteResult<void> validate(const Secret& secret) {
    if (!detail::is_env_name(secret.name)) {
        return fail(ErrorKind::Config, "secret name '{}' must match [A-Za-z_][A-Za-z0-9_]*", secret.name);
    }
    if (secret.hosts.empty()) {
        return fail(ErrorKind::Config, "secret '{}' must name at least one host it may be sent to", secret.name);
    }
    for (const auto& host : secret.hosts) {
        if (auto ok = validate_allow_net_pattern(host); !ok) {
            return fail(ok.error().with_context(fmt::format("secret '{}'", secret.name)));
        }
    }
    if (detail::has_nul(secret.value) || detail::has_nul(secret.placeholder)) {
        return fail(ErrorKind::Config, "secret '{}' value and placeholder must not contain NUL", secret.name);
    }
    return {};
}

}  // namespace boxlite

/// Never prints the value: "GITHUB_TOKEN -> api.github.com (<BOXLITE_SECRET:GITHUB_TOKEN>)".
template <>
struct fmt::formatter<boxlite::Secret> : fmt::formatter<std::string_view> {
    auto format(const boxlite::Secret& s, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(fmt::format("{} -> {} ({})", s.name, fmt::join(s.hosts, ", "),
                                                                    s.effective_placeholder()),
                                                        ctx);
    }
};
