// The tar writer and the hostile-archive extractor (tar.hpp).
#include "protocol/tar.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

namespace boxlite::tar {

namespace detail {
namespace {

void put_octal(char* field, std::size_t width, std::uint64_t value) {
    // width includes the terminating NUL
    std::memset(field, '0', width - 1);
    field[width - 1] = '\0';
    for (std::size_t i = width - 1; i-- > 0 && value != 0;) {
        field[i] = static_cast<char>('0' + (value & 7U));
        value >>= 3;
    }
}

std::optional<std::uint64_t> parse_octal(const char* field, std::size_t width) {
    // GNU base-256 for large values: top bit of the first byte set.
    if ((static_cast<unsigned char>(field[0]) & 0x80U) != 0) {
        std::uint64_t v = static_cast<unsigned char>(field[0]) & 0x7FU;
        for (std::size_t i = 1; i < width; ++i) {
            if (v > (UINT64_MAX >> 8)) return std::nullopt;
            v = (v << 8) | static_cast<unsigned char>(field[i]);
        }
        return v;
    }
    std::size_t i = 0;
    while (i < width && (field[i] == ' ' || field[i] == '\0')) {
        if (field[i] == '\0') return 0;
        ++i;
    }
    std::uint64_t v = 0;
    for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i) {
        if (v > (UINT64_MAX >> 3)) return std::nullopt;
        v = (v << 3) | static_cast<std::uint64_t>(field[i] - '0');
    }
    for (; i < width; ++i) {
        if (field[i] != ' ' && field[i] != '\0') return std::nullopt;
    }
    return v;
}

std::string field_string(const char* field, std::size_t width) { return std::string(field, strnlen(field, width)); }

/// Splits an archive name into components; InvalidArgument for "..".
BoxliteResult<std::vector<std::string>> safe_components(std::string_view name) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos <= name.size()) {
        const auto slash = name.find('/', pos);
        const auto part = name.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
        if (part == "..") {
            return fail(ErrorKind::InvalidArgument,
                        "tar entry '{}' escapes the target directory ('..' components are refused)", name);
        }
        if (!part.empty() && part != ".") out.emplace_back(part);
        if (slash == std::string_view::npos) break;
        pos = slash + 1;
    }
    return out;
}

}  // namespace
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

BoxliteResult<void> Writer::add_tree(const std::string& source, const std::string& top) {
    struct stat st {};
    if (::lstat(source.c_str(), &st) != 0) return fail_errno(ErrorKind::Storage, "copy source '" + source + "'", errno);
    return add(source, top, st);
}

BoxliteResult<void> Writer::finish() {
    static const std::array<std::byte, 2 * kBlock> zeros{};
    return sink_(zeros);
}

BoxliteResult<void> Writer::add(const std::string& path, const std::string& name, const struct stat& st) {
    if (S_ISDIR(st.st_mode)) {
        BOXLITE_TRY_VOID(header(name + "/", '5', st, 0, {}));
        std::vector<std::string> children;
        {
            base::OwnedFd dirfd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
            if (!dirfd.valid()) return fail_errno(ErrorKind::Storage, "opening directory '" + path + "'", errno);
            DIR* dir = ::fdopendir(::dup(dirfd.get()));
            if (dir == nullptr) return fail_errno(ErrorKind::Storage, "reading directory '" + path + "'", errno);
            while (auto* entry = ::readdir(dir)) {
                std::string_view n = entry->d_name;
                if (n != "." && n != "..") children.emplace_back(n);
            }
            ::closedir(dir);
        }
        std::sort(children.begin(), children.end());
        for (const auto& child : children) {
            struct stat cst {};
            const auto child_path = path + "/" + child;
            if (::lstat(child_path.c_str(), &cst) != 0) continue;  // vanished meanwhile
            BOXLITE_TRY_VOID(add(child_path, name + "/" + child, cst));
        }
        return {};
    }
    if (S_ISLNK(st.st_mode)) {
        std::string target(4096, '\0');
        const auto n = ::readlink(path.c_str(), target.data(), target.size());
        if (n < 0) return fail_errno(ErrorKind::Storage, "reading symlink '" + path + "'", errno);
        target.resize(static_cast<std::size_t>(n));
        return header(name, '2', st, 0, target);
    }
    if (S_ISREG(st.st_mode)) {
        base::OwnedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd.valid()) return fail_errno(ErrorKind::Storage, "opening '" + path + "'", errno);
        const auto size = static_cast<std::uint64_t>(st.st_size);
        BOXLITE_TRY_VOID(header(name, '0', st, size, {}));
        std::vector<std::byte> buf(64 * 1024);
        std::uint64_t left = size;
        while (left > 0) {
            const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
            const auto n = ::read(fd.get(), buf.data(), want);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return fail_errno(ErrorKind::Storage, "reading '" + path + "'", errno);
            if (n == 0) {
                // The file shrank while we archived it: pad with zeros to keep the size promised.
                std::fill(buf.begin(), buf.end(), std::byte{0});
                BOXLITE_TRY_VOID(sink_(std::span<const std::byte>(buf.data(), want)));
                left -= want;
                continue;
            }
            BOXLITE_TRY_VOID(sink_(std::span<const std::byte>(buf.data(), static_cast<std::size_t>(n))));
            left -= static_cast<std::uint64_t>(n);
        }
        return pad(size);
    }
    return {};  // sockets, fifos, devices: not copied
}

