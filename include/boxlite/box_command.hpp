// BoxCommand: one command to run inside a box, built fluently:
//   BoxCommand("python3").args({"-c", "print(1)"}).env("A", "1").timeout(Seconds{30}).tty(true)
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite {

class BoxCommand {
public:
    explicit BoxCommand(std::string program) : program_(std::move(program)) {}

    BoxCommand& arg(std::string value) & {
        args_.push_back(std::move(value));
        return *this;
    }
    BoxCommand&& arg(std::string value) && { return std::move(arg(std::move(value))); }
    BoxCommand& args(std::vector<std::string> values) & {
        for (auto& v : values) args_.push_back(std::move(v));
        return *this;
    }
    BoxCommand&& args(std::vector<std::string> values) && { return std::move(args(std::move(values))); }
    BoxCommand& env(std::string key, std::string value) & {
        env_.emplace_back(std::move(key), std::move(value));
        return *this;
    }
    BoxCommand&& env(std::string key, std::string value) && { return std::move(env(std::move(key), std::move(value))); }
    BoxCommand& timeout(std::chrono::milliseconds value) & {
        timeout_ = value;
        return *this;
    }
    BoxCommand&& timeout(std::chrono::milliseconds value) && { return std::move(timeout(value)); }
    BoxCommand& working_dir(std::string dir) & {
        working_dir_ = std::move(dir);
        return *this;
    }
    BoxCommand&& working_dir(std::string dir) && { return std::move(working_dir(std::move(dir))); }
    BoxCommand& tty(bool enabled) & {
        tty_ = enabled;
        return *this;
    }
    BoxCommand&& tty(bool enabled) && { return std::move(tty(enabled)); }
    BoxCommand& user(std::string name) & {
        user_ = std::move(name);
        return *this;
    }
    BoxCommand&& user(std::string name) && { return std::move(user(std::move(name))); }
    /// A host pipe (borrowed: the caller keeps and closes it) that the command should read as its
    /// stdin itself, the way runc hands a container the caller's descriptors. Used only where the
    /// box's agent takes descriptors (the namespace engine) and `fd` is the read end of a FIFO
    /// and the command has no tty; Execution::stdin_passed() tells whether it was. When it was, the
    /// caller must not read `fd` while the command runs and its ExecStdin writes nothing. -1: none.
    BoxCommand& stdin_descriptor(int fd) & {
        stdin_fd_ = fd;
        return *this;
    }
    BoxCommand&& stdin_descriptor(int fd) && { return std::move(stdin_descriptor(fd)); }

    [[nodiscard]] const std::string& program() const noexcept { return program_; }
    [[nodiscard]] const std::vector<std::string>& arguments() const noexcept { return args_; }
    [[nodiscard]] const std::vector<std::pair<std::string, std::string>>& environment() const noexcept { return env_; }
    [[nodiscard]] const std::optional<std::chrono::milliseconds>& timeout_value() const noexcept { return timeout_; }
    [[nodiscard]] const std::optional<std::string>& working_directory() const noexcept { return working_dir_; }
    [[nodiscard]] bool is_tty() const noexcept { return tty_; }
    [[nodiscard]] const std::optional<std::string>& user_name() const noexcept { return user_; }
    [[nodiscard]] int stdin_descriptor_value() const noexcept { return stdin_fd_; }

    friend bool operator==(const BoxCommand&, const BoxCommand&) = default;

private:
    std::string program_;
    std::vector<std::string> args_;
    std::vector<std::pair<std::string, std::string>> env_;
    std::optional<std::chrono::milliseconds> timeout_;
    std::optional<std::string> working_dir_;
    bool tty_ = false;
    std::optional<std::string> user_;
    int stdin_fd_ = -1;
};

}  // namespace boxlite

/// The command line, each argument quoted when it needs it: python3 -c 'print(1)'.
template <>
struct fmt::formatter<boxlite::BoxCommand> : fmt::formatter<std::string_view> {
    auto format(const boxlite::BoxCommand& c, format_context& ctx) const {
        auto quote = [](const std::string& arg) {
            const bool plain = !arg.empty() &&
                               arg.find_first_not_of(
                                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+@%") ==
                                   std::string::npos;
            if (plain) return arg;
            std::string out = "'";
            for (char ch : arg) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
            return out + "'";
        };
        std::string out = quote(c.program());
        for (const auto& a : c.arguments()) out += " " + quote(a);
        return fmt::formatter<std::string_view>::format(out, ctx);
    }
};
