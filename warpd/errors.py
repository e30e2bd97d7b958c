"""Exception classes shared by every part of cartridge-warp.

The command line turns each class into an exit code and a one-paragraph
message: configuration and usage problems exit 2, everything else exits 1.
No message may contain a credential; build messages with
:func:`warpd.redact.redact` around anything that came from a URI.
"""


class WarpError(Exception):
    """Base class: an error with a message meant for the operator."""


class ConfigError(WarpError):
    """The configuration (file, environment or command line) is invalid."""


class FatalError(WarpError):
    """An error no retry can fix (authentication, privileges, prerequisites)."""


class TransientError(WarpError):
    """An error that may go away if the operation is retried."""


class SupersededError(WarpError):
    """Another writer took over the schema's destination (a newer epoch in its fence): this one stops
    for good (exit 2, which the supervisor does not restart: it would take the schema back)."""


class PositionLostError(FatalError):
    """The checkpointed source position is no longer available at the source."""
