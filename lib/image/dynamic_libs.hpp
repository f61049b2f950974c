// libcurl, libarchive and libcrypto, loaded on first use with dlopen().
//
// Only pulls need libcurl and only unpacking, `load` and the REST API's tar copies need libarchive, yet linking them pulls
// about 35 shared libraries (GnuTLS, Kerberos, LDAP, ICU, libxml2 …) into every process that
// links BoxLite: about 9 ms of dynamic loading before `main`, on every `boxlite exec` and in
// every program embedding the library. Loading them when an image operation first needs them
// keeps that cost off every other path. Their headers are still used for types and constants;
// the functions are called through these tables. A missing library is an Image error that names
// it and the Debian packages that provide it (libcurl4 / libcurl4t64, libarchive13 /
// libarchive13t64: bookworm / trixie names). Nothing in boxlite.pc or the CMake package declares
// them (nothing links them): programs using images need them installed at run time.
#pragma once

#include <boxlite/error.hpp>

#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <openssl/evp.h>

namespace boxlite::image::dynamic {

// Every member has the exact type of the library function it stands for (decltype of its
// declaration), so a signature mismatch is a compile error, not a crash.
// (libcurl's own headers make curl_easy_setopt/getinfo function-like macros under GCC, so the
// curl members drop the "curl_" prefix: `api->curl_easy_setopt(...)` would expand the macro.)
#define BOXLITE_DYNAMIC_FN(name) decltype(&::name) name
#define BOXLITE_DYNAMIC_AS(member, name) decltype(&::name) member
struct CurlApi {
    BOXLITE_DYNAMIC_AS(global_init, curl_global_init);
    BOXLITE_DYNAMIC_AS(easy_init, curl_easy_init);
    BOXLITE_DYNAMIC_AS(easy_setopt, curl_easy_setopt);
    BOXLITE_DYNAMIC_AS(easy_perform, curl_easy_perform);
    BOXLITE_DYNAMIC_AS(easy_getinfo, curl_easy_getinfo);
    BOXLITE_DYNAMIC_AS(easy_cleanup, curl_easy_cleanup);
    BOXLITE_DYNAMIC_AS(easy_strerror, curl_easy_strerror);
    BOXLITE_DYNAMIC_AS(slist_append, curl_slist_append);
    BOXLITE_DYNAMIC_AS(slist_free_all, curl_slist_free_all);
};

struct ArchiveApi {
    BOXLITE_DYNAMIC_FN(archive_read_new);
    BOXLITE_DYNAMIC_FN(archive_read_support_filter_gzip);
    BOXLITE_DYNAMIC_FN(archive_read_support_filter_zstd);
    BOXLITE_DYNAMIC_FN(archive_read_support_filter_none);
    BOXLITE_DYNAMIC_FN(archive_read_support_format_tar);
    BOXLITE_DYNAMIC_FN(archive_read_support_format_raw);
    BOXLITE_DYNAMIC_FN(archive_read_open_filename);
    BOXLITE_DYNAMIC_FN(archive_read_next_header);
    BOXLITE_DYNAMIC_FN(archive_read_data_block);
    BOXLITE_DYNAMIC_FN(archive_read_free);
    BOXLITE_DYNAMIC_FN(archive_error_string);
    BOXLITE_DYNAMIC_FN(archive_entry_pathname);
    BOXLITE_DYNAMIC_FN(archive_entry_pathname_utf8);
    BOXLITE_DYNAMIC_FN(archive_entry_hardlink);
    BOXLITE_DYNAMIC_FN(archive_entry_symlink);
    BOXLITE_DYNAMIC_FN(archive_entry_filetype);
    BOXLITE_DYNAMIC_FN(archive_entry_perm);
    BOXLITE_DYNAMIC_FN(archive_entry_uid);
    BOXLITE_DYNAMIC_FN(archive_entry_gid);
    BOXLITE_DYNAMIC_FN(archive_entry_size);
    BOXLITE_DYNAMIC_FN(archive_entry_mtime);
    BOXLITE_DYNAMIC_FN(archive_entry_mtime_nsec);
    BOXLITE_DYNAMIC_FN(archive_entry_xattr_reset);
    BOXLITE_DYNAMIC_FN(archive_entry_xattr_next);
    BOXLITE_DYNAMIC_FN(archive_entry_xattr_count);
    // Tar archives of the REST API (lib/server/tar.cpp: file copies in and out of a box).
    BOXLITE_DYNAMIC_FN(archive_read_support_filter_all);
    BOXLITE_DYNAMIC_FN(archive_read_support_format_gnutar);
    BOXLITE_DYNAMIC_FN(archive_read_open_memory);
    BOXLITE_DYNAMIC_FN(archive_write_new);
    BOXLITE_DYNAMIC_FN(archive_write_disk_new);
    BOXLITE_DYNAMIC_FN(archive_write_disk_set_options);
    BOXLITE_DYNAMIC_FN(archive_write_set_format_pax_restricted);
    BOXLITE_DYNAMIC_FN(archive_write_set_bytes_in_last_block);
    BOXLITE_DYNAMIC_FN(archive_write_open);
    BOXLITE_DYNAMIC_FN(archive_write_header);
    BOXLITE_DYNAMIC_FN(archive_write_data);
    BOXLITE_DYNAMIC_FN(archive_write_data_block);
    BOXLITE_DYNAMIC_FN(archive_write_finish_entry);
    BOXLITE_DYNAMIC_FN(archive_write_close);
    BOXLITE_DYNAMIC_FN(archive_write_free);
    BOXLITE_DYNAMIC_FN(archive_entry_new);
    BOXLITE_DYNAMIC_FN(archive_entry_free);
    BOXLITE_DYNAMIC_FN(archive_entry_copy_stat);
    BOXLITE_DYNAMIC_FN(archive_entry_set_pathname);
    BOXLITE_DYNAMIC_FN(archive_entry_set_hardlink);
    BOXLITE_DYNAMIC_FN(archive_entry_set_symlink);
};
// SHA-256 (digest.hpp). libcrypto alone costs about 1 ms of loading and relocation at every start
// of every process linking it, and most never hash: `exec`, `ls`, `run` of a rootfs directory.
struct CryptoApi {
    BOXLITE_DYNAMIC_FN(EVP_MD_CTX_new);
    BOXLITE_DYNAMIC_FN(EVP_MD_CTX_free);
    BOXLITE_DYNAMIC_FN(EVP_DigestInit_ex);
    BOXLITE_DYNAMIC_FN(EVP_DigestUpdate);
    BOXLITE_DYNAMIC_FN(EVP_DigestFinal_ex);
    BOXLITE_DYNAMIC_FN(EVP_sha256);
};
#undef BOXLITE_DYNAMIC_FN
#undef BOXLITE_DYNAMIC_AS

/// libcurl.so.4, loaded and curl_global_init()ed once; thread-safe.
[[nodiscard]] BoxliteResult<const CurlApi*> curl();
/// libarchive.so.13, loaded once; thread-safe.
[[nodiscard]] BoxliteResult<const ArchiveApi*> libarchive();
/// libcrypto.so.3, loaded once; thread-safe. Its error is for diagnostics: Sha256 falls back to
/// its portable implementation without it.
[[nodiscard]] BoxliteResult<const CryptoApi*> libcrypto();

}  // namespace boxlite::image::dynamic
