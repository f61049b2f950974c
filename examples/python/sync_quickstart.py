"""The quick start with the blocking API (works in scripts, notebooks and inside event loops)."""

from __future__ import annotations

import sys

import boxlite
from _example import Checks, rootfs, runtime
from boxlite.sync_api import SyncBoxlite, SyncSimpleBox


def main() -> int:
    checks = Checks("sync_quickstart")
    sync_runtime = SyncBoxlite(boxlite.Options(home_dir=runtime().home_dir, engine="namespace"))
    with SyncSimpleBox(rootfs_path=rootfs(), runtime=sync_runtime) as box:
        result = box.exec("sh", "-c", "echo hello; echo oops >&2; exit 2")
        print(result)
        checks.expect_eq((result.exit_code, result.stdout, result.stderr), (2, "hello\n", "oops\n"), "the result")
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
