"""Remove credentials from anything that might be shown to a person."""

import re

# scheme://user:password@host  ->  scheme://user:***@host
_URI_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*:)(?P<secret>[^@\s]*)@")
# key=value pairs some drivers print (psycopg2 DSNs, "password=...")
_KV_PASSWORD = re.compile(
    r"(?P<prefix>\b(?:password|passwd|pwd)\s*=\s*)(?P<secret>'[^']*'|\"[^\"]*\"|\S+)", re.I
)


def redact(text: object) -> str:
    """Return ``str(text)`` with every password in URIs and DSNs replaced by ``***``."""
    s = str(text)
    s = _URI_PASSWORD.sub(lambda m: m.group("prefix") + "***@", s)
    return _KV_PASSWORD.sub(lambda m: m.group("prefix") + "***", s)
