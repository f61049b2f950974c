// Tar in and out of the files routes; see tar.hpp.
#include "server/tar.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <sys/stat.h>

#include <memory>
#include <vector>

namespace boxlite::server {

namespace {

namespace fs = std::filesystem;

struct ReadCloser {
    void operator()(archive* a) const { archive_read_free(a); }
};
struct WriteCloser {
    void operator()(archive* a) const { archive_write_free(a); }
};

bool has_dotdot(std::string_view name) {
    std::size_t start = 0;
    while (start <= name.size()) {
        auto end = name.find('/', start);
        if (end == std::string_view::npos) end = name.size();
        if (name.substr(start, end - start) == "..") return true;
        start = end + 1;
    }
    return false;
}

}  // namespace

BoxliteResult<void> extract_tar(std::string_view data, const fs::path& dest) {
    std::unique_ptr<archive, ReadCloser> in(archive_read_new());
    std::unique_ptr<archive, WriteCloser> out(archive_write_disk_new());
    if (!in || !out) return fail(ErrorKind::Internal, "libarchive could not allocate a reader");
    archive_read_support_format_tar(in.get());
    archive_read_support_format_gnutar(in.get());
    archive_read_support_filter_all(in.get());
    // The SECURE flags are a second line behind the checks below: no "..", no writing through a
    // symlink an earlier entry made. (Names are made absolute under `dest` here, after the check
    // that refuses absolute names in the archive.)
    archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                                                  ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS);
    if (archive_read_open_memory(in.get(), data.data(), data.size()) != ARCHIVE_OK) {
        return fail(ErrorKind::InvalidArgument, "not a tar archive: {}", archive_error_string(in.get()));
    }
    std::size_t entries = 0;
    while (true) {
        archive_entry* entry = nullptr;
        const int r = archive_read_next_header(in.get(), &entry);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            return fail(ErrorKind::InvalidArgument, "not a tar archive: {}", archive_error_string(in.get()));
        }
        ++entries;
        const char* raw = archive_entry_pathname(entry);
        const std::string name = raw ? raw : "";
        if (name.empty() || name.front() == '/' || has_dotdot(name)) {
            return fail(ErrorKind::InvalidArgument, "entry '{}' would land outside the target folder", name);
        }
        const auto type = archive_entry_filetype(entry);
        if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
            return fail(ErrorKind::InvalidArgument, "entry '{}': only files, folders and symlinks are accepted", name);
        }
        if (const char* hard = archive_entry_hardlink(entry)) {
            const std::string target = hard;
            if (target.empty() || target.front() == '/' || has_dotdot(target)) {
                return fail(ErrorKind::InvalidArgument, "hard link '{}' -> '{}' points outside the archive", name,
                            target);
            }
            archive_entry_set_hardlink(entry, (dest / target).c_str());
        }
        archive_entry_set_pathname(entry, (dest / name).c_str());
        if (archive_write_header(out.get(), entry) != ARCHIVE_OK) {
            return fail(ErrorKind::InvalidArgument, "entry '{}': {}", name, archive_error_string(out.get()));
        }
        if (type == AE_IFREG && archive_entry_size(entry) > 0) {
            const void* block = nullptr;
            size_t size = 0;
            la_int64_t offset = 0;
            while (true) {
                const int rb = archive_read_data_block(in.get(), &block, &size, &offset);
                if (rb == ARCHIVE_EOF) break;
                if (rb != ARCHIVE_OK) {
                    return fail(ErrorKind::InvalidArgument, "entry '{}': {}", name, archive_error_string(in.get()));
                }
                if (archive_write_data_block(out.get(), block, size, offset) != ARCHIVE_OK) {
                    return fail(ErrorKind::Storage, "entry '{}': {}", name, archive_error_string(out.get()));
                }
            }
        }
        if (archive_write_finish_entry(out.get()) != ARCHIVE_OK) {
            return fail(ErrorKind::Storage, "entry '{}': {}", name, archive_error_string(out.get()));
        }
    }
    if (entries == 0) return fail(ErrorKind::InvalidArgument, "the archive has no entries");
    return {};
}

BoxliteResult<std::string> create_tar(const fs::path& base, const std::string& name) {
    std::unique_ptr<archive, WriteCloser> out(archive_write_new());
    if (!out) return fail(ErrorKind::Internal, "libarchive could not allocate a writer");
    archive_write_set_format_pax_restricted(out.get());
    std::string result;
    auto open_cb = [](archive*, void*) -> int { return ARCHIVE_OK; };
    auto write_cb = [](archive*, void* self, const void* buffer, size_t length) -> la_ssize_t {
        static_cast<std::string*>(self)->append(static_cast<const char*>(buffer), length);
        return static_cast<la_ssize_t>(length);
    };
    auto close_cb = [](archive*, void*) -> int { return ARCHIVE_OK; };
    archive_write_set_bytes_in_last_block(out.get(), 1);
    if (archive_write_open(out.get(), &result, open_cb, write_cb, close_cb) != ARCHIVE_OK) {
        return fail(ErrorKind::Internal, "cannot start a tar: {}", archive_error_string(out.get()));
    }
    std::vector<fs::path> paths{base / name};
    std::error_code ec;
    if (fs::is_directory(fs::symlink_status(base / name, ec))) {
        for (auto it = fs::recursive_directory_iterator(base / name, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
            paths.push_back(it->path());
        }
    }
    if (ec) return fail(ErrorKind::Storage, "cannot walk {}: {}", (base / name).string(), ec.message());
    std::string buffer(64 * 1024, '\0');
    for (const auto& path : paths) {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) return fail(ErrorKind::Storage, "cannot stat {}", path.string());
        std::unique_ptr<archive_entry, void (*)(archive_entry*)> entry(archive_entry_new(), archive_entry_free);
        archive_entry_copy_stat(entry.get(), &st);
        archive_entry_set_pathname(entry.get(), path.lexically_relative(base).c_str());
        if (S_ISLNK(st.st_mode)) {
            auto target = fs::read_symlink(path, ec);
            if (ec) return fail(ErrorKind::Storage, "cannot read link {}", path.string());
            archive_entry_set_symlink(entry.get(), target.c_str());
        } else if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
            continue;  // sockets, fifos, devices: not file content
        }
        if (archive_write_header(out.get(), entry.get()) != ARCHIVE_OK) {
            return fail(ErrorKind::Storage, "tar entry {}: {}", path.string(), archive_error_string(out.get()));
        }
        if (S_ISREG(st.st_mode)) {
            FILE* file = std::fopen(path.c_str(), "rb");
            if (!file) return fail(ErrorKind::Storage, "cannot open {}", path.string());
            while (true) {
                const auto n = std::fread(buffer.data(), 1, buffer.size(), file);
                if (n == 0) break;
                if (archive_write_data(out.get(), buffer.data(), n) < 0) {
                    std::fclose(file);
                    return fail(ErrorKind::Storage, "tar entry {}: {}", path.string(), archive_error_string(out.get()));
                }
            }
            std::fclose(file);
        }
    }
    if (archive_write_close(out.get()) != ARCHIVE_OK) {
        return fail(ErrorKind::Storage, "cannot finish the tar: {}", archive_error_string(out.get()));
    }
    return result;
}

}  // namespace boxlite::server
