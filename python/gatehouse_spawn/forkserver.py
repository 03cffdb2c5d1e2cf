"""Gatehouse's CGI fork server: starts CGI scripts on behalf of a Node process.

Node's child_process.spawn forks the whole Node process, so every spawn costs in proportion
to Node's memory. This process stays small and starts scripts with posix_spawn (vfork +
execve), so a spawn costs the same whatever Node's size. Node keeps everything else:
limits, timeouts, kills (signals to the script's process group, see setsid below), and the
streams. Standard library only; Python >= 3.9.

    python3 -I -S forkserver.py SOCKET_PATH PARENT_PID

Connections on the Unix socket (one frame each, then raw bytes):
  run:   u32 length, then b"R", u32 token, u32 flags, u32 argc, u32 envc,
         then cwd, argv..., "NAME=value"... each ending in NUL.
         flags & 1: the body comes on a second connection (a "stdin" frame with the same
         token); otherwise stdin is /dev/null.
  stdin: u32 length, then b"I", u32 token.
The script gets the run connection as stdout, the stdin connection (or /dev/null) as stdin,
and a pipe we read as stderr; argv and the environment exactly as sent (execve, never a
shell); its own session and process group (setsid).

Why stdin is a second connection and not the same socket: when a process closes a Unix
stream socket with unread data in it (a script that answers without reading its body),
Linux reports ECONNRESET to the peer instead of EOF, and Node drops the output it still
buffers. A connection Node only reads from never has unread data.

Records to Node on our stdout: u8 type, u32 token, u32 length, then the payload.
  b"S" ready (token = our pid)
  b"P" started: u32 pid. Always before any other record for its token, so Node has the pid
       before it handles any output. (The child cannot write it on stdout itself before
       execve: posix_spawn runs no code of ours in the child, which is what makes it cheap.)
  b"F" not started: i32 errno, then the message (execve failed, or fork did)
  b"E" stderr bytes, b"C" stderr closed
  b"X" exited: i32 pid, i32 exit code (-1 when killed by a signal), i32 signal
Records carry the request's token rather than the pid: a pid is reused as soon as its
process is reaped, while a background child may hold the old stderr pipe open for longer.
EOF on our stdin (Node stops us) ends this process; scripts keep their own lifetimes and
their process groups are Node's to signal. When Node itself dies (SIGKILL, the OOM killer),
nobody is left to signal them: the kernel tells us (a parent-death signal), and we kill every
script's process group before we go, so that nothing Gatehouse started outlives it.
"""
import os
import selectors
import signal
import socket
import struct
import sys
import time

HEAD = struct.Struct("<I")
RUN = struct.Struct("<cIIII")
ATTACH = struct.Struct("<cI")
RECORD = struct.Struct("<cII")
EXIT = struct.Struct("<iii")
FAIL = struct.Struct("<i")
MAX_FRAME = 16 * 1024 * 1024
HAS_STDIN = 1
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGCHLD)
cwd_now = None

sel = selectors.DefaultSelector()
# pid -> (token, stderr read fd)
children = {}
# token -> (run connection, request) or (stdin connection, None): the half that came first
halves = {}


def emit(kind, token, payload=b""):
    data = RECORD.pack(kind, token, len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def find(path, env):
    """argv[0] as execvp would find it, but in the script's PATH rather than ours."""
    if b"/" in path:
        return path
    for d in env.get(b"PATH", b"/usr/local/bin:/usr/bin:/bin").split(b":"):
        candidate = os.path.join(d or b".", path)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(2, "No such file or directory in PATH", path)


def spawn(out, stdin, token, req):
    global cwd_now
    cwd, argv, env = req
    log_r, log_w = os.pipe()
    try:
        # posix_spawn is vfork + execve: no page tables copied, no Python code in the child,
        # and execve errors come back here. It has no cwd argument, so the child inherits
        # ours (nothing else here depends on it).
        if cwd != cwd_now:
            cwd_now = None
            os.chdir(cwd)
            cwd_now = cwd
        # The script's stdio must block, whatever our end of these sockets did.
        out.setblocking(True)
        if stdin is not None:
            stdin.setblocking(True)
        pid = os.posix_spawn(
            find(argv[0], env),
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, stdin.fileno() if stdin is not None else devnull, 0),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, log_w, 2),
            ],
            setsid=True,
            # Ignored dispositions survive execve; Python ignores SIGPIPE and SIGXFSZ.
            setsigdef=RESET_SIGNALS,
        )
    except OSError as e:
        os.close(log_r)
        os.close(log_w)
        message = (e.strerror or str(e)).encode(errors="replace")
        emit(b"F", token, FAIL.pack(e.errno or 0) + message)
        out.close()
        if stdin is not None:
            stdin.close()
        return
    os.close(log_w)
    os.set_blocking(log_r, False)
    children[pid] = (token, log_r)
    sel.register(log_r, selectors.EVENT_READ, ("log", token))
    emit(b"P", token, HEAD.pack(pid))
    out.close()
    if stdin is not None:
        stdin.close()


def forward_stderr(token, fd):
    """Read what is there; True once the pipe is at EOF (and closed)."""
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if not data:
            sel.unregister(fd)
            os.close(fd)
            emit(b"C", token)
            return True
        emit(b"E", token, data)


