// The JSON of boxlite_create_box (the reference's BoxOptions JSON schema, docs/c-api.md), parsed
// strictly: an unknown key, a wrong type or an out-of-range number is a Config error that names
// the key ("advanced.security.uid"); text that is not JSON is InvalidArgument. Parsing touches
// nothing on the host, so the fuzzer (tests/c_api/fuzz) runs it without a runtime; the checks that
// look at the host (paths exist, CPU count) are validate_box_options()'s, made by create.
#pragma once

#include <boxlite/box_options.hpp>
#include <boxlite/error.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace boxlite::capi {

struct CreateRequest {
    BoxOptions options;
    std::optional<std::string> name;  ///< the "name" key: this API's addition to the schema
};

/// Never throws.
[[nodiscard]] BoxliteResult<CreateRequest> parse_create_options(std::string_view json_text) noexcept;

}  // namespace boxlite::capi
