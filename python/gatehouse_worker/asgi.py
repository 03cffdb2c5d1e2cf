"""ASGI 3.0 over the bridge (docs/asgi.md, docs/python-bridge.md).

One asyncio loop per worker process (uvloop when it can be imported), any number of
requests and WebSocket sessions at once over each Node connection, told apart by id.

HTTP: Node sends ASGI_REQUEST (the scope, ready to use), then HTTP_BODY chunks within the
credit this side grants as the app calls receive(); the response goes out as RESPONSE_START
(held back until the first body message, so a small response is one frame) and
RESPONSE_BODY frames within the credit Node gives back as the client takes the bytes.
HTTP_DISCONNECT makes receive() return http.disconnect and send() raise ClientDisconnected.
CANCEL (the request ran past its timeout) logs the task's stack and cancels it.

WebSocket: WS_CONNECT (the scope) starts the app; websocket.accept/close/send and the
websocket.http.response denial map to WS_ACCEPT/WS_CLOSE/WS_SEND and RESPONSE_START/BODY.
Messages from the client come as WS_RECEIVE within granted credit; WS_DISCONNECT carries
the close code. Every session ends with FINISHED (or REQUEST_ERROR when the app failed).

Lifespan runs here, before the socket listens: a startup failure exits the worker with
status 3 (Node reports it and `gatehouse serve` stops); shutdown runs after the last
request on SIGTERM.
"""
import asyncio
import collections
import faulthandler
import http
import os
import signal
import sys
import time
import traceback

from . import protocol as P
from .connection import AppError, listen, log, report_start_failure

ASGI_REQUEST = P.ASGI_REQUEST
CANCEL = P.CANCEL

REASONS = {s.value: s.phrase for s in http.HTTPStatus}
MAX_PIECE = 256 * 1024
#: Requests and sessions one worker takes at once (HELLO's capacity; Node's pool decides).
CAPACITY = 1000

EXIT_LIFESPAN_FAILED = 3


class ClientDisconnected(OSError):
    """send() after the client went away (ASGI: a server-specific subclass of OSError)."""


def _latin1_headers(headers, what):
    out = []
    try:
        for name, value in headers:
            out.append((bytes(name).decode("latin-1"), bytes(value).decode("latin-1")))
    except (TypeError, ValueError):
        raise AppError("%s headers must be pairs of bytes, got %r" % (what, headers))
    return out


def _body_bytes(body):
    if type(body) is bytes:
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise AppError("body must be bytes, got %s" % type(body).__name__)


class Cycle:
    """What HTTP requests and WebSocket sessions share: credit waits, running the app, the end.

    A subclass says what the app's exception (failed(), called while it is handled) and
    its return without a last frame (last_frame()) send to Node.
    """

    __slots__ = ()

    async def run(self, app):
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.cancelled:
                raise
        except BaseException as err:
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            self.failed()
        finally:
            self.conn.cycles.pop(self.id, None)
            if not self.ended:
                self.ended = True
                self.conn.write(self.last_frame())

    def _wake(self):
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    async def _wait(self):
        w = self.waiter
        if w is None:
            w = self.waiter = self.conn.loop.create_future()
        await w


