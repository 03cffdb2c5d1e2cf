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
import time
from time import monotonic

from . import protocol as P

#: How long a response may wait in the connection's output while the next pipelined request
#: runs: the flusher thread sends it then (a fast next request sends it sooner, with its own).
FLUSH_DELAY = 0.001
#: Between two requests run back to back, Node's frames are looked for (poll) only when the
#: last read is this old (seconds).
POLL_AFTER = 0.005
#: Output held back for batching is sent at once beyond this size.
FLUSH_SIZE = 64 * 1024


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
        #: Inline mode: frames not sent yet (see flush), their total size, and whether the
        #: flusher thread has been woken for them.
        self.out = []
        self.out_size = 0
        self.armed = False
        self.wake = threading.Lock()
        self.wake.acquire()
        self.last_read = 0.0
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    # -- writing ----------------------------------------------------------------------

    # Inline mode batches its writes (issue 13): the frames of the requests it runs back to
    # back leave in one write when it would block (reading, waiting for credit) or runs out
    # of requests, so Node gets one wake-up per batch, not one per request. A response must
    # not wait for the next request to finish, though (a slow one would hold it): when a
    # request starts while output is held, the flusher thread is woken and sends it within
    # FLUSH_DELAY (plus the GIL's switch interval if the app computes).

    def send(self, value):
        data = P.frame(value)
        with self.send_lock:
            if self.inline:
                self.out.append(data)
                self.out_size += len(data)
                if self.out_size < FLUSH_SIZE:
                    return
                data = self._take()
            self._sendall(data)

    def flush(self):
        """Send the frames held back (inline mode)."""
        with self.send_lock:
            if self.out:
                self._sendall(self._take())

    def _take(self):
        """The frames held back, as one bytes (the caller holds send_lock)."""
        data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
        self.out.clear()
        self.out_size = 0
        return data

    def _sendall(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            raise Closed()

    def arm_flusher(self):
        """A request starts while output is held: have the flusher send it soon."""
        if self.out and not self.armed:
            self.armed = True
            self.wake.release()

    def flusher(self):
        while True:
            self.wake.acquire()
            if self.closed:
                return
            time.sleep(FLUSH_DELAY)
            with self.send_lock:
                self.armed = False
            try:
                self.flush()
            except Closed:
                return

    # -- reading ----------------------------------------------------------------------

    def read_once(self, block=True):
        """Read what is there (waiting for it when block) and dispatch the frames."""
        if block:
            if self.out:
                self.flush()
            try:
                data = self.sock.recv(262144)
            except OSError:
                data = b""
            self.last_read = monotonic()
        else:
            # A poll object: no exception to raise and catch when nothing is there.
            self.last_read = monotonic()
            if not self.poller.poll(0):
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
        threading.Thread(target=self.flusher, name="gatehouse-flusher", daemon=True).start()
        try:
            self.serve_ready(ready)
        finally:
            self.closed = True
            if not self.armed:
                self.armed = True
                self.wake.release()

    def serve_ready(self, ready):
        while True:
            while ready:
                req = ready.popleft()
                if self.out:
                    self.arm_flusher()
                with self.slots:
                    self.serve_request(self, req)
                if ready and monotonic() - self.last_read >= POLL_AFTER:
                    # Requests waited behind that one: take in what Node sent meanwhile (it
                    # may have taken one back) before starting the next. Node takes back
                    # only what waits behind a request that has run for its stall time
                    # (pipeline_stall), so after a quick one there is nothing to look for.
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