BoxliteResult<void> Writer::pad(std::uint64_t size) {
    static const std::array<std::byte, kBlock> zeros{};
    const auto rem = size % kBlock;
    if (rem == 0) return {};
    return sink_(std::span<const std::byte>(zeros.data(), kBlock - rem));
}

void Writer::pax_record(std::string& out, std::string_view key, std::string_view value) {
    // "<len> key=value\n" where len counts itself.
    const auto body = std::string(key) + "=" + std::string(value) + "\n";
    std::size_t len = body.size() + 2;
    while (std::to_string(len).size() + 1 + body.size() != len) ++len;
    out += std::to_string(len) + " " + body;
}

BoxliteResult<void> Writer::header(const std::string& name, char type, const struct stat& st, std::uint64_t size,
                                   const std::string& link) {
    std::string pax;
    if (name.size() > 99) pax_record(pax, "path", name);
    if (link.size() > 99) pax_record(pax, "linkpath", link);
    if (size > 077777777777ULL) pax_record(pax, "size", std::to_string(size));
    if (!pax.empty()) {
        struct stat pst = st;
        BOXLITE_TRY_VOID(raw_header("PaxHeader", 'x', pst, pax.size(), {}));
        BOXLITE_TRY_VOID(sink_(std::as_bytes(std::span(pax.data(), pax.size()))));
        BOXLITE_TRY_VOID(pad(pax.size()));
    }
    return raw_header(name.substr(0, 99), type, st, size > 077777777777ULL ? 0 : size, link.substr(0, 99));
}

BoxliteResult<void> Writer::raw_header(const std::string& name, char type, const struct stat& st, std::uint64_t size,
                                       const std::string& link) {
    std::array<char, kBlock> h{};
    std::memcpy(h.data(), name.data(), std::min<std::size_t>(name.size(), 100));
    detail::put_octal(h.data() + 100, 8, st.st_mode & 07777);
    detail::put_octal(h.data() + 108, 8, st.st_uid & 07777777);
    detail::put_octal(h.data() + 116, 8, st.st_gid & 07777777);
    detail::put_octal(h.data() + 124, 12, size);
    detail::put_octal(h.data() + 136, 12, static_cast<std::uint64_t>(std::max<time_t>(st.st_mtime, 0)));
    std::memset(h.data() + 148, ' ', 8);
    h[156] = type;
    std::memcpy(h.data() + 157, link.data(), std::min<std::size_t>(link.size(), 100));
    std::memcpy(h.data() + 257, "ustar", 6);
    std::memcpy(h.data() + 263, "00", 2);
    unsigned sum = 0;
    for (char c : h) sum += static_cast<unsigned char>(c);
    detail::put_octal(h.data() + 148, 7, sum);
    h[155] = ' ';
    return sink_(std::as_bytes(std::span(h.data(), h.size())));
}

