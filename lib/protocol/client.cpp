// AgentClient's file copies (include/boxlite/protocol/client.hpp): tar archives streamed to and
// from the guest agent, with the host's file system calls kept out of the public header.
#include <boxlite/protocol/client.hpp>

#include "protocol/tar.hpp"

#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <filesystem>
#include <system_error>

namespace boxlite::protocol {

BoxliteResult<void> AgentClient::copy_in(const std::string& host_source, const std::string& guest_dest) {
    struct stat st {};
    if (::lstat(host_source.c_str(), &st) != 0) {
        return fail_errno(ErrorKind::InvalidArgument, "copy_in source '" + host_source + "' on the host", errno);
    }
    return copy_in_stream(guest_dest, [&](tar::Writer& writer) -> BoxliteResult<void> {
        BOXLITE_TRY_VOID(writer.add_tree(host_source, tar::top_name(host_source)));
        return writer.finish();
    });
}

BoxliteResult<void> AgentClient::copy_in_stream(const std::string& guest_dest, const ArchiveProducer& produce) {
    if (guest_dest.empty() || guest_dest.front() != '/') {
        return fail(ErrorKind::InvalidArgument, "copy_in destination '{}' must be an absolute path in the box",
                    guest_dest);
    }
    ExecRequest request;
    request.kind = ExecKind::CopyIn;
    request.program = "copy-in";
    request.path = guest_dest;
    BOXLITE_TRY(auto state, session_->start(request, start_timeout_));
    Execution execution(session_, state);
    auto in = execution.stdin();
    auto err = execution.stderr();
    tar::Writer writer([&](std::span<const std::byte> data) { return in->write(data); });
    auto produced = produce(writer);
    (void)in->close();
    auto message = err->read_all();
    BOXLITE_TRY(auto result, execution.wait());
    if (result.exit_code != 0) {
        return fail(ErrorKind::Execution, "copy_in to '{}' failed in the box: {}", guest_dest,
                    message && !message->empty() ? *message : fmt::format("exit code {}", result.exit_code));
    }
    if (!produced) return fail(produced.error().with_context("copy_in to '" + guest_dest + "'"));
    return {};
}

BoxliteResult<void> AgentClient::copy_out(const std::string& guest_source, const std::string& host_dest) {
    if (guest_source.empty() || guest_source.front() != '/') {
        return fail(ErrorKind::InvalidArgument, "copy_out source '{}' must be an absolute path in the box",
                    guest_source);
    }
    if (host_dest.empty()) return fail(ErrorKind::InvalidArgument, "copy_out destination must not be empty");
    ExecRequest request;
    request.kind = ExecKind::CopyOut;
    request.program = "copy-out";
    tar::Placement placement;
    if (host_dest.back() == '/') {
        std::error_code ec;
        std::filesystem::create_directories(host_dest, ec);
        if (ec) return fail(ErrorKind::Storage, "creating copy_out destination '{}': {}", host_dest, ec.message());
        placement = {host_dest, std::nullopt};
    } else {
        placement = tar::place(host_dest);
        struct stat st {};
        if (::stat(placement.directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
            return fail(ErrorKind::InvalidArgument,
                        "copy_out destination '{}': directory '{}' does not exist on the host", host_dest,
                        placement.directory);
        }
    }
    // The archive comes from the guest: whatever names it uses, everything lands under the
    // one name the copy promises (`host_dest/<basename of guest_source>` or `host_dest`),
    // never beside it among the destination's other files.
    if (const auto top = tar::top_name(guest_source); !placement.rename_top && top != ".") placement.rename_top = top;
    request.path = guest_source;
    BOXLITE_TRY(auto state, session_->start(request, start_timeout_));
    Execution execution(session_, state);
    auto out = execution.stdout();
    auto err = execution.stderr();
    tar::Extractor extractor([&](std::span<std::byte> buf) { return out->read_some(buf); },
                             tar::ExtractOptions{placement.rename_top, false});
    auto extracted = extractor.extract_to(placement.directory);
    if (!extracted) (void)execution.kill();
    // Drain what is left so the box-side writer can finish.
    std::array<std::byte, 16 * 1024> scratch{};
    while (true) {
        auto n = out->read_some(scratch);
        if (!n || *n == 0) break;
    }
    auto message = err->read_all();
    BOXLITE_TRY(auto result, execution.wait());
    if (!extracted) return fail(extracted.error().with_context("copy_out of '" + guest_source + "'"));
    if (result.exit_code != 0) {
        return fail(ErrorKind::Execution, "copy_out of '{}' failed in the box: {}", guest_source,
                    message && !message->empty() ? *message : fmt::format("exit code {}", result.exit_code));
    }
    return {};
}

}  // namespace boxlite::protocol
