"""Who may read the state: the daemon's user, and its group when the directory grants one.

The state file holds checkpoints and, in its dead letters, whole source rows,
so neither the directory nor the SQLite files (``state.db``, ``-wal``,
``-shm``) may be readable by every user of the machine.  A directory
cartridge-warp creates is 0700; one that exists keeps its mode (systemd's
``StateDirectoryMode=0750`` gives the service's group read access), with a
warning when other users can enter it.  The files get 0600, or 0640 when the
directory grants its group access; existing files lose any bit beyond that.
"""

from __future__ import annotations

import logging
import os
import stat

from warpd.errors import FatalError

log = logging.getLogger(__name__)

SQLITE_SUFFIXES = ("", "-wal", "-shm")


def ensure_state_dir(state_dir: str) -> None:
    """Create *state_dir* (0700) if it does not exist; whoever touches the state directory first calls this."""
    created = not os.path.isdir(state_dir)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        if created:
            os.chmod(state_dir, 0o700)  # makedirs' mode is filtered through the umask, which may be loose
    except OSError as exc:
        raise FatalError(
            f"cannot create the state directory {state_dir!r}: {exc.strerror}; "
            "set state_dir (or CARTRIDGE_WARP_STATE_DIR / --state-dir) to a writable "
            "directory"
        ) from exc


def prepare_state_dir(state_dir: str, state_file: str) -> None:
    """Create *state_dir* (0700) if needed, warn when others can enter it, and make sure *state_file*
    and its SQLite companions exist or will be created readable by the owner (and group) only."""
    ensure_state_dir(state_dir)
    dir_mode = stat.S_IMODE(os.stat(state_dir).st_mode)
    if dir_mode & 0o007:
        log.warning(
            "the state directory %s is open to every user (mode %04o) and its state file holds source rows "
            "(dead letters): run `chmod o-rwx %s` (the systemd units set StateDirectoryMode=0750)",
            state_dir,
            dir_mode,
            state_dir,
        )
    file_mode = 0o640 if dir_mode & 0o050 == 0o050 else 0o600
    if not os.path.exists(state_file):
        try:
            # created here with its final mode: SQLite gives -wal and -shm the mode of the main file
            os.close(os.open(state_file, os.O_CREAT | os.O_WRONLY, file_mode))
        except OSError:
            return  # not writable: StateStore reports the directory itself
    for suffix in SQLITE_SUFFIXES:
        _restrict(state_file + suffix, file_mode)


def _restrict(path: str, allowed: int) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if mode & ~allowed:
        try:
            os.chmod(path, mode & allowed)  # only ever removes bits
        except OSError as exc:
            log.warning(
                "%s is readable by more users than it should be (mode %04o) and cannot be changed (%s): "
                "run `chmod %04o %s`",
                path,
                mode,
                exc.strerror,
                mode & allowed,
                path,
            )
