/* quickstart: the C API in a page — open a runtime, create a box, run a command with its output
 * streamed to a callback, look at the box, and clean up.
 *
 *   cc -std=c11 quickstart.c $(pkg-config --cflags --libs boxlite-c) -o quickstart
 *   ./quickstart [rootfs-dir]
 */
#include "example_setup.h"

typedef struct Output {
    char text[4096];
    size_t len;
} Output;

/* Runs on the thread that called boxlite_execute, once per chunk of output. */
static void on_output(const char* text, int is_stderr, void* user_data) {
    Output* out = user_data;
    printf("%s%s", is_stderr ? "[stderr] " : "", text);
    size_t n = strlen(text);
    if (out->len + n < sizeof out->text) {
        memcpy(out->text + out->len, text, n + 1);
        out->len += n;
    }
}

int main(int argc, char** argv) {
    Example ex;
    int rc = example_setup(&ex, "quickstart", argc, argv);
    if (rc != 0) return rc;
    printf("boxlite %s\n", boxlite_version());

    CBoxliteError error = {BOXLITE_OK, NULL};
    CBoxliteRuntime* runtime = NULL;
    if (boxlite_runtime_new(ex.home, NULL, &runtime, &error) != BOXLITE_OK) {
        example_error(&ex, "boxlite_runtime_new", &error);
        return example_finish(&ex);
    }

    CBoxHandle* box = NULL;
    if (boxlite_create_box(runtime, ex.options, &box, &error) != BOXLITE_OK) {
        example_error(&ex, "boxlite_create_box", &error);
    } else {
        /* The box starts on the first command. */
        Output out = {{0}, 0};
        int exit_code = -1;
        if (boxlite_execute(box, "echo", "[\"Hello from BoxLite C!\"]", on_output, &out, &exit_code, &error) !=
            BOXLITE_OK) {
            example_error(&ex, "boxlite_execute", &error);
        } else {
            example_check(&ex, exit_code == 0, "echo exits 0");
            example_check(&ex, strcmp(out.text, "Hello from BoxLite C!\n") == 0, "echo's output");
        }

        char* info = NULL;
        if (boxlite_box_info(box, &info, &error) != BOXLITE_OK) {
            example_error(&ex, "boxlite_box_info", &error);
        } else {
            printf("info: %s\n", info);
            example_check(&ex, strstr(info, "\"running\":true") != NULL, "the box runs after the command");
            boxlite_free_string(info); /* every string the library returns */
        }

        char* id = boxlite_box_id(box);
        if (boxlite_stop_box(box, &error) != BOXLITE_OK) example_error(&ex, "boxlite_stop_box", &error);
        if (id != NULL && boxlite_remove(runtime, id, 0, &error) != BOXLITE_OK) {
            example_error(&ex, "boxlite_remove", &error);
        }
        boxlite_free_string(id);
        boxlite_box_free(box);
    }
    boxlite_runtime_free(runtime);
    return example_finish(&ex);
}
