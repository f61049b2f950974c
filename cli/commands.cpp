// The subcommands over the runtime: lifecycle (start, stop, restart, rm), list, inspect, logs,
// stats, info, version, and the dispatcher with its error reporting. run/create/exec/cp live in
// exec_commands.cpp, pull/images/load in image_commands.cpp.
#include "cli/commands.hpp"

#include "cli/commands_internal.hpp"
#include "cli/output.hpp"
#include "cli/progress.hpp"
#include "cli/terminal.hpp"

#include <boxlite/detail/time.hpp>
#include <boxlite/version.hpp>

#include <poll.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <thread>

namespace boxlite::cli {

// ------------------------------------------------------------------------------------------
// Context and shared helpers
// ------------------------------------------------------------------------------------------

namespace {

EngineKind engine_kind(EngineChoice choice) {
    switch (choice) {
        case EngineChoice::Auto: return EngineKind::Auto;
        case EngineChoice::Kvm: return EngineKind::Kvm;
        case EngineChoice::Qemu: return EngineKind::Qemu;
        case EngineChoice::Namespace: return EngineKind::Namespace;
    }
    return EngineKind::Auto;
}

}  // namespace

BoxliteOptions Context::runtime_options() const {
    BoxliteOptions options;
    const auto& g = invocation_.global;
    if (g.home && !g.home->empty()) options.home_dir = *g.home;
    if (!g.registries.empty()) {
        // --registry values go first; the defaults (docker.io) stay as the fallback.
        std::vector<std::string> registries = g.registries;
        for (const auto& fallback : options.image_registries) {
            if (std::find(registries.begin(), registries.end(), fallback) == registries.end()) {
                registries.push_back(fallback);
            }
        }
        options.image_registries = std::move(registries);
    }
    options.insecure_registries = g.insecure_registries;
    if (g.log_max_bytes) options.log_max_bytes = *g.log_max_bytes;
    options.engine = engine_kind(g.engine);
    return options;
}

BoxliteResult<BoxliteRuntime*> Context::runtime(RuntimeSettings settings) {
    if (!runtime_) {
        auto options = runtime_options();
        debug("home {}, engine {}, registries {}", options.home_dir.string(), options.engine,
              fmt::join(options.image_registries, ","));
        BOXLITE_TRY(auto opened, open_runtime(std::move(options), std::move(settings)));
        runtime_.emplace(std::move(opened));
    }
    return &*runtime_;
}

std::string time_ago(std::chrono::system_clock::time_point then, std::chrono::system_clock::time_point now) {
    using namespace std::chrono;
    const auto seconds = duration_cast<std::chrono::seconds>(now - then).count();
    if (seconds < 1) return "Less than a second ago";
    auto plural = [](long long n, const char* unit) { return fmt::format("{} {}{} ago", n, unit, n == 1 ? "" : "s"); };
    if (seconds < 60) return plural(seconds, "second");
    if (seconds < 3600) return plural(seconds / 60, "minute");
    if (seconds < 86400) return plural(seconds / 3600, "hour");
    if (seconds < 86400 * 14) return plural(seconds / 86400, "day");
    if (seconds < 86400 * 60) return plural(seconds / (86400 * 7), "week");
    if (seconds < 86400 * 365 * 2) return plural(seconds / (86400 * 30), "month");
    return plural(seconds / (86400 * 365), "year");
}

namespace {

/// Docker's notation: "127.0.0.1:8080->80/tcp", "[::1]:8080->80/tcp"; "80/tcp" without a host port.
std::string port_text(const PortSpec& port) {
    const char* proto = port.protocol == PortProtocol::Udp ? "udp" : "tcp";
    if (!port.host_port || *port.host_port == 0) return fmt::format("{}/{}", port.guest_port, proto);
    const bool v6 = port.host_ip.find(':') != std::string::npos;
    return fmt::format("{}{}{}:{}->{}/{}", v6 ? "[" : "", port.host_ip, v6 ? "]" : "", *port.host_port, port.guest_port,
                       proto);
}

/// A running box's port bindings, Docker's way: "127.0.0.1:8080->80/tcp, 0.0.0.0:5353->53/udp";
/// empty for a box that is not running (nothing is bound).
std::string ports_column(const BoxInfo& info) {
    if (!info.pid) return "";
    std::string out;
    for (const auto& port : info.ports) out += (out.empty() ? "" : ", ") + port_text(port);
    return out;
}

/// Docker's NetworkSettings.Ports: {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}, for
/// the ports bound while the box runs; {} otherwise.
nlohmann::json port_bindings_json(const BoxInfo& info) {
    nlohmann::json out = nlohmann::json::object();
    if (!info.pid) return out;
    for (const auto& port : info.ports) {
        auto& list = out[fmt::format("{}/{}", port.guest_port, to_string(port.protocol))];
        if (list.is_null()) list = nlohmann::json::array();
        list.push_back(
            {{"HostIp", port.host_ip}, {"HostPort", port.host_port ? std::to_string(*port.host_port) : std::string()}});
    }
    return out;
}

nlohmann::json optional_time(const std::optional<std::chrono::system_clock::time_point>& tp) {
    return tp ? nlohmann::json(boxlite::detail::format_rfc3339(*tp)) : nlohmann::json(nullptr);
}

template <class T>
nlohmann::json optional_value(const std::optional<T>& value) {
    return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

/// The create and last start stages as `inspect` shows them: {"ImagePrepareMs": 840, …}, the
/// unmeasured ones left out (BoxStageTimings; box_metrics.hpp says what each covers).
nlohmann::json stages_json(const BoxStageTimings& stages) {
    nlohmann::json out = nlohmann::json::object();
    const nlohmann::json measured = stages;
    for (const auto& [key, ms] : measured.items()) {
        std::string name;
        bool upper = true;
        for (const char c : key) {
            if (c == '_') {
                upper = true;
                continue;
            }
            name += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
            upper = false;
        }
        out[name] = ms;
    }
    return out;
}

}  // namespace

nlohmann::json inspect_json(const BoxConfig& config, const BoxInfo& info, const HomeLayout& layout) {
    const auto& o = config.options;
    nlohmann::json env = nlohmann::json::array();
    for (const auto& [key, value] : o.env) env.push_back(key + "=" + value);
    nlohmann::json ports = nlohmann::json::array();
    for (const auto& port : o.ports) ports.push_back(port_text(port));
    nlohmann::json volumes = nlohmann::json::array();
    for (const auto& volume : o.volumes) {
        volumes.push_back(
            {{"Source", volume.host_path}, {"Destination", volume.guest_path}, {"ReadOnly", volume.read_only}});
    }
    // Docker's "Mounts": what each volume is on the host, anonymous ones under the box's folder.
    nlohmann::json mounts = nlohmann::json::array();
    for (std::size_t i = 0; i < info.volumes.size(); ++i) {
        const auto& volume = info.volumes[i];
        const auto source = volume.anonymous() ? anonymous_volume_path(layout.box_dir(config.id), i).string()
                                               : volume.host_path;
        mounts.push_back({{"Type", volume.anonymous() ? "volume" : "bind"},
                          {"Source", source},
                          {"Destination", volume.guest_path},
                          {"Mode", volume.read_only ? "ro" : "rw"},
                          {"RW", !volume.read_only}});
    }
    nlohmann::json secrets = nlohmann::json::array();
    for (const auto& secret : o.secrets) secrets.push_back({{"Name", secret.name}, {"Hosts", secret.hosts}});
    nlohmann::json rootfs;
    if (const auto* image = o.rootfs.as_image()) {
        rootfs = {{"Image", image->reference}};
    } else {
        rootfs = {{"Path", o.rootfs.as_path()->path.string()}};
    }
    return {
        {"Id", config.id.str()},
        {"Name", config.name.value_or("")},
        {"Created", boxlite::detail::format_rfc3339(config.created_at)},
        {"Image", info.image},
        {"Engine", config.engine},
        {"Path", layout.box_dir(config.id).string()},
        {"Mounts", mounts},
        {"NetworkSettings", {{"Ports", port_bindings_json(info)}}},
        {"State",
         {{"Status", std::string(to_string(info.status))},
          {"Running", info.running()},
          {"Pid", optional_value(info.pid)},
          {"StartedAt", optional_time(info.started_at)},
          {"LastUpdated", boxlite::detail::format_rfc3339(info.last_updated)},
          {"ContainerId", optional_value(info.container_id)},
          {"Stages", stages_json(info.stages)}}},
        {"Config",
         {{"Cpus", o.cpus},
          {"MemoryMib", o.memory_mib},
          {"DiskSizeGb", optional_value(o.disk_size_gb)},
          {"PidsLimit", effective_max_processes(o.resource_limits, o.security.resource_limits)},
          {"Rootfs", rootfs},
          {"Entrypoint", optional_value(o.entrypoint)},
          {"Cmd", optional_value(o.cmd)},
          {"Env", env},
          {"WorkingDir", o.working_dir.value_or("")},
          {"User", o.user.value_or("")},
          {"Network",
           {{"Mode", o.network.mode == NetworkMode::Enabled ? "enabled" : "disabled"},
            {"AllowNet", o.network.allow_net}}},
          {"Ports", ports},
          {"Volumes", volumes},
          {"Tty", o.labels.contains(std::string(kLabelTty))},
          {"OpenStdin", o.labels.contains(std::string(kLabelInteractive))},
          {"AutoRemove", o.auto_remove},
          {"Detach", o.detach},
          {"Labels", o.labels},
          {"Secrets", secrets}}},
    };
}

namespace {

// ------------------------------------------------------------------------------------------
// Lifecycle: start, stop, restart, rm — every target attempted, failures reported per target
// ------------------------------------------------------------------------------------------

/// Runs `action` on each box; prints what `action` returns on success, the error otherwise.
/// Exit 1 when any failed (after trying them all), as the reference does.
template <class Action>
int for_each_box(const std::vector<std::string>& boxes, Action&& action) {
    int status = kExitSuccess;
    for (const auto& name : boxes) {
        auto done = action(name);
        if (done) {
            fmt::print("{}\n", *done);
            std::fflush(stdout);
        } else {
            fmt::print(stderr, "Error: {}\n", done.error().to_string());
            status = kExitRuntimeError;
        }
    }
    return status;
}

RuntimeSettings settings_with_timeout(const Context& context) {
    auto settings = cli_runtime_settings(context);
    if (const auto& t = context.invocation().boxes.timeout_seconds) settings.stop_timeout = std::chrono::seconds(*t);
    return settings;
}

BoxliteResult<int> cmd_start(Context& context) {
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    return for_each_box(context.invocation().boxes.boxes, [&](const std::string& name) -> BoxliteResult<std::string> {
        BOXLITE_TRY(auto box, runtime->get(name));
        BOXLITE_TRY_VOID(box.start());
        return name;
    });
}

BoxliteResult<int> cmd_stop(Context& context) {
    BOXLITE_TRY(auto* runtime, context.runtime(settings_with_timeout(context)));
    return for_each_box(context.invocation().boxes.boxes, [&](const std::string& name) -> BoxliteResult<std::string> {
        BOXLITE_TRY(auto box, runtime->get(name));
        BOXLITE_TRY_VOID(box.stop());
        return name;
    });
}

BoxliteResult<int> cmd_restart(Context& context) {
    BOXLITE_TRY(auto* runtime, context.runtime(settings_with_timeout(context)));
    return for_each_box(context.invocation().boxes.boxes, [&](const std::string& name) -> BoxliteResult<std::string> {
        BOXLITE_TRY(auto box, runtime->get(name));
        BOXLITE_TRY_VOID(box.stop());
        // The stopped box may have been auto-removed; look it up again, as the reference does.
        BOXLITE_TRY(auto again, runtime->get(box.id().str()));
        BOXLITE_TRY_VOID(again.start());
        return name;
    });
}

BoxliteResult<int> cmd_rm(Context& context) {
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    const auto& args = context.invocation().boxes;
    std::vector<std::string> targets = args.boxes;
    if (args.all) {
        BOXLITE_TRY(auto boxes, runtime->list_info());
        for (const auto& info : boxes) targets.push_back(info.id.str());
    }
    return for_each_box(targets, [&](const std::string& name) -> BoxliteResult<std::string> {
        BOXLITE_TRY(auto info, runtime->get_info(name));
        BOXLITE_TRY_VOID(runtime->remove(info.id.str(), args.force));
        return args.all ? info.id.str() : name;
    });
}

// ------------------------------------------------------------------------------------------
// list, inspect
// ------------------------------------------------------------------------------------------

BoxliteResult<int> cmd_list(Context& context) {
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    const auto& args = context.invocation().list;
    BOXLITE_TRY(auto boxes, runtime->list_info());
    if (!args.all) {
        std::erase_if(boxes, [](const BoxInfo& info) { return !info.running(); });
    }
    if (args.quiet) {
        for (const auto& info : boxes) fmt::print("{}\n", info.id.short_id());
        return kExitSuccess;
    }
    const auto now = std::chrono::system_clock::now();
    nlohmann::json rows = nlohmann::json::array();
    nlohmann::json table_rows = nlohmann::json::array();
    for (const auto& info : boxes) {
        nlohmann::json row = {
            {"ID", info.id.str()},
            {"Name", info.name.value_or("")},
            {"Image", info.image},
            {"Status", std::string(to_string(info.status))},
            {"Created", boxlite::detail::format_rfc3339(info.created_at)},
            {"CreatedSince", time_ago(info.created_at, now)},
            {"Engine", info.engine},
            {"Cpus", info.cpus},
            {"MemoryMib", info.memory_mib},
            {"Pid", optional_value(info.pid)},
            {"Ports", ports_column(info)},
        };
        nlohmann::json table_row = row;
        table_row["ID"] = info.id.short_id();
        table_row["Created"] = row["CreatedSince"];
        table_row["Name"] = info.name.value_or("-");
        rows.push_back(std::move(row));
        table_rows.push_back(std::move(table_row));
    }
    const std::vector<Column> columns = {{"ID", "BOX ID"},       {"Image", "IMAGE"}, {"Status", "STATUS"},
                                         {"Created", "CREATED"}, {"Ports", "PORTS"}, {"Engine", "ENGINE"},
                                         {"Name", "NAME"}};
    const std::string format = args.format.value_or("table");
    BOXLITE_TRY(auto text, render_rows(format == "table" ? table_rows : rows, format, columns));
    fmt::print("{}", text);
    return kExitSuccess;
}

BoxliteResult<int> cmd_inspect(Context& context) {
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    const auto& args = context.invocation().inspect;
    std::vector<std::string> targets = args.boxes;
    if (args.latest) {
        BOXLITE_TRY(auto boxes, runtime->list_info());
        if (boxes.empty()) return fail(ErrorKind::NotFound, "no boxes to inspect (--latest)");
        auto newest = std::max_element(boxes.begin(), boxes.end(),
                                       [](const BoxInfo& a, const BoxInfo& b) { return a.created_at < b.created_at; });
        targets.push_back(newest->id.str());
    }
    nlohmann::json documents = nlohmann::json::array();
    std::optional<BoxliteError> first_error;
    for (const auto& name : targets) {
        auto box = runtime->get(name);
        if (!box) {
            if (!first_error) first_error = box.error();
            continue;
        }
        auto info = box->info();
        auto config = box->config();
        if (!info || !config) {
            if (!first_error) first_error = info ? config.error() : info.error();
            continue;
        }
        documents.push_back(inspect_json(*config, *info, runtime->layout()));
    }
    if (!documents.empty()) {
        BOXLITE_TRY(auto text, render_objects(documents, args.format));
        fmt::print("{}", text);
    }
    if (first_error) return fail(*first_error);
    return kExitSuccess;
}

// ------------------------------------------------------------------------------------------
// logs
// ------------------------------------------------------------------------------------------

/// The console log of a box: <box dir>/console.log (or logs/console.log, the reference's place).
std::optional<std::filesystem::path> console_log(const HomeLayout& layout, const BoxID& id) {
    for (auto path : {layout.box_dir(id) / "console.log", layout.box_dir(id) / "logs" / "console.log"}) {
        std::error_code ec;
        if (std::filesystem::is_regular_file(path, ec)) return path;
    }
    return std::nullopt;
}

/// The byte offset where the last `lines` lines of the file start (0 = whole file).
std::uint64_t tail_offset(std::ifstream& in, std::uint64_t size, std::size_t lines) {
    if (lines == 0 || size == 0) return 0;
    std::size_t newlines = 0;
    std::uint64_t pos = size;
    char c = 0;
    // A final '\n' ends the last line rather than starting an empty one.
    in.seekg(static_cast<std::streamoff>(size - 1));
    in.get(c);
    if (c == '\n') --pos;
    while (pos > 0) {
        in.seekg(static_cast<std::streamoff>(pos - 1));
        in.get(c);
        if (c == '\n' && ++newlines == lines) return pos;
        --pos;
    }
    return 0;
}

/// Waits up to `timeout` for a signal on `relay` (true: one arrived), or just sleeps without one.
bool wait_for_signal(std::optional<SignalRelay>& relay, std::chrono::milliseconds timeout) {
    if (!relay) {
        std::this_thread::sleep_for(timeout);
        return false;
    }
    pollfd fd{relay->fd(), POLLIN, 0};
    if (::poll(&fd, 1, static_cast<int>(timeout.count())) <= 0) return false;
    return !relay->drain().empty();
}

BoxliteResult<int> cmd_logs(Context& context) {
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    const auto& args = context.invocation().logs;
    BOXLITE_TRY(auto box, runtime->get(args.box));
    // Following ends normally on Ctrl-C (or SIGTERM/SIGHUP).
    std::optional<SignalRelay> relay;
    if (args.follow) {
        auto installed = SignalRelay::install({SIGINT, SIGTERM, SIGHUP});
        if (installed) relay.emplace(std::move(*installed));
    }
    auto running = [&] {
        auto info = box.info();
        return info && info->running();
    };
    constexpr auto kPollInterval = std::chrono::milliseconds(100);
    constexpr auto kStateInterval = std::chrono::milliseconds(500);
    auto path = console_log(runtime->layout(), box.id());
    if (!path && args.follow && running()) {
        // The log appears once something writes to it (a `run -d` or `exec -d` command): follow
        // from then on, unless the box stops first.
        auto last_check = std::chrono::steady_clock::now();
        while (!path) {
            if (wait_for_signal(relay, kPollInterval)) return kExitSuccess;
            path = console_log(runtime->layout(), box.id());
            if (!path && std::chrono::steady_clock::now() - last_check > kStateInterval) {
                last_check = std::chrono::steady_clock::now();
                if (!running()) break;
            }
        }
    }
    if (!path) {
        fmt::print(stderr, "No logs for box {} yet.\n", args.box);
        return kExitSuccess;
    }
    std::ifstream in(*path, std::ios::binary);
    if (!in) return fail(ErrorKind::Storage, "cannot read {}", path->string());
    std::error_code ec;
    const auto size = std::filesystem::file_size(*path, ec);
    std::uint64_t offset = tail_offset(in, ec ? 0 : size, args.tail);
    in.clear();
    bool reader_gone = false;
    auto copy_from = [&](std::uint64_t from) -> std::uint64_t {
        in.clear();
        in.seekg(static_cast<std::streamoff>(from));
        char buffer[64 * 1024];
        std::uint64_t copied = 0;
        while (!reader_gone && (in.read(buffer, sizeof buffer) || in.gcount() > 0)) {
            const auto n = static_cast<std::size_t>(in.gcount());
            if (std::fwrite(buffer, 1, n, stdout) != n) reader_gone = true;
            copied += n;
        }
        if (std::fflush(stdout) != 0) reader_gone = true;
        return from + copied;
    };
    offset = copy_from(offset);
    if (reader_gone) return kExitOutputClosed;
    if (!args.follow) return kExitSuccess;
    // Follow until the box is no longer running (then drain), the reader leaves, or a signal.
    auto last_check = std::chrono::steady_clock::now();
    while (true) {
        if (wait_for_signal(relay, kPollInterval)) return kExitSuccess;
        const auto now_size = std::filesystem::file_size(*path, ec);
        if (!ec && now_size < offset) offset = 0;  // truncated or rotated: start over
        if (!ec && now_size > offset) offset = copy_from(offset);
        if (reader_gone) return kExitOutputClosed;
        if (std::chrono::steady_clock::now() - last_check > kStateInterval) {
            last_check = std::chrono::steady_clock::now();
            if (!running()) {
                copy_from(offset);
                return reader_gone ? kExitOutputClosed : kExitSuccess;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// stats
// ------------------------------------------------------------------------------------------

nlohmann::json stats_row(const BoxInfo& info, const BoxMetrics& m, std::optional<double> cpu_percent) {
    if (m.cpu_percent) cpu_percent = m.cpu_percent;
    return {
        {"ID", info.id.str()},
        {"Name", info.name.value_or("")},
        {"Status", std::string(to_string(info.status))},
        {"CpuPercent", optional_value(cpu_percent)},
        {"CpuTimeNs", optional_value(m.cpu_time_ns)},
        {"MemoryBytes", optional_value(m.memory_bytes)},
        {"MemoryLimitMib", info.memory_mib},
        {"Pids", optional_value(m.process_count)},
        {"NetworkBytesSent", optional_value(m.network_bytes_sent)},
        {"NetworkBytesReceived", optional_value(m.network_bytes_received)},
        {"CommandsExecuted", m.commands_executed_total},
        {"ExecErrors", m.exec_errors_total},
    };
}

nlohmann::json stats_table_row(const nlohmann::json& row) {
    auto text = [&](const char* key, auto&& formatter) -> std::string {
        const auto& v = row.at(key);
        return v.is_null() ? std::string("--") : formatter(v);
    };
    return {
        {"ID", row["ID"].get<std::string>().substr(0, BoxID::kShortLength)},
        {"Name", row["Name"].get<std::string>().empty() ? "-" : row["Name"].get<std::string>()},
        {"Cpu", text("CpuPercent", [](const nlohmann::json& v) { return fmt::format("{:.2f}%", v.get<double>()); })},
        {"Memory", text("MemoryBytes",
                        [&](const nlohmann::json& v) {
                            return fmt::format("{} / {}MiB", human_size(v.get<std::uint64_t>()),
                                               row["MemoryLimitMib"].get<std::uint32_t>());
                        })},
        {"CpuTime", text("CpuTimeNs",
                         [](const nlohmann::json& v) {
                             return fmt::format("{:.2f}s", static_cast<double>(v.get<std::uint64_t>()) / 1e9);
                         })},
        {"Pids", text("Pids", [](const nlohmann::json& v) { return v.dump(); })},
        {"NetIO", row["NetworkBytesSent"].is_null()
                      ? std::string("--")
                      : fmt::format("{} / {}", human_size(row["NetworkBytesSent"].get<std::uint64_t>()),
                                    human_size(row["NetworkBytesReceived"].get<std::uint64_t>()))},
    };
}

BoxliteResult<int> cmd_stats(Context& context) {
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    const auto& args = context.invocation().stats;
    BOXLITE_TRY(auto box, runtime->get(args.box));
    const std::vector<Column> columns = {{"ID", "BOX ID"},        {"Name", "NAME"},
                                         {"Cpu", "CPU %"},        {"Memory", "MEM USAGE / LIMIT"},
                                         {"CpuTime", "CPU TIME"}, {"Pids", "PIDS"},
                                         {"NetIO", "NET I/O"}};
    std::optional<SignalRelay> relay;
    if (args.stream) {
        auto installed = SignalRelay::install({SIGINT, SIGTERM, SIGHUP});
        if (installed) relay.emplace(std::move(*installed));
    }
    const bool clear_screen = args.stream && is_terminal(STDOUT_FILENO) && args.format == "table";
    std::optional<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>> previous;
    while (true) {
        BOXLITE_TRY(auto info, box.info());
        BOXLITE_TRY(auto metrics, box.metrics());
        // CPU % from two CPU-time samples when the engine does not report it.
        std::optional<double> cpu_percent;
        const auto now = std::chrono::steady_clock::now();
        if (metrics.cpu_time_ns && !metrics.cpu_percent) {
            if (!previous && !args.stream) {
                previous.emplace(now, *metrics.cpu_time_ns);
                std::this_thread::sleep_for(std::chrono::milliseconds(250));
                continue;
            }
            if (previous) {
                const auto wall = std::chrono::duration<double, std::nano>(now - previous->first).count();
                if (wall > 0) {
                    cpu_percent = 100.0 *
                                  static_cast<double>(*metrics.cpu_time_ns -
                                                      std::min(*metrics.cpu_time_ns, previous->second)) /
                                  wall;
                }
            }
            previous.emplace(now, *metrics.cpu_time_ns);
        }
        auto row = stats_row(info, metrics, cpu_percent);
        std::string text;
        if (args.format == "table") {
            BOXLITE_TRY(text, render_rows(nlohmann::json::array({stats_table_row(row)}), "table", columns));
        } else if (args.format == "json" || args.format == "yaml") {
            BOXLITE_TRY(text, render_object(row, args.format));
        } else {
            BOXLITE_TRY(text, render_rows(nlohmann::json::array({row}), args.format, columns));
        }
        if (clear_screen) text.insert(0, "\x1b[2J\x1b[H");
        if (std::fputs(text.c_str(), stdout) < 0 || std::fflush(stdout) != 0) return kExitOutputClosed;
        if (!args.stream) return kExitSuccess;
        // Wait a second, or less when interrupted (Ctrl-C ends the stream normally).
        if (wait_for_signal(relay, std::chrono::seconds(1))) return kExitSuccess;
    }
}

// ------------------------------------------------------------------------------------------
// info, version
// ------------------------------------------------------------------------------------------

BoxliteResult<int> cmd_info(Context& context) {
    BOXLITE_TRY(auto* runtime, context.runtime(cli_runtime_settings(context)));
    BOXLITE_TRY(auto boxes, runtime->list_info());
    std::size_t running = 0, stopped = 0, configured = 0;
    for (const auto& info : boxes) {
        running += info.running() ? 1U : 0U;
        stopped += is_stopped(info.status) ? 1U : 0U;
        configured += is_configured(info.status) ? 1U : 0U;
    }
    auto available = runtime->engine().available();
    struct utsname uts {};
    ::uname(&uts);
    // Each engine's status once, in one short line; the chosen engine and "virtualization" (can
    // a VM engine run here) only point at it.
    nlohmann::json engines = nlohmann::json::object();
    std::string vm_engine;
    for (auto kind : {EngineKind::Kvm, EngineKind::Qemu, EngineKind::Namespace}) {
        auto engine = make_engine(kind);
        const std::string name(to_string(kind));
        std::string why = engine ? std::string() : engine.error().message();
        if (why.rfind(name + ": ", 0) == 0) why.erase(0, name.size() + 2);  // the key names it already
        std::string status = engine ? std::string("available") : "unavailable: " + why;
        // The qemu engine also says how it runs guests: KVM, or TCG and why not KVM.
        if (engine && kind == EngineKind::Qemu) {
            if (auto accel = QemuEngine{}.acceleration()) status += ", acceleration " + *accel;
        }
        engines[name] = status;
        if (engine && vm_engine.empty() && kind != EngineKind::Namespace) vm_engine = std::string(to_string(kind));
    }
    const std::string virtualization = vm_engine.empty() ? "unavailable (see engines)"
                                                         : "available (" + vm_engine + ")";
    nlohmann::json guest = nlohmann::json::object();
    if (auto assets = describe_guest_assets(context.runtime_options()); assets) {
        guest = {{"kernel", assets->kernel_source.string()}, {"kernelFrom", assets->kernel_origin},
                 {"kernelRelease", assets->kernel_release},  {"vmlinux", assets->vmlinux.string()},
                 {"initramfs", assets->initramfs.string()},  {"built", assets->cached}};
    } else {
        guest = {{"error", assets.error().message()}};
    }
    nlohmann::json data = {
        {"version", std::string(boxlite::version())},
        {"homeDir", runtime->layout().root().string()},
        {"engine", std::string(to_string(context.global().engine))},
        {"engineKind", std::string(runtime->engine().kind())},
        {"engineStatus", available ? std::string("available") : std::string("unavailable (see engines)")},
        {"engines", engines},
        {"virtualization", virtualization},
        {"guest", guest},
        {"os", std::string(uts.sysname)},
        {"kernel", std::string(uts.release)},
        {"arch", std::string(uts.machine)},
        {"cpus", std::thread::hardware_concurrency()},
        {"boxesTotal", boxes.size()},
        {"boxesRunning", running},
        {"boxesStopped", stopped},
        {"boxesConfigured", configured},
        {"imagesCount", optional_value(image_count(context))},
        {"registries", runtime->options().image_registries},
    };
    BOXLITE_TRY(auto text, render_object(data, context.invocation().info.format));
    fmt::print("{}", text);
    return kExitSuccess;
}

BoxliteResult<int> cmd_version(Context& context) {
    const auto& format = context.invocation().version.format;
    if (!format) {
        fmt::print("boxlite version {}\n", boxlite::version());
        return kExitSuccess;
    }
    struct utsname uts {};
    ::uname(&uts);
    nlohmann::json data = {{"Version", std::string(boxlite::version())},
                           {"Os", std::string(uts.sysname)},
                           {"Arch", std::string(uts.machine)}};
    BOXLITE_TRY(auto text, render_object(data, *format));
    fmt::print("{}", text);
    return kExitSuccess;
}

BoxliteResult<int> dispatch(Context& context) {
    const auto& command = context.invocation().command;
    if (context.global().url && command != "serve" && command != "version") return cmd_remote(context);
    if (command == "run") return cmd_run(context);
    if (command == "create") return cmd_create(context);
    if (command == "exec") return cmd_exec(context);
    if (command == "start") return cmd_start(context);
    if (command == "stop") return cmd_stop(context);
    if (command == "restart") return cmd_restart(context);
    if (command == "rm") return cmd_rm(context);
    if (command == "list") return cmd_list(context);
    if (command == "cp") return cmd_cp(context);
    if (command == "inspect") return cmd_inspect(context);
    if (command == "logs") return cmd_logs(context);
    if (command == "stats") return cmd_stats(context);
    if (command == "pull") return cmd_pull(context);
    if (command == "images") return cmd_images(context);
    if (command == "images rm") return cmd_images_rm(context);
    if (command == "images prune") return cmd_images_prune(context);
    if (command == "load") return cmd_load(context);
    if (command == "info") return cmd_info(context);
    if (command == "version") return cmd_version(context);
    if (command == "serve") return cmd_serve(context);
    return fail(ErrorKind::Internal, "no handler for subcommand '{}'", command);
}

}  // namespace

int run_invocation(const Invocation& invocation) {
    Context context(invocation);
    auto result = dispatch(context);
    if (result) return *result;
    std::fflush(stdout);
    // One line, the BoxliteError text; --debug adds what kind of failure it was and where.
    std::fputs(fmt::format("Error: {}\n", result.error().to_string()).c_str(), stderr);
    context.debug("error kind: {} ({}), command: {}, engine: {}", result.error().kind(),
                  message_prefix(result.error().kind()), invocation.command, to_string(invocation.global.engine));
    return kExitRuntimeError;
}

}  // namespace boxlite::cli
