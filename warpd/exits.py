"""Exit codes, and turning any error into one plus a message for the operator.

0 a clean stop, 1 a runtime failure, 2 an invalid configuration or usage
(the supervisor does not restart a schema process that exits 2). Used by
``cartridge-warp``, ``warpd`` and each schema process, so all three report
errors the same way: never a bare traceback, never a credential.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from warpd.errors import ConfigError, SupersededError, WarpError
from warpd.redact import redact

log = logging.getLogger("warpd")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def indent(text: object) -> str:
    return "\n".join("  " + line for line in str(text).splitlines())


def run_reporting(body: Callable[[], int], program: str, *, config_errors_to_stderr: bool = True) -> int:
    """``body()``'s exit code, or the code of the error it raised, with the error reported.

    An invalid configuration goes to stderr under ``program``'s name (the
    operator ran a command), or to the log when the process is a daemon's
    child (``config_errors_to_stderr=False``).
    """
    try:
        return body()
    except ConfigError as exc:
        if config_errors_to_stderr:
            print(f"{program}: invalid configuration:\n{indent(redact(exc))}", file=sys.stderr)
        else:
            log.error("%s: invalid configuration: %s", program, redact(exc))
        return EXIT_USAGE
    except SupersededError as exc:
        log.error("%s", redact(exc))
        return EXIT_USAGE
    except WarpError as exc:
        log.error("%s", redact(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - never a bare traceback for the operator
        log.error(
            "internal error (%s: %s); run with --log-level DEBUG (log_level: DEBUG) for details and "
            "please report it",
            type(exc).__name__,
            redact(exc),
        )
        log.debug("traceback", exc_info=True)
        return EXIT_FAILURE
