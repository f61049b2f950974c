#include "store_util.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <random>

extern char** environ;

namespace boxlite::image {

BoxliteResult<void> write_file_atomic(const std::filesystem::path& path, std::string_view data) {
    std::random_device random;
    const auto temp = path.parent_path() /
                      fmt::format(".tmp-{}-{}-{:08x}", path.filename().string(), ::getpid(), random());
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("creating {}", temp.string()), errno);
    std::size_t done = 0;
    while (done < data.size()) {
        const auto n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            const int saved = errno;
            ::close(fd);
            ::unlink(temp.c_str());
            return fail_errno(ErrorKind::Storage, fmt::format("writing {}", temp.string()), saved);
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        const int saved = errno;
        ::unlink(temp.c_str());
        return fail_errno(ErrorKind::Storage, fmt::format("flushing {}", temp.string()), saved);
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) {
        const int saved = errno;
        ::unlink(temp.c_str());
        return fail_errno(ErrorKind::Storage, fmt::format("renaming {} to {}", temp.string(), path.string()), saved);
    }
    return {};
}

BoxliteResult<std::string> read_file_bounded(const std::filesystem::path& path, std::uint64_t max_bytes) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return fail_errno(ErrorKind::Storage, fmt::format("opening {}", path.string()), errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return fail(ErrorKind::Storage, "{} is not a regular file", path.string());
    }
    if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
        ::close(fd);
        return fail(ErrorKind::Image, "{} is {} bytes (at most {} allowed)", path.string(), st.st_size, max_bytes);
    }
    std::string out(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t done = 0;
    while (done < out.size()) {
        const auto n = ::read(fd, out.data() + done, out.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    out.resize(done);
    return out;
}

BoxliteResult<void> run_program(const std::vector<std::string>& argv, ErrorKind kind, std::string* diagnostics) {
    std::FILE* log = std::tmpfile();
    if (log == nullptr) return fail_errno(ErrorKind::Internal, "tmpfile", errno);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (diagnostics != nullptr) posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    else posix_spawn_file_actions_adddup2(&actions, fileno(log), 1);
    posix_spawn_file_actions_adddup2(&actions, fileno(log), 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    const int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        std::fclose(log);
        return fail_errno(kind, fmt::format("starting {}", argv[0]), rc);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    std::string output;
    std::rewind(log);
    char buffer[4096];
    std::size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, log)) > 0) {
        output.append(buffer, n);
        if (output.size() > 8192) output.erase(0, output.size() - 8192);
    }
    std::fclose(log);
    if (diagnostics != nullptr) *diagnostics = output;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
    while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
    if (output.size() > 1000) output = "…" + output.substr(output.size() - 1000);
    return fail(kind, "{} failed ({}): {}", argv[0],
                WIFEXITED(status) ? fmt::format("exit status {}", WEXITSTATUS(status))
                                  : fmt::format("signal {}", WTERMSIG(status)),
                output);
}

}  // namespace boxlite::image
