"""The Python half of the bridge alone: CPU microseconds per request of a WSGI worker
connection, with this script standing in for Node (it pipelines pre-encoded request frames,
WINDOW at a time, over a socketpair). No HTTP, no Node: what is left is the worker's own cost,
so a change to python/gatehouse_worker can be measured (and profiled) on a noisy machine.

usage: /usr/bin/python3 bench/bridge_python.py [-n REQUESTS] [-w WINDOW] [--profile OUT]
  --profile OUT   run the worker side under cProfile and write its stats to OUT
                  (read them with: python3 -m pstats OUT, then `sort tottime`, `stats 25`)
Prints requests, wall seconds, and the worker's CPU µs per request (user + system, from
os.wait4 of the forked worker).
"""
import argparse
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

from gatehouse_worker import protocol as P  # noqa: E402


def wsgi_hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


ENVIRON = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/",
    "QUERY_STRING": "",
    "REQUEST_URI": "/",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "SERVER_SOFTWARE": "Gatehouse",
    "GATEWAY_INTERFACE": "CGI/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "40000",
    "SERVER_ADDR": "127.0.0.1",
    "HTTP_HOST": "127.0.0.1:8000",
    "wsgi.url_scheme": "http",
}
def request_frame(rid):
    return P.frame((P.HTTP_REQUEST, rid, dict(ENVIRON), b"", False, 1 << 20))


def worker(sock, profile):
    import threading

    from gatehouse_worker import wsgi as W
    from gatehouse_worker.connection import Connection

    def run():
        Connection(sock, W.make_server(wsgi_hello, 1), 1, threading.Lock()).serve()

    if profile:
        import cProfile

        cProfile.runctx("run()", globals(), {"run": run}, profile)
    else:
        run()
    os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100000)
    ap.add_argument("-w", type=int, default=64)
    ap.add_argument("--profile")
    args = ap.parse_args()
    node, py = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        node.close()
        worker(py, args.profile)
    py.close()
    frames = [request_frame(i + 1) for i in range(args.n)]
    done = 0
    sent = 0
    finished = P.RESPONSE_START  # a hello answers in one frame (start with body, not more)
    start = time.perf_counter()
    splitter_frames = []
    splitter = P.FrameSplitter(splitter_frames.append)
    while done < args.n:
        if sent < args.n and sent - done < args.w:
            k = min(args.n, done + args.w) - sent
            node.sendall(b"".join(frames[sent : sent + k]))
            sent += k
        data = node.recv(1 << 20)
        if not data:
            raise SystemExit("the worker closed the connection")
        splitter.feed(data)
        for f in splitter_frames:
            if f[0] == P.HELLO:
                continue
            if f[0] == P.RESPONSE_BODY and not f[3]:
                done += 1
            elif f[0] == finished and not f[6]:
                done += 1
            elif f[0] == P.FINISHED:
                pass
            elif f[0] == P.REQUEST_ERROR:
                raise SystemExit("request error: %s" % f[2])
        splitter_frames.clear()
    wall = time.perf_counter() - start
    node.close()
    _, _, ru = os.wait4(pid, 0)
    cpu = ru.ru_utime + ru.ru_stime
    print(
        "%s: %d requests in %.2f s (%.0f/s), worker CPU %.2f s = %.2f us per request"
        % ("wsgi", args.n, wall, args.n / wall, cpu, cpu / args.n * 1e6)
    )


if __name__ == "__main__":
    main()
