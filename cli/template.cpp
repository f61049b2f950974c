// The Go-template subset of the CLI (see template.hpp).
#include "cli/template.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <optional>
#include <utility>
#include <variant>

namespace boxlite::cli {

namespace template_detail {

/// One operand of a command: `.`, `.A.B`, a literal, or a function name.
struct Operand {
    enum class Kind : std::uint8_t { Dot, Field, String, Number, Function };
    Kind kind = Kind::Dot;
    std::vector<std::string> path;  ///< Field
    std::string text;               ///< String literal value or Function name
    std::int64_t number = 0;        ///< Number
};

/// `f a b` — a function call, or a single operand when the first is not a function.
struct Command {
    std::vector<Operand> operands;
};

/// `cmd | cmd | …`
struct Pipeline {
    std::vector<Command> commands;
};

struct Node {
    enum class Kind : std::uint8_t { Text, Action, If, Range };
    Kind kind = Kind::Text;
    std::string text;                              ///< Text
    Pipeline pipeline;                             ///< Action, If, Range
    std::vector<std::unique_ptr<Node>> body;       ///< If (then), Range
    std::vector<std::unique_ptr<Node>> else_body;  ///< If
};

namespace {

constexpr std::string_view kFunctions[] = {"json", "upper",    "lower", "title", "join",
                                           "len",  "truncate", "index", "print"};

bool is_function(std::string_view name) {
    return std::find(std::begin(kFunctions), std::end(kFunctions), name) != std::end(kFunctions);
}

bool is_ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; }

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/// A raw action `{{ … }}` as found in the source, before its contents are parsed.
struct RawAction {
    std::string body;    ///< between the delimiters, trim markers removed
    std::size_t offset;  ///< of the opening "{{" in the source, for messages
};

class ActionParser {
public:
    ActionParser(std::string_view text, std::size_t offset) : text_(text), offset_(offset) {}

    BoxliteResult<Pipeline> pipeline() {
        Pipeline result;
        while (true) {
            skip_space();
            Command command;
            while (true) {
                skip_space();
                if (at_end() || peek() == '|') break;
                BOXLITE_TRY(auto operand, parse_operand());
                command.operands.push_back(std::move(operand));
            }
            if (command.operands.empty()) return error("an empty command");
            // A function name only makes sense first; a bare value cannot take arguments.
            for (std::size_t i = 1; i < command.operands.size(); ++i) {
                if (command.operands[i].kind == Operand::Kind::Function) {
                    return error(fmt::format("function '{}' used as an argument", command.operands[i].text));
                }
            }
            if (command.operands.front().kind != Operand::Kind::Function && command.operands.size() > 1) {
                return error("a value followed by arguments (only functions take arguments)");
            }
            result.commands.push_back(std::move(command));
            skip_space();
            if (at_end()) break;
            ++pos_;  // '|'
        }
        if (result.commands.empty()) return error("an empty action");
        for (std::size_t i = 1; i < result.commands.size(); ++i) {
            if (result.commands[i].operands.front().kind != Operand::Kind::Function) {
                return error("a value after '|' (only functions can receive a piped value)");
            }
        }
        return result;
    }

private:
    bool at_end() const { return pos_ >= text_.size(); }
    char peek() const { return text_[pos_]; }
    void skip_space() {
        while (!at_end() && is_space(peek())) ++pos_;
    }

    tl::unexpected<BoxliteError> error(std::string_view what) const {
        return fail(ErrorKind::InvalidArgument, "template: action at offset {}: {} in '{{{{{}}}}}'", offset_, what,
                    text_);
    }

