// Output formatting of the CLI: aligned tables, pretty JSON, YAML, and rendering rows and objects
// in the format a command was given (see output.hpp).
#include "cli/output.hpp"

#include "cli/template.hpp"

#include <cstdint>

namespace boxlite::cli {

namespace {

/// Display width of UTF-8 text: one column per code point (no East Asian wide handling).
std::size_t display_width(std::string_view text) {
    std::size_t width = 0;
    for (char c : text) {
        if ((static_cast<unsigned char>(c) & 0xC0U) != 0x80U) ++width;
    }
    return width;
}

}  // namespace

std::string align_columns(std::string_view text) {
    std::vector<std::vector<std::string_view>> rows;
    std::vector<bool> line_ends;
    std::size_t pos = 0;
    while (pos < text.size()) {
        auto end = text.find('\n', pos);
        const bool has_newline = end != std::string_view::npos;
        if (!has_newline) end = text.size();
        std::vector<std::string_view> cells;
        std::string_view line = text.substr(pos, end - pos);
        std::size_t cell_start = 0;
        while (true) {
            const auto tab = line.find('\t', cell_start);
            cells.push_back(
                line.substr(cell_start, tab == std::string_view::npos ? std::string_view::npos : tab - cell_start));
            if (tab == std::string_view::npos) break;
            cell_start = tab + 1;
        }
        rows.push_back(std::move(cells));
        line_ends.push_back(has_newline);
        pos = end + 1;
    }
    std::vector<std::size_t> widths;
    for (const auto& row : rows) {
        for (std::size_t i = 0; i + 1 < row.size(); ++i) {
            if (widths.size() <= i) widths.resize(i + 1, 0);
            widths[i] = std::max(widths[i], display_width(row[i]));
        }
    }
    std::string out;
    for (std::size_t r = 0; r < rows.size(); ++r) {
        const auto& row = rows[r];
        for (std::size_t i = 0; i < row.size(); ++i) {
            out += row[i];
            if (i + 1 < row.size()) {
                const std::size_t column = std::max<std::size_t>(widths[i] + 3, 10);
                out.append(column - display_width(row[i]), ' ');
            }
        }
        if (line_ends[r]) out.push_back('\n');
    }
    return out;
}

std::string to_pretty_json(const nlohmann::json& value) {
    return value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

namespace {

bool is_space_char(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool yaml_needs_quotes(const std::string& text) {
    if (text.empty()) return true;
    static constexpr std::string_view kReserved[] = {"true", "false", "yes",   "no",    "on",  "off", "null",
                                                     "~",    "True",  "False", "Yes",   "No",  "On",  "Off",
                                                     "Null", "NULL",  "TRUE",  "FALSE", "YES", "NO",  "ON",
                                                     "OFF",  "y",     "n",     "Y",     "N"};
    for (auto word : kReserved) {
        if (text == word) return true;
    }
    const char first = text.front();
    if (std::string_view("-?:,[]{}#&*!|>'\"%@`").find(first) != std::string_view::npos) return true;
    if (is_space_char(first) || is_space_char(text.back())) return true;
    if (text.find(": ") != std::string::npos || text.find(" #") != std::string::npos) return true;
    if (text.back() == ':') return true;
    for (char c : text) {
        const auto uc = static_cast<unsigned char>(c);
        if (uc < 0x20 || uc == 0x7F) return true;
    }
    // Anything a YAML reader would take for a number (including 0x.., 1e3, .5, 1_000).
    bool numeric_like = true;
    for (char c : text) {
        if (std::string_view("0123456789+-.eExXoO_abcdefABCDEF").find(c) == std::string_view::npos) {
            numeric_like = false;
            break;
        }
    }
    if (numeric_like && std::isdigit(static_cast<unsigned char>(text.front())) != 0) return true;
    if (numeric_like && (first == '.' || first == '+')) return true;
    if (text == ".inf" || text == ".nan" || text == ".Inf" || text == ".NaN") return true;
    return false;
}

void yaml_scalar(const nlohmann::json& value, std::string& out) {
    if (value.is_string()) {
        const auto& text = value.get_ref<const std::string&>();
        // JSON's double-quoted form is valid YAML and escapes everything that needs it.
        out += yaml_needs_quotes(text)
                   ? nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                   : text;
    } else if (value.is_null()) {
        out += "null";
    } else {
        out += value.dump();
    }
}

void yaml_node(const nlohmann::json& value, std::size_t indent, std::string& out);

void yaml_child(const nlohmann::json& value, std::size_t indent, std::string& out) {
    if ((value.is_object() || value.is_array()) && !value.empty()) {
        out += '\n';
        yaml_node(value, indent, out);
    } else {
        out += ' ';
        if (value.is_object()) {
            out += "{}\n";
        } else if (value.is_array()) {
            out += "[]\n";
        } else {
            yaml_scalar(value, out);
            out += '\n';
        }
    }
}

void yaml_node(const nlohmann::json& value, std::size_t indent, std::string& out) {
    const std::string pad(indent, ' ');
    if (value.is_object()) {
        for (const auto& [key, child] : value.items()) {
            out += pad;
            yaml_scalar(nlohmann::json(key), out);
            out += ':';
            yaml_child(child, indent + 2, out);
        }
    } else if (value.is_array()) {
        for (const auto& child : value) {
            out += pad;
            out += '-';
            if (child.is_object() && !child.empty()) {
                // "- key: value" with the rest of the mapping aligned under the first key.
                std::string nested;
                yaml_node(child, indent + 2, nested);
                out += ' ';
                out += nested.substr(indent + 2);
            } else {
                yaml_child(child, indent + 2, out);
            }
        }
    } else {
        out += pad;
        yaml_scalar(value, out);
        out += '\n';
    }
}

}  // namespace

std::string to_yaml(const nlohmann::json& value) {
    std::string out;
    if ((value.is_object() || value.is_array()) && value.empty()) return value.is_object() ? "{}\n" : "[]\n";
    yaml_node(value, 0, out);
    return out;
}

namespace {

std::string cell_text(const nlohmann::json& value) {
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

nlohmann::json headers_of(const std::vector<Column>& columns) {
    nlohmann::json headers = nlohmann::json::object();
    for (const auto& column : columns) headers[column.field] = column.header;
    return headers;
}

}  // namespace

BoxliteResult<std::string> render_rows(const nlohmann::json& rows, std::string_view format,
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
                text += (i ? "\t" : "") + (it == row.end() ? std::string() : cell_text(*it));
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
    if (table) text += compiled.render_header(headers_of(columns)) + "\n";
    for (const auto& row : rows) {
        BOXLITE_TRY(auto line, compiled.render(row));
        text += line + "\n";
    }
    return table ? align_columns(text) : text;
}

BoxliteResult<std::string> render_objects(const nlohmann::json& objects, std::string_view format) {
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

BoxliteResult<std::string> render_object(const nlohmann::json& object, std::string_view format) {
    if (format == "json") return to_pretty_json(object);
    if (format == "yaml") return to_yaml(object);
    BOXLITE_TRY(auto compiled, Template::compile(unescape_format(format)));
    BOXLITE_TRY(auto line, compiled.render(object));
    return line + "\n";
}

}  // namespace boxlite::cli
