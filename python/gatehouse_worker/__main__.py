"""python -m gatehouse_worker --socket PATH --wsgi MODULE:CALLABLE [--threads N] [--chdir DIR]
   python -m gatehouse_worker --socket PATH --asgi MODULE:APP [--chdir DIR]

Order matters to the supervisor: the app is imported first (an import error prints the
traceback and exits 1, a start failure), then the socket is bound and listened on (a
worker is ready once its socket accepts), then connections are served.
"""
import argparse
import ast
import faulthandler
import importlib
import os
import signal
import sys
import threading
import time
import traceback


def load_app(spec):
    """MODULE:NAME, MODULE:obj.attr, or the factory form MODULE:create_app() (literal args allowed)."""
    module_name, sep, expr = spec.partition(":")
    if not sep:
        expr = "application"
    if not module_name:
        raise SystemExit("gatehouse_worker: --wsgi MODULE:CALLABLE, got %r" % spec)
    module = importlib.import_module(module_name)
    call = None
    if expr.endswith(")") and "(" in expr:
        expr, _, args = expr.partition("(")
        args = args[:-1].strip()
        call = ast.literal_eval("(" + args + ",)") if args else ()
    obj = module
    for part in expr.split("."):
        obj = getattr(obj, part)
    if call is not None:
        obj = obj(*call)
    if not callable(obj):
        raise TypeError("%s is not callable" % spec)
    return obj


def watch_parent(orphaned, interval=1.0):
    """Exit when Node is gone, whatever the app is doing.

    The supervisor starts workers under a parent-death signal (setpriv --pdeathsig); this
    thread is the second line, for a system without setpriv and for the moment between our
    start and that signal taking effect. It does not depend on the event loop or on a free
    request thread, so an app blocked in synchronous code does not keep the worker alive.
    """

    def watch():
        while True:
            time.sleep(interval)
            if orphaned():
                os._exit(1)

    threading.Thread(target=watch, name="gatehouse-parent-watch", daemon=True).start()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gatehouse_worker")
    parser.add_argument("--socket", required=True)
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--wsgi", metavar="MODULE:CALLABLE")
    kind.add_argument("--asgi", metavar="MODULE:APP")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chdir")
    parser.add_argument("--dump-signal", default="SIGUSR1")
    parser.add_argument("--root-path-auto", action="store_true")
    args = parser.parse_args(argv)
    parent = os.getppid()
    # Node names itself too: a worker whose Node is gone (even before this line ran) exits.
    node_pid = int(os.environ.get("GATEHOUSE_PARENT_PID") or 0)

    def orphaned():
        if os.getppid() != parent:
            return True
        if node_pid:
            try:
                os.kill(node_pid, 0)
            except ProcessLookupError:
                return True
            except OSError:
                pass
        return False

    watch_parent(orphaned)
    if args.chdir:
        os.chdir(args.chdir)
    # Like gunicorn: the app's directory is importable.
    sys.path.insert(0, os.getcwd())

    dump_signal = getattr(signal, args.dump_signal)
    # The C-level dump works even when the app is stuck inside C code; the Python handler
    # after it names each running request.
    faulthandler.register(dump_signal, all_threads=True, chain=False)

    spec = args.asgi or args.wsgi
    try:
        app = load_app(spec)
    except BaseException as err:
        from .connection import report_start_failure

        # Like uvicorn's `Could not import module "x"`: the last line names the app and the cause.
        report_start_failure(
            "cannot load the %s application %s: %s: %s" % ("ASGI" if args.asgi else "WSGI", spec, type(err).__name__, err),
            traceback.format_exc(),
        )
        os._exit(1)

    # The interface's modules are imported only now, after the app's own imports.
    if args.asgi:
        from .asgi import serve

        options = {"root_path_auto": args.root_path_auto}
    else:
        from .wsgi import serve

        options = {"threads": max(1, args.threads)}
    faulthandler.unregister(dump_signal)
    serve(app, args.socket, orphaned, dump_signal, **options)


if __name__ == "__main__":
    main()