def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        entry = children.pop(pid, None)
        if entry is None:
            continue
        token, log_r = entry
        # Whatever the script wrote to stderr reaches Node before its exit status. A pipe
        # still open (a background child holds it) stays registered until its EOF.
        # (Its fd number may already belong to a newer script's pipe: check the token.)
        key = sel.get_map().get(log_r)
        if key is not None and key.data == ("log", token):
            forward_stderr(token, log_r)
        if os.WIFSIGNALED(status):
            code, sig = -1, os.WTERMSIG(status)
        else:
            code, sig = os.WEXITSTATUS(status), 0
        emit(b"X", token, EXIT.pack(pid, code, sig))


class Pending:
    __slots__ = ("sock", "buf", "need", "framed")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.need = HEAD.size
        self.framed = False


def on_frame(pending, frame):
    kind = frame[:1]
    if kind == b"R" and len(frame) >= RUN.size:
        _, token, flags, argc, envc = RUN.unpack_from(frame)
        parts = frame[RUN.size :].split(b"\0")
        if len(parts) != 2 + argc + envc or argc < 1:
            pending.sock.close()
            return
        cwd = parts[0]
        argv = parts[1 : 1 + argc]
        env = {}
        for item in parts[1 + argc : 1 + argc + envc]:
            name, _, value = item.partition(b"=")
            env[name] = value
        req = (cwd, argv, env)
        if not flags & HAS_STDIN:
            spawn(pending.sock, None, token, req)
            return
        other = halves.pop(token, None)
        if other is None:
            halves[token] = (pending.sock, req)
            sel.register(pending.sock, selectors.EVENT_READ, ("half", token))
        else:
            spawn(pending.sock, other[0], token, req)
    elif kind == b"I" and len(frame) == ATTACH.size:
        token = ATTACH.unpack_from(frame)[1]
        other = halves.pop(token, None)
        if other is None:
            # Not watched: Node sends the body only once the script has started, so nothing
            # arrives here before the run half does.
            halves[token] = (pending.sock, None)
        else:
            sel.unregister(other[0])
            spawn(other[0], pending.sock, token, other[1])
    else:
        pending.sock.close()


def on_readable(pending):
    try:
        # Never more than the frame: what follows (a request body) belongs to the script.
        data = pending.sock.recv(pending.need - len(pending.buf))
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        sel.unregister(pending.sock)
        pending.sock.close()
        return
    pending.buf += data
    if len(pending.buf) < pending.need:
        return
    if not pending.framed:
        length = HEAD.unpack(pending.buf)[0]
        if length < 1 or length > MAX_FRAME:
            sel.unregister(pending.sock)
            pending.sock.close()
            return
        pending.framed = True
        pending.need = length
        pending.buf = b""
        return
    sel.unregister(pending.sock)
    on_frame(pending, pending.buf)


def kill_scripts_and_exit():
    for pid in list(children):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)


def parent_died(parent, wait=0.5):
    """After EOF on stdin: did Node die (rather than close it to stop us)?

    A dying process closes its files before its children are given to a new parent, so
    the EOF can come a moment before getppid() changes: look again for a short while.
    """
    deadline = time.monotonic() + wait
    while os.getppid() == parent:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def die_with_parent(parent):
    """Ask the kernel for SIGTERM when Node dies; then kill every script and exit.

    posix_spawn runs no code of ours in the child, so the scripts cannot ask for the same:
    their process groups are killed from here. The parent is checked again after the
    prctl, since Node may have died before it took effect.
    """

    def on_parent_death(*_):
        if os.getppid() == parent:
            return  # a SIGTERM for the whole process group: Node decides when we stop
        kill_scripts_and_exit()

    signal.signal(signal.SIGTERM, on_parent_death)
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: Node's stop (EOF on stdin) still ends us
    if os.getppid() != parent:
        on_parent_death()


def main():
    global devnull
    path = sys.argv[1]
    parent = int(sys.argv[2])
    die_with_parent(parent)
    devnull = os.open(os.devnull, os.O_RDWR)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1024)
    listener.setblocking(False)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # SIGINT (and SIGTERM, see die_with_parent) from a terminal: Node decides when we stop
    # (EOF on stdin).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sel.register(listener, selectors.EVENT_READ, ("accept", None))
    sel.register(wake_r, selectors.EVENT_READ, ("wake", None))
    sel.register(0, selectors.EVENT_READ, ("parent", None))
    emit(b"S", os.getpid())
    while True:
        registered = sel.get_map()
        for key, _ in sel.select():
            # An earlier event of this batch may have closed this fd (and a new pipe may
            # have reused its number): act only on keys that are still current.
            if registered.get(key.fd) is not key:
                continue
            what, arg = key.data
            if what == "accept":
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    p = Pending(conn)
                    sel.register(conn, selectors.EVENT_READ, ("frame", p))
            elif what == "frame":
                on_readable(arg)
            elif what == "log":
                forward_stderr(arg, key.fd)
            elif what == "wake":
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                reap()
            elif what == "half":
                # A run half whose stdin half has not come: Node sends nothing more on it,
                # so readable means it closed. Forget both.
                sel.unregister(key.fileobj)
                key.fileobj.close()
                other = halves.pop(arg, None)
                if other is not None and other[0] is not key.fileobj:
                    other[0].close()
            elif what == "parent":
                if not os.read(0, 512):
                    if parent_died(parent):
                        kill_scripts_and_exit()
                    return


devnull = -1

if __name__ == "__main__":
    main()
