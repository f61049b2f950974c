// The tar streams of copy_in / copy_out: a writer that archives a host (or guest) tree and an
// extractor that unpacks one into a directory without ever leaving it.
//
// Format: POSIX ustar, with PAX 'x' records for names or link targets longer than ustar allows
// (GNU 'L'/'K' long names are read too). Regular files, directories, symlinks and hard links keep
// their mode, mtime and (when extracting as root) owner; other entry types are skipped.
//
// The extractor treats the archive as hostile. It refuses, naming the entry:
//   - any ".." component, and absolute names are made relative (as GNU tar does);
//   - any path whose parent walks through a symlink: every component is opened with
//     O_NOFOLLOW relative to the directory above it, so a symlink planted by an earlier entry
//     (`a -> /etc`, then `a/passwd`) cannot redirect a write;
//   - hard links whose target is not a regular file this extraction created (and which is still
//     the same inode), so a link can never alias a file that was there before.
// No metadata call follows a symlink either: files and directories get their owner, mode and
// mtime through a descriptor opened with O_NOFOLLOW (a directory whose entry was later replaced,
// say by `d -> /etc/shadow`, is skipped), symlinks through the *at(AT_SYMLINK_NOFOLLOW) calls.
// Without preserve_owner (copy_out, which runs as the host's root) setuid and setgid bits are
// dropped, so a guest cannot leave a setuid-root binary on the host; sticky is kept only on
// directories. A refused entry stops the extraction with an error; what was written before stays.
//
// Used by the host (protocol/client.cpp: copy_in, copy_out) and by the guest agent, which is a
// static executable and compiles tar.cpp itself.
#pragma once

#include "base/fd.hpp"

#include <boxlite/error.hpp>

#include <sys/stat.h>
#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boxlite::tar {

inline constexpr std::size_t kBlock = 512;

/// Where the writer sends bytes / the extractor reads them. A source returns 0 at EOF.
using Sink = std::function<BoxliteResult<void>(std::span<const std::byte>)>;
using Source = std::function<BoxliteResult<std::size_t>(std::span<std::byte>)>;

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

class Writer {
public:
    explicit Writer(Sink sink) : sink_(std::move(sink)) {}

    /// Archives `source` (file, symlink or directory tree, not followed) under the name `top`.
    BoxliteResult<void> add_tree(const std::string& source, const std::string& top);

    /// The two zero blocks that end an archive.
    BoxliteResult<void> finish();

private:
    BoxliteResult<void> add(const std::string& path, const std::string& name, const struct stat& st);

    BoxliteResult<void> pad(std::uint64_t size);

    static void pax_record(std::string& out, std::string_view key, std::string_view value);

    BoxliteResult<void> header(const std::string& name, char type, const struct stat& st, std::uint64_t size,
                               const std::string& link);

    BoxliteResult<void> raw_header(const std::string& name, char type, const struct stat& st, std::uint64_t size,
                                   const std::string& link);

    Sink sink_;
};

// ---------------------------------------------------------------------------------------------
// Extractor
// ---------------------------------------------------------------------------------------------

struct ExtractOptions {
    /// Replace the archive's first path component with this (copy to a new name), if set.
    std::optional<std::string> rename_top;
    /// Apply the archive's uid/gid (only meaningful as root).
    bool preserve_owner = false;
};

class Extractor {
public:
    Extractor(Source source, ExtractOptions options) : source_(std::move(source)), options_(std::move(options)) {}

    /// Extracts every entry under the directory `root` (which must exist).
    BoxliteResult<void> extract_to(const std::string& root);

private:
    static constexpr std::uint64_t kMaxMetaBytes = 1U << 20;

    struct Entry {
        std::string name;
        std::string link;
        char type;
        mode_t mode;
        uid_t uid;
        gid_t gid;
        time_t mtime;
        std::uint64_t size;
    };

    BoxliteResult<bool> read_exact(std::span<std::byte> out);

    BoxliteResult<std::string> read_body(std::uint64_t size);

    BoxliteResult<void> skip(std::uint64_t size);

    static BoxliteResult<void> verify_checksum(const std::array<char, kBlock>& h);

    static BoxliteResult<void> parse_pax(const std::string& body, std::optional<std::string>& path,
                                         std::optional<std::string>& link, std::optional<std::uint64_t>& size);

    BoxliteResult<std::vector<std::string>> target_components(const std::string& name);

    /// Opens the directory holding `parts.back()`, never following a symlink. Missing
    /// directories are created when `create` is set, else reported (InvalidArgument).
    BoxliteResult<base::OwnedFd> open_parent(const std::vector<std::string>& parts, const std::string& name,
                                             bool create = true);

    static std::string joined(const std::vector<std::string>& parts);

    /// The permission bits an entry may get. Owner-less extraction (the host's copy_out) never
    /// creates setuid/setgid files: they would belong to the extracting user, the host's root.
    [[nodiscard]] mode_t allowed_mode(const Entry& e, bool is_directory) const;

    BoxliteResult<void> remove_existing(int dirfd, const std::string& leaf, bool keep_directory);

    /// Owner, mode, mtime of an open file or directory: nothing here resolves a path. chown
    /// comes first because it clears setuid/setgid bits that chmod then sets.
    void apply_metadata(int fd, const Entry& e, bool is_directory);

    /// A symlink's owner and mtime (Linux has no symlink modes); both calls act on the link.
    void apply_link_metadata(int dirfd, const std::string& leaf, const Entry& e);

    BoxliteResult<void> extract_entry(const Entry& e);

    BoxliteResult<void> finish_directories();

    struct Directory {
        std::vector<std::string> parts;
        Entry entry;
        dev_t dev;
        ino_t ino;
    };

    Source source_;
    ExtractOptions options_;
    base::OwnedFd root_;
    std::vector<Directory> directories_;
    /// Regular files this extraction created (path under the root -> device, inode): the only
    /// targets a hard link may name.
    std::map<std::string, std::pair<dev_t, ino_t>> files_;
};

/// docker-cp naming: copying `source_name` to `dest`. When `dest` is an existing directory the
/// entry lands inside it under its own name; otherwise `dest` is the new name in its parent.
struct Placement {
    std::string directory;                  ///< where to extract
    std::optional<std::string> rename_top;  ///< new name for the archive's top entry
};

[[nodiscard]] Placement place(const std::string& dest);

/// The name an archive's top entry gets for `source` ("/a/b/" -> "b", "/" -> ".").
[[nodiscard]] std::string top_name(const std::string& source);

}  // namespace boxlite::tar
