/* <boxlite/c/boxlite.h>: BoxLite's C API (libboxlite_c.so.0), for every language with a C FFI.
 *
 * Pure C11. The names and JSON shapes follow the reference's JSON C API (docs/c-api.md lists every
 * function with its rules). In short:
 *
 *   - Every fallible call returns a BoxliteErrorCode and, when `out_error` is not NULL, fills it
 *     with the code and a message (free the message with boxlite_error_free). A NULL where a
 *     pointer is required gives BOXLITE_ERR_INVALID_ARGUMENT, never a crash.
 *   - Strings the library returns (char *, char **out_json) are freed with boxlite_free_string;
 *     boxlite_version() is static. Handles are freed with their own *_free function. Every free
 *     function accepts NULL. Using a handle after freeing it is undefined behaviour.
 *   - The runtime is thread-safe. A box, execution or simple handle may be used from any thread,
 *     one call at a time.
 *   - Callbacks run on the thread that made the call, before it returns; no library lock is held
 *     while they run, so a callback may call back into the API (docs/c-api.md says which calls).
 *   - No C++ exception ever crosses this interface: an unexpected one is BOXLITE_ERR_INTERNAL.
 *
 * The struct layouts and the exported symbol list are part of the ABI (lib/c_api/abi/); changing
 * them needs a new SONAME (BOXLITE_C_ABI_VERSION).
 */
#ifndef BOXLITE_C_BOXLITE_H
#define BOXLITE_C_BOXLITE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The SONAME's major version: libboxlite_c.so.<BOXLITE_C_ABI_VERSION>. */
#define BOXLITE_C_ABI_VERSION 0

/** The reference's error codes, with its numbering. */
typedef enum BoxliteErrorCode {
    BOXLITE_OK = 0,
    BOXLITE_ERR_INTERNAL = 1,
    BOXLITE_ERR_NOT_FOUND = 2,
    BOXLITE_ERR_ALREADY_EXISTS = 3,
    BOXLITE_ERR_INVALID_STATE = 4,
    BOXLITE_ERR_INVALID_ARGUMENT = 5,
    BOXLITE_ERR_CONFIG = 6,
    BOXLITE_ERR_STORAGE = 7,
    BOXLITE_ERR_IMAGE = 8,
    BOXLITE_ERR_NETWORK = 9,
    BOXLITE_ERR_EXECUTION = 10,
    BOXLITE_ERR_STOPPED = 11,
    BOXLITE_ERR_ENGINE = 12,
    BOXLITE_ERR_UNSUPPORTED = 13,
    BOXLITE_ERR_DATABASE = 14,
    BOXLITE_ERR_PORTAL = 15,
    BOXLITE_ERR_RPC = 16,
    BOXLITE_ERR_RPC_TRANSPORT = 17,
    BOXLITE_ERR_METADATA = 18,
    BOXLITE_ERR_UNSUPPORTED_ENGINE = 19,
    BOXLITE_ERR_RESOURCE_EXHAUSTED = 20,
    BOXLITE_ERR_SESSION_REAPED = 21
} BoxliteErrorCode;

/** What failed. `message` is owned by the caller after a call returns: boxlite_error_free. */
typedef struct CBoxliteError {
    BoxliteErrorCode code;
    char* message;
} CBoxliteError;

typedef struct CBoxliteRuntime CBoxliteRuntime;
typedef struct CBoxHandle CBoxHandle;
typedef struct CExecutionHandle CExecutionHandle;
typedef struct CBoxliteImageHandle CBoxliteImageHandle;
typedef struct CBoxliteSimple CBoxliteSimple;

/** A command. Only `command` is required; NULL fields take the box's defaults. */
typedef struct BoxliteCommand {
    const char* command;   /**< program to run */
    const char* args_json; /**< JSON array of strings, or NULL */
    const char* env_json;  /**< JSON array of ["KEY","value"] pairs, or NULL */
    const char* workdir;   /**< absolute path in the box, or NULL */
    const char* user;      /**< "uid[:gid]" or a name, or NULL */
    double timeout_secs;   /**< 0 = no timeout */
    int tty;               /**< non-zero: run on a pseudo-terminal (boxlite_box_exec) */
} BoxliteCommand;

/** What boxlite_simple_run returns; free with boxlite_result_free. */
typedef struct CBoxliteExecResult {
    int exit_code;
    char* stdout_text;
    char* stderr_text;
} CBoxliteExecResult;

/** Text output of boxlite_execute(_cmd): a NUL-terminated chunk, is_stderr 0 or 1. */
typedef void (*BoxliteOutputCallback)(const char* text, int is_stderr, void* user_data);
/** Raw output of a handle-driven execution: `len` bytes, borrowed for the call. */
typedef void (*BoxliteChunkCallback)(const uint8_t* data, size_t len, void* user_data);

/* --- runtime ------------------------------------------------------------------------------- */

/** "0.1.0": static, never freed. */
const char* boxlite_version(void);

