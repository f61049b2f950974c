#include "net/connect_redirect.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string_view>
#include <vector>

namespace boxlite::net {

namespace {

long bpf(int command, bpf_attr& attr) { return ::syscall(__NR_bpf, command, &attr, sizeof attr); }

/// The kernel rejects a bpf_attr whose bytes past the command's fields are not zero, and a union
/// is only zeroed up to its first member by `{}`.
bpf_attr zeroed() {
    bpf_attr attr;
    std::memset(&attr, 0, sizeof attr);
    return attr;
}

std::uint64_t address_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

void set_name(char (&field)[BPF_OBJ_NAME_LEN], std::string_view name) {
    std::memcpy(field, name.data(), std::min(name.size(), sizeof field - 1));
}

// ---- a tiny assembler: the instructions the two programs need, named as the kernel's filter.h
// macros are (BPF_MOV64_REG, BPF_LDX_MEM, ...), which the uapi headers do not export.

constexpr std::uint8_t R0 = BPF_REG_0, R1 = BPF_REG_1, R2 = BPF_REG_2, R6 = BPF_REG_6, R10 = BPF_REG_10;

bpf_insn instruction(int code, std::uint8_t dst, std::uint8_t src, std::int16_t offset, std::int32_t imm) {
    bpf_insn insn{};
    insn.code = static_cast<std::uint8_t>(code);
    insn.dst_reg = dst & 0xf;
    insn.src_reg = src & 0xf;
    insn.off = offset;
    insn.imm = imm;
    return insn;
}

/// One program as it is assembled, with forward jumps to a single label patched at the end.
class Assembler {
public:
    void mov64_reg(std::uint8_t dst, std::uint8_t src) { emit(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0); }
    void mov64_imm(std::uint8_t dst, std::int32_t imm) { emit(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm); }
    void mov32_imm(std::uint8_t dst, std::int32_t imm) { emit(BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, imm); }
    void add64_imm(std::uint8_t dst, std::int32_t imm) { emit(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm); }
    /// dst = *(u32 *)(src + offset)
    void load32(std::uint8_t dst, std::uint8_t src, std::size_t offset) {
        emit(BPF_LDX | BPF_MEM | BPF_W, dst, src, static_cast<std::int16_t>(offset), 0);
    }
    /// *(u32 *)(dst + offset) = src
    void store32(std::uint8_t dst, std::int16_t offset, std::uint8_t src) {
        emit(BPF_STX | BPF_MEM | BPF_W, dst, src, offset, 0);
    }
    /// dst = the map behind `map_fd`: a 16-byte load of a 64-bit immediate whose src_reg tells the
    /// verifier to swap the descriptor for the map's address.
    void load_map(std::uint8_t dst, int map_fd) {
        emit(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, map_fd);
        emit(0, 0, 0, 0, 0);
    }
    void call(std::int32_t helper) { emit(BPF_JMP | BPF_CALL, 0, 0, 0, helper); }
    void exit() { emit(BPF_JMP | BPF_EXIT, 0, 0, 0, 0); }

    /// if (u32)dst != imm goto label. A 32-bit compare: the 64-bit one sign-extends its 32-bit
    /// immediate, so a value with the top bit set (192.168.127.254 in network order read as a u32
    /// on a little-endian host: 0xfe7fa8c0) would never match the zero-extended load.
    void jump32_if_not_equal(std::uint8_t dst, std::uint32_t imm) {
        jumps_.push_back(code_.size());
        emit(BPF_JMP32 | BPF_JNE | BPF_K, dst, 0, 0, static_cast<std::int32_t>(imm));
    }
    /// if dst == imm goto label (64-bit: for a pointer against 0).
    void jump_if_equal(std::uint8_t dst, std::int32_t imm) {
        jumps_.push_back(code_.size());
        emit(BPF_JMP | BPF_JEQ | BPF_K, dst, 0, 0, imm);
    }
    /// Places the label here: every jump so far lands on the next instruction.
    void label() {
        for (const std::size_t at : jumps_) code_[at].off = static_cast<std::int16_t>(code_.size() - at - 1);
        jumps_.clear();
    }

