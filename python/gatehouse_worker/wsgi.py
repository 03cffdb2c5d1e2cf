"""PEP 3333 over the bridge: environ, wsgi.input, start_response, write, file_wrapper; and
serve(), the WSGI worker: a thread per Node connection (connection.py), N app threads.
"""
import faulthandler
import os
import signal
import stat
import sys
import threading
import time
import traceback

from . import protocol as P
from .connection import AppError, Closed, Connection, Disconnected, listen, log

HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    )
)
#: Header names the app sent before that were checked and found fine (a str, not hop-by-hop,
#: no CR, LF or ':'): start_response checks each name once, not on every response.
GOOD_NAMES = set()
MAX_GOOD_NAMES = 512
#: Largest body piece per frame (and no more than the credit Node gave).
MAX_PIECE = 256 * 1024

#: thread ident -> (method, uri, start time): what the dump signal prints.
ACTIVE = {}


class Input:
    """wsgi.input: the request body, streamed; EOF at its end (CONTENT_LENGTH or chunked)."""

    __slots__ = ("_conn", "_req", "_buf")

    def __init__(self, conn, req):
        self._conn = conn
        self._req = req
        self._buf = b""

    def _more(self):
        """Append the next chunk to the buffer; False at the end of the body."""
        req = self._req
        if not req.chunks:
            if not req.more_body:
                return False
            if req.disconnected:
                raise Disconnected("client disconnected")
            self._grant()
            self._conn.wait(req, lambda: req.chunks or not req.more_body or req.disconnected)
            if not req.chunks:
                if req.disconnected and req.more_body:
                    raise Disconnected("client disconnected")
                return False
        chunk = req.chunks.popleft()
        req.consumed += len(chunk)
        self._buf = self._buf + chunk if self._buf else chunk
        return True

    def _grant(self):
        req = self._req
        if req.more_body:
            grant = P.grant_due(req.granted, req.consumed)
            if grant:
                req.granted += grant
                self._conn.send((P.REQUEST_CREDIT, req.id, grant))

    def read(self, size=-1):
        if size is None or size < 0:
            while self._more():
                pass
            data, self._buf = self._buf, b""
            return data
        while len(self._buf) < size and self._more():
            pass
        data = self._buf[:size]
        self._buf = self._buf[size:]
        return data

    def read1(self, size=-1):
        if not self._buf:
            self._more()
        if size is None or size < 0 or size >= len(self._buf):
            data, self._buf = self._buf, b""
            return data
        return self.read(size)

    def readline(self, size=-1):
        start = 0
        while True:
            i = self._buf.find(b"\n", start)
            if i >= 0:
                end = i + 1
                break
            if size is not None and 0 <= size <= len(self._buf):
                end = size
                break
            start = len(self._buf)
            if not self._more():
                end = len(self._buf)
                break
        if size is not None and 0 <= size < end:
            end = size
        data = self._buf[:end]
        self._buf = self._buf[end:]
        return data

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self):
        pass


class FileWrapper:
    """wsgi.file_wrapper: a regular file is sent by Node from its path (see send_file)."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


class Errors:
    """wsgi.errors: text to the worker's stderr (Gatehouse logs it)."""

    def write(self, s):
        return sys.stderr.write(s)

    def writelines(self, seq):
        for s in seq:
            sys.stderr.write(s)

    def flush(self):
        sys.stderr.flush()


