// The CLI11 definition of every subcommand and flag, and the run/create/exec converters.
#include "cli/app.hpp"

#include "cli/template.hpp"

#include <boxlite/version.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <unistd.h>

namespace boxlite::cli {

namespace {

constexpr const char* kDescription =
    "BoxLite: run untrusted code in lightweight boxes (micro-VMs, or Linux namespaces on request).";

/// Everything CLI11 binds to must outlive parsing, so the App and its targets live together.
struct Parser {
    CLI::App app{kDescription, "boxlite"};
    Invocation invocation;
    std::string engine_text = "auto";
    std::vector<std::pair<CLI::App*, std::string>> names;

    Parser() { build(); }

    void add_process_flags(CLI::App* sub, std::vector<std::string>& env, std::optional<std::string>& workdir,
                           std::optional<std::string>& user, bool& interactive, bool& tty) {
        sub->add_flag("-i,--interactive", interactive, "Keep STDIN open and forward it to the command");
        sub->add_flag("-t,--tty", tty, "Allocate a pseudo-TTY (stdout and stderr are merged)");
        sub->add_option("-e,--env", env, "Set an environment variable, KEY=VALUE or KEY (value from this shell)")
            ->allow_extra_args(false)
            ->type_name("KEY[=VAL]");
        sub->add_option("-w,--workdir", workdir, "Working directory inside the box")->type_name("PATH");
        sub->add_option("-u,--user", user, "Run as NAME or UID[:GID]")->type_name("USER");
    }

    void add_create_flags(CLI::App* sub, bool is_run) {
        auto& a = invocation.create;
        // create takes -i/-t/-u too: -u becomes the box's default user; -i/-t are recorded on the
        // box for its main command (see docs/cli.md).
        add_process_flags(sub, a.env, a.workdir, a.user, a.interactive, a.tty);
        sub->add_option("--entrypoint", a.entrypoint, "Override the image's ENTRYPOINT")->type_name("EXEC");
        sub->add_option("--name", a.name, "Assign a name to the box");
        if (is_run) {
            sub->add_flag("-d,--detach", a.detach, "Run in the background and print the box ID");
            sub->add_flag("--rm", a.remove, "Remove the box when its command exits");
        }
        sub->add_option("--cpus", a.cpus, "Number of CPUs")->type_name("N");
        sub->add_option("--memory", a.memory, "Memory: MiB, or with a unit (512m, 2g)")->type_name("SIZE");
        sub->add_option("--disk-size", a.disk_size, "Root disk size: GB, or with a unit (10g)")->type_name("SIZE");
        sub->add_option("--pids-limit", a.pids_limit, "Most processes in the box (default 4096)")->type_name("N");
        sub->add_option("--network", a.network, "Outbound networking: enabled or disabled")->type_name("MODE");
        sub->add_option("--allow-net", a.allow_net, "Allow egress only to HOST, *.HOST, IP or CIDR (repeatable)")
            ->allow_extra_args(false)
            ->type_name("HOST");
        sub->add_option("-p,--publish", a.publish, "Publish a box port: [[IP:]HOST:]BOX[/tcp|udp] (repeatable)")
            ->allow_extra_args(false)
            ->type_name("PORT");
        sub->add_option("-v,--volume", a.volume,
                        "Share a host path (HOST:BOX[:ro|rw]) or add an anonymous volume (BOX[:ro|rw]); repeatable")
            ->allow_extra_args(false)
            ->type_name("VOLUME");
        sub->add_option("--rootfs", a.rootfs, "Use a prepared root filesystem directory instead of an image")
            ->type_name("PATH");
        sub->add_option("ARGS", a.positionals, "IMAGE [COMMAND...] (COMMAND... with --rootfs)")
            ->type_name("IMAGE [COMMAND...]");
        // Docker's grammar: the first positional ends the flags, so `run alpine ls -la` passes -la on.
        sub->positionals_at_end(true);
    }

    CLI::App* subcommand(const std::string& name, const std::string& description) {
        auto* sub = app.add_subcommand(name, description);
        names.emplace_back(sub, name);
        return sub;
    }