class HttpCycle(Cycle):
    __slots__ = (
        "conn",
        "id",
        "scope",
        "chunks",
        "more_body",
        "final_given",
        "granted",
        "consumed",
        "credit",
        "disconnected",
        "cancelled",
        "started",
        "start_sent",
        "complete",
        "ended",
        "status",
        "headers",
        "head",
        "waiter",
        "task",
        "since",
    )

    def __init__(self, conn, rid, scope, body, more_body, response_window, request_window):
        self.conn = conn
        self.id = rid
        self.scope = scope
        self.chunks = collections.deque()
        if body:
            self.chunks.append(body)
        self.more_body = more_body
        self.final_given = False
        self.granted = request_window
        self.consumed = 0
        self.credit = response_window
        self.disconnected = False
        self.cancelled = False
        self.started = False
        self.start_sent = False
        #: The app sent its last body message.
        self.complete = False
        #: This side sent the request's last frame.
        self.ended = False
        self.status = 200
        self.headers = None
        self.head = scope["method"] == "HEAD"
        self.waiter = None
        self.task = None
        self.since = time.monotonic()

    # -- frames from Node ---------------------------------------------------------------

    def on_body(self, body, more_body):
        if body:
            self.chunks.append(body)
        self.more_body = more_body
        self._wake()

    def on_credit(self, n):
        self.credit += n
        self._wake()

    def on_disconnect(self):
        self.disconnected = True
        self._wake()

    # -- the app's receive/send -------------------------------------------------------

    async def receive(self):
        while True:
            chunks = self.chunks
            if chunks:
                body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.consumed += len(body)
                more = self.more_body
                if more:
                    self._grant()
                else:
                    self.final_given = True
                return {"type": "http.request", "body": body, "more_body": more}
            if self.disconnected or self.complete:
                return {"type": "http.disconnect"}
            if not self.more_body:
                if not self.final_given:
                    self.final_given = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            else:
                self._grant()
            await self._wait()

    def _grant(self):
        if not self.disconnected:
            grant = P.grant_due(self.granted, self.consumed)
            if grant:
                self.granted += grant
                self.conn.write((P.REQUEST_CREDIT, self.id, grant))

    async def send(self, message):
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started:
                raise AppError("http.response.body before http.response.start")
            if self.complete:
                raise AppError("http.response.body after the response was complete")
            if self.disconnected:
                raise ClientDisconnected("client disconnected")
            body = message.get("body", b"")
            if type(body) is not bytes:
                body = _body_bytes(body)
            more = message.get("more_body", False)
            if self.head:
                body = b""
            if not more:
                self.complete = True
                self._wake()
            await self._send_body(body, more)
        elif kind == "http.response.start":
            if self.started:
                raise AppError("http.response.start sent twice")
            if self.disconnected:
                raise ClientDisconnected("client disconnected")
            status = message["status"]
            # Only the type is checked here: whether it is a final status (200-599) is Node's
            # one rule for every gateway (502 otherwise).
            if type(status) is not int or not 0 <= status <= 0x7FFFFFFF:
                raise AppError("http.response.start status must be an int, got %r" % (status,))
            self.started = True
            self.status = status
            self.headers = _latin1_headers(message.get("headers", ()), "http.response.start")
        elif kind == "http.response.early_hint":
            # Links for a 103 Early Hints; once the final head is decided they would come too late.
            try:
                links = tuple(bytes(link).decode("latin-1") for link in message.get("links", ()))
            except (TypeError, ValueError):
                raise AppError("http.response.early_hint links must be bytes, got %r" % (message.get("links"),))
            if links and not self.started and not self.disconnected:
                self.conn.write((P.EARLY_HINTS, self.id, links))
        else:
            raise AppError("unexpected ASGI message %r on an HTTP connection" % (kind,))

    async def _send_body(self, data, more):
        conn = self.conn
        if not self.start_sent:
            self.start_sent = True
            n = len(data)
            if n <= self.credit and n <= MAX_PIECE:
                self.credit -= n
                self.ended = not more
                conn.write(
                    (P.RESPONSE_START, self.id, self.status, REASONS.get(self.status, ""), self.headers, data, more)
                )
                return
            conn.write(
                (P.RESPONSE_START, self.id, self.status, REASONS.get(self.status, ""), self.headers, b"", True)
            )
        while True:
            if self.disconnected:
                raise ClientDisconnected("client disconnected")
            n = len(data)
            if n <= self.credit and n <= MAX_PIECE:
                self.credit -= n
                if data or not more:
                    self.ended = not more
                    conn.write((P.RESPONSE_BODY, self.id, data, more))
                return
            if self.credit <= 0:
                await self._wait()
                continue
            n = min(self.credit, MAX_PIECE)
            piece = data[:n]
            data = data[n:]
            self.credit -= n
            conn.write((P.RESPONSE_BODY, self.id, piece, True))

    # -- running ------------------------------------------------------------------------

    def failed(self):
        if self.disconnected or self.cancelled:
            pass
        elif not self.ended:
            self.ended = True
            self.conn.write((P.REQUEST_ERROR, self.id, traceback.format_exc()))
        else:
            log(
                "%s %s: exception after the response was complete:\n%s"
                % (self.scope["method"], self.scope["path"], traceback.format_exc().rstrip())
            )

    def last_frame(self):
        if self.disconnected or self.cancelled:
            return (P.FINISHED, self.id)
        if not self.started:
            return (P.REQUEST_ERROR, self.id, "the ASGI application returned without sending a response")
        return (P.REQUEST_ERROR, self.id, "the ASGI application returned before the response was complete")

    def describe(self):
        s = self.scope
        qs = s["query_string"]
        return "%s %s%s" % (s["method"], s["path"], ("?" + qs.decode("latin-1")) if qs else "")