    BoxliteResult<Operand> parse_operand() {
        Operand operand;
        const char c = peek();
        if (c == '.') {
            ++pos_;
            if (at_end() || is_space(peek()) || peek() == '|') {
                operand.kind = Operand::Kind::Dot;
                return operand;
            }
            operand.kind = Operand::Kind::Field;
            while (true) {
                const std::size_t start = pos_;
                while (!at_end() && is_ident_char(peek())) ++pos_;
                if (pos_ == start) return error("a field name expected after '.'");
                operand.path.emplace_back(text_.substr(start, pos_ - start));
                if (!at_end() && peek() == '.') {
                    ++pos_;
                    continue;
                }
                break;
            }
            if (!at_end() && !is_space(peek()) && peek() != '|') {
                return error(fmt::format("unexpected '{}' after field", peek()));
            }
            return operand;
        }
        if (c == '"') {
            ++pos_;
            operand.kind = Operand::Kind::String;
            while (true) {
                if (at_end()) return error("an unterminated string");
                char ch = peek();
                ++pos_;
                if (ch == '"') break;
                if (ch == '\\') {
                    if (at_end()) return error("an unterminated escape");
                    const char esc = peek();
                    ++pos_;
                    switch (esc) {
                        case 'n': ch = '\n'; break;
                        case 't': ch = '\t'; break;
                        case '\\': ch = '\\'; break;
                        case '"': ch = '"'; break;
                        default: return error(fmt::format("unknown escape '\\{}'", esc));
                    }
                }
                operand.text.push_back(ch);
            }
            return operand;
        }
        if ((c >= '0' && c <= '9') || c == '-') {
            const std::size_t start = pos_;
            ++pos_;
            while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
            const auto number_text = text_.substr(start, pos_ - start);
            auto [ptr, ec] = std::from_chars(number_text.data(), number_text.data() + number_text.size(),
                                             operand.number);
            if (ec != std::errc{} || ptr != number_text.data() + number_text.size()) {
                return error(fmt::format("a bad number '{}'", number_text));
            }
            operand.kind = Operand::Kind::Number;
            return operand;
        }
        if (is_ident_char(c)) {
            const std::size_t start = pos_;
            while (!at_end() && is_ident_char(peek())) ++pos_;
            operand.text = std::string(text_.substr(start, pos_ - start));
            if (!is_function(operand.text)) {
                return error(
                    fmt::format("function '{}' not defined (available: json, upper, lower, title, join, len, "
                                "truncate, index, print)",
                                operand.text));
            }
            operand.kind = Operand::Kind::Function;
            return operand;
        }
        return error(fmt::format("unexpected '{}'", c));
    }

    std::string_view text_;
    std::size_t offset_;
    std::size_t pos_ = 0;
};

/// Splits the source into text and raw actions, applying `{{-` / `-}}` trimming.
BoxliteResult<std::vector<std::variant<std::string, RawAction>>> tokenize(std::string_view source) {
    std::vector<std::variant<std::string, RawAction>> tokens;
    std::size_t pos = 0;
    bool trim_next_text = false;
    while (pos <= source.size()) {
        const auto open = source.find("{{", pos);
        std::string text(source.substr(pos, open == std::string_view::npos ? std::string_view::npos : open - pos));
        if (trim_next_text) {
            const auto first = std::find_if_not(text.begin(), text.end(), is_space);
            text.erase(text.begin(), first);
        }
        if (open == std::string_view::npos) {
            if (!text.empty()) tokens.emplace_back(std::move(text));
            break;
        }
        const auto close = source.find("}}", open + 2);
        if (close == std::string_view::npos) {
            return fail(ErrorKind::InvalidArgument, "template: unclosed action at offset {} (missing '}}}}')", open);
        }
        std::string_view body = source.substr(open + 2, close - open - 2);
        // "{{- " trims the text before; " -}}" the text after (the space is required, as in Go).
        if (body.size() >= 2 && body[0] == '-' && is_space(body[1])) {
            while (!text.empty() && is_space(text.back())) text.pop_back();
            body.remove_prefix(2);
        }
        trim_next_text = false;
        if (body.size() >= 2 && body[body.size() - 1] == '-' && is_space(body[body.size() - 2])) {
            trim_next_text = true;
            body.remove_suffix(2);
        }
        if (!text.empty()) tokens.emplace_back(std::move(text));
        while (!body.empty() && is_space(body.front())) body.remove_prefix(1);
        while (!body.empty() && is_space(body.back())) body.remove_suffix(1);
        tokens.emplace_back(RawAction{std::string(body), open});
        pos = close + 2;
    }
    return tokens;
}

/// Builds the node tree from tokens, handling if/else/range/end nesting.
class TreeBuilder {
public:
    explicit TreeBuilder(std::vector<std::variant<std::string, RawAction>> tokens) : tokens_(std::move(tokens)) {}

