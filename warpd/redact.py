"""Remove credentials from anything that might be shown to a person.

Two layers.  Patterns find passwords where they stand in a URI
(``scheme://user:secret@host``), a key=value DSN (``password=secret``) or a
libpq parse error that quotes the token it could not decode.  A pattern has
to guess where a secret ends, and some secrets defeat any guess (a space or a
newline in a password, a driver quoting a fragment), so the configuration also
*remembers* the passwords it loads (:func:`remember_uri_secrets`) and every
later :func:`redact` replaces them wherever they appear, in each form a
message may carry them (as written, percent-decoded, repr- or JSON-escaped).
"""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import quote, unquote, unquote_plus

# scheme://user:password@host -> scheme://user:***@host. The password runs to the LAST "@" before
# whitespace: URI parsers that split the authority at its last "@" (Python's, MySQL's) accept a raw
# "@" in a password, so stopping at the first one would show the rest.
_URI_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*:)(?P<secret>\S*)@")
# key=value pairs some drivers print (psycopg2 DSNs, "password=...")
_KV_PASSWORD = re.compile(
    r"(?P<prefix>\b(?:password|passwd|pwd)\s*=\s*)(?P<secret>'[^']*'|\"[^\"]*\"|\S+)", re.I
)
# libpq quotes the undecodable token of a URI, which is usually the password:
#   invalid percent-encoded token: "s3cr%zzet"
_LIBPQ_TOKEN = re.compile(r'(?P<prefix>percent-encoded token: )"[^"\n]*"?')

# A remembered secret shorter than this is replaced only when the patterns above could not hide it
# (e.g. it holds a space): replacing "warp" everywhere would mangle every "cartridge-warp".
_MIN_ALWAYS = 8
# Below this even a secret the patterns miss is not remembered: "a b" would blank every "a b" of every line.
_MIN_EVER = 4


class _Secrets:
    """The passwords of the loaded configuration, in every form a message may carry them.

    Process-wide on purpose: a secret must be hidden in every log line and error of the process,
    whichever thread or module writes it.  Only ever grows; forked children inherit it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def add(self, values: set[str]) -> None:
        with self._lock:
            new = {v for v in values if v and v.strip()} - self._values
            if not new:
                return
            self._values |= new
            # longest first, so a secret containing another is replaced whole
            ordered = sorted(self._values, key=len, reverse=True)
            self.pattern = re.compile("|".join(re.escape(v) for v in ordered))


_secrets = _Secrets()


def _forms(secret: str) -> set[str]:
    """*secret* as written and as the places it travels to may show it."""
    out: set[str] = set()
    for base in {secret, unquote(secret), unquote_plus(secret)}:
        out |= {base, quote(base, safe="", errors="surrogatepass"), repr(base)[1:-1], json.dumps(base)[1:-1]}
        out |= {json.dumps(base, ensure_ascii=False)[1:-1], base.replace("\n", "").replace("\t", "")}
        out |= {part for part in base.splitlines() if len(part) >= _MIN_ALWAYS}
    return out


def remember_secret(secret: str) -> None:
    """Hide *secret* (a password, a token) in everything :func:`redact` sees from now on."""
    if not isinstance(secret, str) or not secret:
        return
    keep = set()
    for form in _forms(secret):
        hidden_by_pattern = _pattern_redact(f"x://u:{form}@h") == "x://u:***@h"
        if len(form) >= _MIN_ALWAYS or (not hidden_by_pattern and len(form) >= _MIN_EVER):
            keep.add(form)
    _secrets.add(keep)


def uri_password(uri: object) -> str | None:
    """The password of connection URI *uri* (``scheme://user:password@host...``), or None."""
    if not isinstance(uri, str):
        return None
    _, sep, rest = uri.partition("://")
    # the user info runs to the last "@" of the authority; take the widest reading any parser makes
    userinfo, at, _ = rest.rpartition("@")
    _, colon, password = userinfo.partition(":")
    return password if sep and at and colon else None


def remember_uri_secrets(uri: object) -> None:
    """Remember the password of connection URI *uri*, so it is hidden wherever it shows up."""
    password = uri_password(uri)
    if password is not None:
        remember_secret(password)
        # a parser splitting at the first "@" (libpq) sees a shorter password and a host holding the rest
        for piece in password.split("@"):
            if len(piece) >= _MIN_ALWAYS:
                remember_secret(piece)


def _pattern_redact(s: str) -> str:
    s = _URI_PASSWORD.sub(lambda m: m.group("prefix") + "***@", s)
    s = _LIBPQ_TOKEN.sub(lambda m: m.group("prefix") + '"***"', s)
    return _KV_PASSWORD.sub(lambda m: m.group("prefix") + "***", s)


def redact(text: object) -> str:
    """Return ``str(text)`` with every password in URIs and DSNs, and every remembered one, replaced by ``***``."""
    s = str(text)
    pattern = _secrets.pattern
    if pattern is not None:
        s = pattern.sub("***", s)
    return _pattern_redact(s)
