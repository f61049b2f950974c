/* The C API from C: every function of <boxlite/c/boxlite.h> on the namespace engine, with the
 * results checked. Compiled as C11; also run under valgrind memcheck (tests/c_api/CMakeLists.txt).
 *
 *   c_api_program <work dir> [all|nobox]
 *   c_api_program <work dir> images <reference>   pull, list, run from a registry's image
 *
 * "nobox" runs only the calls that start no box (valgrind's run: the namespace engine's shim
 * runs outside valgrind anyway, and a box start under it costs minutes). Exit 0 and "c api ok"
 * on success; 77 with a "precondition: ..." line where the namespace engine cannot run. */
#define _GNU_SOURCE
#include <boxlite/c/boxlite.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            ++failures;                                                              \
        }                                                                            \
    } while (0)

static CBoxliteError err;

static int expect_ok(BoxliteErrorCode code, const char* what, int line) {
    if (code == BOXLITE_OK && err.code == BOXLITE_OK && err.message == NULL) return 1;
    fprintf(stderr, "line %d: %s failed: code %d: %s\n", line, what, (int)code,
            err.message ? err.message : "(no message)");
    boxlite_error_free(&err);
    ++failures;
    return 0;
}
#define EXPECT_OK(call) expect_ok((call), #call, __LINE__)

static void expect_code(BoxliteErrorCode code, BoxliteErrorCode wanted, const char* needle, const char* what,
                        int line) {
    if (code != wanted || err.code != wanted || err.message == NULL ||
        (needle != NULL && strstr(err.message, needle) == NULL)) {
        fprintf(stderr, "line %d: %s: wanted code %d mentioning '%s', got %d: %s\n", line, what, (int)wanted,
                needle ? needle : "", (int)code, err.message ? err.message : "(no message)");
        ++failures;
    }
    boxlite_error_free(&err);
    CHECK(err.message == NULL);
}
#define EXPECT_CODE(call, wanted, needle) expect_code((call), (wanted), (needle), #call, __LINE__)

static char work[4096];
static char rootfs[4096 + 16];

static int make_rootfs(void) {
    static const char* dirs[] = {"", "/bin", "/etc", "/proc", "/sys", "/dev", "/tmp", "/root"};
    static const char* applets[] = {"sh", "echo", "cat", "true", "sleep", "printf", "tr", "ls"};
    const char* busybox = access("/bin/busybox", X_OK) == 0 ? "/bin/busybox" : "/usr/bin/busybox";
    char path[8192];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; ++i) {
        snprintf(path, sizeof path, "%s%s", rootfs, dirs[i]);
        if (mkdir(path, 0755) != 0 && errno != EEXIST) return 0;
    }
    char command[16384];
    snprintf(command, sizeof command, "cp '%s' '%s/bin/busybox'", busybox, rootfs);
    if (system(command) != 0) return 0;
    for (size_t i = 0; i < sizeof applets / sizeof applets[0]; ++i) {
        snprintf(path, sizeof path, "%s/bin/%s", rootfs, applets[i]);
        if (symlink("busybox", path) != 0 && errno != EEXIST) return 0;
    }
    return 1;
}

/* --- output collection -------------------------------------------------------------------------- */

typedef struct Text {
    char data[65536];
    size_t len;
} Text;

static void append(Text* t, const char* data, size_t len) {
    if (t->len + len >= sizeof t->data) len = sizeof t->data - 1 - t->len;
    memcpy(t->data + t->len, data, len);
    t->len += len;
    t->data[t->len] = '\0';
}

typedef struct Collected {
    Text out;
    Text err;
    CBoxliteRuntime* runtime; /* for the re-entrant call */
    int reentrant_calls;
    int foreign_thread_calls; /* callbacks that ran on a thread other than the caller's */
    pthread_t caller;
} Collected;

static void on_text(const char* text, int is_stderr, void* user_data) {
    Collected* c = user_data;
    append(is_stderr ? &c->err : &c->out, text, strlen(text));
    if (!pthread_equal(pthread_self(), c->caller)) ++c->foreign_thread_calls;
    if (c->runtime != NULL) {
        /* A callback may call back into the API. */
        char* json = NULL;
        CBoxliteError inner = {BOXLITE_OK, NULL};
        if (boxlite_runtime_metrics(c->runtime, &json, &inner) == BOXLITE_OK && json != NULL) ++c->reentrant_calls;
        boxlite_free_string(json);
        boxlite_error_free(&inner);
    }
}

