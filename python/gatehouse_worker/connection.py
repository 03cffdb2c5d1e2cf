"""What both interfaces' workers share besides the frames: the socket they listen on, the
log, AppError; and the threaded connection the WSGI worker serves each Node connection
with (the ASGI worker has its asyncio one in asgi.py).

The threaded connection: frames in, frames out, per-request flow control. With one thread
(``--threads 1``) the thread that runs the app also reads the socket when the app waits
for something (body bytes, response credit): no thread hand-off per request. With more
threads a reader thread dispatches frames and N threads run requests.
"""
import collections
import json
import os
import select
import socket
import sys
import threading

from . import protocol as P


def log(message):
    sys.stderr.write("gatehouse_worker[%d]: %s\n" % (os.getpid(), message))
    sys.stderr.flush()


def report_start_failure(message, tb=""):
    """Why the worker cannot start, on one stderr line (JSON) that Node's pool recognizes: it
    logs the traceback once for all the workers that fail alike (gateways/python/pool.ts)."""
    record = json.dumps({"message": message, "traceback": tb.rstrip()})
    sys.stderr.write("gatehouse_worker[%d]: start failed: %s\n" % (os.getpid(), record))
    sys.stderr.flush()


class AppError(Exception):
    """The app broke its interface's rules (PEP 3333, ASGI 3.0): a 500, and the log says why."""


class Closed(Exception):
    """Node closed the connection."""


class Disconnected(OSError):
    """The HTTP client went away (Node sent HTTP_DISCONNECT)."""


class Request:
    __slots__ = (
        "id",
        "environ",
        "chunks",
        "more_body",
        "received",
        "consumed",
        "granted",
        "credit",
        "disconnected",
        "done",
    )

    def __init__(self, rid, environ, body, more_body, response_window, request_window):
        self.id = rid
        self.environ = environ
        self.chunks = collections.deque()
        if body:
            self.chunks.append(body)
        self.more_body = more_body
        self.received = len(body)
        self.consumed = 0
        expect = environ.get("HTTP_EXPECT")
        # Node sends the first window unasked, except after Expect: 100-continue: then
        # nothing comes until the app reads (and Node answers 100 Continue then).
        self.granted = 0 if expect is not None and expect.lower() == "100-continue" else request_window
        self.credit = response_window
        self.disconnected = False
        #: The request's last frame was sent.
        self.done = False


class Connection:
    def __init__(self, sock, serve_request, threads, slots):
        self.sock = sock
        self.serve_request = serve_request
        self.threads = threads
        self.slots = slots
        self.requests = {}
        self.frames = P.FrameSplitter(self.dispatch)
        self.closed = False
        self.send_lock = threading.Lock()
        self.cond = threading.Condition()
        self.inline = threads == 1
        self.ready = collections.deque()

    # -- writing ----------------------------------------------------------------------

    def send(self, value):
        data = P.frame(value)
        with self.send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                raise Closed()

    # -- reading ----------------------------------------------------------------------

    def read_once(self, block=True):
        """Read what is there (waiting for it when block) and dispatch the frames."""
        if not block:
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                return
        try:
            data = self.sock.recv(262144)
        except OSError:
            data = b""
        if not data:
            self.closed = True
            self.on_closed()
            raise Closed()
        self.frames.feed(data)

    def dispatch(self, f):
        kind = f[0]
        if kind == P.HTTP_REQUEST:
            req = Request(f[1], f[2], f[3], f[4], f[5], P.REQUEST_WINDOW)
            self.requests[req.id] = req
            if self.inline:
                self.ready.append(req)
            else:
                self.queue.append(req)
                self.work_ready.release()
            return
        req = self.requests.get(f[1])
        if kind == P.HTTP_BODY:
            if req is not None:
                if f[2]:
                    req.chunks.append(f[2])
                    req.received += len(f[2])
                req.more_body = f[3]
        elif kind == P.RESPONSE_CREDIT:
            if req is not None:
                req.credit += f[2]
        elif kind == P.HTTP_DISCONNECT:
            if req is not None:
                req.disconnected = True
        elif kind == P.LIFESPAN_STARTUP:
            self.send((P.LIFESPAN_RESULT, 0, "startup", True, ""))
        elif kind == P.LIFESPAN_SHUTDOWN:
            self.send((P.LIFESPAN_RESULT, 0, "shutdown", True, ""))
        elif kind == P.WS_CONNECT:
            # A WSGI app has no WebSockets: refuse (Node answers 403).
            self.send((P.WS_CLOSE, f[1], 1000, ""))
        elif kind in (P.WS_RECEIVE, P.WS_DISCONNECT):
            pass
        else:
            raise P.ProtocolError("unexpected frame type %r" % (kind,))

    def on_closed(self):
        for req in self.requests.values():
            req.disconnected = True

    def wait(self, req, ready):
        """Block until ready() is true (body, credit or disconnect arrived)."""
        if self.inline:
            while not ready():
                self.read_once()
        else:
            with self.cond:
                while not ready():
                    if self.closed:
                        raise Closed()
                    self.cond.wait()

    def poll(self):
        """Inline mode: take in frames already there (a disconnect) without waiting."""
        if self.inline and not self.closed:
            self.read_once(block=False)

    def finish(self, req):
        del self.requests[req.id]

    # -- serving ----------------------------------------------------------------------

    def serve(self):
        try:
            self.send((P.HELLO, 0, P.VERSION, os.getpid(), P.REQUEST_WINDOW, self.threads))
            if self.inline:
                self.serve_inline()
            else:
                self.serve_threaded()
        except (Closed, ConnectionError):
            pass
        except P.ProtocolError as err:
            log("protocol error from Node, closing the connection: %s" % err)
        finally:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def serve_inline(self):
        ready = self.ready
        while True:
            while ready:
                req = ready.popleft()
                with self.slots:
                    self.serve_request(self, req)
                if ready:
                    # Requests waited behind that one: take in what Node sent meanwhile (it
                    # may have taken one back) before starting the next.
                    self.poll()
            self.read_once()

    def serve_threaded(self):
        self.queue = collections.deque()
        self.work_ready = threading.Semaphore(0)
        workers = []
        for _ in range(self.threads):
            t = threading.Thread(target=self.work, daemon=True)
            t.start()
            workers.append(t)
        try:
            while True:
                try:
                    self.read_once()
                finally:
                    with self.cond:
                        self.cond.notify_all()
        finally:
            for _ in workers:
                self.work_ready.release()

    def work(self):
        while True:
            self.work_ready.acquire()
            if self.closed and not self.queue:
                return
            try:
                req = self.queue.popleft()
            except IndexError:
                continue
            try:
                with self.slots:
                    self.serve_request(self, req)
            except Closed:
                pass


def listen(path):
    """Bind and listen on the Unix socket PATH (a stale file there is replaced)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(64)
    return sock