# WebSocket session states
CONNECTING, ACCEPTED, RESPONDING, CLOSED = range(4)


class WsCycle(Cycle):
    __slots__ = (
        "conn",
        "id",
        "scope",
        "state",
        "connect_given",
        "messages",
        "close_code",
        "disconnected",
        "granted",
        "consumed",
        "credit",
        "waiter",
        "task",
        "cancelled",
        "ended",
        "since",
    )

    def __init__(self, conn, rid, scope):
        self.conn = conn
        self.id = rid
        self.scope = scope
        self.state = CONNECTING
        self.connect_given = False
        self.messages = collections.deque()
        self.close_code = 1005
        self.disconnected = False
        # Node may send this many message bytes before the app takes any.
        self.granted = P.REQUEST_WINDOW
        self.consumed = 0
        self.credit = P.REQUEST_WINDOW
        self.waiter = None
        self.task = None
        self.cancelled = False
        self.ended = False
        self.since = time.monotonic()

    def on_receive(self, data, text):
        self.messages.append((data, text))
        self._wake()

    def on_disconnect(self, code):
        self.disconnected = True
        self.close_code = code
        self.state = CLOSED
        self._wake()

    def on_credit(self, n):
        self.credit += n
        self._wake()

    async def receive(self):
        if not self.connect_given:
            self.connect_given = True
            return {"type": "websocket.connect"}
        while True:
            if self.messages:
                data, text = self.messages.popleft()
                self.consumed += len(data) if data is not None else len(text.encode("utf-8"))
                if not self.disconnected:
                    grant = P.grant_due(self.granted, self.consumed)
                    if grant:
                        self.granted += grant
                        self.conn.write((P.REQUEST_CREDIT, self.id, grant))
                if text is not None:
                    return {"type": "websocket.receive", "text": text}
                return {"type": "websocket.receive", "bytes": data}
            if self.disconnected:
                return {"type": "websocket.disconnect", "code": self.close_code}
            await self._wait()

    async def send(self, message):
        kind = message["type"]
        if self.disconnected:
            raise ClientDisconnected("client disconnected (code %d)" % self.close_code)
        state = self.state
        if kind == "websocket.send":
            if state != ACCEPTED:
                raise AppError("websocket.send before websocket.accept or after websocket.close")
            text = message.get("text")
            data = message.get("bytes")
            if (text is None) == (data is None):
                raise AppError("websocket.send carries exactly one of bytes and text")
            if text is not None:
                if type(text) is not str:
                    raise AppError("websocket.send text must be str")
                size = len(text)
            else:
                data = _body_bytes(data)
                size = len(data)
            while self.credit <= 0:
                await self._wait()
                if self.disconnected:
                    raise ClientDisconnected("client disconnected (code %d)" % self.close_code)
            self.credit -= size
            self.conn.write((P.WS_SEND, self.id, data, text))
        elif kind == "websocket.accept":
            if state != CONNECTING:
                raise AppError("websocket.accept in the wrong state")
            sub = message.get("subprotocol")
            if sub is not None and type(sub) is not str:
                raise AppError("websocket.accept subprotocol must be str or None")
            headers = _latin1_headers(message.get("headers", ()), "websocket.accept")
            self.state = ACCEPTED
            self.conn.write((P.WS_ACCEPT, self.id, sub, headers))
        elif kind == "websocket.close":
            if state == CLOSED:
                raise AppError("websocket.close after the connection was closed")
            if state == RESPONDING:
                raise AppError("websocket.close during a websocket.http.response")
            code = message.get("code", 1000)
            reason = message.get("reason") or ""
            if type(code) is not int or type(reason) is not str:
                raise AppError("websocket.close code must be int and reason str")
            self.state = CLOSED
            self.conn.write((P.WS_CLOSE, self.id, code, reason))
        elif kind == "websocket.http.response.start":
            if state != CONNECTING:
                raise AppError("websocket.http.response.start after the handshake")
            status = message["status"]
            if type(status) is not int or not 100 <= status <= 999:
                raise AppError("websocket.http.response.start status must be an int")
            headers = _latin1_headers(message.get("headers", ()), "websocket.http.response.start")
            self.state = RESPONDING
            self.conn.write((P.RESPONSE_START, self.id, status, REASONS.get(status, ""), headers, b"", True))
        elif kind == "websocket.http.response.body":
            if state != RESPONDING:
                raise AppError("websocket.http.response.body without websocket.http.response.start")
            body = _body_bytes(message.get("body", b""))
            more = message.get("more_body", False)
            if not more:
                self.state = CLOSED
            self.conn.write((P.RESPONSE_BODY, self.id, body, more))
        else:
            raise AppError("unexpected ASGI message %r on a WebSocket" % (kind,))

    def failed(self):
        if not self.disconnected and not self.ended:
            self.ended = True
            self.conn.write((P.REQUEST_ERROR, self.id, traceback.format_exc()))

    def last_frame(self):
        if self.state == CONNECTING and not self.disconnected and not self.cancelled:
            return (P.REQUEST_ERROR, self.id, "the ASGI application returned without accepting or closing")
        return (P.FINISHED, self.id)

    def describe(self):
        return "WebSocket %s" % self.scope["path"]


