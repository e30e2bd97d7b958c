"""What every connector's URI check shares: port ranges, and parser messages that are safe to show.

A URI parser's error may quote the part it could not read, and when the user
name or password holds an unescaped ``@``, ``/`` or ``:``, that part is a
piece of the password (``'b' does not appear to be an IPv4 address``).  So
messages keep only the parser's words before the first quoted value.
"""

from __future__ import annotations

import re

from warpd.errors import ConfigError

_ESCAPE_HINT = (
    "if the user name or password contains @ : / ? # [ ] % or a space, percent-encode those characters "
    "(@ as %40, : as %3A, / as %2F, ? as %3F, # as %23, [ as %5B, ] as %5D, % as %25, space as %20)"
)


def escape_hint(uri: str) -> str:
    """ "; <how to percent-encode>" when *uri* carries user info, where an unescaped character is the usual cause."""
    return f"; {_ESCAPE_HINT}" if "@" in uri else ""


def safe_detail(message: object) -> str:
    """A parser's message cut before anything it quotes (which may be part of a password)."""
    text = str(message).splitlines()[0] if str(message) else ""
    text = re.split(r"""[:'"]|\bas\b""", text, maxsplit=1)[0]
    return text.strip().rstrip(".,;") or "cannot be parsed"


def check_port(text: str | int | None, uri: str) -> None:
    """ConfigError unless *text* (*uri*'s port, may be absent) is a number from 1 to 65535."""
    if text is None or text == "":
        return
    if isinstance(text, int) or (
        isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 5
    ):
        if 1 <= int(text) <= 65535:
            return
        raise ConfigError(f"the port is out of range: it must be a number from 1 to 65535{escape_hint(uri)}")
    # the "port" may be a piece of an unescaped password: never echo it
    raise ConfigError(f"the port is not a number from 1 to 65535{escape_hint(uri)}")