/** Opens the runtime on `home_dir` (NULL: $BOXLITE_HOME, else ~/.boxlite). `registries_json`: a
 *  JSON array of registry hosts tried for unqualified image references, or NULL for the default.
 *  The engine is BOXLITE_ENGINE's (default auto). */
BoxliteErrorCode boxlite_runtime_new(const char* home_dir, const char* registries_json, CBoxliteRuntime** out_runtime,
                                     CBoxliteError* out_error);
/** Stops every running box of the home; later calls on the runtime return BOXLITE_ERR_STOPPED.
 *  `timeout_secs`: 0 = 10 s default, -1 = no limit, else 1..86400. */
BoxliteErrorCode boxlite_runtime_shutdown(CBoxliteRuntime* runtime, int timeout_secs, CBoxliteError* out_error);
/** {boxes_created_total, boxes_failed_total, num_running_boxes, total_commands_executed,
 *  total_exec_errors}. */
BoxliteErrorCode boxlite_runtime_metrics(CBoxliteRuntime* runtime, char** out_json, CBoxliteError* out_error);
/** Frees the runtime handle. Box handles made from it stay valid. */
void boxlite_runtime_free(CBoxliteRuntime* runtime);

/* --- boxes ----------------------------------------------------------------------------------- */

/** Creates a box from BoxOptions JSON (docs/c-api.md: every key is optional; NULL = defaults). */
BoxliteErrorCode boxlite_create_box(CBoxliteRuntime* runtime, const char* options_json, CBoxHandle** out_box,
                                    CBoxliteError* out_error);
/** By full id, exact name or unique id prefix. */
BoxliteErrorCode boxlite_get(CBoxliteRuntime* runtime, const char* id_or_name, CBoxHandle** out_box,
                             CBoxliteError* out_error);
BoxliteErrorCode boxlite_start_box(CBoxHandle* box, CBoxliteError* out_error);
BoxliteErrorCode boxlite_stop_box(CBoxHandle* box, CBoxliteError* out_error);
/** `force` non-zero: a running box is killed first. */
BoxliteErrorCode boxlite_remove(CBoxliteRuntime* runtime, const char* id_or_name, int force, CBoxliteError* out_error);
/** JSON array of box objects {id, name, state: {status, running, pid}, created_at, image, cpus,
 *  memory_mib}. */
BoxliteErrorCode boxlite_list_info(CBoxliteRuntime* runtime, char** out_json, CBoxliteError* out_error);
BoxliteErrorCode boxlite_get_info(CBoxliteRuntime* runtime, const char* id_or_name, char** out_json,
                                  CBoxliteError* out_error);
BoxliteErrorCode boxlite_box_info(CBoxHandle* box, char** out_json, CBoxliteError* out_error);
/** {cpu_percent, memory_bytes, commands_executed_total, exec_errors_total, bytes_sent_total,
 *  bytes_received_total, total_create_duration_ms, guest_boot_duration_ms, network_bytes_sent,
 *  network_bytes_received, network_tcp_connections, network_tcp_errors}; unknown values null. */
BoxliteErrorCode boxlite_box_metrics(CBoxHandle* box, char** out_json, CBoxliteError* out_error);
/** The box id (free with boxlite_free_string); NULL when `box` is NULL. */
char* boxlite_box_id(CBoxHandle* box);
/** Frees the handle; the box itself lives on. */
void boxlite_box_free(CBoxHandle* box);

/* --- blocking execution ---------------------------------------------------------------------- */

/** Runs `command` with `args_json` (JSON string array or NULL) to its end; `callback` (may be
 *  NULL) gets each output chunk on the calling thread. */
BoxliteErrorCode boxlite_execute(CBoxHandle* box, const char* command, const char* args_json,
                                 BoxliteOutputCallback callback, void* user_data, int* out_exit_code,
                                 CBoxliteError* out_error);
BoxliteErrorCode boxlite_execute_cmd(CBoxHandle* box, const BoxliteCommand* command, BoxliteOutputCallback callback,
                                     void* user_data, int* out_exit_code, CBoxliteError* out_error);

/* --- handle-driven execution ----------------------------------------------------------------- */

/** Starts a command and returns at once; drive it with the calls below. */
BoxliteErrorCode boxlite_box_exec(CBoxHandle* box, const BoxliteCommand* command, CExecutionHandle** out_execution,
                                  CBoxliteError* out_error);
/** Registers (or with NULL, removes) the stdout / stderr chunk callback. */
BoxliteErrorCode boxlite_execution_on_stdout(CExecutionHandle* execution, BoxliteChunkCallback callback,
                                             void* user_data, CBoxliteError* out_error);
BoxliteErrorCode boxlite_execution_on_stderr(CExecutionHandle* execution, BoxliteChunkCallback callback,
                                             void* user_data, CBoxliteError* out_error);
/** A file descriptor (borrowed, valid until boxlite_execution_free) that becomes readable when
 *  the execution may have progressed: poll() it, then call boxlite_execution_pump. */
