"""A process a test starts stops when the test run dies: ``lifeline.py PID -- COMMAND ARG...``.

A test's fixtures stop the ``cartridge-warp`` and ``warpd`` processes it
started, but a test run that is killed (kill -9, a CI job's timeout) runs no
fixture: single mode and warpd keep replicating, with their PostgreSQL
connections, long after the run, until the server refuses new ones
("remaining connection slots are reserved") to the next run.  Neither program
dies with whatever started it, rightly (``nohup``, ``start-stop-daemon
--background`` and other launchers exit as soon as they started it), so the
tests tie their processes to themselves: :func:`tied_to_this_process` prefixes
a command with this script, which asks the kernel for SIGTERM when the test
process dies (``PR_SET_PDEATHSIG``; it survives ``execve``), makes sure the
test process did not die before that, and then becomes the command
(``execvp``: same pid, same signals, same exit code).  SIGTERM stops either
program as ``warpctl stop`` or ``systemctl stop`` would: the batch in flight
committed, the lock released, the connections closed.

The kernel sends the signal when the *thread* that started the process ends:
start them from the test's main thread (as every test does), not from a
thread that finishes before the test.

Never for the database servers (``tests/servers.py`` restarts them): those
must outlive any test run.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

HERE = os.path.abspath(__file__)


def tied_to_this_process(command: Sequence[str]) -> list[str]:
    """``command``, started so that it gets SIGTERM when this process dies."""
    return [sys.executable, HERE, str(os.getpid()), "--", *command]


def main(argv: Sequence[str]) -> None:
    parent, separator, *command = argv
    if separator != "--" or not command:
        sys.exit(f"usage: {os.path.basename(HERE)} PARENT_PID -- COMMAND [ARG...]")
    from warpd.supervisor.system import die_with_parent

    die_with_parent(int(parent), signal.SIGTERM)  # exits if the parent is already gone
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