typedef struct ExecState {
    Text out;
    Text err;
    CExecutionHandle* execution;
    int inner_code; /* what a pump from inside a callback returned */
} ExecState;

static void on_chunk_out(const uint8_t* data, size_t len, void* user_data) {
    ExecState* s = user_data;
    append(&s->out, (const char*)data, len);
    CBoxliteError inner = {BOXLITE_OK, NULL};
    s->inner_code = boxlite_execution_pump(s->execution, 0, NULL, &inner);
    boxlite_error_free(&inner);
}

static void on_chunk_err(const uint8_t* data, size_t len, void* user_data) {
    ExecState* s = user_data;
    append(&s->err, (const char*)data, len);
}

/* Answers the command from inside its own stdout callback: a line on stdin, then EOF. */
static void on_chunk_answer(const uint8_t* data, size_t len, void* user_data) {
    ExecState* s = user_data;
    append(&s->out, (const char*)data, len);
    if (strstr(s->out.data, "ready\n") != NULL && s->inner_code == -1) {
        CBoxliteError inner = {BOXLITE_OK, NULL};
        s->inner_code = boxlite_execution_stdin_write(s->execution, (const uint8_t*)"answer\n", 7, &inner);
        if (s->inner_code == BOXLITE_OK) s->inner_code = boxlite_execution_stdin_close(s->execution, &inner);
        boxlite_error_free(&inner);
    }
}

/* --- threads ------------------------------------------------------------------------------------ */

typedef struct ThreadArg {
    CBoxHandle* box;
    int exit_code;
    BoxliteErrorCode code;
    Collected output;
} ThreadArg;

static void* run_in_thread(void* p) {
    ThreadArg* a = p;
    a->output.caller = pthread_self();
    CBoxliteError e = {BOXLITE_OK, NULL};
    a->code = boxlite_execute(a->box, "echo", "[\"from a thread\"]", on_text, &a->output, &a->exit_code, &e);
    boxlite_error_free(&e);
    return NULL;
}

/* --- the parts ----------------------------------------------------------------------------------- */

