"""Run a command and write its exit code, wall seconds and peak RSS to a file:
``python -I -S bench/rusage.py RESULT COMMAND [ARGS...]``.

Why a launcher: Linux records the high-water RSS of the address space a process leaves at
``exec`` into the rusage that ``wait4`` reports (``ru_maxrss``), and a child forked from
the bench starts with the bench's whole RSS. Forked from this small process (a bare
interpreter, a few MB), the command's ``ru_maxrss`` is its own. Imports only ``os``, ``sys``
and ``time``; the command inherits stdin, stdout, stderr and the process group.
"""

import os
import sys
import time


def main() -> int:
    result, argv = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child becomes the command
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _pid, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as out:  # no pathlib: the launcher stays small
        out.write(f"{code} {seconds:.6f} {usage.ru_maxrss * 1024}\n")
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
