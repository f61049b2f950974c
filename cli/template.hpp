// A subset of Go's text/template, enough for `--format '{{.ID}} {{.Status}}'` the way Docker
// users write it. Data is a JSON value (what `inspect --format json` would print).
//
// Supported:
//   text and actions   `{{ pipeline }}`, with `{{-` / `-}}` trimming the neighbouring whitespace
//   operands           `.`, `.Field`, `.Field.Sub` (exact name first, then case-insensitive),
//                      "string" literals (Go escapes \" \\ \n \t), integers
//   pipelines          `{{.Name | upper}}`: the left value becomes the right call's last argument
//   functions          json, upper, lower, title, join LIST SEP, len, truncate VALUE N,
//                      index VALUE KEY, print ARGS...
//   control            {{if PIPELINE}} … {{else}} … {{end}}, {{range PIPELINE}} … {{end}} (dot
//                      becomes each element), {{/* comments */}}
//
// A field that does not exist is an error naming it and the fields that do (Go's behaviour for
// structs), so a typo in --format never prints a silently empty column.
#pragma once

#include <boxlite/error.hpp>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::cli {

namespace template_detail {
struct Node;
}

class Template {
public:
    /// Parses `text`; InvalidArgument with the offset and what was expected on a syntax error.
    [[nodiscard]] static BoxliteResult<Template> compile(std::string_view text);

    /// Renders against `data`; InvalidArgument when a field is missing or a function misused.
    [[nodiscard]] BoxliteResult<std::string> render(const nlohmann::json& data) const;

    /// Renders the header line of a `table` format: every top-level field action `{{.Name}}`
    /// becomes `headers[Name]` (or NAME upper-cased when absent); other text is kept.
    [[nodiscard]] std::string render_header(const nlohmann::json& headers) const;

    Template(Template&&) noexcept;
    Template& operator=(Template&&) noexcept;
    ~Template();

private:
    Template();
    std::vector<std::unique_ptr<template_detail::Node>> nodes_;
};

/// Replaces the two-character escapes `\t` and `\n` with the characters, as Docker does before it
/// compiles a --format string (shells pass them literally in single quotes).
[[nodiscard]] std::string unescape_format(std::string_view text);

}  // namespace boxlite::cli
