"""Whether a process on this host still runs (for what a dead process left behind)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True for this process, and for any process that exists (also one of another user's,
    which we may not signal)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