static void no_box_calls(CBoxliteRuntime* rt) {
    CHECK(strcmp(boxlite_version(), "") != 0);

    char* json = NULL;
    if (EXPECT_OK(boxlite_runtime_metrics(rt, &json, &err))) {
        CHECK(strstr(json, "\"boxes_created_total\"") != NULL);
        CHECK(strstr(json, "\"total_exec_errors\"") != NULL);
        boxlite_free_string(json);
    }
    json = NULL;
    if (EXPECT_OK(boxlite_list_info(rt, &json, &err))) {
        CHECK(strcmp(json, "[]") == 0);
        boxlite_free_string(json);
    }

    /* Bad input. */
    CBoxHandle* box = (CBoxHandle*)1;
    EXPECT_CODE(boxlite_create_box(rt, "{\"cpus\": 2,", &box, &err), BOXLITE_ERR_INVALID_ARGUMENT, "not valid JSON");
    CHECK(box == NULL);
    EXPECT_CODE(boxlite_create_box(rt, "{\"cpu\": 2}", &box, &err), BOXLITE_ERR_CONFIG, "'cpu'");
    EXPECT_CODE(boxlite_create_box(rt, "{\"memory_mib\": \"lots\"}", &box, &err), BOXLITE_ERR_CONFIG, "memory_mib");
    EXPECT_CODE(boxlite_create_box(rt, "{\"cpus\": 300}", &box, &err), BOXLITE_ERR_CONFIG, "cpus");
    EXPECT_CODE(boxlite_create_box(rt, "{\"ports\": [{\"guest_port\": 70000}]}", &box, &err), BOXLITE_ERR_CONFIG,
                "ports[0].guest_port");
    EXPECT_CODE(boxlite_create_box(rt,
                                   "{\"network\": {\"mode\": \"enabled\", \"allow_net\": [\"ok.com\", \"bad host\"]}}",
                                   &box, &err),
                BOXLITE_ERR_CONFIG, "network.allow_net[1]");
    EXPECT_CODE(boxlite_create_box(rt, "{\"ports\": [{\"guest_port\": 80, \"host_ip\": \"localhost\"}]}", &box, &err),
                BOXLITE_ERR_CONFIG, "ports[0].host_ip");
    EXPECT_CODE(boxlite_create_box(NULL, "{}", &box, &err), BOXLITE_ERR_INVALID_ARGUMENT, "runtime");
    EXPECT_CODE(boxlite_create_box(rt, "{}", NULL, &err), BOXLITE_ERR_INVALID_ARGUMENT, "out_box");
    EXPECT_CODE(boxlite_get(rt, "no-such-box", &box, &err), BOXLITE_ERR_NOT_FOUND, "no-such-box");
    EXPECT_CODE(boxlite_get_info(rt, "no-such-box", &json, &err), BOXLITE_ERR_NOT_FOUND, "no-such-box");
    EXPECT_CODE(boxlite_remove(rt, "no-such-box", 0, &err), BOXLITE_ERR_NOT_FOUND, "no-such-box");
    EXPECT_CODE(boxlite_runtime_metrics(rt, NULL, &err), BOXLITE_ERR_INVALID_ARGUMENT, "out_json");
    /* A NULL error pointer is allowed: only the code comes back. */
    CHECK(boxlite_get(rt, "no-such-box", &box, NULL) == BOXLITE_ERR_NOT_FOUND);

    /* Images: an empty store lists nothing; a pull from a closed loopback port fails cleanly. */
    CBoxliteImageHandle* images = NULL;
    if (EXPECT_OK(boxlite_runtime_images(rt, &images, &err))) {
        json = NULL;
        if (EXPECT_OK(boxlite_image_list(images, &json, &err))) {
            CHECK(strcmp(json, "[]") == 0);
            boxlite_free_string(json);
        }
        json = NULL;
        BoxliteErrorCode code = boxlite_image_pull(images, "127.0.0.1:1/nothing:here", &json, &err);
        CHECK(code != BOXLITE_OK && err.message != NULL && json == NULL);
        boxlite_error_free(&err);
        boxlite_image_free(images);
    }

    /* Every free function takes NULL. */
    boxlite_runtime_free(NULL);
    boxlite_box_free(NULL);
    boxlite_execution_free(NULL);
    boxlite_image_free(NULL);
    boxlite_simple_free(NULL);
    boxlite_result_free(NULL);
    boxlite_free_string(NULL);
    boxlite_error_free(NULL);
    CHECK(boxlite_box_id(NULL) == NULL);
}

