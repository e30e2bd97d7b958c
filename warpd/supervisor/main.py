"""The ``warpd`` command: the supervisor in the foreground (systemd ``Type=notify``).

``warpd --config FILE`` is the same as ``cartridge-warp --mode multi --config FILE``.
Exit codes: 0 stopped cleanly (SIGTERM, SIGINT, SIGQUIT, ``warpctl stop``),
2 invalid configuration or usage, 1 anything else (e.g. another warpd
already owns the control socket).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from warpd import __version__, logs
from warpd.config import CliOverrides, load_config
from warpd.exits import EXIT_OK, EXIT_USAGE, run_reporting

log = logging.getLogger("warpd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="warpd",
        description="Run one cartridge-warp process per configured schema, restart them when they fail, "
        "and answer warpctl.",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("CARTRIDGE_WARP_CONFIG"),
        help="YAML or JSON configuration file (default: $CARTRIDGE_WARP_CONFIG)",
    )
    p.add_argument("--state-dir", metavar="DIR", help="directory of the state file and the control socket")
    p.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--validate-config", action="store_true", help="validate the configuration and exit")
    p.add_argument("--version", action="version", version=f"warpd (cartridge-warp) {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure_early(args.log_level)
    if not args.config:
        print("warpd: --config FILE is required (or set CARTRIDGE_WARP_CONFIG)", file=sys.stderr)
        return EXIT_USAGE
    return run_reporting(
        lambda: run_supervisor(
            args.config,
            CliOverrides(state_dir=args.state_dir, log_level=args.log_level),
            validate_only=args.validate_config,
        ),
        "warpd",
    )


def run_supervisor(config_path: str | None, cli: CliOverrides, *, validate_only: bool = False) -> int:
    """Load and validate the configuration, then supervise until stopped; returns the exit code.

    Errors propagate: callers wrap this in :func:`warpd.exits.run_reporting`.
    """
    config = load_config(config_path, cli=cli)
    logs.configure(config.monitoring.log_level, config.monitoring.log_format)
    if validate_only:
        print(
            f"configuration is valid: {len(config.schemas)} schema(s) ({', '.join(config.schema_names)}); "
            f"source {config.source.redacted()}, destination {config.destination.redacted()}"
        )
        return EXIT_OK
    if config.dry_run:
        from warpd.engine.dry_run import print_plans

        print_plans(config)
        return EXIT_OK
    from warpd.supervisor.master import Supervisor

    return Supervisor(config, config_path, cli).run()


if __name__ == "__main__":
    sys.exit(main())