BoxliteErrorCode boxlite_execution_fd(CExecutionHandle* execution, int* out_fd, CBoxliteError* out_error);
/** Delivers the output that has arrived to the callbacks, waiting up to `timeout_ms` (0: not at
 *  all, -1: until something arrives) when nothing has. Output of a stream with neither a callback
 *  nor boxlite_execution_read is discarded, so set both streams up first. `*out_finished` (may be
 *  NULL) becomes 1 once both streams have ended. */
BoxliteErrorCode boxlite_execution_pump(CExecutionHandle* execution, int timeout_ms, int* out_finished,
                                        CBoxliteError* out_error);
/** Reads what has arrived on stdout (`is_stderr` 0) or stderr (1) into `buffer`, without blocking:
 *  `*out_len` bytes (0 when nothing has arrived yet), `*out_eof` 1 once the stream has ended.
 *  For callers that poll instead of taking callbacks: a stream read this way is left alone by
 *  pump and wait, and must have no callback. After the fd is readable, read every stream you
 *  read this way until it gives 0 bytes. */
BoxliteErrorCode boxlite_execution_read(CExecutionHandle* execution, int is_stderr, uint8_t* buffer, size_t capacity,
                                        size_t* out_len, int* out_eof, CBoxliteError* out_error);
/** Writes all of `data` to stdin (blocking while the box has not consumed earlier bytes). After
 *  boxlite_execution_stdin_close: BOXLITE_ERR_INVALID_STATE. */
BoxliteErrorCode boxlite_execution_stdin_write(CExecutionHandle* execution, const uint8_t* data, size_t len,
                                               CBoxliteError* out_error);
/** EOF on stdin. Idempotent. */
BoxliteErrorCode boxlite_execution_stdin_close(CExecutionHandle* execution, CBoxliteError* out_error);
/** Waits up to `timeout_ms` (-1: no limit, 0: just check) for the command to end, delivering
 *  output to the callbacks meanwhile (as boxlite_execution_pump). `*out_exited` is
 *  1 and `*out_exit_code` set (-N: killed by signal N) when it ended, else 0. */
BoxliteErrorCode boxlite_execution_wait(CExecutionHandle* execution, int timeout_ms, int* out_exit_code,
                                        int* out_exited, CBoxliteError* out_error);
/** SIGKILL to the command's process group. */
BoxliteErrorCode boxlite_execution_kill(CExecutionHandle* execution, CBoxliteError* out_error);
/** Signal 1..64 to the command's process group. */
BoxliteErrorCode boxlite_execution_signal(CExecutionHandle* execution, int signal, CBoxliteError* out_error);
/** New terminal size (1..65535 each) of a tty execution. */
BoxliteErrorCode boxlite_execution_tty_resize(CExecutionHandle* execution, int rows, int cols,
                                              CBoxliteError* out_error);
/** Frees the handle; a command still running gets EOF on stdin and its output is discarded. */
void boxlite_execution_free(CExecutionHandle* execution);

/* --- files ----------------------------------------------------------------------------------- */

BoxliteErrorCode boxlite_copy_in(CBoxHandle* box, const char* host_path, const char* box_path,
                                 CBoxliteError* out_error);
BoxliteErrorCode boxlite_copy_out(CBoxHandle* box, const char* box_path, const char* host_path,
                                  CBoxliteError* out_error);

/* --- images ---------------------------------------------------------------------------------- */

BoxliteErrorCode boxlite_runtime_images(CBoxliteRuntime* runtime, CBoxliteImageHandle** out_images,
                                        CBoxliteError* out_error);
/** {reference, config_digest, layer_count}. */
BoxliteErrorCode boxlite_image_pull(CBoxliteImageHandle* images, const char* reference, char** out_json,
                                    CBoxliteError* out_error);
/** [{reference, repository, tag, id, cached_at, size_bytes}]. */
BoxliteErrorCode boxlite_image_list(CBoxliteImageHandle* images, char** out_json, CBoxliteError* out_error);
void boxlite_image_free(CBoxliteImageHandle* images);

/* --- the simple API ---------------------------------------------------------------------------- */

/** A runner with its own runtime (BOXLITE_HOME, BOXLITE_ENGINE) and box. `image`: a reference,
 *  or an absolute path to a prepared root filesystem. cpus / memory_mib: 0 = defaults. */
BoxliteErrorCode boxlite_simple_new(const char* image, int cpus, int memory_mib, CBoxliteSimple** out_runner,
                                    CBoxliteError* out_error);
BoxliteErrorCode boxlite_simple_run(CBoxliteSimple* runner, const char* command, const char* const* args, int argc,
                                    CBoxliteExecResult** out_result, CBoxliteError* out_error);
/** Stops and removes the runner's box, then frees it. */
void boxlite_simple_free(CBoxliteSimple* runner);
void boxlite_result_free(CBoxliteExecResult* result);

/* --- freeing --------------------------------------------------------------------------------- */

void boxlite_free_string(char* text);
/** Frees `error->message` and sets it to NULL (the struct itself is the caller's). */
void boxlite_error_free(CBoxliteError* error);

#ifdef __cplusplus
}
#endif

#endif /* BOXLITE_C_BOXLITE_H */