// ---------------------------------------------------------------------------------------------
// Extractor
// ---------------------------------------------------------------------------------------------

BoxliteResult<void> Extractor::extract_to(const std::string& root) {
    root_ = base::OwnedFd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root_.valid()) return fail_errno(ErrorKind::Storage, "copy destination '" + root + "'", errno);
    std::optional<std::string> pax_path, pax_link;
    std::optional<std::uint64_t> pax_size;
    int zero_blocks = 0;
    while (true) {
        std::array<char, kBlock> h{};
        BOXLITE_TRY(auto got, read_exact(std::as_writable_bytes(std::span(h))));
        if (!got) break;  // EOF without the end marker: accept, as GNU tar does
        if (std::all_of(h.begin(), h.end(), [](char c) { return c == '\0'; })) {
            if (++zero_blocks == 2) break;
            continue;
        }
        zero_blocks = 0;
        BOXLITE_TRY_VOID(verify_checksum(h));
        auto size = detail::parse_octal(h.data() + 124, 12);
        auto mode = detail::parse_octal(h.data() + 100, 8);
        auto uid = detail::parse_octal(h.data() + 108, 8);
        auto gid = detail::parse_octal(h.data() + 116, 8);
        auto mtime = detail::parse_octal(h.data() + 136, 12);
        if (!size || !mode || !uid || !gid || !mtime) {
            return fail(ErrorKind::InvalidArgument, "tar header has a malformed numeric field");
        }
        if (pax_size) size = pax_size;
        const char type = h[156];
        std::string name = detail::field_string(h.data(), 100);
        if (std::memcmp(h.data() + 257, "ustar", 5) == 0) {
            const auto prefix = detail::field_string(h.data() + 345, 155);
            if (!prefix.empty()) name = prefix + "/" + name;
        }
        std::string link = detail::field_string(h.data() + 157, 100);

        if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
            if (*size > kMaxMetaBytes) {
                return fail(ErrorKind::InvalidArgument, "tar metadata record of {} bytes is too large", *size);
            }
            BOXLITE_TRY(auto body, read_body(*size));
            if (type == 'x') BOXLITE_TRY_VOID(parse_pax(body, pax_path, pax_link, pax_size));
            if (type == 'L') pax_path = std::string(body.c_str());
            if (type == 'K') pax_link = std::string(body.c_str());
            continue;
        }
        if (pax_path) name = *pax_path;
        if (pax_link) link = *pax_link;
        pax_path.reset();
        pax_link.reset();
        pax_size.reset();

        Entry entry{name,
                    link,
                    type,
                    static_cast<mode_t>(*mode & 07777),
                    static_cast<uid_t>(*uid),
                    static_cast<gid_t>(*gid),
                    static_cast<time_t>(*mtime),
                    *size};
        BOXLITE_TRY_VOID(extract_entry(entry));
    }
    return finish_directories();
}

BoxliteResult<bool> Extractor::read_exact(std::span<std::byte> out) {
    std::size_t done = 0;
    while (done < out.size()) {
        BOXLITE_TRY(auto n, source_(out.subspan(done)));
        if (n == 0) {
            if (done == 0) return false;
            return fail(ErrorKind::InvalidArgument, "tar stream ends in the middle of a block");
        }
        done += n;
    }
    return true;
}

BoxliteResult<std::string> Extractor::read_body(std::uint64_t size) {
    std::string body(static_cast<std::size_t>((size + kBlock - 1) / kBlock * kBlock), '\0');
    BOXLITE_TRY(auto got, read_exact(std::as_writable_bytes(std::span(body.data(), body.size()))));
    if (!got && size != 0) return fail(ErrorKind::InvalidArgument, "tar stream ends inside a record");
    body.resize(static_cast<std::size_t>(size));
    return body;
}

BoxliteResult<void> Extractor::skip(std::uint64_t size) {
    std::array<std::byte, kBlock> scratch{};
    for (std::uint64_t blocks = (size + kBlock - 1) / kBlock; blocks > 0; --blocks) {
        BOXLITE_TRY(auto got, read_exact(scratch));
        if (!got) return fail(ErrorKind::InvalidArgument, "tar stream ends inside an entry");
    }
    return {};
}

