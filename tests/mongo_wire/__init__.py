"""A MongoDB wire-protocol test server: pymongo talks to it as to a replica-set primary.

    from tests.mongo_wire import MongoTestServer

    with MongoTestServer() as srv:                      # port 0: any free port
        client = pymongo.MongoClient(srv.uri)           # mongodb://127.0.0.1:<port>/?replicaSet=rs0
        ...
        srv.trim_oplog(keep=0)                          # older resume points -> error 286
        srv.drop_connections()                          # every client socket closed at once
        srv.step_down(times=1)                          # next data command -> NotWritablePrimary

mongomock stores the data and evaluates every query, update and aggregation stage; this package
adds the wire protocol (``wire``), commands (``admin``, ``crud``), cursors, the oplog and change
streams.  Not provided: authentication (every login fails), TLS, compression, transactions, collations,
views, capped/tailable collections, ``$out``/``$merge``, explain, and TTL deletions as change events.
"""

from .server import MongoTestServer

__all__ = ["MongoTestServer"]