    BoxliteResult<std::vector<std::unique_ptr<Node>>> build() {
        std::vector<std::unique_ptr<Node>> nodes;
        BOXLITE_TRY(auto terminator, parse_list(nodes));
        if (terminator) {
            return fail(ErrorKind::InvalidArgument, "template: unexpected {{{{{}}}}} at offset {}", terminator->body,
                        terminator->offset);
        }
        return nodes;
    }

private:
    /// Parses nodes until `{{end}}`/`{{else}}` (returned) or the end of input (nullopt).
    BoxliteResult<std::optional<RawAction>> parse_list(std::vector<std::unique_ptr<Node>>& out) {
        while (index_ < tokens_.size()) {
            auto& token = tokens_[index_++];
            if (auto* text = std::get_if<std::string>(&token)) {
                auto node = std::make_unique<Node>();
                node->kind = Node::Kind::Text;
                node->text = std::move(*text);
                out.push_back(std::move(node));
                continue;
            }
            auto& action = std::get<RawAction>(token);
            const std::string_view body = action.body;
            if (body.starts_with("/*")) {
                if (!body.ends_with("*/")) {
                    return fail(ErrorKind::InvalidArgument, "template: unclosed comment at offset {}", action.offset);
                }
                continue;
            }
            if (body == "end" || body == "else") return std::make_optional(action);
            const bool is_if = keyword(body, "if");
            const bool is_range = keyword(body, "range");
            auto node = std::make_unique<Node>();
            std::string_view pipeline_text = body;
            if (is_if || is_range) pipeline_text.remove_prefix(is_if ? 2 : 5);
            BOXLITE_TRY(node->pipeline, ActionParser(pipeline_text, action.offset).pipeline());
            if (!is_if && !is_range) {
                node->kind = Node::Kind::Action;
                out.push_back(std::move(node));
                continue;
            }
            node->kind = is_if ? Node::Kind::If : Node::Kind::Range;
            BOXLITE_TRY(auto end, parse_list(node->body));
            if (end && end->body == "else") {
                if (!is_if) {
                    return fail(ErrorKind::InvalidArgument,
                                "template: {{{{else}}}} inside range at offset {} is not "
                                "supported",
                                end->offset);
                }
                BOXLITE_TRY(end, parse_list(node->else_body));
            }
            if (!end || end->body != "end") {
                return fail(ErrorKind::InvalidArgument, "template: {{{{{}}}}} at offset {} has no matching {{{{end}}}}",
                            action.body, action.offset);
            }
            out.push_back(std::move(node));
        }
        return std::optional<RawAction>{};
    }

    static bool keyword(std::string_view body, std::string_view word) {
        return body.size() > word.size() && body.starts_with(word) && is_space(body[word.size()]);
    }

    std::vector<std::variant<std::string, RawAction>> tokens_;
    std::size_t index_ = 0;
};

std::string value_text(const nlohmann::json& value) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_null()) return "<nil>";
    return value.dump();
}

bool truthy(const nlohmann::json& value) {
    if (value.is_null()) return false;
    if (value.is_boolean()) return value.get<bool>();
    if (value.is_number_integer()) return value.get<std::int64_t>() != 0;
    if (value.is_number_unsigned()) return value.get<std::uint64_t>() != 0;
    if (value.is_number_float()) return value.get<double>() != 0.0;
    if (value.is_string() || value.is_array() || value.is_object()) return !value.empty();
    return true;
}

std::string available_fields(const nlohmann::json& object) {
    std::string names;
    for (const auto& [key, unused] : object.items()) {
        if (!names.empty()) names += ", ";
        names += key;
    }
    return names.empty() ? "none" : names;
}

BoxliteResult<nlohmann::json> lookup_field(const nlohmann::json& dot, const std::vector<std::string>& path) {
    const nlohmann::json* current = &dot;
    std::string walked;
    for (const auto& name : path) {
        walked += "." + name;
        if (!current->is_object()) {
            return fail(ErrorKind::InvalidArgument, "template: can't evaluate field {} in a {} value", walked,
                        current->type_name());
        }
        auto it = current->find(name);
        if (it == current->end()) {
            for (auto candidate = current->begin(); candidate != current->end(); ++candidate) {
                const auto& key = candidate.key();
                if (key.size() == name.size() && std::equal(key.begin(), key.end(), name.begin(), [](char a, char b) {
                        return std::tolower(static_cast<unsigned char>(a)) ==
                               std::tolower(static_cast<unsigned char>(b));
                    })) {
                    it = candidate;
                    break;
                }
            }
        }
        if (it == current->end()) {
            return fail(ErrorKind::InvalidArgument, "template: can't evaluate field {} (available: {})", walked,
                        available_fields(*current));
        }
        current = &*it;
    }
    return *current;
}

