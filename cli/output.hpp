// Rendering lists (ls, images, stats) and single objects (inspect, info, version) in the formats
// the CLI offers: table, json, yaml, or a Go template (with Docker's `table ` prefix for headers).
#pragma once

#include <boxlite/error.hpp>

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace boxlite::cli {

/// One column of a default table: the row field it shows and its header.
struct Column {
    std::string field;
    std::string header;
};

/// Aligns tab-separated cells into columns: each column is as wide as its widest cell plus three
/// spaces (minimum ten), like Go's tabwriter as Docker configures it. The last cell of a line is
/// never padded.
[[nodiscard]] std::string align_columns(std::string_view text);

/// Pretty JSON with two-space indentation and a trailing newline.
[[nodiscard]] std::string to_pretty_json(const nlohmann::json& value);

/// Block-style YAML for a JSON value; strings are quoted whenever a YAML reader would otherwise
/// see a number, a bool, null or structure in them.
[[nodiscard]] std::string to_yaml(const nlohmann::json& value);

/// Renders `rows` (a JSON array of objects) as `format`: "table" (the default columns), "json",
/// "yaml", "table {{…}}" (a template with a header line), or any other template (one line per row).
[[nodiscard]] BoxliteResult<std::string> render_rows(const nlohmann::json& rows, std::string_view format,
                                                     const std::vector<Column>& columns);

/// Renders objects (inspect): "json" prints a JSON array (as `docker inspect` does), "yaml" a YAML
/// list, a template one line per object.
[[nodiscard]] BoxliteResult<std::string> render_objects(const nlohmann::json& objects, std::string_view format);

/// Renders one object (info, version): "json", "yaml", or a template.
[[nodiscard]] BoxliteResult<std::string> render_object(const nlohmann::json& object, std::string_view format);

}  // namespace boxlite::cli