static void box_calls(CBoxliteRuntime* rt) {
    char options[16384];
    snprintf(options, sizeof options,
             "{\"name\": \"c-box\", \"rootfs\": {\"RootfsPath\": \"%s\"}, \"auto_remove\": false,"
             " \"env\": [[\"GREETING\", \"hello\"]], \"memory_mib\": 256,"
             " \"network\": {\"mode\": \"enabled\", \"allow_net\": []},"
             " \"ports\": [{\"guest_port\": 8080, \"host_ip\": \"127.0.0.1\"}]}",
             rootfs);
    CBoxHandle* box = NULL;
    if (!EXPECT_OK(boxlite_create_box(rt, options, &box, &err))) return;
    CBoxHandle* again = NULL;
    EXPECT_CODE(boxlite_create_box(rt, options, &again, &err), BOXLITE_ERR_ALREADY_EXISTS, "c-box");
    CHECK(again == NULL);

    char* id = boxlite_box_id(box);
    CHECK(id != NULL && strlen(id) == 26);

    char* json = NULL;
    if (EXPECT_OK(boxlite_box_info(box, &json, &err))) {
        CHECK(strstr(json, "\"name\":\"c-box\"") != NULL);
        CHECK(strstr(json, "\"status\":\"configured\"") != NULL);
        CHECK(strstr(json, "\"memory_mib\":256") != NULL);
        /* Published ports as asked until the box runs: the host port is still to be picked. */
        CHECK(strstr(json,
                     "\"network\":{\"allow_net\":[],\"mode\":\"enabled\",\"published_ports\":[{"
                     "\"guest_port\":8080,\"host_ip\":\"127.0.0.1\",\"host_port\":null,"
                     "\"protocol\":\"tcp\"}]}") != NULL);
        boxlite_free_string(json);
    }
    json = NULL;
    if (EXPECT_OK(boxlite_get_info(rt, "c-box", &json, &err))) {
        CHECK(strstr(json, id) != NULL);
        boxlite_free_string(json);
    }

    EXPECT_OK(boxlite_start_box(box, &err));
    json = NULL;
    if (EXPECT_OK(boxlite_list_info(rt, &json, &err))) {
        CHECK(strstr(json, "\"running\":true") != NULL);
        boxlite_free_string(json);
    }
    /* Running, the published port shows the host port it was bound to (picked: 1..65535). */
    json = NULL;
    if (EXPECT_OK(boxlite_box_info(box, &json, &err))) {
        const char* prefix = "\"guest_port\":8080,\"host_ip\":\"127.0.0.1\",\"host_port\":";
        const char* bound = strstr(json, prefix);
        CHECK(bound != NULL);
        if (bound != NULL) {
            const long port = strtol(bound + strlen(prefix), NULL, 10);
            CHECK(port >= 1 && port <= 65535);
        }
        boxlite_free_string(json);
    }

    /* Blocking execution: the callback gets both streams, and calls back into the API. */
    Collected collected;
    memset(&collected, 0, sizeof collected);
    collected.runtime = rt;
    collected.caller = pthread_self();
    int exit_code = -1;
    if (EXPECT_OK(boxlite_execute(box, "sh", "[\"-c\", \"echo out-$GREETING; echo err-text >&2; exit 3\"]", on_text,
                                  &collected, &exit_code, &err))) {
        CHECK(exit_code == 3);
        CHECK(strcmp(collected.out.data, "out-hello\n") == 0);
        CHECK(strcmp(collected.err.data, "err-text\n") == 0);
        CHECK(collected.reentrant_calls >= 2);
        CHECK(collected.foreign_thread_calls == 0);
    }
    BoxliteCommand command;
    memset(&command, 0, sizeof command);
    command.command = "sh";
    command.args_json = "[\"-c\", \"echo $A-$B; pwd\"]";
    command.env_json = "[[\"A\", \"one\"], [\"B\", \"two\"]]";
    command.workdir = "/tmp";
    memset(&collected, 0, sizeof collected);
    collected.caller = pthread_self();
    if (EXPECT_OK(boxlite_execute_cmd(box, &command, on_text, &collected, &exit_code, &err))) {
        CHECK(exit_code == 0);
        CHECK(strcmp(collected.out.data, "one-two\n/tmp\n") == 0);
    }
    command.env_json = "[[\"A\"]]";
    EXPECT_CODE(boxlite_execute_cmd(box, &command, on_text, &collected, &exit_code, &err), BOXLITE_ERR_INVALID_ARGUMENT,
                "env_json[0]");
    EXPECT_CODE(boxlite_execute(box, "true", "{\"not\": \"an array\"}", NULL, NULL, &exit_code, &err),
                BOXLITE_ERR_INVALID_ARGUMENT, "args_json");
    /* No callback: the output is dropped, the exit code still comes back. */
    if (EXPECT_OK(boxlite_execute(box, "sh", "[\"-c\", \"echo ignored; exit 4\"]", NULL, NULL, &exit_code, &err))) {
        CHECK(exit_code == 4);
    }

    /* A handle-driven execution: stdin in, stdout and stderr through callbacks, poll() on its fd. */
    BoxliteCommand cat;
    memset(&cat, 0, sizeof cat);
    cat.command = "sh";
    cat.args_json = "[\"-c\", \"tr a-z A-Z; echo done >&2\"]";
    CExecutionHandle* execution = NULL;
    if (EXPECT_OK(boxlite_box_exec(box, &cat, &execution, &err))) {
        ExecState state;
        memset(&state, 0, sizeof state);
        state.execution = execution;
        state.inner_code = -1;
        EXPECT_OK(boxlite_execution_on_stdout(execution, on_chunk_out, &state, &err));
        EXPECT_OK(boxlite_execution_on_stderr(execution, on_chunk_err, &state, &err));
        const char* input = "hello c api\n";
        EXPECT_OK(boxlite_execution_stdin_write(execution, (const uint8_t*)input, strlen(input), &err));
        EXPECT_OK(boxlite_execution_stdin_close(execution, &err));
        EXPECT_OK(boxlite_execution_stdin_close(execution, &err)); /* idempotent */
        EXPECT_CODE(boxlite_execution_stdin_write(execution, (const uint8_t*)"x", 1, &err), BOXLITE_ERR_INVALID_STATE,
                    "closed");
        int fd = -1;
        EXPECT_OK(boxlite_execution_fd(execution, &fd, &err));
        int finished = 0;
        for (int rounds = 0; !finished && rounds < 100000; ++rounds) {
            struct pollfd pfd = {fd, POLLIN, 0};
            if (poll(&pfd, 1, -1) < 0 && errno != EINTR) break;
            if (!EXPECT_OK(boxlite_execution_pump(execution, 0, &finished, &err))) break;
        }
        CHECK(finished == 1);
        CHECK(strcmp(state.out.data, "HELLO C API\n") == 0);
        CHECK(strcmp(state.err.data, "done\n") == 0);
        CHECK(state.inner_code == BOXLITE_ERR_INVALID_STATE); /* pump from its own callback */
        int exited = 0;
        exit_code = -1;
        EXPECT_OK(boxlite_execution_wait(execution, -1, &exit_code, &exited, &err));
        CHECK(exited == 1 && exit_code == 0);
        boxlite_execution_free(execution);
    }

    /* Polling instead of callbacks: boxlite_execution_read on both streams, driven by poll(). */
    BoxliteCommand polled;
    memset(&polled, 0, sizeof polled);
    polled.command = "sh";
    polled.args_json = "[\"-c\", \"echo polled-out; echo polled-err >&2; exit 6\"]";
    execution = NULL;
    if (EXPECT_OK(boxlite_box_exec(box, &polled, &execution, &err))) {
        Text out_text, err_text;
        memset(&out_text, 0, sizeof out_text);
        memset(&err_text, 0, sizeof err_text);
        uint8_t buffer[7]; /* small: several reads per line */
        size_t len = 0;
        int out_eof = 0, err_eof = 0, fd = -1;
        EXPECT_CODE(boxlite_execution_read(execution, 2, buffer, sizeof buffer, &len, &out_eof, &err),
                    BOXLITE_ERR_INVALID_ARGUMENT, "is_stderr");
        EXPECT_OK(boxlite_execution_fd(execution, &fd, &err));
        for (int rounds = 0; !(out_eof && err_eof) && rounds < 100000; ++rounds) {
            struct pollfd pfd = {fd, POLLIN, 0};
            if (poll(&pfd, 1, -1) < 0 && errno != EINTR) break;
            for (int stream = 0; stream < 2; ++stream) {
                int* eof = stream ? &err_eof : &out_eof;
                while (!*eof) {
                    if (!EXPECT_OK(boxlite_execution_read(execution, stream, buffer, sizeof buffer, &len, eof, &err)))
                        break;
                    if (len == 0) break;
                    append(stream ? &err_text : &out_text, (const char*)buffer, len);
                }
            }
        }
        CHECK(out_eof && err_eof);
        CHECK(strcmp(out_text.data, "polled-out\n") == 0);
        CHECK(strcmp(err_text.data, "polled-err\n") == 0);
        int exited = 0;
        EXPECT_OK(boxlite_execution_wait(execution, -1, &exit_code, &exited, &err));
        CHECK(exited == 1 && exit_code == 6);
        /* A stream with a callback is not read this way. */
        EXPECT_OK(boxlite_execution_on_stdout(execution, on_chunk_err, NULL, &err));
        EXPECT_CODE(boxlite_execution_read(execution, 0, buffer, sizeof buffer, &len, &out_eof, &err),
                    BOXLITE_ERR_INVALID_STATE, "callback");
        boxlite_execution_free(execution);
    }

    /* A callback that writes stdin and closes it, on its own execution. */
    BoxliteCommand conversation;
    memset(&conversation, 0, sizeof conversation);
    conversation.command = "sh";
    conversation.args_json = "[\"-c\", \"echo ready; cat; echo after-eof\"]";
    execution = NULL;
    if (EXPECT_OK(boxlite_box_exec(box, &conversation, &execution, &err))) {
        ExecState state;
        memset(&state, 0, sizeof state);
        state.execution = execution;
        state.inner_code = -1;
        EXPECT_OK(boxlite_execution_on_stdout(execution, on_chunk_answer, &state, &err));
        EXPECT_OK(boxlite_execution_on_stderr(execution, on_chunk_err, &state, &err));
        int exited = 0;
        EXPECT_OK(boxlite_execution_wait(execution, -1, &exit_code, &exited, &err));
        CHECK(exited == 1 && exit_code == 0);
        CHECK(state.inner_code == BOXLITE_OK);
        CHECK(strcmp(state.out.data, "ready\nanswer\nafter-eof\n") == 0);
        boxlite_execution_free(execution);
    }

    /* wait with a timeout, signal, resize and kill. */
    BoxliteCommand sleeper;
    memset(&sleeper, 0, sizeof sleeper);
    sleeper.command = "sleep";
    sleeper.args_json = "[\"600\"]";
    sleeper.tty = 1;
    execution = NULL;
    if (EXPECT_OK(boxlite_box_exec(box, &sleeper, &execution, &err))) {
        int exited = 1;
        exit_code = 12345;
        EXPECT_OK(boxlite_execution_wait(execution, 50, &exit_code, &exited, &err));
        CHECK(exited == 0 && exit_code == 12345);
        EXPECT_OK(boxlite_execution_tty_resize(execution, 40, 100, &err));
        EXPECT_CODE(boxlite_execution_tty_resize(execution, 0, 100, &err), BOXLITE_ERR_INVALID_ARGUMENT, "0x100");
        EXPECT_CODE(boxlite_execution_signal(execution, 99, &err), BOXLITE_ERR_INVALID_ARGUMENT, "99");
        EXPECT_OK(boxlite_execution_signal(execution, 15, &err));
        EXPECT_OK(boxlite_execution_wait(execution, -1, &exit_code, &exited, &err));
        CHECK(exited == 1 && exit_code == -15);
        boxlite_execution_free(execution);
    }
    execution = NULL;
    sleeper.tty = 0;
    if (EXPECT_OK(boxlite_box_exec(box, &sleeper, &execution, &err))) {
        int exited = 0;
        EXPECT_OK(boxlite_execution_kill(execution, &err));
        EXPECT_OK(boxlite_execution_wait(execution, -1, &exit_code, &exited, &err));
        CHECK(exited == 1 && exit_code == -9);
        boxlite_execution_free(execution);
    }

    /* Files in and out. */
    char host_in[8192], host_out[8192];
    snprintf(host_in, sizeof host_in, "%s/to-box.txt", work);
    snprintf(host_out, sizeof host_out, "%s/from-box.txt", work);
    FILE* f = fopen(host_in, "w");
    if (f != NULL) {
        fputs("copied content\n", f);
        fclose(f);
    }
    EXPECT_OK(boxlite_copy_in(box, host_in, "/tmp/in.txt", &err));
    memset(&collected, 0, sizeof collected);
    if (EXPECT_OK(boxlite_execute(box, "cat", "[\"/tmp/in.txt\"]", on_text, &collected, &exit_code, &err))) {
        CHECK(strcmp(collected.out.data, "copied content\n") == 0);
    }
    EXPECT_OK(boxlite_copy_out(box, "/tmp/in.txt", host_out, &err));
    char back[64] = {0};
    f = fopen(host_out, "r");
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK(fread(back, 1, sizeof back - 1, f) == 15);
        fclose(f);
    }
    CHECK(strcmp(back, "copied content\n") == 0);

    /* The box handle from other threads, at the same time, through two handles. */
    CBoxHandle* second = NULL;
    if (EXPECT_OK(boxlite_get(rt, id, &second, &err))) {
        pthread_t threads[2];
        ThreadArg args[2];
        memset(args, 0, sizeof args);
        args[0].box = box;
        args[1].box = second;
        for (int i = 0; i < 2; ++i) CHECK(pthread_create(&threads[i], NULL, run_in_thread, &args[i]) == 0);
        for (int i = 0; i < 2; ++i) {
            pthread_join(threads[i], NULL);
            CHECK(args[i].code == BOXLITE_OK && args[i].exit_code == 0);
            CHECK(strcmp(args[i].output.out.data, "from a thread\n") == 0);
            CHECK(args[i].output.foreign_thread_calls == 0);
        }
        boxlite_box_free(second);
    }

    json = NULL;
    if (EXPECT_OK(boxlite_box_metrics(box, &json, &err))) {
        CHECK(strstr(json, "\"commands_executed_total\":") != NULL);
        CHECK(strstr(json, "\"commands_executed_total\":0") == NULL);
        boxlite_free_string(json);
    }

    EXPECT_OK(boxlite_stop_box(box, &err));
    json = NULL;
    if (EXPECT_OK(boxlite_box_info(box, &json, &err))) {
        CHECK(strstr(json, "\"status\":\"stopped\"") != NULL);
        boxlite_free_string(json);
    }
    EXPECT_OK(boxlite_remove(rt, id, 0, &err));
    EXPECT_CODE(boxlite_box_info(box, &json, &err), BOXLITE_ERR_NOT_FOUND, NULL);
    boxlite_free_string(id);
    boxlite_box_free(box);
}