class NodeConnection(asyncio.Protocol):
    """One connection from the Node front."""

    def __init__(self, worker):
        self.worker = worker
        self.app = worker.app
        self.state = worker.state
        self.loop = worker.loop
        self.cycles = {}
        self.frames = P.FrameSplitter(self.dispatch)
        self.transport = None
        self.closed = False
        self.wbuf = []
        self.flush_scheduled = False

    def connection_made(self, transport):
        self.transport = transport
        self.worker.connections.add(self)
        transport.write(P.frame((P.HELLO, 0, P.VERSION, os.getpid(), P.REQUEST_WINDOW, CAPACITY)))

    def write(self, value):
        """Queue a frame; what the loop's current pass produces goes out in one write."""
        if not self.closed:
            payload = P.dumps(value)
            self.wbuf.append(P.pack_len(len(payload)))
            self.wbuf.append(payload)
            if not self.flush_scheduled:
                self.flush_scheduled = True
                self.loop.call_soon(self.flush)

    def flush(self):
        self.flush_scheduled = False
        if self.wbuf and not self.closed:
            data = b"".join(self.wbuf)
            self.wbuf.clear()
            self.transport.write(data)

    def data_received(self, data):
        try:
            self.frames.feed(data)
        except P.FrameLengthError as err:
            log("protocol error from Node (%s): closing the connection" % err)
            self.transport.close()
        except Exception:
            log("protocol error from Node, closing the connection:\n" + traceback.format_exc())
            self.transport.close()

    def dispatch(self, f):
        kind = f[0]
        if kind == ASGI_REQUEST:
            scope = f[2]
            if STRIP_ROOT_PATH:
                _exclude_root_path(scope)
            scope["headers"] = list(scope["headers"])
            scope["state"] = self.state.copy()
            # The Early Hints extension (as Hypercorn offers it): Node relays them as a 103.
            extensions = {"http.response.early_hint": {}}
            tls = scope.pop("tls", None)
            if tls is not None:
                extensions["tls"] = tls
            scope["extensions"] = extensions
            cycle = HttpCycle(self, f[1], scope, f[3], f[4], f[5], f[6])
            self.cycles[cycle.id] = cycle
            cycle.task = self.loop.create_task(cycle.run(self.app))
            return
        cycle = self.cycles.get(f[1])
        if cycle is None:
            # The request ended on this side while the frame was on its way.
            if kind not in (P.HTTP_BODY, P.HTTP_DISCONNECT, P.RESPONSE_CREDIT, CANCEL, P.WS_RECEIVE, P.WS_DISCONNECT):
                if kind == P.WS_CONNECT:
                    self.start_websocket(f)
                elif kind in (P.LIFESPAN_STARTUP, P.LIFESPAN_SHUTDOWN):
                    # Lifespan runs inside the worker (before it listens, after it stops).
                    phase = "startup" if kind == P.LIFESPAN_STARTUP else "shutdown"
                    self.write((P.LIFESPAN_RESULT, 0, phase, True, ""))
                else:
                    raise P.ProtocolError("unexpected frame type %r" % (kind,))
            return
        if kind == P.HTTP_BODY:
            cycle.on_body(f[2], f[3])
        elif kind == P.RESPONSE_CREDIT:
            cycle.on_credit(f[2])
        elif kind == P.WS_RECEIVE:
            cycle.on_receive(f[2], f[3])
        elif kind == P.HTTP_DISCONNECT:
            cycle.on_disconnect()
        elif kind == P.WS_DISCONNECT:
            cycle.on_disconnect(f[2])
        elif kind == CANCEL:
            self.cancel(cycle)
        else:
            raise P.ProtocolError("unexpected frame type %r for a running request" % (kind,))

    def start_websocket(self, f):
        scope = f[2]
        if STRIP_ROOT_PATH:
            _exclude_root_path(scope)
        scope["headers"] = list(scope["headers"])
        scope["subprotocols"] = list(scope.get("subprotocols", ()))
        tls = scope.pop("tls", None)
        if tls is not None:
            scope["extensions"]["tls"] = tls
        scope["state"] = self.state.copy()
        cycle = WsCycle(self, f[1], scope)
        self.cycles[cycle.id] = cycle
        cycle.task = self.loop.create_task(cycle.run(self.app))

    def cancel(self, cycle):
        """The request ran past its timeout (Node answers 504): log where it is, cancel it."""
        lines = ["%s ran past its timeout after %.1fs; cancelling it. Its stack:" % (cycle.describe(), time.monotonic() - cycle.since)]
        task = cycle.task
        if task is not None:
            lines.append(_task_stack(task))
        log("\n".join(lines).rstrip())
        cycle.cancelled = True
        if isinstance(cycle, HttpCycle):
            cycle.disconnected = True
        else:
            cycle.disconnected = True
            cycle.state = CLOSED
        cycle._wake()
        if task is not None:
            task.cancel()

    def connection_lost(self, exc):
        self.closed = True
        self.worker.connections.discard(self)
        for cycle in list(self.cycles.values()):
            if isinstance(cycle, HttpCycle):
                cycle.on_disconnect()
            else:
                cycle.on_disconnect(1006)

    def close_websockets(self, code):
        """Shutdown: close every open WebSocket (the app sees websocket.disconnect)."""
        for cycle in list(self.cycles.values()):
            if isinstance(cycle, WsCycle) and not cycle.disconnected:
                if cycle.state == ACCEPTED:
                    self.write((P.WS_CLOSE, cycle.id, code, "server shutting down"))
                cycle.on_disconnect(code)


