/* Shared set-up of the C examples: a temporary home, a busybox root filesystem for the boxes, and
 * the namespace engine (unless BOXLITE_ENGINE says otherwise).
 *
 *   <example>                 a busybox rootfs built from /bin/busybox (busybox-static)
 *   <example> <rootfs-dir>    that directory as the box's root filesystem
 *
 * The namespace engine needs root: without it the example prints "precondition: ..." and exits
 * with 77 (ctest's "skipped"). Each example checks its own output and prints "FAILED: ..." when it
 * is wrong. */
#ifndef BOXLITE_EXAMPLE_SETUP_H
#define BOXLITE_EXAMPLE_SETUP_H

#define _POSIX_C_SOURCE 200809L

#include <boxlite/c/boxlite.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXAMPLE_SKIP 77

typedef struct Example {
    const char* name;
    char dir[256];      /* temporary directory, removed by example_finish */
    char home[512];     /* the runtime's home */
    char rootfs[4096];  /* the boxes' root filesystem */
    char options[8192]; /* boxlite_create_box JSON using that rootfs */
    int failures;
} Example;

/* Records a check; a false one prints "FAILED: what". */
static void example_check(Example* ex, int ok, const char* what) {
    if (ok) return;
    ++ex->failures;
    printf("FAILED: %s\n", what);
}

/* Prints an error of a call that had to succeed, and frees its message. */
static int example_error(Example* ex, const char* call, CBoxliteError* error) {
    printf("FAILED: %s: %s\n", call, error->message != NULL ? error->message : "(no message)");
    boxlite_error_free(error);
    ++ex->failures;
    return 1;
}

static int example_make_rootfs(const char* root) {
    static const char* const dirs[] = {"", "/bin", "/etc", "/proc", "/sys", "/dev", "/tmp", "/root"};
    static const char* const applets[] = {"sh", "echo", "cat", "true", "sleep", "printf", "tr", "seq"};
    const char* busybox = access("/bin/busybox", X_OK) == 0 ? "/bin/busybox" : "/usr/bin/busybox";
    char path[4352];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; ++i) {
        snprintf(path, sizeof path, "%s%s", root, dirs[i]);
        if (mkdir(path, 0755) != 0 && errno != EEXIST) return 0;
    }
    char command[8960];
    snprintf(command, sizeof command, "cp '%s' '%s/bin/busybox'", busybox, root);
    if (access(busybox, X_OK) != 0 || system(command) != 0) return 0;
    for (size_t i = 0; i < sizeof applets / sizeof applets[0]; ++i) {
        snprintf(path, sizeof path, "%s/bin/%s", root, applets[i]);
        if (symlink("busybox", path) != 0 && errno != EEXIST) return 0;
    }
    return 1;
}

/* 0: ready; otherwise the exit code to return (EXAMPLE_SKIP, or 1). */
static int example_setup(Example* ex, const char* name, int argc, char** argv) {
    memset(ex, 0, sizeof *ex);
    ex->name = name;
    if (geteuid() != 0) {
        printf("precondition: not root (the namespace engine needs root)\n");
        return EXAMPLE_SKIP;
    }
    snprintf(ex->dir, sizeof ex->dir, "/tmp/boxlite-c-example-XXXXXX");
    if (mkdtemp(ex->dir) == NULL) {
        printf("FAILED: mkdtemp\n");
        return 1;
    }
    snprintf(ex->home, sizeof ex->home, "%s/home", ex->dir);
    if (argc > 1) {
        snprintf(ex->rootfs, sizeof ex->rootfs, "%s", argv[1]);
    } else {
        snprintf(ex->rootfs, sizeof ex->rootfs, "%s/rootfs", ex->dir);
        if (!example_make_rootfs(ex->rootfs)) {
            printf("FAILED: no busybox rootfs (install busybox-static, or pass a rootfs directory)\n");
            return 1;
        }
    }
    snprintf(ex->options, sizeof ex->options,
             "{\"name\": \"%s\", \"rootfs\": {\"RootfsPath\": \"%s\"}, \"auto_remove\": false}", name, ex->rootfs);
    const char* engine = getenv("BOXLITE_ENGINE");
    if (engine == NULL || *engine == '\0') setenv("BOXLITE_ENGINE", "namespace", 1);
    return 0;
}

/* Removes the temporary directory; the exit code: 0 with "<name>: ok", or 1. */
static int example_finish(Example* ex) {
    char command[320];
    snprintf(command, sizeof command, "rm -rf '%s'", ex->dir);
    if (ex->dir[0] != '\0' && system(command) != 0) printf("warning: could not remove %s\n", ex->dir);
    if (ex->failures == 0) {
        printf("%s: ok\n", ex->name);
        return 0;
    }
    printf("%s: FAILED (%d checks failed)\n", ex->name, ex->failures);
    return 1;
}

#endif /* BOXLITE_EXAMPLE_SETUP_H */
