// dlopen() of libcurl, libarchive and libcrypto (see dynamic_libs.hpp).
#include "dynamic_libs.hpp"

#include <dlfcn.h>

#include <mutex>
#include <string>

namespace boxlite::image::dynamic {
namespace {

// dlsym() hands back void*; the member's own type says what the symbol is.
template <typename Fn>
bool bind(void* library, const char* name, Fn& slot, std::string& missing) {
    void* symbol = ::dlsym(library, name);
    if (symbol == nullptr) {
        missing += missing.empty() ? name : std::string(", ") + name;
        return false;
    }
    slot = reinterpret_cast<Fn>(symbol);
    return true;
}

// `packages` names the Debian packages that ship `soname`: Debian 13 (trixie) renamed them for
// the 64-bit time_t transition, so a message naming only bookworm's would mislead there.
template <typename Api, typename Bind>
BoxliteResult<const Api*> load(const char* soname, const char* purpose, const char* packages, Bind bind_all) {
    // RTLD_NODELETE: the tables stay valid for the life of the process.
    void* library = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (library == nullptr) {
        const char* why = ::dlerror();
        return fail(ErrorKind::Image, "cannot load {} ({}), which BoxLite needs {}; install the Debian package {}",
                    soname, why != nullptr ? why : "not found", purpose, packages);
    }
    static Api api{};
    std::string missing;
    if (!bind_all(library, api, missing)) {
        return fail(ErrorKind::Image, "{} lacks {}: a newer version is needed (Debian package {})", soname, missing,
                    packages);
    }
    return &api;
}

}  // namespace

#define BOXLITE_BIND(name) ok = bind(library, #name, api.name, missing) && ok
#define BOXLITE_BIND_AS(member, name) ok = bind(library, #name, api.member, missing) && ok

BoxliteResult<const CurlApi*> curl() {
    static const BoxliteResult<const CurlApi*> loaded = [] {
        auto loaded_api = load<CurlApi>("libcurl.so.4", "to pull images from registries",
                                        "libcurl4 (bookworm) or libcurl4t64 (trixie)",
                                        [](void* library, CurlApi& api, std::string& missing) {
                                            bool ok = true;
                                            BOXLITE_BIND_AS(global_init, curl_global_init);
                                            BOXLITE_BIND_AS(easy_init, curl_easy_init);
                                            BOXLITE_BIND_AS(easy_setopt, curl_easy_setopt);
                                            BOXLITE_BIND_AS(easy_perform, curl_easy_perform);
                                            BOXLITE_BIND_AS(easy_getinfo, curl_easy_getinfo);
                                            BOXLITE_BIND_AS(easy_cleanup, curl_easy_cleanup);
                                            BOXLITE_BIND_AS(easy_strerror, curl_easy_strerror);
                                            BOXLITE_BIND_AS(slist_append, curl_slist_append);
                                            BOXLITE_BIND_AS(slist_free_all, curl_slist_free_all);
                                            return ok;
                                        });
        // curl_global_init is not thread-safe: this runs once, under the static's guard.
        if (loaded_api && (*loaded_api)->global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            return BoxliteResult<const CurlApi*>(fail(ErrorKind::Image, "curl_global_init failed"));
        }
        return loaded_api;
    }();
    return loaded;
}

BoxliteResult<const ArchiveApi*> libarchive() {
    static const BoxliteResult<const ArchiveApi*> loaded =
        load<ArchiveApi>("libarchive.so.13", "to unpack and load images and for tar copies",
                         "libarchive13 (bookworm) or libarchive13t64 (trixie)",
                         [](void* library, ArchiveApi& api, std::string& missing) {
                             bool ok = true;
                             BOXLITE_BIND(archive_read_new);
                             BOXLITE_BIND(archive_read_support_filter_gzip);
                             BOXLITE_BIND(archive_read_support_filter_zstd);
                             BOXLITE_BIND(archive_read_support_filter_none);
                             BOXLITE_BIND(archive_read_support_format_tar);
                             BOXLITE_BIND(archive_read_support_format_raw);
                             BOXLITE_BIND(archive_read_open_filename);
                             BOXLITE_BIND(archive_read_next_header);
                             BOXLITE_BIND(archive_read_data_block);
                             BOXLITE_BIND(archive_read_free);
                             BOXLITE_BIND(archive_error_string);
                             BOXLITE_BIND(archive_entry_pathname);
                             BOXLITE_BIND(archive_entry_pathname_utf8);
                             BOXLITE_BIND(archive_entry_hardlink);
                             BOXLITE_BIND(archive_entry_symlink);
                             BOXLITE_BIND(archive_entry_filetype);
                             BOXLITE_BIND(archive_entry_perm);
                             BOXLITE_BIND(archive_entry_uid);
                             BOXLITE_BIND(archive_entry_gid);
                             BOXLITE_BIND(archive_entry_size);
                             BOXLITE_BIND(archive_entry_mtime);
                             BOXLITE_BIND(archive_entry_mtime_nsec);
                             BOXLITE_BIND(archive_entry_xattr_reset);
                             BOXLITE_BIND(archive_entry_xattr_next);
                             BOXLITE_BIND(archive_entry_xattr_count);
                             BOXLITE_BIND(archive_read_support_filter_all);
                             BOXLITE_BIND(archive_read_support_format_gnutar);
                             BOXLITE_BIND(archive_read_open_memory);
                             BOXLITE_BIND(archive_write_new);
                             BOXLITE_BIND(archive_write_disk_new);
                             BOXLITE_BIND(archive_write_disk_set_options);
                             BOXLITE_BIND(archive_write_set_format_pax_restricted);
                             BOXLITE_BIND(archive_write_set_bytes_in_last_block);
                             BOXLITE_BIND(archive_write_open);
                             BOXLITE_BIND(archive_write_header);
                             BOXLITE_BIND(archive_write_data);
                             BOXLITE_BIND(archive_write_data_block);
                             BOXLITE_BIND(archive_write_finish_entry);
                             BOXLITE_BIND(archive_write_close);
                             BOXLITE_BIND(archive_write_free);
                             BOXLITE_BIND(archive_entry_new);
                             BOXLITE_BIND(archive_entry_free);
                             BOXLITE_BIND(archive_entry_copy_stat);
                             BOXLITE_BIND(archive_entry_set_pathname);
                             BOXLITE_BIND(archive_entry_set_hardlink);
                             BOXLITE_BIND(archive_entry_set_symlink);
                             return ok;
                         });
    return loaded;
}

BoxliteResult<const CryptoApi*> libcrypto() {
    static const BoxliteResult<const CryptoApi*> loaded =
        load<CryptoApi>("libcrypto.so.3", "for SHA-256 at OpenSSL's speed", "libssl3 (bookworm) or libssl3t64 (trixie)",
                        [](void* library, CryptoApi& api, std::string& missing) {
                            bool ok = true;
                            BOXLITE_BIND(EVP_MD_CTX_new);
                            BOXLITE_BIND(EVP_MD_CTX_free);
                            BOXLITE_BIND(EVP_DigestInit_ex);
                            BOXLITE_BIND(EVP_DigestUpdate);
                            BOXLITE_BIND(EVP_DigestFinal_ex);
                            BOXLITE_BIND(EVP_sha256);
                            return ok;
                        });
    return loaded;
}

#undef BOXLITE_BIND
#undef BOXLITE_BIND_AS

}  // namespace boxlite::image::dynamic