class Exchange:
    __slots__ = ("conn", "req", "head", "status", "reason", "headers", "sent", "head_only", "error")

    def __init__(self, conn, req, head_only):
        self.conn = conn
        self.req = req
        self.head_only = head_only
        self.status = None
        self.reason = ""
        self.headers = None
        self.sent = False
        #: Why the response is refused (a PEP 3333 violation), or None.
        self.error = None

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if type(status) is not str or len(status) < 4 or status[3] != " " or not status[:3].isdigit():
            raise self.refuse("status must be a str like '200 OK', got %r" % (status,))
        if "\r" in status or "\n" in status:
            raise self.refuse("CR or LF in the status line")
        if type(headers) is not list:
            raise self.refuse("headers must be a list, got %s" % type(headers).__name__)
        good = GOOD_NAMES
        for h in headers:
            if type(h) is not tuple or len(h) != 2:
                raise self.refuse("a header must be a (str, str) tuple, got %r" % (h,))
            name, value = h
            if type(value) is not str or "\n" in value or "\r" in value or name not in good:
                self.check_header(h, good)
        self.error = None
        self.status = int(status[:3])
        self.reason = status[4:]
        self.headers = headers
        return self.write

    def check_header(self, h, good):
        """A header the fast test in start_response did not pass: refuse it or learn its name."""
        name, value = h
        if type(name) is not str or type(value) is not str:
            raise self.refuse("a header must be a (str, str) tuple, got %r" % (h,))
        if name.lower() in HOP_BY_HOP:
            raise self.refuse("hop-by-hop header %r from the application" % name)
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise self.refuse("CR, LF or ':' in header %r" % name)
        if len(good) < MAX_GOOD_NAMES:
            good.add(name)

    def refuse(self, message):
        self.error = message
        return AppError(message)

    def write(self, data):
        if self.status is None:
            raise AssertionError("write() before start_response")
        if type(data) is not bytes:
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            else:
                raise TypeError("write() takes bytes, got %s" % type(data).__name__)
        self.send(data, True)

    def send(self, data, more):
        """Send body bytes (the head first, once), waiting for credit from Node."""
        if self.error is not None:
            raise AppError(self.error)
        if self.status is None:
            raise AssertionError("body data before start_response")
        if type(data) is not bytes:
            raise TypeError("the application produced %s, not bytes" % type(data).__name__)
        conn, req = self.conn, self.req
        if req.disconnected:
            raise Disconnected("client disconnected")
        if self.head_only:
            data = b""
        if not self.sent:
            n = len(data)
            if n <= req.credit and n <= MAX_PIECE:
                req.credit -= n
                self.sent = True
                req.done = not more
                conn.send((P.RESPONSE_START, req.id, self.status, self.reason, self.headers, data, more))
                return
            self.sent = True
            conn.send((P.RESPONSE_START, req.id, self.status, self.reason, self.headers, b"", True))
        else:
            conn.poll()
        while True:
            if req.disconnected:
                raise Disconnected("client disconnected")
            if len(data) <= req.credit and len(data) <= MAX_PIECE:
                req.credit -= len(data)
                req.done = not more
                if data or not more:
                    conn.send((P.RESPONSE_BODY, req.id, data, more))
                return
            if req.credit <= 0:
                conn.wait(req, lambda: req.credit > 0 or req.disconnected)
                continue
            n = min(req.credit, MAX_PIECE)
            piece = data[:n]
            data = data[n:]
            req.credit -= n
            conn.send((P.RESPONSE_BODY, req.id, piece, True))

    def send_file(self, wrapper):
        """A file_wrapper over a regular file: Node reads the file itself."""
        f = wrapper.filelike
        try:
            fd = f.fileno()
            st = os.fstat(fd)
            name = getattr(f, "name", None)
            if not stat.S_ISREG(st.st_mode) or type(name) is not str:
                return False
            path = os.path.abspath(name)
            if os.stat(path).st_ino != st.st_ino:
                return False
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        except (AttributeError, OSError, ValueError):
            return False
        length = max(0, st.st_size - offset)
        for k, v in self.headers:
            if k.lower() == "content-length" and v.isdigit():
                length = min(length, int(v))
        if self.head_only:
            self.send(b"", False)
            return True
        if not self.sent:
            self.sent = True
            self.conn.send((P.RESPONSE_START, self.req.id, self.status, self.reason, self.headers, b"", True))
        self.req.done = True
        self.conn.send((P.RESPONSE_FILE, self.req.id, path, offset, length, st.st_dev, st.st_ino, False))
        return True


def make_base_environ(threads):
    return {
        "wsgi.version": (1, 0),
        "wsgi.errors": Errors(),
        "wsgi.multithread": threads > 1,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }


