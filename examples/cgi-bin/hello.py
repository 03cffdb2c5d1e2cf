# A CGI/1.1 script: the request is in the environment, the body on stdin, the response on
# stdout. Try /cgi-bin/hello.py/some/path?name=you, or POST a form to it.
import html
import os
import sys
from urllib.parse import parse_qs

query = parse_qs(os.environ.get("QUERY_STRING", ""))
length = os.environ.get("CONTENT_LENGTH")
form = parse_qs(sys.stdin.read(int(length))) if length else {}
name = (form.get("name") or query.get("name") or ["world"])[0]

shown = [
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_URI",
    "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "CONTENT_LENGTH", "HTTP_USER_AGENT",
]
rows = "\n".join(
    "<tr><th>%s</th><td>%s</td></tr>" % (k, html.escape(os.environ.get(k, "(unset)"))) for k in shown
)
sys.stdout.write("Content-Type: text/html; charset=utf-8\r\n\r\n")
sys.stdout.write(
    """<!doctype html><meta charset="utf-8"><title>CGI</title>
<h1>Hello, %s</h1>
<form method="post"><input name="name" placeholder="your name"> <button>POST</button></form>
<table>%s</table>
""" % (html.escape(name), rows)
)
