// The Go-template subset and the table/json/yaml formatters of the CLI.
#include "cli/output.hpp"
#include "cli/progress.hpp"
#include "cli/template.hpp"

#include <gtest/gtest.h>

namespace boxlite::cli {
namespace {

std::string render(std::string_view source, const nlohmann::json& data) {
    auto compiled = Template::compile(source);
    EXPECT_TRUE(compiled) << compiled.error().to_string();
    if (!compiled) return "<compile error>";
    auto text = compiled->render(data);
    EXPECT_TRUE(text) << text.error().to_string();
    return text ? *text : "<render error>";
}

const nlohmann::json kBox = {
    {"ID", "01JJNH8ABCDEFGHJKMNPQRSTVW"},
    {"Name", "web"},
    {"Status", "running"},
    {"Ports", {"8080->80/tcp", "53/udp"}},
    {"State", {{"Status", "running"}, {"Pid", 42}, {"Running", true}, {"StartedAt", nullptr}}},
    {"Labels", nlohmann::json::object()},
};

TEST(Template, FieldsAndText) {
    EXPECT_EQ(render("{{.ID}} {{.Status}}", kBox), "01JJNH8ABCDEFGHJKMNPQRSTVW running");
    EXPECT_EQ(render("pid={{.State.Pid}} running={{ .State.Running }}", kBox), "pid=42 running=true");
    EXPECT_EQ(render("{{.state.status}}", kBox), "running");  // case-insensitive fallback
    EXPECT_EQ(render("{{.State.StartedAt}}", kBox), "<nil>");
    EXPECT_EQ(render("plain text", kBox), "plain text");
    EXPECT_EQ(render("", kBox), "");
}

TEST(Template, FunctionsAndPipes) {
    EXPECT_EQ(render("{{json .State}}", kBox), R"({"Pid":42,"Running":true,"StartedAt":null,"Status":"running"})");
    EXPECT_EQ(render("{{upper .Name}}", kBox), "WEB");
    EXPECT_EQ(render("{{.Name | upper}}", kBox), "WEB");
    EXPECT_EQ(render("{{.Status | title}}", kBox), "Running");
    EXPECT_EQ(render("{{lower \"ABC\"}}", kBox), "abc");
    EXPECT_EQ(render("{{join .Ports \", \"}}", kBox), "8080->80/tcp, 53/udp");
    EXPECT_EQ(render("{{len .Ports}}", kBox), "2");
    EXPECT_EQ(render("{{truncate .ID 12}}", kBox), "01JJNH8ABCDE");
    EXPECT_EQ(render("{{index .Ports 1}}", kBox), "53/udp");
    EXPECT_EQ(render("{{print .Name \"-\" .Status}}", kBox), "web-running");
    EXPECT_EQ(render("{{json .}}", nlohmann::json("a\"b")), R"("a\"b")");
}

TEST(Template, ControlAndTrim) {
    EXPECT_EQ(render("{{if .State.Running}}up{{else}}down{{end}}", kBox), "up");
    EXPECT_EQ(render("{{if .Labels}}labels{{else}}none{{end}}", kBox), "none");
    EXPECT_EQ(render("{{range .Ports}}[{{.}}]{{end}}", kBox), "[8080->80/tcp][53/udp]");
    EXPECT_EQ(render("a  {{- .Name -}}  b", kBox), "awebb");
    EXPECT_EQ(render("{{/* a comment */}}x", kBox), "x");
}

TEST(Template, ErrorsNameTheProblem) {
    for (const char* bad : {"{{.ID", "{{nosuch .ID}}", "{{.}", "{{if .X}}no end", "{{end}}", "{{\"open}}",
                            "{{.ID .Name}}", "{{.ID | .Name}}", "{{}}", "{{upper | }}", "{{.A..B}}"}) {
        auto compiled = Template::compile(bad);
        EXPECT_FALSE(compiled) << bad;
        if (!compiled) {
            EXPECT_EQ(compiled.error().kind(), ErrorKind::InvalidArgument);
        }
    }
    auto compiled = Template::compile("{{.Nope}}");
    ASSERT_TRUE(compiled);
    auto missing = compiled->render(kBox);
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message().find(".Nope"), std::string::npos);
    EXPECT_NE(missing.error().message().find("Status"), std::string::npos);  // lists what exists
    auto wrong_arity = Template::compile("{{join .Ports}}")->render(kBox);
    EXPECT_FALSE(wrong_arity);
    auto deep = Template::compile("{{.Name.Sub}}")->render(kBox);
    EXPECT_FALSE(deep);
}

TEST(Template, HostileInputDoesNotCrash) {
    // A crude fuzz: every prefix and a few mutations of a rich template compile or fail cleanly.
    const std::string seed = R"({{- if .State.Running -}}{{range .Ports}}{{. | upper}}{{end}}{{else}}{{json .}}{{end}})";
    for (std::size_t i = 0; i <= seed.size(); ++i) {
        for (const std::string& text :
             {seed.substr(0, i), seed.substr(i), seed.substr(0, i) + "}}{{" + seed.substr(i)}) {
            auto compiled = Template::compile(text);
            if (compiled) {
                (void)compiled->render(kBox);
            }
        }
    }
    std::string deep;
    for (int i = 0; i < 200; ++i) deep += "{{if .Name}}";
    for (int i = 0; i < 200; ++i) deep += "{{end}}";
    EXPECT_TRUE(Template::compile(deep));
}

TEST(Formats, TableAlignsColumns) {
    const nlohmann::json rows = nlohmann::json::array({
        {{"ID", "01JJNH8ABCDE"}, {"Name", "web"}, {"Status", "running"}},
        {{"ID", "01JJNH8XYZ00"}, {"Name", "a-much-longer-name"}, {"Status", "stopped"}},
    });
    const std::vector<Column> columns = {{"ID", "BOX ID"}, {"Name", "NAME"}, {"Status", "STATUS"}};
    auto table = render_rows(rows, "table", columns);
    ASSERT_TRUE(table);
    EXPECT_EQ(*table,
              "BOX ID         NAME                 STATUS\n"
              "01JJNH8ABCDE   web                  running\n"
              "01JJNH8XYZ00   a-much-longer-name   stopped\n");
    auto custom = render_rows(rows, "table {{.Name}}\\t{{.Status | upper}}", columns);
    ASSERT_TRUE(custom);
    EXPECT_EQ(*custom,
              "NAME                 STATUS\n"
              "web                  RUNNING\n"
              "a-much-longer-name   STOPPED\n");
    auto lines = render_rows(rows, "{{.ID}} {{.Status}}", columns);
    ASSERT_TRUE(lines);
    EXPECT_EQ(*lines, "01JJNH8ABCDE running\n01JJNH8XYZ00 stopped\n");
    auto json = render_rows(rows, "json", columns);
    ASSERT_TRUE(json);
    EXPECT_EQ(nlohmann::json::parse(*json), rows);
    auto empty = render_rows(nlohmann::json::array(), "table", columns);
    ASSERT_TRUE(empty);
    EXPECT_EQ(*empty, "BOX ID    NAME      STATUS\n");
}

TEST(Formats, Yaml) {
    const nlohmann::json value = {
        {"name", "web"},
        {"count", 3},
        {"on", true},
        {"nothing", nullptr},
        {"tricky", {"yes", "123", "", "a: b", "-dash", " pad", "#x", "ok text"}},
        {"nested", {{"list", nlohmann::json::array()}, {"map", nlohmann::json::object()}}},
        {"objects", {{{"a", 1}, {"b", {{"c", 2}}}}}},
    };
    EXPECT_EQ(to_yaml(value),
              "count: 3\n"
              "name: web\n"
              "nested:\n"
              "  list: []\n"
              "  map: {}\n"
              "nothing: null\n"
              "objects:\n"
              "  - a: 1\n"
              "    b:\n"
              "      c: 2\n"
              "\"on\": true\n"
              "tricky:\n"
              "  - \"yes\"\n"
              "  - \"123\"\n"
              "  - \"\"\n"
              "  - \"a: b\"\n"
              "  - \"-dash\"\n"
              "  - \" pad\"\n"
              "  - \"#x\"\n"
              "  - ok text\n");
    EXPECT_EQ(to_yaml(nlohmann::json::array()), "[]\n");
    EXPECT_EQ(to_yaml("plain"), "plain\n");
}

TEST(Formats, ObjectsForInspect) {
    const nlohmann::json boxes = nlohmann::json::array({kBox});
    auto json = render_objects(boxes, "json");
    ASSERT_TRUE(json);
    EXPECT_EQ(nlohmann::json::parse(*json), boxes);
    auto status = render_objects(boxes, "{{.State.Status}}");
    ASSERT_TRUE(status);
    EXPECT_EQ(*status, "running\n");
    auto yaml = render_object(kBox, "yaml");
    ASSERT_TRUE(yaml);
    EXPECT_NE(yaml->find("Name: web\n"), std::string::npos);
}

TEST(Progress, BarsAndSizes) {
    EXPECT_EQ(human_size(0), "0B");
    EXPECT_EQ(human_size(999), "999B");
    EXPECT_EQ(human_size(1500), "1.5kB");
    EXPECT_EQ(human_size(2'500'000), "2.5MB");
    EXPECT_EQ(progress_bar(0, 10, 10), "[>         ]");
    EXPECT_EQ(progress_bar(5, 10, 10), "[=====>    ]");
    EXPECT_EQ(progress_bar(10, 10, 10), "[==========]");
    EXPECT_EQ(progress_bar(20, 10, 4), "[====]");
    EXPECT_EQ(progress_bar(1, 0, 10), "");
}

std::string capture(PullProgress::Mode mode, const std::function<void(PullProgress&)>& drive) {
    char* buffer = nullptr;
    std::size_t size = 0;
    std::FILE* out = ::open_memstream(&buffer, &size);
    {
        PullProgress progress(mode, out);
        drive(progress);
    }
    std::fclose(out);
    std::string text(buffer, size);
    std::free(buffer);
    return text;
}

TEST(Progress, PlainQuietAndTerminal) {
    auto drive = [](PullProgress& p) {
        p.update("sha256:aaaaaaaaaaaabbbb", 0, 2000);
        p.update("sha256:aaaaaaaaaaaabbbb", 1000, 2000);
        p.update("sha256:cccccccccccc", 0, 0);
        p.complete("sha256:aaaaaaaaaaaabbbb");
        p.complete("sha256:cccccccccccc", true);
        p.finish("busybox:latest", "sha256:dddd");
    };
    EXPECT_EQ(capture(PullProgress::Mode::Plain, drive),
              "aaaaaaaaaaaa: Downloading (2kB)\n"
              "cccccccccccc: Downloading\n"
              "aaaaaaaaaaaa: Pull complete\n"
              "cccccccccccc: Already exists\n"
              "Digest: sha256:dddd\n"
              "Status: Downloaded newer image for busybox:latest\n");
    EXPECT_EQ(capture(PullProgress::Mode::Quiet, drive), "");
    const auto terminal = capture(PullProgress::Mode::Terminal, drive);
    EXPECT_NE(terminal.find("\x1b[2A"), std::string::npos);  // redraws over its two lines
    EXPECT_NE(terminal.find("aaaaaaaaaaaa: Downloading [>"), std::string::npos);
    EXPECT_NE(terminal.find("aaaaaaaaaaaa: Pull complete"), std::string::npos);
}

}  // namespace
}  // namespace boxlite::cli
