// Tar in and out of the files routes; see tar.hpp.
#include "server/tar.hpp"

#include "image/dynamic_libs.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <sys/stat.h>

#include <memory>
#include <vector>

namespace boxlite::server {

namespace {

namespace fs = std::filesystem;
// libarchive is loaded on first use (image/dynamic_libs.hpp): linking it would load it and about
// ten libraries it depends on in every CLI process, `run` and `exec` included.
using ArchiveApi = image::dynamic::ArchiveApi;

struct ReadCloser {
    const ArchiveApi* ar;
    void operator()(archive* a) const { ar->archive_read_free(a); }
};
struct WriteCloser {
    const ArchiveApi* ar;
    void operator()(archive* a) const { ar->archive_write_free(a); }
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
    BOXLITE_TRY(const ArchiveApi* ar, image::dynamic::libarchive());
    std::unique_ptr<archive, ReadCloser> in(ar->archive_read_new(), ReadCloser{ar});
    std::unique_ptr<archive, WriteCloser> out(ar->archive_write_disk_new(), WriteCloser{ar});
    if (!in || !out) return fail(ErrorKind::Internal, "libarchive could not allocate a reader");
    ar->archive_read_support_format_tar(in.get());
    ar->archive_read_support_format_gnutar(in.get());
    ar->archive_read_support_filter_all(in.get());
    // The SECURE flags are a second line behind the checks below: no "..", no writing through a
    // symlink an earlier entry made. (Names are made absolute under `dest` here, after the check
    // that refuses absolute names in the archive.)
    ar->archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                                                      ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                      ARCHIVE_EXTRACT_SECURE_SYMLINKS);
    if (ar->archive_read_open_memory(in.get(), data.data(), data.size()) != ARCHIVE_OK) {
        return fail(ErrorKind::InvalidArgument, "not a tar archive: {}", ar->archive_error_string(in.get()));
    }
    std::size_t entries = 0;
    while (true) {
        archive_entry* entry = nullptr;
        const int r = ar->archive_read_next_header(in.get(), &entry);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            return fail(ErrorKind::InvalidArgument, "not a tar archive: {}", ar->archive_error_string(in.get()));
        }
        ++entries;
        const char* raw = ar->archive_entry_pathname(entry);
        const std::string name = raw ? raw : "";
        if (name.empty() || name.front() == '/' || has_dotdot(name)) {
            return fail(ErrorKind::InvalidArgument, "entry '{}' would land outside the target folder", name);
        }
        const auto type = ar->archive_entry_filetype(entry);
        if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
            return fail(ErrorKind::InvalidArgument, "entry '{}': only files, folders and symlinks are accepted", name);
        }
        if (const char* hard = ar->archive_entry_hardlink(entry)) {
            const std::string target = hard;
            if (target.empty() || target.front() == '/' || has_dotdot(target)) {
                return fail(ErrorKind::InvalidArgument, "hard link '{}' -> '{}' points outside the archive", name,
                            target);
            }
            ar->archive_entry_set_hardlink(entry, (dest / target).c_str());
        }
        ar->archive_entry_set_pathname(entry, (dest / name).c_str());
        if (ar->archive_write_header(out.get(), entry) != ARCHIVE_OK) {
            return fail(ErrorKind::InvalidArgument, "entry '{}': {}", name, ar->archive_error_string(out.get()));
        }
        if (type == AE_IFREG && ar->archive_entry_size(entry) > 0) {
            const void* block = nullptr;
            size_t size = 0;
            la_int64_t offset = 0;
            while (true) {
                const int rb = ar->archive_read_data_block(in.get(), &block, &size, &offset);
                if (rb == ARCHIVE_EOF) break;
                if (rb != ARCHIVE_OK) {
                    return fail(ErrorKind::InvalidArgument, "entry '{}': {}", name, ar->archive_error_string(in.get()));
                }
                if (ar->archive_write_data_block(out.get(), block, size, offset) != ARCHIVE_OK) {
                    return fail(ErrorKind::Storage, "entry '{}': {}", name, ar->archive_error_string(out.get()));
                }
            }
        }
        if (ar->archive_write_finish_entry(out.get()) != ARCHIVE_OK) {
            return fail(ErrorKind::Storage, "entry '{}': {}", name, ar->archive_error_string(out.get()));
        }
    }
    if (entries == 0) return fail(ErrorKind::InvalidArgument, "the archive has no entries");
    return {};
}

BoxliteResult<std::string> create_tar(const fs::path& base, const std::string& name) {
    BOXLITE_TRY(const ArchiveApi* ar, image::dynamic::libarchive());
    std::unique_ptr<archive, WriteCloser> out(ar->archive_write_new(), WriteCloser{ar});
    if (!out) return fail(ErrorKind::Internal, "libarchive could not allocate a writer");
    ar->archive_write_set_format_pax_restricted(out.get());
    std::string result;
    auto open_cb = [](archive*, void*) -> int { return ARCHIVE_OK; };
    auto write_cb = [](archive*, void* self, const void* buffer, size_t length) -> la_ssize_t {
        static_cast<std::string*>(self)->append(static_cast<const char*>(buffer), length);
        return static_cast<la_ssize_t>(length);
    };
    auto close_cb = [](archive*, void*) -> int { return ARCHIVE_OK; };
    ar->archive_write_set_bytes_in_last_block(out.get(), 1);
    if (ar->archive_write_open(out.get(), &result, open_cb, write_cb, close_cb) != ARCHIVE_OK) {
        return fail(ErrorKind::Internal, "cannot start a tar: {}", ar->archive_error_string(out.get()));
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
        std::unique_ptr<archive_entry, void (*)(archive_entry*)> entry(ar->archive_entry_new(), ar->archive_entry_free);
        ar->archive_entry_copy_stat(entry.get(), &st);
        ar->archive_entry_set_pathname(entry.get(), path.lexically_relative(base).c_str());
        if (S_ISLNK(st.st_mode)) {
            auto target = fs::read_symlink(path, ec);
            if (ec) return fail(ErrorKind::Storage, "cannot read link {}", path.string());
            ar->archive_entry_set_symlink(entry.get(), target.c_str());
        } else if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
            continue;  // sockets, fifos, devices: not file content
        }
        if (ar->archive_write_header(out.get(), entry.get()) != ARCHIVE_OK) {
            return fail(ErrorKind::Storage, "tar entry {}: {}", path.string(), ar->archive_error_string(out.get()));
        }
        if (S_ISREG(st.st_mode)) {
            FILE* file = std::fopen(path.c_str(), "rb");
            if (!file) return fail(ErrorKind::Storage, "cannot open {}", path.string());
            while (true) {
                const auto n = std::fread(buffer.data(), 1, buffer.size(), file);
                if (n == 0) break;
                if (ar->archive_write_data(out.get(), buffer.data(), n) < 0) {
                    std::fclose(file);
                    return fail(ErrorKind::Storage, "tar entry {}: {}", path.string(),
                                ar->archive_error_string(out.get()));
                }
            }
            std::fclose(file);
        }
    }
    if (ar->archive_write_close(out.get()) != ARCHIVE_OK) {
        return fail(ErrorKind::Storage, "cannot finish the tar: {}", ar->archive_error_string(out.get()));
    }
    return result;
}

}  // namespace boxlite::server