static void simple_calls(void) {
    CBoxliteSimple* runner = NULL;
    EXPECT_CODE(boxlite_simple_new("", 0, 0, &runner, &err), BOXLITE_ERR_INVALID_ARGUMENT, "image");
    if (!EXPECT_OK(boxlite_simple_new(rootfs, 1, 256, &runner, &err))) return;
    const char* args[] = {"-c", "echo simple; echo warn >&2; exit 2"};
    CBoxliteExecResult* result = NULL;
    if (EXPECT_OK(boxlite_simple_run(runner, "sh", args, 2, &result, &err))) {
        CHECK(result->exit_code == 2);
        CHECK(strcmp(result->stdout_text, "simple\n") == 0);
        CHECK(strcmp(result->stderr_text, "warn\n") == 0);
        boxlite_result_free(result);
    }
    EXPECT_CODE(boxlite_simple_run(runner, "sh", NULL, 1, &result, &err), BOXLITE_ERR_INVALID_ARGUMENT, "args");
    boxlite_simple_free(runner);
}

/* Against a registry (tests/c_api/run_images.sh): pull, list, a box from the image, the simple API. */
static void image_calls(CBoxliteRuntime* rt, const char* reference) {
    CBoxliteImageHandle* images = NULL;
    if (!EXPECT_OK(boxlite_runtime_images(rt, &images, &err))) return;
    char* json = NULL;
    if (EXPECT_OK(boxlite_image_pull(images, reference, &json, &err))) {
        CHECK(strstr(json, "\"layer_count\":1") != NULL);
        CHECK(strstr(json, "\"config_digest\":\"sha256:") != NULL);
        CHECK(strstr(json, "test/busybox:single") != NULL);
        boxlite_free_string(json);
    }
    json = NULL;
    if (EXPECT_OK(boxlite_image_list(images, &json, &err))) {
        CHECK(strstr(json, "\"tag\":\"single\"") != NULL);
        CHECK(strstr(json, "/test/busybox\"") != NULL); /* the repository */
        CHECK(strstr(json, "\"size_bytes\":") != NULL);
        boxlite_free_string(json);
    }
    char missing[4096];
    snprintf(missing, sizeof missing, "%s-not-there", reference);
    json = NULL;
    EXPECT_CODE(boxlite_image_pull(images, missing, &json, &err), BOXLITE_ERR_IMAGE, "not-there");
    boxlite_image_free(images);

    char options[8192];
    snprintf(options, sizeof options, "{\"rootfs\": {\"Image\": \"%s\"}, \"auto_remove\": false}", reference);
    CBoxHandle* box = NULL;
    if (EXPECT_OK(boxlite_create_box(rt, options, &box, &err))) {
        Collected collected;
        memset(&collected, 0, sizeof collected);
        int exit_code = -1;
        if (EXPECT_OK(boxlite_execute(box, "cat", "[\"/etc/os-release\"]", on_text, &collected, &exit_code, &err))) {
            CHECK(exit_code == 0);
            CHECK(strstr(collected.out.data, "BoxLite Test Linux") != NULL);
        }
        char* id = boxlite_box_id(box);
        EXPECT_OK(boxlite_remove(rt, id, 1, &err));
        boxlite_free_string(id);
        boxlite_box_free(box);
    }

    CBoxliteSimple* runner = NULL;
    if (EXPECT_OK(boxlite_simple_new(reference, 0, 0, &runner, &err))) {
        const char* args[] = {"from", "an", "image"};
        CBoxliteExecResult* result = NULL;
        if (EXPECT_OK(boxlite_simple_run(runner, "echo", args, 3, &result, &err))) {
            CHECK(result->exit_code == 0 && strcmp(result->stdout_text, "from an image\n") == 0);
            boxlite_result_free(result);
        }
        boxlite_simple_free(runner);
    }
}