def _task_stack(task):
    import io

    out = io.StringIO()
    try:
        task.print_stack(file=out)
    except Exception:
        out.write("(no stack: %s)\n" % traceback.format_exc())
    return out.getvalue()


class Lifespan:
    """The lifespan scope: startup before the worker listens, shutdown after it stops."""

    def __init__(self, app, loop):
        self.app = app
        self.loop = loop
        self.state = {}
        self.supported = True
        self.events = asyncio.Queue()
        self.startup_result = loop.create_future()
        self.shutdown_result = loop.create_future()
        self.task = None
        self.error = None
        # The app raised after lifespan.startup.failed: the report of the failure carries it.
        self.startup_traceback = ""

    async def receive(self):
        return await self.events.get()

    async def send(self, message):
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._set(self.startup_result, (True, ""))
        elif kind == "lifespan.startup.failed":
            self._set(self.startup_result, (False, message.get("message", "")))
        elif kind == "lifespan.shutdown.complete":
            self._set(self.shutdown_result, (True, ""))
        elif kind == "lifespan.shutdown.failed":
            self._set(self.shutdown_result, (False, message.get("message", "")))
        else:
            raise AppError("unexpected ASGI message %r on the lifespan scope" % (kind,))

    @staticmethod
    def _set(fut, value):
        if not fut.done():
            fut.set_result(value)

    async def main(self):
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as err:
            if isinstance(err, asyncio.CancelledError):
                raise
            if not self.startup_result.done():
                # Raising on the lifespan scope means "not supported" (Django does).
                self.supported = False
                self.error = "%s: %s" % (type(err).__name__, err)
                self._set(self.startup_result, (True, ""))
            elif not self.shutdown_result.done() and self.shutdown_requested:
                self._set(self.shutdown_result, (False, traceback.format_exc()))
            elif not self.startup_result.result()[0]:
                self.startup_traceback = traceback.format_exc()
            else:
                log("the lifespan task failed:\n" + traceback.format_exc().rstrip())
        finally:
            if not self.startup_result.done():
                # Returned without a word on startup: taken as "no lifespan" too.
                self.supported = False
                self.error = "the application returned from the lifespan scope"
                self._set(self.startup_result, (True, ""))
            self._set(self.shutdown_result, (True, ""))

    shutdown_requested = False

    async def startup(self):
        self.task = self.loop.create_task(self.main())
        await self.events.put({"type": "lifespan.startup"})
        return await self.startup_result

    async def shutdown(self):
        if not self.supported or self.task is None or self.task.done():
            return True, ""
        self.shutdown_requested = True
        await self.events.put({"type": "lifespan.shutdown"})
        return await self.shutdown_result


