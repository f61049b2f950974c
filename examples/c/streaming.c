/* streaming: output as it is produced — each chunk of stdout and stderr reaches the callback
 * while the command still runs, on the calling thread; a command with its own environment and
 * working directory (boxlite_execute_cmd); and a non-zero exit code.
 *
 *   ./streaming [rootfs-dir]
 */
#include "example_setup.h"

typedef struct Streams {
    char out[4096];
    char err[4096];
    int chunks;
} Streams;

static void append(char* buffer, size_t size, const char* text) {
    size_t len = strlen(buffer);
    snprintf(buffer + len, size - len, "%s", text);
}

static void on_chunk(const char* text, int is_stderr, void* user_data) {
    Streams* s = user_data;
    ++s->chunks;
    printf("%s| %s", is_stderr ? "err" : "out", text);
    fflush(stdout);
    if (is_stderr) append(s->err, sizeof s->err, text);
    else append(s->out, sizeof s->out, text);
}

int main(int argc, char** argv) {
    Example ex;
    int rc = example_setup(&ex, "streaming", argc, argv);
    if (rc != 0) return rc;
    CBoxliteError error = {BOXLITE_OK, NULL};
    CBoxliteRuntime* runtime = NULL;
    if (boxlite_runtime_new(ex.home, NULL, &runtime, &error) != BOXLITE_OK) {
        example_error(&ex, "boxlite_runtime_new", &error);
        return example_finish(&ex);
    }
    CBoxHandle* box = NULL;
    if (boxlite_create_box(runtime, ex.options, &box, &error) != BOXLITE_OK) {
        example_error(&ex, "boxlite_create_box", &error);
        boxlite_runtime_free(runtime);
        return example_finish(&ex);
    }

    /* 1. Lines on both streams, a pause between them: each arrives as its own chunk. */
    Streams s;
    memset(&s, 0, sizeof s);
    int exit_code = -1;
    const char* args = "[\"-c\", \"for i in 1 2 3; do echo line $i; echo progress $i >&2; sleep 0.1; done; exit 5\"]";
    if (boxlite_execute(box, "sh", args, on_chunk, &s, &exit_code, &error) != BOXLITE_OK) {
        example_error(&ex, "boxlite_execute", &error);
    } else {
        example_check(&ex, exit_code == 5, "the exit code comes back");
        example_check(&ex, strcmp(s.out, "line 1\nline 2\nline 3\n") == 0, "stdout, in order");
        example_check(&ex, strcmp(s.err, "progress 1\nprogress 2\nprogress 3\n") == 0, "stderr, in order");
        example_check(&ex, s.chunks >= 2, "output arrives in several chunks");
    }

    /* 2. A full command: arguments, environment and working directory. */
    BoxliteCommand command;
    memset(&command, 0, sizeof command);
    command.command = "sh";
    command.args_json = "[\"-c\", \"echo $GREETING from $(pwd)\"]";
    command.env_json = "[[\"GREETING\", \"hello\"]]";
    command.workdir = "/tmp";
    memset(&s, 0, sizeof s);
    if (boxlite_execute_cmd(box, &command, on_chunk, &s, &exit_code, &error) != BOXLITE_OK) {
        example_error(&ex, "boxlite_execute_cmd", &error);
    } else {
        example_check(&ex, exit_code == 0 && strcmp(s.out, "hello from /tmp\n") == 0, "environment and workdir");
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
