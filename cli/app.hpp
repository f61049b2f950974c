// The `boxlite` command line: every subcommand and flag, parsed with CLI11 into plain structs,
// then converted into the library's types (BoxOptions, BoxCommand) with the parsers of parse.hpp.
//
// Parsing never touches a runtime: `CommandLine::parse` either yields an Invocation, or says what
// to print and which exit status to use (help: 0; any usage error: 2, one line on stderr).
#pragma once

#include "cli/parse.hpp"

#include <boxlite/box_command.hpp>
#include <boxlite/box_options.hpp>
#include <boxlite/error.hpp>

#include <filesystem>
#include <memory>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boxlite::cli {

struct GlobalFlags {
    std::optional<std::string> home;               ///< --home / BOXLITE_HOME
    bool debug = false;                            ///< --debug
    std::vector<std::string> registries;           ///< --registry, repeatable, in order
    std::vector<std::string> insecure_registries;  ///< --insecure-registry, repeatable
    std::optional<std::uint64_t> log_max_bytes;    ///< --log-max-bytes / BOXLITE_LOG_MAX_BYTES
    EngineChoice engine = EngineChoice::Auto;      ///< --engine / BOXLITE_ENGINE
    std::optional<std::string> url;                ///< --url / BOXLITE_REST_URL: a `boxlite serve`
    std::optional<std::string> api_key;            ///< --api-key (with --url; else BOXLITE_API_KEY)
};

/// `run` and `create` (create has no -d/--rm; run has all).
struct CreateArgs {
    std::vector<std::string> env;
    std::optional<std::string> workdir;
    std::optional<std::string> user;
    std::optional<std::string> entrypoint;
    std::optional<std::string> name;
    std::optional<std::string> rootfs;
    std::optional<std::string> cpus;
    std::optional<std::string> memory;
    std::optional<std::string> disk_size;
    std::optional<std::uint64_t> pids_limit;
    std::optional<std::string> network;
    std::vector<std::string> allow_net;
    std::vector<std::string> publish;
    std::vector<std::string> volume;
    bool interactive = false;
    bool tty = false;
    bool detach = false;
    bool remove = false;
    /// IMAGE [COMMAND...], or COMMAND... with --rootfs.
    std::vector<std::string> positionals;
};

struct ExecArgs {
    bool interactive = false;
    bool tty = false;
    bool detach = false;
    std::vector<std::string> env;
    std::optional<std::string> workdir;
    std::optional<std::string> user;
    std::string box;
    std::vector<std::string> command;
    /// Internal (hidden flags): the background worker behind `-d` appends the command's output to
    /// `worker_log`, reports "started" on `worker_ready_fd`, and with `worker_remove` (`run -d
    /// --rm`) removes the box when the command has ended (see exec_commands.cpp).
    std::optional<std::string> worker_log;
    int worker_ready_fd = -1;
    bool worker_remove = false;
};

struct BoxesArgs {  ///< start, stop, restart, rm
    std::vector<std::string> boxes;
    bool force = false;                       ///< rm -f
    bool all = false;                         ///< rm -a
    std::optional<unsigned> timeout_seconds;  ///< stop/restart -t
};

struct ListArgs {
    bool all = false;
    bool quiet = false;
    std::optional<std::string> format;
};

struct CopyArgs {
    std::string source;
    std::string destination;
};

struct InspectArgs {
    std::vector<std::string> boxes;
    bool latest = false;
    std::string format = "json";
};

struct LogsArgs {
    std::string box;
    bool follow = false;
    std::size_t tail = 0;  ///< 0 = everything
};

struct StatsArgs {
    std::string box;
    bool stream = false;
    std::string format = "table";
};

struct PullArgs {
    std::string image;
    bool quiet = false;
};

struct ImagesArgs {
    bool quiet = false;
    std::optional<std::string> format;
    std::vector<std::string> remove_refs;  ///< images rm
    bool force = false;                    ///< images rm -f
    bool prune_all = false;                ///< images prune -a
};

struct LoadArgs {
    std::string input;               ///< OCI layout directory or docker-save tarball
    std::optional<std::string> tag;  ///< reference for an untagged layout
    bool quiet = false;
};

