"""Run the MongoDB wire-protocol test server in the foreground until SIGTERM or SIGINT.

python -m tests.mongo_wire --host 127.0.0.1 --port 27017
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys

from .server import MongoTestServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mongo_wire", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=27017, help="TCP port, 0 for any free one (default 27017)"
    )
    parser.add_argument("--set-name", default="rs0", help="replica set name (default rs0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    # Handlers only enqueue; the main loop acts (house style: no work inside a signal handler).
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: signals.put(received))

    server = MongoTestServer(host=args.host, port=args.port, set_name=args.set_name).start()
    print(server.uri, flush=True)
    try:
        while True:
            try:
                received = signals.get(timeout=0.5)
            except queue.Empty:
                continue
            print(f"received {signal.Signals(received).name}, stopping", file=sys.stderr, flush=True)
            return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
