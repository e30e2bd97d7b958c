"""Message framing for the MongoDB wire protocol.

Follows "MongoDB Wire Protocol" (https://www.mongodb.com/docs/manual/reference/mongodb-wire-protocol/)
and the OP_MSG spec (mongodb/specifications, source/message/OP_MSG.md).  Only what a modern
driver sends is accepted: OP_MSG for everything, OP_QUERY on ``<db>.$cmd`` for the legacy
handshake.  OP_COMPRESSED is never negotiated, because hello does not advertise compressors.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

import bson

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

# OP_MSG flagBits.  Bits 0-15 are "required": a recipient that does not know one must fail.
CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16
_KNOWN_REQUIRED_BITS = CHECKSUM_PRESENT | MORE_TO_COME

MAX_MESSAGE_SIZE = 48_000_000

_HEADER = struct.Struct("<iiii")
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_REPLY_PREFIX = struct.Struct("<iqii")


class ProtocolError(Exception):
    """The peer broke the framing rules; the only safe answer is to close the socket."""


@dataclass
class Request:
    """One decoded client message."""

    request_id: int
    op_code: int
    command: dict[str, Any]
    db: str
    more_to_come: bool = False
    exhaust_allowed: bool = False
    checksum: bool = False


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C (Castagnoli), the checksum OP_MSG uses; slow, but drivers rarely send one."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return None
            raise ProtocolError("connection closed in the middle of a message")
        got += n
    return bytes(buf)


def read_request(sock: socket.socket) -> Request | None:
    """Read and decode one request; ``None`` when the client closed the connection cleanly."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    length, request_id, _response_to, op_code = _HEADER.unpack(header)
    if length < _HEADER.size or length > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"message length {length} is out of bounds")
    body = _recv_exact(sock, length - _HEADER.size)
    if body is None:
        raise ProtocolError("connection closed after a message header")
    if op_code == OP_MSG:
        return _parse_op_msg(request_id, header, body)
    if op_code == OP_QUERY:
        return _parse_op_query(request_id, body)
    raise ProtocolError(f"unsupported opcode {op_code}")


def _parse_op_msg(request_id: int, header: bytes, body: bytes) -> Request:
    (flags,) = _UINT32.unpack_from(body, 0)
    if flags & 0xFFFF & ~_KNOWN_REQUIRED_BITS:
        raise ProtocolError(f"unknown required OP_MSG flag bits {flags:#x}")
    end = len(body)
    checksum = bool(flags & CHECKSUM_PRESENT)
    if checksum:
        end -= 4
        (expected,) = _UINT32.unpack_from(body, end)
        if crc32c(header + body[:end]) != expected:
            raise ProtocolError("OP_MSG checksum mismatch")
    pos = 4
    command: dict[str, Any] | None = None
    sequences: dict[str, list[dict[str, Any]]] = {}
    while pos < end:
        kind = body[pos]
        pos += 1
        if kind == 0:
            (size,) = _INT32.unpack_from(body, pos)
            if command is not None:
                raise ProtocolError("OP_MSG has more than one body section")
            command = bson.decode(body[pos : pos + size])
            pos += size
        elif kind == 1:
            (size,) = _INT32.unpack_from(body, pos)
            section_end = pos + size
            name_end = body.index(b"\x00", pos + 4)
            identifier = body[pos + 4 : name_end].decode()
            if identifier in sequences:
                raise ProtocolError(f"duplicate document sequence {identifier!r}")
            sequences[identifier] = bson.decode_all(body[name_end + 1 : section_end])
            pos = section_end
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if command is None or pos != end:
        raise ProtocolError("malformed OP_MSG sections")
    for identifier, documents in sequences.items():
        if identifier in command:
            raise ProtocolError(f"{identifier!r} given both in the body and as a document sequence")
        command[identifier] = documents
    db = command.get("$db")
    if not isinstance(db, str):
        db = ""
    return Request(
        request_id=request_id,
        op_code=OP_MSG,
        command=command,
        db=db,
        more_to_come=bool(flags & MORE_TO_COME),
        exhaust_allowed=bool(flags & EXHAUST_ALLOWED),
        checksum=checksum,
    )


def _parse_op_query(request_id: int, body: bytes) -> Request:
    name_end = body.index(b"\x00", 4)
    namespace = body[4:name_end].decode()
    pos = name_end + 1 + 8  # numberToSkip, numberToReturn
    (size,) = _INT32.unpack_from(body, pos)
    query = bson.decode(body[pos : pos + size])
    if "$query" in query:
        query = query["$query"]
    db, _, collection = namespace.partition(".")
    if collection != "$cmd":
        db = ""
    return Request(request_id=request_id, op_code=OP_QUERY, command=query, db=db)


def encode_reply(request: Request, reply: dict[str, Any], request_id: int) -> bytes:
    """Frame ``reply`` as the answer to ``request`` (OP_REPLY for OP_QUERY, else OP_MSG)."""
    document = bson.encode(reply)
    if request.op_code == OP_QUERY:
        payload = _REPLY_PREFIX.pack(0, 0, 0, 1) + document
        return _HEADER.pack(_HEADER.size + len(payload), request_id, request.request_id, OP_REPLY) + payload
    flags = CHECKSUM_PRESENT if request.checksum else 0
    payload = _UINT32.pack(flags) + b"\x00" + document
    length = _HEADER.size + len(payload) + (4 if request.checksum else 0)
    message = _HEADER.pack(length, request_id, request.request_id, OP_MSG) + payload
    if request.checksum:
        # Answer a checksummed request with a checksummed reply, as mongod does.
        message += _UINT32.pack(crc32c(message))
    return message