    [[nodiscard]] const std::vector<bpf_insn>& code() const noexcept { return code_; }

private:
    void emit(int code, std::uint8_t dst, std::uint8_t src, std::int16_t offset, std::int32_t imm) {
        code_.push_back(instruction(code, dst, src, offset, imm));
    }

    std::vector<bpf_insn> code_;
    std::vector<std::size_t> jumps_;
};

/// Which address field a program reads and writes: IPv4's, or the last word of an IPv6 socket's
/// address when the first three make it IPv4-mapped (::ffff:a.b.c.d; a dual-stack socket, as
/// Java's, reaches an IPv4 address that way).
enum class Family : std::uint8_t { Ipv4, Ipv4Mapped };

/// All four programs are this one with other constants: a stream socket's address `from`
/// (network order, as ctx->user_ip4 holds it) and a port found in `map` become `to` and the map's
/// value. Always returns 1: the call goes on (rewritten or not); a getpeername program may return
/// nothing else.
std::vector<bpf_insn> rewrite_program(int map_fd, std::uint32_t from, std::uint32_t to, Family family) {
    constexpr auto type = offsetof(bpf_sock_addr, type);
    constexpr auto user_ip6 = offsetof(bpf_sock_addr, user_ip6);
    constexpr auto user_port = offsetof(bpf_sock_addr, user_port);
    const auto address = family == Family::Ipv4 ? offsetof(bpf_sock_addr, user_ip4) : user_ip6 + 12;
    Assembler a;
    a.mov64_reg(R6, R1);  // the context survives the helper call in a callee-saved register
    a.load32(R2, R6, type);
    a.jump32_if_not_equal(R2, SOCK_STREAM);
    if (family == Family::Ipv4Mapped) {
        a.load32(R2, R6, user_ip6);
        a.jump32_if_not_equal(R2, 0);
        a.load32(R2, R6, user_ip6 + 4);
        a.jump32_if_not_equal(R2, 0);
        a.load32(R2, R6, user_ip6 + 8);
        a.jump32_if_not_equal(R2, htonl(0xffff));
    }
    a.load32(R2, R6, address);
    a.jump32_if_not_equal(R2, from);
    a.load32(R2, R6, user_port);  // the key: the port as it is in the context
    a.store32(R10, -4, R2);
    a.mov64_reg(R2, R10);
    a.add64_imm(R2, -4);
    a.load_map(R1, map_fd);
    a.call(BPF_FUNC_map_lookup_elem);
    a.jump_if_equal(R0, 0);
    a.load32(R2, R0, 0);
    a.store32(R6, static_cast<std::int16_t>(user_port), R2);
    // From a register: the verifier refuses BPF_ST (store of an immediate) into the context.
    a.mov32_imm(R2, static_cast<std::int32_t>(to));
    a.store32(R6, static_cast<std::int16_t>(address), R2);
    a.label();
    a.mov64_imm(R0, 1);
    a.exit();
    return a.code();
}

BoxliteResult<base::OwnedFd> create_map(std::string_view name) {
    bpf_attr attr = zeroed();
    attr.map_type = BPF_MAP_TYPE_HASH;
    attr.key_size = sizeof(std::uint32_t);
    attr.value_size = sizeof(std::uint32_t);
    attr.max_entries = ConnectRedirect::kMaxPorts;
    set_name(attr.map_name, name);
    const long fd = bpf(BPF_MAP_CREATE, attr);
    if (fd < 0) return fail_errno(ErrorKind::Unsupported, fmt::format("creating the BPF map {}", name), errno);
    return base::OwnedFd(static_cast<int>(fd));
}

/// The last lines of a verifier log: where it gave up and why.
std::string log_tail(const std::vector<char>& log) {
    const std::string_view text(log.data(), ::strnlen(log.data(), log.size()));
    constexpr std::size_t kTail = 1500;
    std::string tail(text.size() > kTail ? text.substr(text.size() - kTail) : text);
    while (!tail.empty() && tail.back() == '\n') tail.pop_back();
    return tail;
}

BoxliteResult<base::OwnedFd> load_program(const std::vector<bpf_insn>& code, bpf_attach_type attach_type,
                                          std::string_view name) {
    static constexpr char kLicense[] = "GPL";  // not needed by map_lookup_elem; harmless
    auto attempt = [&](std::vector<char>* log) {
        bpf_attr attr = zeroed();
        attr.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
        attr.expected_attach_type = attach_type;
        attr.insns = address_of(code.data());
        attr.insn_cnt = static_cast<std::uint32_t>(code.size());
        attr.license = address_of(kLicense);
        set_name(attr.prog_name, name);
        if (log != nullptr) {
            attr.log_level = 1;
            attr.log_buf = address_of(log->data());
            attr.log_size = static_cast<std::uint32_t>(log->size());
        }
        return bpf(BPF_PROG_LOAD, attr);
    };
    if (const long fd = attempt(nullptr); fd >= 0) return base::OwnedFd(static_cast<int>(fd));
    const int error = errno;
    // Only now with a log: the verifier is slower with one, and it says nothing about success.
    std::vector<char> log(64 * 1024, '\0');
    if (const long fd = attempt(&log); fd >= 0) return base::OwnedFd(static_cast<int>(fd));  // a transient failure
    const std::string tail = log_tail(log);
    return fail(ErrorKind::Unsupported, "loading the BPF program {}: {}{}{}", name,
                std::system_category().message(error), tail.empty() ? "" : "; verifier log:\n", tail);
}

int update(int map, std::uint32_t key, std::uint32_t value) {
    bpf_attr attr = zeroed();
    attr.map_fd = static_cast<std::uint32_t>(map);
    attr.key = address_of(&key);
    attr.value = address_of(&value);
    attr.flags = BPF_ANY;
    return bpf(BPF_MAP_UPDATE_ELEM, attr) == 0 ? 0 : errno;
}

int lookup(int map, std::uint32_t key, std::uint32_t& value) {
    bpf_attr attr = zeroed();
    attr.map_fd = static_cast<std::uint32_t>(map);
    attr.key = address_of(&key);
    attr.value = address_of(&value);
    return bpf(BPF_MAP_LOOKUP_ELEM, attr) == 0 ? 0 : errno;
}

int erase(int map, std::uint32_t key) {
    bpf_attr attr = zeroed();
    attr.map_fd = static_cast<std::uint32_t>(map);
    attr.key = address_of(&key);
    return bpf(BPF_MAP_DELETE_ELEM, attr) == 0 ? 0 : errno;
}

/// A port as ctx->user_port holds it: network order in the low 16 bits of a u32.
std::uint32_t context_port(std::uint16_t port) { return htons(port); }

}  // namespace

BoxliteResult<ConnectRedirect> ConnectRedirect::load(std::uint32_t alias_ipv4) {
    ConnectRedirect redirect;
    BOXLITE_TRY(redirect.forward_, create_map("boxlite_fwd"));
    BOXLITE_TRY(redirect.reverse_, create_map("boxlite_rev"));
    const std::uint32_t alias = htonl(alias_ipv4);
    const std::uint32_t loopback = htonl(INADDR_LOOPBACK);
    const int forward = redirect.forward_.get();
    const int reverse = redirect.reverse_.get();
    BOXLITE_TRY(redirect.connect4_, load_program(rewrite_program(forward, alias, loopback, Family::Ipv4),
                                                 BPF_CGROUP_INET4_CONNECT, "boxlite_conn4"));
    BOXLITE_TRY(redirect.getpeername4_, load_program(rewrite_program(reverse, loopback, alias, Family::Ipv4),
                                                     BPF_CGROUP_INET4_GETPEERNAME, "boxlite_peer4"));
    BOXLITE_TRY(redirect.connect6_, load_program(rewrite_program(forward, alias, loopback, Family::Ipv4Mapped),
                                                 BPF_CGROUP_INET6_CONNECT, "boxlite_conn6"));
    BOXLITE_TRY(redirect.getpeername6_, load_program(rewrite_program(reverse, loopback, alias, Family::Ipv4Mapped),
                                                     BPF_CGROUP_INET6_GETPEERNAME, "boxlite_peer6"));
    return redirect;
}

BoxliteResult<void> ConnectRedirect::attach(const std::string& cgroup_v2_dir) {
    const base::OwnedFd cgroup(::open(cgroup_v2_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cgroup) return fail_errno(ErrorKind::InvalidArgument, fmt::format("opening cgroup {}", cgroup_v2_dir), errno);
    // A link, not BPF_PROG_ATTACH: a program attached that way stays on the cgroup after its
    // loader has gone, and with the forwarder gone its map would still send the box's connects to
    // loopback ports nobody listens on any more.
    auto link = [&](const base::OwnedFd& program, bpf_attach_type type) {
        bpf_attr attr = zeroed();
        attr.link_create.prog_fd = static_cast<std::uint32_t>(program.get());
        attr.link_create.target_fd = static_cast<std::uint32_t>(cgroup.get());
        attr.link_create.attach_type = type;
        return base::OwnedFd(static_cast<int>(bpf(BPF_LINK_CREATE, attr)));
    };
    // All or none: half a redirect would show the box its peer as 127.0.0.1:F, or redirect one
    // family only. The links made so far go with `links` on a failure.
    const std::pair<const base::OwnedFd*, bpf_attach_type> programs[] = {
        {&connect4_, BPF_CGROUP_INET4_CONNECT},
        {&getpeername4_, BPF_CGROUP_INET4_GETPEERNAME},
        {&connect6_, BPF_CGROUP_INET6_CONNECT},
        {&getpeername6_, BPF_CGROUP_INET6_GETPEERNAME},
    };
    std::vector<base::OwnedFd> links;
    for (const auto& [program, type] : programs) {
        links.push_back(link(*program, type));
        if (!links.back()) {
            return fail_errno(ErrorKind::Unsupported,
                              fmt::format("attaching the connect redirect to cgroup {} (a cgroup v2 directory?)",
                                          cgroup_v2_dir),
                              errno);
        }
    }
    links_ = std::move(links);
    return {};
}

bool ConnectRedirect::set_port(int forward_map, int reverse_map, std::uint16_t alias_port, std::uint16_t local_port) {
    const std::uint32_t alias = context_port(alias_port);
    const std::uint32_t local = context_port(local_port);
    std::uint32_t old_local = 0;
    const bool had_forward = lookup(forward_map, alias, old_local) == 0;
    std::uint32_t old_alias = 0;
    const bool had_reverse = lookup(reverse_map, local, old_alias) == 0;
    // The reverse entry first: a connect redirected by the new forward entry must find its way
    // back in getpeername at once.
    if (const int error = update(reverse_map, local, alias); error != 0) {
        errno = error;
        return false;
    }
    if (const int error = update(forward_map, alias, local); error != 0) {
        (void)(had_reverse ? update(reverse_map, local, old_alias) : erase(reverse_map, local));
        errno = error;
        return false;
    }
    // A port moved to another local port: its old loopback port is no longer the alias's.
    if (had_forward && old_local != local) (void)erase(reverse_map, old_local);
    return true;
}

bool ConnectRedirect::clear_port(int forward_map, int reverse_map, std::uint16_t alias_port, std::uint16_t local_port) {
    // Forward first, the mirror of set_port(): no new connect is redirected while getpeername of
    // one already redirected still answers.
    const int forward_error = erase(forward_map, context_port(alias_port));
    const int reverse_error = erase(reverse_map, context_port(local_port));
    if (forward_error != 0 || reverse_error != 0) {
        errno = forward_error != 0 ? forward_error : reverse_error;
        return false;
    }
    return true;
}

}  // namespace boxlite::net