static void shutdown_calls(CBoxliteRuntime* rt, int with_box) {
    CBoxHandle* box = NULL;
    if (with_box) {
        char options[16384];
        snprintf(options, sizeof options, "{\"name\": \"running-at-shutdown\", \"rootfs\": {\"RootfsPath\": \"%s\"}}",
                 rootfs);
        if (EXPECT_OK(boxlite_create_box(rt, options, &box, &err))) EXPECT_OK(boxlite_start_box(box, &err));
    }
    EXPECT_CODE(boxlite_runtime_shutdown(rt, -5, &err), BOXLITE_ERR_INVALID_ARGUMENT, "timeout_secs");
    EXPECT_OK(boxlite_runtime_shutdown(rt, 0, &err));
    char* json = NULL;
    EXPECT_CODE(boxlite_list_info(rt, &json, &err), BOXLITE_ERR_STOPPED, "shut down");
    if (box != NULL) {
        EXPECT_CODE(boxlite_start_box(box, &err), BOXLITE_ERR_STOPPED, "shut down");
        boxlite_box_free(box);
    }
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: c_api_program <work dir> [all|nobox]\n");
        return 2;
    }
    const int images_mode = argc >= 4 && strcmp(argv[2], "images") == 0;
    const int with_boxes = !images_mode && (argc < 3 || strcmp(argv[2], "nobox") != 0);
    snprintf(work, sizeof work, "%s", argv[1]);
    snprintf(rootfs, sizeof rootfs, "%s/rootfs", work);
    char home[8192];
    snprintf(home, sizeof home, "%s/home", work);
    if (with_boxes || images_mode) {
        if (geteuid() != 0) {
            printf("precondition: not root (the namespace engine needs root)\n");
            return 77;
        }
        if (with_boxes && !make_rootfs()) {
            fprintf(stderr, "could not build a busybox rootfs in %s (is busybox-static installed?)\n", rootfs);
            return 1;
        }
    }
    CBoxliteRuntime* rt = NULL;
    EXPECT_CODE(boxlite_runtime_new(home, "[\"docker.io\", 7]", &rt, &err), BOXLITE_ERR_INVALID_ARGUMENT,
                "registries_json[1]");
    CHECK(rt == NULL);
    if (!EXPECT_OK(boxlite_runtime_new(home, "[\"docker.io\"]", &rt, &err))) return 1;
    if (images_mode) {
        setenv("BOXLITE_HOME", home, 1);
        image_calls(rt, argv[3]);
        boxlite_runtime_free(rt);
        if (failures != 0) {
            fprintf(stderr, "%d checks failed\n", failures);
            return 1;
        }
        printf("c api images ok\n");
        return 0;
    }
    no_box_calls(rt);
    if (with_boxes) {
        box_calls(rt);
        setenv("BOXLITE_HOME", home, 1);
        simple_calls();
    }
    shutdown_calls(rt, with_boxes);
    boxlite_runtime_free(rt);
    if (failures != 0) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("c api ok\n");
    return 0;
}