    void build() {
        auto& g = invocation.global;
        app.set_version_flag("--version", std::string("boxlite version ") + BOXLITE_VERSION_STRING);
        app.add_option("--home", g.home, "Home directory (default ~/.boxlite)")
            ->envname("BOXLITE_HOME")
            ->type_name("PATH");
        app.add_flag("--debug", g.debug, "Print details with errors");
        app.add_option("--registry", g.registries, "Registry searched for unqualified images (repeatable)")
            ->allow_extra_args(false)
            ->type_name("HOST");
        app.add_option("--insecure-registry", g.insecure_registries, "Registry reached over plain HTTP (repeatable)")
            ->allow_extra_args(false)
            ->type_name("HOST[:PORT]");
        app.add_option("--log-max-bytes", g.log_max_bytes,
                       "Size at which each box log on the host rotates (65536 to 1073741824; default 4 MiB)")
            ->envname("BOXLITE_LOG_MAX_BYTES")
            ->type_name("BYTES");
        app.add_option("--engine", engine_text, "Engine: auto (VM: kvm, then qemu), kvm, qemu or namespace")
            ->envname("BOXLITE_ENGINE")
            ->type_name("ENGINE");
        app.add_option("--url", g.url, "Drive a `boxlite serve` at this http:// URL (ls, rm, exec, run)")
            ->envname("BOXLITE_REST_URL")
            ->type_name("URL");
        app.add_option("--api-key", g.api_key,
                       "The server's API key with --url (default $BOXLITE_API_KEY, then $BOXLITE_SERVE_API_KEY)")
            ->type_name("KEY");
        // Global flags also work after the subcommand (`boxlite run --debug …`): unknown options
        // fall through to the parent.
        app.fallthrough(true);
        app.require_subcommand(1);

        auto* run = subcommand("run", "Create a box from an image and run a command in it");
        add_create_flags(run, true);

        auto* create = subcommand("create", "Create a box without starting it; prints its ID");
        add_create_flags(create, false);

        auto& e = invocation.exec;
        auto* exec = subcommand("exec", "Run a command in a box: exec [OPTIONS] BOX -- COMMAND [ARGS...]");
        add_process_flags(exec, e.env, e.workdir, e.user, e.interactive, e.tty);
        exec->add_flag("-d,--detach", e.detach, "Start the command and return without waiting");
        // The background worker of -d (never typed by people: hidden from help).
        exec->add_option("--worker-log", e.worker_log)->group("");
        exec->add_option("--worker-ready-fd", e.worker_ready_fd)->group("");
        exec->add_flag("--worker-remove", e.worker_remove)->group("");
        exec->add_option("BOX", e.box, "Box name or ID")->required();
        exec->add_option("COMMAND", e.command, "-- COMMAND [ARGS...]")->required();
        exec->positionals_at_end(true);

        auto& b = invocation.boxes;
        auto* start = subcommand("start", "Start one or more boxes");
        start->add_option("BOX", b.boxes, "Box names or IDs")->required();
        auto* stop = subcommand("stop", "Stop one or more boxes");
        stop->add_option("-t,--time", b.timeout_seconds, "Seconds to wait before killing (default 10)");
        stop->add_option("BOX", b.boxes, "Box names or IDs")->required();
        auto* restart = subcommand("restart", "Stop, then start one or more boxes");
        restart->add_option("-t,--time", b.timeout_seconds, "Seconds to wait before killing (default 10)");
        restart->add_option("BOX", b.boxes, "Box names or IDs")->required();
        auto* rm = subcommand("rm", "Remove one or more boxes");
        rm->add_flag("-f,--force", b.force, "Stop and remove running boxes");
        rm->add_flag("-a,--all", b.all, "Remove every box");
        rm->add_option("BOX", b.boxes, "Box names or IDs");

        auto& l = invocation.list;
        auto* list = subcommand("list", "List boxes (aliases: ls, ps)");
        list->alias("ls");
        list->alias("ps");
        list->add_flag("-a,--all", l.all, "Show every box (default: running ones)");
        list->add_flag("-q,--quiet", l.quiet, "Print only box IDs");
        list->add_option("--format", l.format, "table, json, yaml, or a Go template ('{{.ID}} {{.Status}}')");

        auto& c = invocation.copy;
        auto* cp = subcommand("cp", "Copy files between the host and a box: cp SRC DST, one side BOX:PATH");
        cp->add_option("SRC", c.source, "Host path or BOX:PATH")->required();
        cp->add_option("DST", c.destination, "Host path or BOX:PATH")->required();

        auto& i = invocation.inspect;
        auto* inspect = subcommand("inspect", "Show detailed information about boxes");
        inspect->add_flag("-l,--latest", i.latest, "Inspect the most recently created box");
        inspect->add_option("-f,--format", i.format, "json (default), yaml, or a Go template ('{{.State.Status}}')");
        inspect->add_option("BOX", i.boxes, "Box names or IDs");

        auto& lg = invocation.logs;
        auto* logs = subcommand("logs", "Show a box's console log");
        logs->add_flag("-f,--follow", lg.follow, "Keep printing new output");
        logs->add_option("-n,--tail", lg.tail, "Only the last N lines (0: all)");
        logs->add_option("BOX", lg.box, "Box name or ID")->required();

        auto& s = invocation.stats;
        auto* stats = subcommand("stats", "Show a box's resource usage");
        stats->add_flag("-s,--stream", s.stream, "Refresh every second until interrupted");
        stats->add_option("--format", s.format, "table (default), json, yaml, or a Go template");
        stats->add_option("BOX", s.box, "Box name or ID")->required();

        auto& p = invocation.pull;
        auto* pull = subcommand("pull", "Pull an image from a registry");
        pull->add_flag("-q,--quiet", p.quiet, "No progress output; print only the image digest");
        pull->add_option("IMAGE", p.image, "Image reference")->required();

        auto& im = invocation.images;
        auto* images = subcommand("images", "List images; `images rm`, `images prune`");
        images->add_flag("-q,--quiet", im.quiet, "Print only image IDs");
        images->add_option("--format", im.format, "table, json, yaml, or a Go template");
        images->require_subcommand(0, 1);
        auto* images_rm = images->add_subcommand("rm", "Remove images");
        images_rm->add_flag("-f,--force", im.force, "Remove even when boxes use the image");
        images_rm->add_option("IMAGE", im.remove_refs, "Image references or IDs")->required();
        names.emplace_back(images_rm, "images rm");
        auto* images_prune = images->add_subcommand("prune", "Remove unused layers and dangling images");
        images_prune->add_flag("-a,--all", im.prune_all, "Also remove images no box uses");
        names.emplace_back(images_prune, "images prune");

        auto& ld = invocation.load;
        auto* load = subcommand("load", "Import an OCI image layout directory or a docker-save tarball");
        load->add_option("-i,--input", ld.input, "Layout directory or tarball");
        load->add_option("--tag", ld.tag, "Reference for an image the archive does not name");
        load->add_flag("-q,--quiet", ld.quiet, "Print only the loaded references");
        load->add_option("PATH", ld.input, "Layout directory or tarball (same as --input)");

        auto& inf = invocation.info;
        auto* info = subcommand("info", "Show system-wide information");
        info->add_option("--format", inf.format, "yaml (default) or json");

        auto& sv = invocation.serve;
        auto* serve = subcommand("serve", "Serve the REST API (and WebSocket attach) over HTTP or HTTPS");
        serve->add_option("--host", sv.host, "Address to bind (default 127.0.0.1; any other needs an API key)")
            ->type_name("HOST");
        serve->add_option("--port", sv.port, "TCP port (default 8100; 0 picks a free one)")->type_name("PORT");
        serve->add_option("--api-key", sv.api_key, "Require `Authorization: Bearer KEY` on every route but /v1/config")
            ->envname("BOXLITE_SERVE_API_KEY")
            ->type_name("KEY");
        serve->add_option("--tls-cert", sv.tls_cert, "PEM certificate chain: serve HTTPS (with --tls-key)")
            ->type_name("FILE");
        serve->add_option("--tls-key", sv.tls_key, "PEM private key of --tls-cert")->type_name("FILE");
        serve->add_flag("--allow-host-rootfs", sv.allow_host_rootfs,
                        "Let clients create boxes on host folders (rootfs_path); off by default");
        serve
            ->add_option("--read-timeout", sv.read_timeout_seconds,
                         "Seconds a client has to send a whole request; idle connections close after it (default 30)")
            ->check(CLI::Range(1u, 3600u))
            ->type_name("SECONDS");
        serve->add_option("--max-connections", sv.max_connections, "Open connections at most (default 256)")
            ->check(CLI::Range(std::size_t{1}, std::size_t{100000}))
            ->type_name("N");
        serve->add_option("--max-body-bytes", sv.max_body_bytes, "Largest request body (default 256 MiB)")
            ->check(CLI::Range(std::uint64_t{1024}, std::uint64_t{1} << 40))
            ->type_name("BYTES");

        auto& v = invocation.version;
        auto* version = subcommand("version", "Show the version");
        version->add_option("--format", v.format, "json or a Go template");
    }