def make_server(app, threads):
    base = make_base_environ(threads)

    def serve_request(conn, req):
        if req.disconnected:
            # Node took it back before it started (it waited behind a stalled request and was
            # answered 503, or moved to another worker), or its client left while it waited:
            # the app never sees it, and Node is told so (started: False).
            conn.finish(req)
            try:
                conn.send((P.FINISHED, req.id, False))
            except Closed:
                pass
            return
        environ = req.environ
        environ.update(base)
        environ["wsgi.input"] = Input(conn, req)
        method = environ.get("REQUEST_METHOD", "")
        ex = Exchange(conn, req, method == "HEAD")
        ident = threading.get_ident()
        ACTIVE[ident] = (method, environ.get("REQUEST_URI", ""), time.monotonic())
        result = None
        try:
            result = app(environ, ex.start_response)
            if ex.status is None and type(result) is not list:
                # A generator app calls start_response on its first step.
                it = iter(result)
                first = next(it, None)
                if ex.status is None:
                    raise AssertionError("the application returned without calling start_response")
                if first is not None:
                    ex.send(first, True)
            elif type(result) is list and len(result) == 1:
                if ex.status is None:
                    raise AssertionError("the application returned without calling start_response")
                ex.send(result[0], False)
                it = ()
            elif type(result) is FileWrapper and ex.status is not None and ex.send_file(result):
                it = ()
            else:
                it = result
            for data in it:
                if type(data) is not bytes:
                    raise TypeError("the application yielded %s, not bytes" % type(data).__name__)
                if data:
                    ex.send(data, True)
            if not req.done:
                if ex.status is None:
                    raise AssertionError("the application returned without calling start_response")
                ex.send(b"", False)
        except Closed:
            raise
        except Disconnected:
            pass
        except BaseException as err:
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            if not req.disconnected and not req.done:
                req.done = True
                conn.send((P.REQUEST_ERROR, req.id, traceback.format_exc()))
        finally:
            try:
                if hasattr(result, "close"):
                    try:
                        result.close()
                    except Exception:
                        log("error in close() of the response iterable:\n" + traceback.format_exc())
            finally:
                ACTIVE.pop(ident, None)
                conn.finish(req)
                if not req.done and not conn.closed:
                    # After a disconnect: tell Node the app is done (close() ran).
                    try:
                        conn.send((P.FINISHED, req.id))
                    except Closed:
                        pass

    return serve_request


def dump_active(out=None):
    """The dump signal: each running request (method, URI, time) with its thread's stack."""
    out = out or sys.stderr
    frames = sys._current_frames()
    now = time.monotonic()
    for ident, (method, uri, start) in list(ACTIVE.items()):
        out.write(
            "gatehouse_worker: pid %d thread %d running %s %s for %.1fs:\n"
            % (os.getpid(), ident, method, uri, now - start)
        )
        frame = frames.get(ident)
        if frame is not None:
            out.write("".join(traceback.format_stack(frame)))
    out.flush()


def serve(app, socket_path, orphaned, dump_signal, threads):
    """Listen on socket_path and serve Node's connections until SIGTERM, then finish what
    runs (Node sends nothing new) and exit."""

    def on_dump(signum, frame):
        dump_active()
        faulthandler.dump_traceback(all_threads=True)

    signal.signal(dump_signal, on_dump)

    stopping = threading.Event()

    def on_term(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    # One thread: a plain lock (in C) does what the semaphore (in Python) does, for less.
    slots = threading.Lock() if threads == 1 else threading.BoundedSemaphore(threads)
    serve_request = make_server(app, threads)
    sock = listen(socket_path)
    sock.settimeout(0.5)
    conns = []
    while not stopping.is_set():
        try:
            client, _ = sock.accept()
        except OSError:
            # Timeout (or a signal): check whether Node is still there.
            if orphaned():
                break
            continue
        client.settimeout(None)
        conn = Connection(client, serve_request, threads, slots)
        t = threading.Thread(target=conn.serve, daemon=True)
        t.start()
        conns.append(t)
    # SIGTERM: finish what is running (Node stops sending), then exit.
    sock.close()
    try:
        os.unlink(socket_path)
    except OSError:
        pass
    while ACTIVE and not orphaned():
        time.sleep(0.05)
    sys.stderr.flush()
    os._exit(0)