struct InfoArgs {
    std::string format = "yaml";
};

/// `serve`: the REST API (lib/server).
struct ServeArgs {
    std::string host = "127.0.0.1";
    std::uint16_t port = 8100;
    std::optional<std::string> api_key;  ///< --api-key / BOXLITE_SERVE_API_KEY
    std::optional<std::string> tls_cert;
    std::optional<std::string> tls_key;
    bool allow_host_rootfs = false;
    unsigned read_timeout_seconds = 30;
    std::size_t max_connections = 256;
    std::uint64_t max_body_bytes = 256ull * 1024 * 1024;
};

struct VersionArgs {
    std::optional<std::string> format;
};

/// What the command line asked for.
struct Invocation {
    /// The command line as given, argv[0] included (`serve` hands it to boxlite-serve).
    std::vector<std::string> argv;
    GlobalFlags global;
    /// "run", "exec", "create", "start", "stop", "restart", "rm", "list", "cp", "inspect", "logs",
    /// "stats", "pull", "images", "images rm", "images prune", "load", "info", "version", "serve".
    std::string command;
    CreateArgs create;
    ExecArgs exec;
    BoxesArgs boxes;
    ListArgs list;
    CopyArgs copy;
    InspectArgs inspect;
    LogsArgs logs;
    StatsArgs stats;
    PullArgs pull;
    ImagesArgs images;
    LoadArgs load;
    InfoArgs info;
    VersionArgs version;
    ServeArgs serve;
};

/// Parsing stopped before anything ran: print `out` to stdout and `err` to stderr, exit `status`.
struct ParseStop {
    int status = kExitUsageError;
    std::string out;
    std::string err;
};

/// Parses argv (argv[0] included) into an Invocation. Flag values are checked here too (a bad
/// --memory is a usage error before any runtime exists).
[[nodiscard]] tl::expected<Invocation, ParseStop> parse_command_line(const std::vector<std::string>& argv);

/// The full help text of the program (or of one subcommand), for docs and tests.
[[nodiscard]] std::string help_text(const std::string& subcommand = {});

/// run/create converted into the library's terms.
struct CreateRequest {
    BoxOptions options;
    std::optional<std::string> name;
    /// The image reference (empty with --rootfs).
    std::string image;
    /// COMMAND... when given (replaces the image's Cmd; --entrypoint replaces its Entrypoint).
    std::optional<std::vector<std::string>> command;
    /// --entrypoint as given: empty for `--entrypoint ''` (the image's cleared).
    std::optional<std::vector<std::string>> entrypoint;
    bool interactive = false;
    bool tty = false;
    bool detach = false;
    bool remove = false;
};

/// Box labels in which run/create record -i and -t (inspect shows them as Config.OpenStdin and
/// Config.Tty).
inline constexpr std::string_view kLabelInteractive = "boxlite.cli.interactive";
inline constexpr std::string_view kLabelTty = "boxlite.cli.tty";

/// Where the converters find the caller's environment, working directory and home.
struct CallerContext {
    EnvLookup env;
    std::filesystem::path cwd;
    std::optional<std::string> home;
    /// The upper bound of --cpus (the runtime refuses more than the host has).
    std::uint32_t host_cpus = host_cpu_count();

    /// The real process's environment and working directory.
    [[nodiscard]] static CallerContext current();
};

/// Checks and converts run/create flags; InvalidArgument (a usage error) naming the flag.
[[nodiscard]] BoxliteResult<CreateRequest> to_create_request(const CreateArgs& args, const CallerContext& caller,
                                                             bool is_run);

/// The BoxCommand `exec` runs, from its flags.
[[nodiscard]] BoxliteResult<BoxCommand> to_exec_command(const ExecArgs& args, const CallerContext& caller);

/// The command a `run` executes in its box: entrypoint + command, falling back to the image's.
[[nodiscard]] BoxliteResult<BoxCommand> to_run_command(const CreateRequest& request,
                                                       const std::vector<std::string>& image_entrypoint,
                                                       const std::vector<std::string>& image_cmd);

}  // namespace boxlite::cli