std::string to_title(std::string text) {
    bool start = true;
    for (char& c : text) {
        const auto uc = static_cast<unsigned char>(c);
        if (std::isalpha(uc) != 0) {
            if (start) c = static_cast<char>(std::toupper(uc));
            start = false;
        } else {
            start = true;
        }
    }
    return text;
}

BoxliteResult<nlohmann::json> call_function(const std::string& name, const std::vector<nlohmann::json>& args) {
    auto arity = [&](std::size_t n) -> BoxliteResult<void> {
        if (args.size() != n) {
            return fail(ErrorKind::InvalidArgument, "template: {} takes {} argument{}, got {}", name, n,
                        n == 1 ? "" : "s", args.size());
        }
        return {};
    };
    if (name == "json") {
        BOXLITE_TRY_VOID(arity(1));
        return nlohmann::json(args[0].dump());
    }
    if (name == "upper" || name == "lower" || name == "title") {
        BOXLITE_TRY_VOID(arity(1));
        std::string text = value_text(args[0]);
        if (name == "title") return nlohmann::json(to_title(std::move(text)));
        for (char& c : text) {
            const auto uc = static_cast<unsigned char>(c);
            c = static_cast<char>(name == "upper" ? std::toupper(uc) : std::tolower(uc));
        }
        return nlohmann::json(std::move(text));
    }
    if (name == "join") {
        BOXLITE_TRY_VOID(arity(2));
        if (!args[0].is_array()) {
            return fail(ErrorKind::InvalidArgument, "template: join needs a list first, got a {}", args[0].type_name());
        }
        std::string out;
        const std::string separator = value_text(args[1]);
        for (std::size_t i = 0; i < args[0].size(); ++i) {
            if (i > 0) out += separator;
            out += value_text(args[0][i]);
        }
        return nlohmann::json(std::move(out));
    }
    if (name == "len") {
        BOXLITE_TRY_VOID(arity(1));
        if (args[0].is_string()) return nlohmann::json(args[0].get<std::string>().size());
        if (args[0].is_array() || args[0].is_object()) return nlohmann::json(args[0].size());
        return fail(ErrorKind::InvalidArgument, "template: len of a {} value", args[0].type_name());
    }
    if (name == "truncate") {
        BOXLITE_TRY_VOID(arity(2));
        if (!args[1].is_number_integer() || args[1].get<std::int64_t>() < 0) {
            return fail(ErrorKind::InvalidArgument, "template: truncate needs a length >= 0 second");
        }
        std::string text = value_text(args[0]);
        const auto limit = static_cast<std::size_t>(args[1].get<std::int64_t>());
        if (text.size() > limit) text.resize(limit);
        return nlohmann::json(std::move(text));
    }
    if (name == "index") {
        BOXLITE_TRY_VOID(arity(2));
        if (args[0].is_array() && args[1].is_number_integer()) {
            const auto i = args[1].get<std::int64_t>();
            if (i < 0 || static_cast<std::size_t>(i) >= args[0].size()) {
                return fail(ErrorKind::InvalidArgument, "template: index {} out of range (length {})", i,
                            args[0].size());
            }
            return args[0][static_cast<std::size_t>(i)];
        }
        if (args[0].is_object() && args[1].is_string()) {
            auto it = args[0].find(args[1].get<std::string>());
            return it == args[0].end() ? nlohmann::json() : *it;
        }
        return fail(ErrorKind::InvalidArgument, "template: index of a {} by a {}", args[0].type_name(),
                    args[1].type_name());
    }
    // print: Go's fmt.Sprint — operands joined, with a space between two non-strings.
    std::string out;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (i > 0 && !args[i - 1].is_string() && !args[i].is_string()) out += ' ';
        out += value_text(args[i]);
    }
    return nlohmann::json(std::move(out));
}

