"""Frames of the Gatehouse Python bridge (docs/python-bridge.md; src/gateways/python/codec.ts).

A frame is a little-endian u32 length, then that many bytes of ``marshal`` data: one tuple
``(type, id, ...fields)``. Decoding a frame is one ``marshal.loads`` call, in C.
"""
import marshal
import struct

VERSION = 1

# Node -> Python
HTTP_REQUEST = 1  # (1, id, environ, body, more_body, response_window)
HTTP_BODY = 2  # (2, id, body, more_body)
HTTP_DISCONNECT = 3  # (3, id)
RESPONSE_CREDIT = 4  # (4, id, bytes)
ASGI_REQUEST = 8  # (8, id, scope, body, more_body, response_window, request_window)
CANCEL = 9  # (9, id): past the request timeout
WS_CONNECT = 16
WS_RECEIVE = 17
WS_DISCONNECT = 18
LIFESPAN_STARTUP = 24
LIFESPAN_SHUTDOWN = 25

# Python -> Node
HELLO = 64  # (64, 0, version, pid, request_window, capacity)
RESPONSE_START = 65  # (65, id, status, reason, headers, body, more_body)
RESPONSE_BODY = 66  # (66, id, body, more_body)
RESPONSE_FILE = 67  # (67, id, path, offset, length, dev, ino, more_body)
REQUEST_CREDIT = 68  # (68, id, bytes)
REQUEST_ERROR = 69  # (69, id, message)
FINISHED = 70  # (70, id) or (70, id, False): dropped before the app started it
HEARTBEAT = 71  # (71, 0): the event loop is alive (ASGI, while it holds requests)
EARLY_HINTS = 72  # (72, id, links): http.response.early_hint, before RESPONSE_START
WS_ACCEPT = 80
WS_SEND = 81
WS_CLOSE = 82
LIFESPAN_RESULT = 88  # (88, 0, phase, ok, message)

#: Request body bytes Node may send before the app asks (unless the client sent
#: ``Expect: 100-continue``, when it is 0), and how much more each grant allows.
REQUEST_WINDOW = 256 * 1024
#: Largest frame accepted from Node.
MAX_FRAME = 16 * 1024 * 1024

_len = struct.Struct("<I")
pack_len = _len.pack
unpack_len = _len.unpack_from
dumps = marshal.dumps
loads = marshal.loads


#: Frames this long or longer are decoded from a memoryview of the read: a copy of a large
#: slice costs more than the view (at 128 KiB: 69 us against 6 us), a small one less.
VIEW_FROM = 4096


def frame(value):
    """One frame, length prefix included."""
    payload = dumps(value)
    return pack_len(len(payload)) + payload


class ProtocolError(Exception):
    pass


class FrameLengthError(ProtocolError):
    """A length prefix no frame has (0, or above MAX_FRAME)."""


def grant_due(granted, consumed):
    """Request-body credit to give Node now: once half of the window granted is read, refill it; else 0."""
    if granted - consumed <= REQUEST_WINDOW // 2:
        return consumed + REQUEST_WINDOW - granted
    return 0


class FrameSplitter:
    """Node's byte stream cut into frames, each decoded and handed to on_frame(frame) as
    soon as it is whole (the callback is kept: no bound method made per read)."""

    __slots__ = ("rest", "on_frame")

    def __init__(self, on_frame):
        #: The start of a frame that the next read completes.
        self.rest = b""
        self.on_frame = on_frame

    def feed(self, data):
        """Hand on each frame `data` completes, in order. A length no frame has raises
        FrameLengthError (after the frames before it were handed on)."""
        if self.rest:
            data = self.rest + data
            self.rest = b""
        end = len(data)
        pos = 0
        while end - pos >= 4:
            (n,) = unpack_len(data, pos)
            if n == 0 or n > MAX_FRAME:
                raise FrameLengthError("frame length %d" % n)
            start = pos + 4
            if end - start < n:
                break
            pos = start + n
            self.on_frame(loads(data[start:pos] if n < VIEW_FROM else memoryview(data)[start:pos]))
        if pos < end:
            self.rest = data[pos:]
