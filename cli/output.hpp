// Rendering lists (ls, images, stats) and single objects (inspect, info, version) in the formats
// the CLI offers: table, json, yaml, or a Go template (with Docker's `table ` prefix for headers).
#pragma once

#include "cli/template.hpp"

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

namespace output_detail {

inline std::string cell_text(const nlohmann::json& value) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_null()) return "";
    if (value.is_array()) {
        std::string out;
        for (const auto& element : value) {
            if (!out.empty()) out += ", ";
            out += cell_text(element);
        }
        return out;
    }
    return value.dump();
}

inline nlohmann::json headers_of(const std::vector<Column>& columns) {
    nlohmann::json headers = nlohmann::json::object();
    for (const auto& column : columns) headers[column.field] = column.header;
    return headers;
}

}  // namespace output_detail

/// Renders `rows` (a JSON array of objects) as `format`: "table" (the default columns), "json",
/// "yaml", "table {{…}}" (a template with a header line), or any other template (one line per row).
[[nodiscard]] inline BoxliteResult<std::string> render_rows(const nlohmann::json& rows, std::string_view format,
                                                            const std::vector<Column>& columns) {
    if (format == "json") return to_pretty_json(rows);
    if (format == "yaml") return to_yaml(rows);
    if (format.empty() || format == "table") {
        std::string text;
        for (std::size_t i = 0; i < columns.size(); ++i) text += (i ? "\t" : "") + columns[i].header;
        text += '\n';
        for (const auto& row : rows) {
            for (std::size_t i = 0; i < columns.size(); ++i) {
                const auto it = row.find(columns[i].field);
                text += (i ? "\t" : "") + (it == row.end() ? std::string() : output_detail::cell_text(*it));
            }
            text += '\n';
        }
        return align_columns(text);
    }
    std::string source = unescape_format(format);
    const bool table = std::string_view(source).starts_with("table ");
    if (table) source.erase(0, 6);
    BOXLITE_TRY(auto compiled, Template::compile(source));
    std::string text;
    if (table) text += compiled.render_header(output_detail::headers_of(columns)) + "\n";
    for (const auto& row : rows) {
        BOXLITE_TRY(auto line, compiled.render(row));
        text += line + "\n";
    }
    return table ? align_columns(text) : text;
}

/// Renders objects (inspect): "json" prints a JSON array (as `docker inspect` does), "yaml" a YAML
/// list, a template one line per object.
[[nodiscard]] inline BoxliteResult<std::string> render_objects(const nlohmann::json& objects, std::string_view format) {
    if (format == "json") return to_pretty_json(objects);
    if (format == "yaml") return to_yaml(objects);
    BOXLITE_TRY(auto compiled, Template::compile(unescape_format(format)));
    std::string text;
    for (const auto& object : objects) {
        BOXLITE_TRY(auto line, compiled.render(object));
        text += line + "\n";
    }
    return text;
}

/// Renders one object (info, version): "json", "yaml", or a template.
[[nodiscard]] inline BoxliteResult<std::string> render_object(const nlohmann::json& object, std::string_view format) {
    if (format == "json") return to_pretty_json(object);
    if (format == "yaml") return to_yaml(object);
    BOXLITE_TRY(auto compiled, Template::compile(unescape_format(format)));
    BOXLITE_TRY(auto line, compiled.render(object));
    return line + "\n";
}

}  // namespace boxlite::cli
