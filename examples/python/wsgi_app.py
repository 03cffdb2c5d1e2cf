"""A plain WSGI app for the demo (examples/gatehouse.toml mounts it at /wsgi)."""
import os


def application(environ, start_response):
    body = (
        f"Hello from WSGI (worker pid {os.getpid()})\n"
        f"SCRIPT_NAME: {environ['SCRIPT_NAME']!r}\n"
        f"PATH_INFO: {environ['PATH_INFO']!r}\n"
        f"QUERY_STRING: {environ.get('QUERY_STRING', '')!r}\n"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
