/* Prints the layout of every struct and enum of <boxlite/c/boxlite.h>, one line each, in the
 * form recorded in lib/c_api/abi/layout.txt (tests/c_api/check_abi.cmake compares them). */
#include <boxlite/c/boxlite.h>

#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>

#define STRUCT(type) printf("struct %s size=%zu align=%zu\n", #type, sizeof(type), alignof(type))
#define FIELD(type, field) \
    printf("  %s.%s offset=%zu size=%zu\n", #type, #field, offsetof(type, field), sizeof(((type*)0)->field))

int main(void) {
    printf("abi_version %d\n", BOXLITE_C_ABI_VERSION);
    printf("enum BoxliteErrorCode size=%zu first=%d last=%d\n", sizeof(BoxliteErrorCode), (int)BOXLITE_OK,
           (int)BOXLITE_ERR_SESSION_REAPED);
    STRUCT(CBoxliteError);
    FIELD(CBoxliteError, code);
    FIELD(CBoxliteError, message);
    STRUCT(BoxliteCommand);
    FIELD(BoxliteCommand, command);
    FIELD(BoxliteCommand, args_json);
    FIELD(BoxliteCommand, env_json);
    FIELD(BoxliteCommand, workdir);
    FIELD(BoxliteCommand, user);
    FIELD(BoxliteCommand, timeout_secs);
    FIELD(BoxliteCommand, tty);
    STRUCT(CBoxliteExecResult);
    FIELD(CBoxliteExecResult, exit_code);
    FIELD(CBoxliteExecResult, stdout_text);
    FIELD(CBoxliteExecResult, stderr_text);
    return 0;
}
