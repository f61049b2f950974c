/* nonblocking: an execution driven from an event loop, never blocking on the box — a poll()
 * loop over the execution's descriptor (with a timer a real program would have beside it),
 * stdin written a line at a time as answers come back, output through callbacks, then the exit.
 *
 *   ./nonblocking [rootfs-dir]
 */
#include "example_setup.h"

#include <poll.h>

typedef struct Session {
    char out[4096];
    char err[1024];
    int answers; /* lines seen on stdout */
} Session;

static void append(char* buffer, size_t size, const uint8_t* data, size_t len) {
    size_t used = strlen(buffer);
    if (used + len >= size) len = size - used - 1;
    memcpy(buffer + used, data, len);
    buffer[used + len] = '\0';
}

static void on_stdout(const uint8_t* data, size_t len, void* user_data) {
    Session* s = user_data;
    append(s->out, sizeof s->out, data, len);
    for (size_t i = 0; i < len; ++i) s->answers += data[i] == '\n';
}

static void on_stderr(const uint8_t* data, size_t len, void* user_data) {
    Session* s = user_data;
    append(s->err, sizeof s->err, data, len);
}

int main(int argc, char** argv) {
    Example ex;
    int rc = example_setup(&ex, "nonblocking", argc, argv);
    if (rc != 0) return rc;
    CBoxliteError error = {BOXLITE_OK, NULL};
    CBoxliteRuntime* runtime = NULL;
    CBoxHandle* box = NULL;
    if (boxlite_runtime_new(ex.home, NULL, &runtime, &error) != BOXLITE_OK) {
        example_error(&ex, "boxlite_runtime_new", &error);
        return example_finish(&ex);
    }
    if (boxlite_create_box(runtime, ex.options, &box, &error) != BOXLITE_OK) {
        example_error(&ex, "boxlite_create_box", &error);
        boxlite_runtime_free(runtime);
        return example_finish(&ex);
    }

    /* Uppercases each line it reads; says goodbye on stderr at EOF. */
    BoxliteCommand command;
    memset(&command, 0, sizeof command);
    command.command = "sh";
    command.args_json = "[\"-c\", \"while read line; do echo \\\"$line\\\" | tr a-z A-Z; done; echo bye >&2\"]";
    CExecutionHandle* execution = NULL;
    if (boxlite_box_exec(box, &command, &execution, &error) != BOXLITE_OK) {
        example_error(&ex, "boxlite_box_exec", &error);
    } else {
        Session s;
        memset(&s, 0, sizeof s);
        int fd = -1;
        boxlite_execution_on_stdout(execution, on_stdout, &s, &error);
        boxlite_execution_on_stderr(execution, on_stderr, &s, &error);
        boxlite_execution_fd(execution, &fd, &error);

        static const char* const lines[] = {"first line\n", "second line\n", "third line\n"};
        int sent = 0;
        int finished = 0;
        int ticks = 0;
        while (!finished) {
            /* Send the next line once the previous one has been answered. */
            if (sent < 3 && s.answers == sent) {
                const char* line = lines[sent++];
                if (boxlite_execution_stdin_write(execution, (const uint8_t*)line, strlen(line), &error) !=
                    BOXLITE_OK) {
                    example_error(&ex, "boxlite_execution_stdin_write", &error);
                    break;
                }
                printf("sent: %s", line);
            }
            if (sent == 3 && s.answers == 3) boxlite_execution_stdin_close(execution, &error);

            struct pollfd pfd = {fd, POLLIN, 0};
            int ready = poll(&pfd, 1, 100);
            if (ready < 0 && errno != EINTR) break;
            if (ready == 0) {
                ++ticks; /* the loop's other work: timers, sockets, a UI */
                continue;
            }
            if (boxlite_execution_pump(execution, 0, &finished, &error) != BOXLITE_OK) {
                example_error(&ex, "boxlite_execution_pump", &error);
                break;
            }
        }
        int exit_code = -1;
        int exited = 0;
        if (boxlite_execution_wait(execution, -1, &exit_code, &exited, &error) != BOXLITE_OK) {
            example_error(&ex, "boxlite_execution_wait", &error);
        }
        printf("received:\n%sstderr: %sexit code %d after %d idle ticks\n", s.out, s.err, exit_code, ticks);
        example_check(&ex, exited && exit_code == 0, "the command exits 0");
        example_check(&ex, strcmp(s.out, "FIRST LINE\nSECOND LINE\nTHIRD LINE\n") == 0, "every line answered");
        example_check(&ex, strcmp(s.err, "bye\n") == 0, "stderr after stdin closed");
        boxlite_execution_free(execution);
    }

    char* id = boxlite_box_id(box);
    if (id != NULL && boxlite_remove(runtime, id, 1, &error) != BOXLITE_OK) {
        example_error(&ex, "boxlite_remove", &error);
    }
    boxlite_free_string(id);
    boxlite_box_free(box);
    boxlite_runtime_free(runtime);
    return example_finish(&ex);
}