BoxliteResult<void> Extractor::verify_checksum(const std::array<char, kBlock>& h) {
    const auto stored = detail::parse_octal(h.data() + 148, 8);
    unsigned sum = 0;
    for (std::size_t i = 0; i < kBlock; ++i) {
        sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[i]);
    }
    if (!stored || *stored != sum)
        return fail(ErrorKind::InvalidArgument, "tar header checksum mismatch (not a tar stream?)");
    return {};
}

BoxliteResult<void> Extractor::parse_pax(const std::string& body, std::optional<std::string>& path,
                                         std::optional<std::string>& link, std::optional<std::uint64_t>& size) {
    std::size_t pos = 0;
    while (pos < body.size()) {
        const auto space = body.find(' ', pos);
        if (space == std::string::npos) return fail(ErrorKind::InvalidArgument, "malformed pax record");
        std::uint64_t len = 0;
        for (auto i = pos; i < space; ++i) {
            if (body[i] < '0' || body[i] > '9' || len > body.size()) {
                return fail(ErrorKind::InvalidArgument, "malformed pax record length");
            }
            len = len * 10 + static_cast<std::uint64_t>(body[i] - '0');
        }
        if (len <= space - pos + 1 || pos + len > body.size() || body[pos + len - 1] != '\n') {
            return fail(ErrorKind::InvalidArgument, "malformed pax record length");
        }
        const auto record = std::string_view(body).substr(space + 1, pos + len - space - 2);
        const auto eq = record.find('=');
        if (eq != std::string_view::npos) {
            const auto key = record.substr(0, eq);
            const auto value = record.substr(eq + 1);
            if (key == "path") path = std::string(value);
            if (key == "linkpath") link = std::string(value);
            if (key == "size") {
                std::uint64_t v = 0;
                for (char c : value) {
                    if (c < '0' || c > '9' || v > UINT64_MAX / 10)
                        return fail(ErrorKind::InvalidArgument, "malformed pax size");
                    v = v * 10 + static_cast<std::uint64_t>(c - '0');
                }
                size = v;
            }
        }
        pos += len;
    }
    return {};
}

BoxliteResult<std::vector<std::string>> Extractor::target_components(const std::string& name) {
    BOXLITE_TRY(auto parts, detail::safe_components(name));
    if (options_.rename_top && !parts.empty()) parts[0] = *options_.rename_top;
    return parts;
}