    /// The name of the deepest subcommand that was given.
    std::string selected() const {
        std::string result;
        for (const auto& [sub, name] : names) {
            if (sub->parsed()) result = name;
        }
        return result;
    }
};

/// The first word of argv that is neither an option nor the value of a global option: what the
/// user meant as the command.
std::string first_word(const std::vector<std::string>& argv) {
    for (std::size_t i = 1; i < argv.size(); ++i) {
        const auto& arg = argv[i];
        if (arg == "--home" || arg == "--registry" || arg == "--insecure-registry" || arg == "--engine") {
            ++i;
            continue;
        }
        if (!arg.empty() && arg.front() != '-') return arg;
    }
    return {};
}

tl::unexpected<ParseStop> usage_error(const std::string& command, const std::string& message) {
    std::string hint = command.empty() ? "boxlite --help" : "boxlite " + command + " --help";
    return tl::unexpected(ParseStop{kExitUsageError, {}, fmt::format("Error: {} (see '{}')\n", message, hint)});
}

BoxliteResult<void> check_format(std::string_view format, std::initializer_list<std::string_view> names,
                                 bool allow_template) {
    for (auto name : names) {
        if (format == name) return {};
    }
    if (allow_template && format.find("{{") != std::string_view::npos) {
        std::string text = unescape_format(format);
        if (std::string_view(text).starts_with("table ")) text.erase(0, 6);
        BOXLITE_TRY(auto compiled, Template::compile(text));
        (void)compiled;
        return {};
    }
    std::string allowed;
    for (auto name : names) allowed += std::string(allowed.empty() ? "" : ", ") + std::string(name);
    return fail(ErrorKind::InvalidArgument, "--format '{}': expected {}{}", format, allowed,
                allow_template ? " or a Go template such as '{{.ID}}'" : "");
}

/// Checks that CLI11 cannot express: value syntax, conflicts, formats.
BoxliteResult<void> validate(Invocation& inv, const std::string& engine_text) {
    BOXLITE_TRY(inv.global.engine, parse_engine(engine_text));
    const auto& cmd = inv.command;
    if (cmd == "run" || cmd == "create") {
        BOXLITE_TRY(auto request, to_create_request(inv.create, CallerContext::current(), cmd == "run"));
        (void)request;
    } else if (cmd == "exec") {
        if (!inv.exec.command.empty() && inv.exec.command.front() == "--") {
            inv.exec.command.erase(inv.exec.command.begin());
        }
        if (inv.exec.command.empty()) {
            return fail(ErrorKind::InvalidArgument, "exec needs a command: exec BOX -- COMMAND [ARGS...]");
        }
        if (inv.exec.detach && inv.exec.interactive) {
            return fail(ErrorKind::InvalidArgument, "-i/--interactive cannot be combined with -d/--detach");
        }
        BOXLITE_TRY(auto command, to_exec_command(inv.exec, CallerContext::current()));
        (void)command;
    } else if (cmd == "rm") {
        if (inv.boxes.all && !inv.boxes.boxes.empty()) {
            return fail(ErrorKind::InvalidArgument, "rm: name boxes or use --all, not both");
        }
        if (!inv.boxes.all && inv.boxes.boxes.empty()) {
            return fail(ErrorKind::InvalidArgument, "rm needs at least one box (or --all)");
        }
    } else if (cmd == "list") {
        if (inv.list.quiet && inv.list.format) {
            return fail(ErrorKind::InvalidArgument, "-q/--quiet cannot be combined with --format");
        }
        if (inv.list.format) {
            BOXLITE_TRY_VOID(check_format(*inv.list.format, {"table", "json", "yaml"}, true));
        }
    } else if (cmd == "images") {
        if (inv.images.quiet && inv.images.format) {
            return fail(ErrorKind::InvalidArgument, "-q/--quiet cannot be combined with --format");
        }
        if (inv.images.format) {
            BOXLITE_TRY_VOID(check_format(*inv.images.format, {"table", "json", "yaml"}, true));
        }
    } else if (cmd == "inspect") {
        if (inv.inspect.latest && !inv.inspect.boxes.empty()) {
            return fail(ErrorKind::InvalidArgument, "inspect: --latest cannot be combined with box names");
        }
        if (!inv.inspect.latest && inv.inspect.boxes.empty()) {
            return fail(ErrorKind::InvalidArgument, "inspect needs at least one box (or --latest)");
        }
        BOXLITE_TRY_VOID(check_format(inv.inspect.format, {"json", "yaml"}, true));
    } else if (cmd == "stats") {
        BOXLITE_TRY_VOID(check_format(inv.stats.format, {"table", "json", "yaml"}, true));
    } else if (cmd == "info") {
        BOXLITE_TRY_VOID(check_format(inv.info.format, {"yaml", "json"}, false));
    } else if (cmd == "version") {
        if (inv.version.format) {
            BOXLITE_TRY_VOID(check_format(*inv.version.format, {"json", "yaml"}, true));
        }
    } else if (cmd == "cp") {
        BOXLITE_TRY(auto request, parse_copy(inv.copy.source, inv.copy.destination));
        (void)request;
    } else if (cmd == "load") {
        if (inv.load.input.empty()) {
            return fail(ErrorKind::InvalidArgument, "load needs an OCI layout directory or tarball (PATH or -i PATH)");
        }
    }
    return {};
}

}  // namespace

tl::expected<Invocation, ParseStop> parse_command_line(const std::vector<std::string>& argv) {
    Parser parser;
    std::vector<std::string> reversed(argv.rbegin(), argv.rend());
    if (!reversed.empty()) reversed.pop_back();  // argv[0]
    try {
        parser.app.parse(reversed);
    } catch (const CLI::CallForHelp&) {
        return tl::unexpected(ParseStop{kExitSuccess, parser.app.help(), {}});
    } catch (const CLI::CallForAllHelp&) {
        return tl::unexpected(ParseStop{kExitSuccess, parser.app.help("", CLI::AppFormatMode::All), {}});
    } catch (const CLI::CallForVersion&) {
        return tl::unexpected(ParseStop{kExitSuccess, parser.app.version() + "\n", {}});
    } catch (const CLI::RequiredError& error) {
        const auto command = parser.selected();
        if (command.empty() && argv.size() <= 1) {
            // Bare `boxlite`: show what there is to do, as a usage error.
            return tl::unexpected(ParseStop{kExitUsageError, {}, parser.app.help()});
        }
        if (command.empty()) {
            const auto word = first_word(argv);
            if (!word.empty()) return usage_error({}, fmt::format("'{}' is not a boxlite command", word));
        }
        return usage_error(command, error.what());
    } catch (const CLI::ParseError& error) {
        return usage_error(parser.selected(), error.what());
    }
    parser.invocation.command = parser.selected();
    parser.invocation.argv = argv;
    // A bad global option points at the global help, not at the subcommand's; a bad
    // BOXLITE_ENGINE is named as such (the user typed no --engine).
    if (auto engine = parse_engine(parser.engine_text); !engine) {
        const bool from_flag = std::any_of(argv.begin(), argv.end(), [](const std::string& arg) {
            return arg == "--engine" || arg.starts_with("--engine=");
        });
        if (from_flag) return usage_error({}, engine.error().to_string());
        return usage_error({}, fail(ErrorKind::InvalidArgument,
                                    "BOXLITE_ENGINE '{}': expected auto, kvm, qemu or "
                                    "namespace",
                                    parser.engine_text)
                                   .value()
                                   .to_string());
    }
    if (auto valid = validate(parser.invocation, parser.engine_text); !valid) {
        return usage_error(parser.invocation.command, valid.error().to_string());
    }
    return std::move(parser.invocation);
}

std::string help_text(const std::string& subcommand) {
    Parser parser;
    if (subcommand.empty()) return parser.app.help();
    for (const auto& [sub, name] : parser.names) {
        if (name == subcommand) return sub->help();
    }
    return parser.app.help();
}

CallerContext CallerContext::current() {
    CallerContext caller;
    caller.env = [](const std::string& key) -> std::optional<std::string> {
        if (const char* value = std::getenv(key.c_str())) return std::string(value);
        return std::nullopt;
    };
    std::error_code ec;
    caller.cwd = std::filesystem::current_path(ec);
    if (const char* home = std::getenv("HOME")) caller.home = home;
    caller.host_cpus = host_cpu_count();
    return caller;
}

BoxliteResult<CreateRequest> to_create_request(const CreateArgs& args, const CallerContext& caller, bool is_run) {
    CreateRequest request;
    auto& options = request.options;
    std::vector<std::string> rest = args.positionals;
    if (args.rootfs) {
        std::error_code ec;
        auto path = std::filesystem::absolute(caller.cwd / *args.rootfs, ec);
        if (ec || !std::filesystem::is_directory(path, ec)) {
            return fail(ErrorKind::InvalidArgument, "--rootfs '{}' is not a directory", *args.rootfs);
        }
        options.rootfs = RootfsSpec::path(path.lexically_normal());
    } else {
        if (rest.empty()) {
            return fail(ErrorKind::InvalidArgument, "an IMAGE is required (or --rootfs PATH)");
        }
        request.image = rest.front();
        rest.erase(rest.begin());
        if (request.image.empty() || request.image.front() == '-') {
            return fail(ErrorKind::InvalidArgument, "'{}' is not an image reference", request.image);
        }
        options.rootfs = RootfsSpec::image(request.image);
    }
    // `run IMAGE -- cmd` is accepted as `run IMAGE cmd`, as for exec.
    if (!rest.empty() && rest.front() == "--") rest.erase(rest.begin());
    if (!rest.empty()) {
        request.command = rest;
        options.cmd = rest;
    }
    if (args.entrypoint && !args.entrypoint->empty()) {
        request.entrypoint = std::vector<std::string>{*args.entrypoint};
        options.entrypoint = request.entrypoint;
    } else if (args.entrypoint) {
        // An empty --entrypoint clears the image's (and with it the image's CMD), as in Docker:
        // COMMAND is then all there is. The box records it as entrypoint COMMAND[0] with the
        // rest as cmd, since a recorded entrypoint must name a program.
        if (rest.empty()) {
            return fail(ErrorKind::InvalidArgument,
                        "--entrypoint '' clears the image's entrypoint and command, so a COMMAND is required");
        }
        request.entrypoint = std::vector<std::string>{};
        options.entrypoint = std::vector<std::string>{rest.front()};
        options.cmd = std::vector<std::string>(rest.begin() + 1, rest.end());
    }
    for (const auto& spec : args.env) {
        BOXLITE_TRY(auto pair, parse_env(spec, caller.env));
        if (pair) options.env.push_back(std::move(*pair));
    }
    if (args.workdir) {
        if (args.workdir->empty() || args.workdir->front() != '/') {
            return fail(ErrorKind::InvalidArgument, "--workdir '{}' must be an absolute path", *args.workdir);
        }
        options.working_dir = *args.workdir;
    }
    if (args.user) {
        if (args.user->empty()) return fail(ErrorKind::InvalidArgument, "--user is empty");
        options.user = *args.user;
    }
    if (args.name) {
        const auto& name = *args.name;
        const bool valid = !name.empty() && name.size() <= 128 &&
                           (std::isalnum(static_cast<unsigned char>(name.front())) != 0) &&
                           std::all_of(name.begin(), name.end(), [](char ch) {
                               return std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '_' || ch == '.' ||
                                      ch == '-';
                           });
        if (!valid) {
            return fail(ErrorKind::InvalidArgument,
                        "--name '{}': names are 1-128 characters of [a-zA-Z0-9_.-] starting with a letter or digit",
                        name);
        }
        request.name = name;
    }
    if (args.cpus) {
        BOXLITE_TRY(options.cpus, parse_cpus(*args.cpus));
        if (const auto host = caller.host_cpus; options.cpus > host) {
            return fail(ErrorKind::InvalidArgument, "--cpus '{}': this host has {} CPU{} (allowed: 1..{})", *args.cpus,
                        host, host == 1 ? "" : "s", host);
        }
    }
    if (args.memory) {
        BOXLITE_TRY(options.memory_mib, parse_memory_mib(*args.memory));
        if (options.memory_mib < BoxOptions::kMinMemoryMib || options.memory_mib > BoxOptions::kMaxMemoryMib) {
            return fail(ErrorKind::InvalidArgument, "--memory '{}' is {} MiB; allowed: {}..{} MiB", *args.memory,
                        options.memory_mib, BoxOptions::kMinMemoryMib, BoxOptions::kMaxMemoryMib);
        }
    }
    if (args.disk_size) {
        BOXLITE_TRY(auto gb, parse_disk_size_gb(*args.disk_size));
        if (gb < BoxOptions::kMinDiskSizeGb || gb > BoxOptions::kMaxDiskSizeGb) {
            return fail(ErrorKind::InvalidArgument, "--disk-size '{}' is {} GB; allowed: {}..{} GB", *args.disk_size,
                        gb, BoxOptions::kMinDiskSizeGb, BoxOptions::kMaxDiskSizeGb);
        }
        options.disk_size_gb = gb;
    }
    if (args.pids_limit) {
        if (*args.pids_limit == 0) {
            return fail(ErrorKind::InvalidArgument, "--pids-limit must be at least 1 (default {})",
                        ResourceLimits::kDefaultMaxProcesses);
        }
        options.resource_limits.max_processes = *args.pids_limit;
    }
    if (args.network) {
        BOXLITE_TRY(options.network.mode, parse_network_mode(*args.network));
    }
    if (!args.allow_net.empty()) {
        if (options.network.mode == NetworkMode::Disabled) {
            return fail(ErrorKind::InvalidArgument, "--allow-net cannot be combined with --network disabled");
        }
        for (const auto& pattern : args.allow_net) {
            if (pattern.empty()) return fail(ErrorKind::InvalidArgument, "--allow-net value is empty");
            if (!validate_allow_net_pattern(pattern)) {
                return fail(ErrorKind::InvalidArgument,
                            "--allow-net '{}' is not a host, *.host, IP address or CIDR (e.g. example.com, "
                            "*.example.com, 10.0.0.1, 10.0.0.0/8)",
                            pattern);
            }
            options.network.allow_net.push_back(pattern);
        }
    }
    for (const auto& spec : args.publish) {
        BOXLITE_TRY(auto port, parse_port(spec));
        for (const auto& earlier : options.ports) {
            if (port.host_port && earlier.host_port == port.host_port && earlier.protocol == port.protocol) {
                return fail(ErrorKind::InvalidArgument, "--publish '{}': host port {}/{} is already published", spec,
                            *port.host_port, port.protocol == PortProtocol::Udp ? "udp" : "tcp");
            }
        }
        options.ports.push_back(std::move(port));
    }
    for (const auto& spec : args.volume) {
        BOXLITE_TRY(auto volume, parse_volume(spec, caller.cwd, caller.home));
        options.volumes.push_back(std::move(volume));
    }
    if (is_run && args.detach && args.interactive) {
        return fail(ErrorKind::InvalidArgument, "-i/--interactive cannot be combined with -d/--detach");
    }
    request.interactive = args.interactive;
    request.tty = args.tty;
    request.detach = args.detach;
    // With -d the background worker removes the box when the command ends (Docker's -d --rm).
    request.remove = args.remove;
    // The box's main command's stdin and terminal (Docker's Config.OpenStdin / Config.Tty):
    // recorded, as the runtime's BoxOptions have no field for them.
    if (args.interactive) options.labels[std::string(kLabelInteractive)] = "true";
    if (args.tty) options.labels[std::string(kLabelTty)] = "true";
    // A box made by `create` or `run -d` outlives the CLI process (start/stop/exec come from
    // other processes). A foreground `run` stops, and with --rm removes, its box itself, and
    // should it die by SIGKILL, the box dies with it (detach=false: the shim's watchdog sees the
    // CLI go) and, with --rm, is removed by the next process that finds it stopped
    // (auto_remove). Other CLI processes start such a box detached (cli_runtime_settings).
    const bool foreground_run = is_run && !args.detach;
    options.detach = !foreground_run;
    options.auto_remove = foreground_run && args.remove;
    // Whatever else the runtime would refuse at create is a usage error now, not a runtime one.
    if (auto valid = validate_box_options(options, caller.host_cpus); !valid) {
        return fail(ErrorKind::InvalidArgument, "{}", valid.error().message());
    }
    return request;
}

BoxliteResult<BoxCommand> to_exec_command(const ExecArgs& args, const CallerContext& caller) {
    std::vector<std::string> argv = args.command;
    if (!argv.empty() && argv.front() == "--") argv.erase(argv.begin());
    if (argv.empty()) return fail(ErrorKind::InvalidArgument, "exec needs a command: exec BOX -- COMMAND [ARGS...]");
    BoxCommand command(argv.front());
    command.args(std::vector<std::string>(argv.begin() + 1, argv.end()));
    for (const auto& spec : args.env) {
        BOXLITE_TRY(auto pair, parse_env(spec, caller.env));
        if (pair) command.env(pair->first, pair->second);
    }
    if (args.workdir) {
        if (args.workdir->empty() || args.workdir->front() != '/') {
            return fail(ErrorKind::InvalidArgument, "--workdir '{}' must be an absolute path", *args.workdir);
        }
        command.working_dir(*args.workdir);
    }
    if (args.user) {
        if (args.user->empty()) return fail(ErrorKind::InvalidArgument, "--user is empty");
        command.user(*args.user);
    }
    command.tty(args.tty);
    return command;
}

BoxliteResult<BoxCommand> to_run_command(const CreateRequest& request, const std::vector<std::string>& image_entrypoint,
                                         const std::vector<std::string>& image_cmd) {
    // Docker's rule: ENTRYPOINT (flag, else image) followed by COMMAND (args, else the image's
    // CMD — unless --entrypoint was given, which also drops the image's CMD).
    std::vector<std::string> argv = request.entrypoint ? *request.entrypoint : image_entrypoint;
    if (request.command) {
        argv.insert(argv.end(), request.command->begin(), request.command->end());
    } else if (!request.entrypoint) {
        argv.insert(argv.end(), image_cmd.begin(), image_cmd.end());
    }
    if (argv.empty()) {
        return fail(ErrorKind::InvalidArgument, "no command given and the image '{}' defines none",
                    request.image.empty() ? "(rootfs)" : request.image);
    }
    BoxCommand command(argv.front());
    command.args(std::vector<std::string>(argv.begin() + 1, argv.end()));
    for (const auto& [key, value] : request.options.env) command.env(key, value);
    if (request.options.working_dir) command.working_dir(*request.options.working_dir);
    if (request.options.user) command.user(*request.options.user);
    command.tty(request.tty);
    return command;
}

}  // namespace boxlite::cli