#: How often a worker holding requests tells Node its loop is alive (seconds).
HEARTBEAT_INTERVAL = 0.1
HEARTBEAT_FRAME = (P.HEARTBEAT, 0)


class Worker:
    def __init__(self, app, loop, socket_path, orphaned):
        self.app = app
        self.loop = loop
        self.socket_path = socket_path
        self.orphaned = orphaned
        self.connections = set()
        self.state = {}
        self.stopping = asyncio.Event()

    def active(self):
        return [c for conn in self.connections for c in conn.cycles.values()]

    def dump(self):
        """The dump signal: every running request with its task's stack."""
        now = time.monotonic()
        out = []
        for c in self.active():
            out.append(
                "gatehouse_worker: pid %d running %s for %.1fs:\n%s"
                % (os.getpid(), c.describe(), now - c.since, _task_stack(c.task) if c.task else "")
            )
        sys.stderr.write("".join(out))
        sys.stderr.flush()

    async def main(self):
        lifespan = Lifespan(self.app, self.loop)
        ok, message = await lifespan.startup()
        if not ok:
            # An app that raises after lifespan.startup.failed (Starlette) does it at once.
            await asyncio.wait([lifespan.task], timeout=0.5)
            message = (message or "").strip()
            tb = lifespan.startup_traceback
            if "\n" in message:
                # A traceback as the message (Starlette's): its last line is the cause.
                tb = tb or message
                message = message.splitlines()[-1].strip()
            report_start_failure("ASGI lifespan startup failed: %s" % (message or "(no message)"), tb)
            return EXIT_LIFESPAN_FAILED
        if not lifespan.supported:
            log("the ASGI application does not support lifespan (%s): running without startup/shutdown" % lifespan.error)
        self.state = lifespan.state
        loop = self.loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        server = await loop.create_unix_server(lambda: NodeConnection(self), sock=listen(self.socket_path), backlog=64)
        ticks = 0
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), HEARTBEAT_INTERVAL)
            except asyncio.TimeoutError:
                # A loop blocked in the app's synchronous code sends none: Node then
                # queues nothing more on this worker (its stall_timeout).
                for conn in self.connections:
                    if conn.cycles:
                        conn.write(HEARTBEAT_FRAME)
                ticks += 1
                if ticks % 5 == 0 and self.orphaned():
                    os._exit(0)
        # SIGTERM: no new connections; open WebSockets are closed (1012, service restart);
        # requests in flight finish (Node sends no new ones), then lifespan shutdown.
        server.close()
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        for conn in list(self.connections):
            conn.close_websockets(1012)
        stop_started = time.monotonic()
        while self.active() and not self.orphaned():
            # An HTTP request whose client is gone has no one to answer: after a second to
            # end on its own it is cancelled rather than waited for (an app that ignores
            # http.disconnect would hold the stop until Node kills the worker).
            if time.monotonic() - stop_started > 1.0:
                for c in self.active():
                    if type(c) is HttpCycle and c.disconnected and not c.cancelled and c.task is not None:
                        c.cancelled = True
                        c.task.cancel()
            await asyncio.sleep(0.05)
        ok, message = await lifespan.shutdown()
        if not ok:
            log("ASGI lifespan shutdown failed: %s" % (message or "(no message)"))
        for conn in list(self.connections):
            conn.flush()
            conn.transport.close()
        return 0