BoxliteResult<nlohmann::json> evaluate_operand(const Operand& operand, const nlohmann::json& dot) {
    switch (operand.kind) {
        case Operand::Kind::Dot: return dot;
        case Operand::Kind::Field: return lookup_field(dot, operand.path);
        case Operand::Kind::String: return nlohmann::json(operand.text);
        case Operand::Kind::Number: return nlohmann::json(operand.number);
        case Operand::Kind::Function: break;
    }
    return fail(ErrorKind::Internal, "template: a function evaluated as a value");
}

BoxliteResult<nlohmann::json> evaluate(const Pipeline& pipeline, const nlohmann::json& dot) {
    std::optional<nlohmann::json> piped;
    for (const auto& command : pipeline.commands) {
        const auto& head = command.operands.front();
        if (head.kind != Operand::Kind::Function) {
            BOXLITE_TRY(piped, evaluate_operand(head, dot));
            continue;
        }
        std::vector<nlohmann::json> args;
        for (std::size_t i = 1; i < command.operands.size(); ++i) {
            BOXLITE_TRY(auto value, evaluate_operand(command.operands[i], dot));
            args.push_back(std::move(value));
        }
        if (piped) args.push_back(std::move(*piped));
        BOXLITE_TRY(piped, call_function(head.text, args));
    }
    return piped ? std::move(*piped) : nlohmann::json();
}

BoxliteResult<void> render_nodes(const std::vector<std::unique_ptr<Node>>& nodes, const nlohmann::json& dot,
                                 std::string& out) {
    for (const auto& node : nodes) {
        switch (node->kind) {
            case Node::Kind::Text: out += node->text; break;
            case Node::Kind::Action: {
                BOXLITE_TRY(auto value, evaluate(node->pipeline, dot));
                out += value_text(value);
                break;
            }
            case Node::Kind::If: {
                BOXLITE_TRY(auto value, evaluate(node->pipeline, dot));
                BOXLITE_TRY_VOID(render_nodes(truthy(value) ? node->body : node->else_body, dot, out));
                break;
            }
            case Node::Kind::Range: {
                BOXLITE_TRY(auto value, evaluate(node->pipeline, dot));
                if (value.is_null()) break;
                if (!value.is_array() && !value.is_object()) {
                    return fail(ErrorKind::InvalidArgument, "template: range over a {} value", value.type_name());
                }
                for (const auto& element : value) {
                    BOXLITE_TRY_VOID(render_nodes(node->body, element, out));
                }
                break;
            }
        }
    }
    return {};
}

}  // namespace
}  // namespace template_detail

Template::Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;
Template::~Template() = default;

BoxliteResult<Template> Template::compile(std::string_view text) {
    BOXLITE_TRY(auto tokens, template_detail::tokenize(text));
    Template result;
    BOXLITE_TRY(result.nodes_, template_detail::TreeBuilder(std::move(tokens)).build());
    return result;
}

BoxliteResult<std::string> Template::render(const nlohmann::json& data) const {
    std::string out;
    BOXLITE_TRY_VOID(template_detail::render_nodes(nodes_, data, out));
    return out;
}

std::string Template::render_header(const nlohmann::json& headers) const {
    using template_detail::Node;
    using template_detail::Operand;
    std::string out;
    for (const auto& node : nodes_) {
        if (node->kind == Node::Kind::Text) {
            out += node->text;
            continue;
        }
        if (node->kind != Node::Kind::Action) continue;
        // The header of a column is its field's name; computed columns show their last field.
        std::string field;
        for (const auto& command : node->pipeline.commands) {
            for (const auto& operand : command.operands) {
                if (operand.kind == Operand::Kind::Field) field = operand.path.back();
            }
        }
        if (headers.is_object() && headers.contains(field) && headers[field].is_string()) {
            out += headers[field].get<std::string>();
            continue;
        }
        for (char c : field) out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    }
    return out;
}

std::string unescape_format(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 1 < text.size() && (text[i + 1] == 't' || text[i + 1] == 'n')) {
            out.push_back(text[i + 1] == 't' ? '\t' : '\n');
            ++i;
            continue;
        }
        out.push_back(text[i]);
    }
    return out;
}

}  // namespace boxlite::cli