BoxliteResult<base::OwnedFd> Extractor::open_parent(const std::vector<std::string>& parts, const std::string& name,
                                                    bool create) {
    base::OwnedFd current(::dup(root_.get()));
    if (!current.valid()) return fail_errno(ErrorKind::Storage, "duplicating the extraction directory", errno);
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
        int fd = ::openat(current.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && create) {
            // mkdirat never follows a symlink in its last component; the open below checks
            // that what is there now is a real directory.
            if (::mkdirat(current.get(), parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
                return fail_errno(ErrorKind::Storage, "creating directory for tar entry '" + name + "'", errno);
            }
            fd = ::openat(current.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (fd < 0) {
            if (errno == ELOOP || errno == ENOTDIR) {
                return fail(ErrorKind::InvalidArgument,
                            "tar entry '{}' goes through a symlink or non-directory '{}'; refused", name, parts[i]);
            }
            if (errno == ENOENT && !create) {
                return fail(ErrorKind::InvalidArgument, "tar entry '{}': directory '{}' does not exist", name,
                            parts[i]);
            }
            return fail_errno(ErrorKind::Storage, "opening directory for tar entry '" + name + "'", errno);
        }
        current = base::OwnedFd(fd);
    }
    return current;
}

std::string Extractor::joined(const std::vector<std::string>& parts) {
    std::string out;
    for (const auto& part : parts) {
        if (!out.empty()) out += '/';
        out += part;
    }
    return out;
}

mode_t Extractor::allowed_mode(const Entry& e, bool is_directory) const {
    mode_t mode = e.mode & 07777;
    if (!options_.preserve_owner) mode &= ~static_cast<mode_t>(S_ISUID | S_ISGID);
    if (!is_directory) mode &= ~static_cast<mode_t>(S_ISVTX);
    return mode;
}

BoxliteResult<void> Extractor::remove_existing(int dirfd, const std::string& leaf, bool keep_directory) {
    struct stat st {};
    if (::fstatat(dirfd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return {};
    if (S_ISDIR(st.st_mode)) {
        if (keep_directory) return {};
        if (::unlinkat(dirfd, leaf.c_str(), AT_REMOVEDIR) != 0) {
            return fail_errno(ErrorKind::Storage, "replacing directory '" + leaf + "'", errno);
        }
        return {};
    }
    if (::unlinkat(dirfd, leaf.c_str(), 0) != 0)
        return fail_errno(ErrorKind::Storage, "replacing '" + leaf + "'", errno);
    return {};
}

void Extractor::apply_metadata(int fd, const Entry& e, bool is_directory) {
    if (options_.preserve_owner) (void)::fchown(fd, e.uid, e.gid);
    (void)::fchmod(fd, allowed_mode(e, is_directory));
    const struct timespec times[2] = {{e.mtime, 0}, {e.mtime, 0}};
    (void)::futimens(fd, times);
}

void Extractor::apply_link_metadata(int dirfd, const std::string& leaf, const Entry& e) {
    if (options_.preserve_owner) (void)::fchownat(dirfd, leaf.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW);
    const struct timespec times[2] = {{e.mtime, 0}, {e.mtime, 0}};
    (void)::utimensat(dirfd, leaf.c_str(), times, AT_SYMLINK_NOFOLLOW);
}

BoxliteResult<void> Extractor::extract_entry(const Entry& e) {
    BOXLITE_TRY(auto parts, target_components(e.name));
    const bool data_follows = e.type == '0' || e.type == '\0' || e.type == '7';
    if (parts.empty()) {
        // "./" itself: nothing to create.
        return data_follows ? skip(e.size) : BoxliteResult<void>{};
    }
    BOXLITE_TRY(auto parent, open_parent(parts, e.name));
    const auto& leaf = parts.back();
    switch (e.type) {
        case '5': {
            BOXLITE_TRY_VOID(remove_existing(parent.get(), leaf, true));
            if (::mkdirat(parent.get(), leaf.c_str(), 0700) != 0 && errno != EEXIST) {
                return fail_errno(ErrorKind::Storage, "creating directory '" + e.name + "'", errno);
            }
            // Modes are applied at the end so a read-only directory can still be filled;
            // the inode is remembered so that a later entry replacing it is not touched.
            base::OwnedFd dir(::openat(parent.get(), leaf.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            struct stat st {};
            if (!dir.valid() || ::fstat(dir.get(), &st) != 0) {
                return fail(ErrorKind::InvalidArgument, "tar entry '{}' is not a directory after creating it; refused",
                            e.name);
            }
            directories_.push_back({parts, e, st.st_dev, st.st_ino});
            return {};
        }
        case '2': {
            BOXLITE_TRY_VOID(remove_existing(parent.get(), leaf, false));
            if (::symlinkat(e.link.c_str(), parent.get(), leaf.c_str()) != 0) {
                return fail_errno(ErrorKind::Storage, "creating symlink '" + e.name + "'", errno);
            }
            apply_link_metadata(parent.get(), leaf, e);
            return {};
        }
        case '1': {
            BOXLITE_TRY(auto target_parts, target_components(e.link));
            if (target_parts.empty())
                return fail(ErrorKind::InvalidArgument, "tar hard link '{}' has no target", e.name);
            const auto refused = [&] {
                return fail(ErrorKind::InvalidArgument,
                            "tar hard link '{}' -> '{}' does not name a file extracted earlier; refused", e.name,
                            e.link);
            };
            const auto known = files_.find(joined(target_parts));
            if (known == files_.end()) return refused();
            auto target_parent = open_parent(target_parts, e.link, false);
            if (!target_parent) return refused();
            struct stat st {};
            if (::fstatat(target_parent->get(), target_parts.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                !S_ISREG(st.st_mode) || st.st_dev != known->second.first || st.st_ino != known->second.second) {
                return refused();
            }
            BOXLITE_TRY_VOID(remove_existing(parent.get(), leaf, false));
            // flags 0: linkat never follows a symlink in the target.
            if (::linkat(target_parent->get(), target_parts.back().c_str(), parent.get(), leaf.c_str(), 0) != 0) {
                return fail_errno(ErrorKind::Storage, "creating hard link '" + e.name + "'", errno);
            }
            files_[joined(parts)] = known->second;
            return skip(e.size);
        }
        case '0':
        case '\0':
        case '7': {
            BOXLITE_TRY_VOID(remove_existing(parent.get(), leaf, false));
            base::OwnedFd out(
                ::openat(parent.get(), leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!out.valid()) return fail_errno(ErrorKind::Storage, "creating '" + e.name + "'", errno);
            std::vector<std::byte> buf(64 * 1024);
            std::uint64_t left = e.size;
            while (left > 0) {
                const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
                BOXLITE_TRY(auto got, read_exact(std::span(buf.data(), want)));
                if (!got) return fail(ErrorKind::InvalidArgument, "tar stream ends inside '{}'", e.name);
                std::size_t written = 0;
                while (written < want) {
                    const auto n = ::write(out.get(), buf.data() + written, want - written);
                    if (n < 0 && errno == EINTR) continue;
                    if (n < 0) return fail_errno(ErrorKind::Storage, "writing '" + e.name + "'", errno);
                    written += static_cast<std::size_t>(n);
                }
                left -= want;
            }
            const auto rem = e.size % kBlock;
            if (rem != 0) {
                std::array<std::byte, kBlock> scratch{};
                BOXLITE_TRY(auto got, read_exact(std::span(scratch.data(), kBlock - rem)));
                if (!got) return fail(ErrorKind::InvalidArgument, "tar stream ends inside '{}'", e.name);
            }
            apply_metadata(out.get(), e, false);
            struct stat st {};
            if (::fstat(out.get(), &st) == 0) files_[joined(parts)] = {st.st_dev, st.st_ino};
            return {};
        }
        default:
            // Devices, fifos, sparse/unknown extensions: never created from an untrusted archive.
            return skip(e.size);
    }
}

BoxliteResult<void> Extractor::finish_directories() {
    // Deepest first, so a read-only parent does not stop its children's metadata updates.
    std::stable_sort(directories_.begin(), directories_.end(),
                     [](const auto& a, const auto& b) { return a.parts.size() > b.parts.size(); });
    for (const auto& d : directories_) {
        // A later entry may have replaced the directory (or a parent) with a symlink or a
        // file: walk and open without following or creating anything, and only touch the
        // very inode this extraction created.
        auto parent = open_parent(d.parts, d.entry.name, false);
        if (!parent) continue;
        base::OwnedFd dir(
            ::openat(parent->get(), d.parts.back().c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        struct stat st {};
        if (!dir.valid() || ::fstat(dir.get(), &st) != 0 || st.st_dev != d.dev || st.st_ino != d.ino) continue;
        apply_metadata(dir.get(), d.entry, true);
    }
    return {};
}

// ---------------------------------------------------------------------------------------------
// docker-cp naming
// ---------------------------------------------------------------------------------------------

Placement place(const std::string& dest) {
    struct stat st {};
    if (::stat(dest.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return {dest, std::nullopt};
    std::string trimmed = dest;
    while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
    const auto slash = trimmed.rfind('/');
    if (slash == std::string::npos) return {".", trimmed};
    return {slash == 0 ? "/" : trimmed.substr(0, slash), trimmed.substr(slash + 1)};
}

std::string top_name(const std::string& source) {
    std::string trimmed = source;
    while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
    const auto slash = trimmed.rfind('/');
    auto name = slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
    return name.empty() ? std::string(".") : name;
}

}  // namespace boxlite::tar