#: `path_includes_root_path = "auto"` with a Starlette older than 0.33 (Debian's 0.26, under
#: FastAPI 0.92): such an app routes on `path` as what follows `root_path` (ASGI's older
#: convention), so the worker takes root_path off the path Node sends (issue 17 item 6).
STRIP_ROOT_PATH = False


def _exclude_root_path(scope):
    root = scope.get("root_path")
    path = scope["path"]
    if root and path.startswith(root):
        scope["path"] = path[len(root) :] or "/"


def old_starlette():
    """The version of the Starlette the app imported, when it is older than 0.33; else None."""
    starlette = sys.modules.get("starlette")
    version = getattr(starlette, "__version__", None)
    if type(version) is not str:
        return None
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return None
    return version if (major, minor) < (0, 33) else None


def serve(app, socket_path, orphaned, dump_signal, root_path_auto=False):
    global STRIP_ROOT_PATH
    if root_path_auto:
        version = old_starlette()
        if version is not None:
            STRIP_ROOT_PATH = True
            log("Starlette %s (before 0.33): path excludes root_path (path_includes_root_path = auto)" % version)
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(app, loop, socket_path, orphaned)

    def on_dump(signum, frame):
        worker.dump()
        faulthandler.dump_traceback(all_threads=True)

    signal.signal(dump_signal, on_dump)
    status = loop.run_until_complete(worker.main())
    sys.stderr.flush()
    os._exit(status)
