#!/usr/bin/env bash
# CPU microseconds per request of the Python bridge: Node and the worker apart, for a
# hello-world WSGI app and a hello-world ASGI app, one worker each, driven by wrk
# (-t1 -c64, through ../shared/tools/cpu-per-request or the copy of its method below).
#
# usage: bench/bridge-costs.sh [-s SECONDS] [-r ROUNDS] [-w WARMUP_SECONDS] [TREE...]
#   TREE  a Gatehouse checkout with dist/ built (npx tsc -p tsconfig.json); default: this
#         one. Several trees are measured in the same run, alternating (A/B), so that the
#         machine's noise falls on all of them alike.
# Each round measures every tree on wsgi-hello then asgi-hello; the medians over the rounds
# are printed (req/s, Node µs/request, worker µs/request), then each round's figures.
# docs/benchmarks.md, "Bridge costs".
set -euo pipefail

secs=5
rounds=5
warmup=2
while getopts "s:r:w:" opt; do
  case $opt in
    s) secs=$OPTARG ;;
    r) rounds=$OPTARG ;;
    w) warmup=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
here=$(cd "$(dirname "$0")/.." && pwd)
trees=("$@")
[ ${#trees[@]} -gt 0 ] || trees=("$here")
python=${PYTHON:-/usr/bin/python3}
command -v wrk >/dev/null || { echo "wrk is needed" >&2; exit 1; }

tmp=$(mktemp -d /tmp/bridge-costs.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/wsgi_hello.py" <<'EOF'
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '13')])
    return [b'Hello, World!']
EOF
cat >"$tmp/asgi_hello.py" <<'EOF'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})
EOF

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# measure TREE SCENARIO -> "req/s node_us worker_us"
measure() {
  local tree=$1 scenario=$2 port conf action app
  port=$(free_port)
  conf="$tmp/$scenario.$port.toml"
  case $scenario in
    wsgi-hello) action=wsgi app=wsgi_hello:application ;;
    asgi-hello) action=asgi app=asgi_hello:app ;;
  esac
  cat >"$conf" <<EOF
listen = ["127.0.0.1:$port"]
[log]
level = "warn"
[[routes]]
path = "/"
$action = { app = "$app", python = "$python", chdir = "$tmp", workers = 1 }
EOF
  node "$tree/dist/src/cli/main.js" serve --config "$conf" >"$tmp/server.$port.log" 2>&1 &
  local node=$!
  pids+=("$node")
  local i
  for i in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local worker
  worker=$(pgrep -P "$node" -f gatehouse_worker | head -1)
  [ -n "$worker" ] || { echo "no worker for $tree $scenario" >&2; cat "$tmp/server.$port.log" >&2; exit 1; }
  wrk -t1 -c64 -d"${warmup}s" "http://127.0.0.1:$port/" >/dev/null
  local n0 w0 out n d_node d_worker
  n0=$(ticks "$node")
  w0=$(ticks "$worker")
  out=$(wrk -t1 -c64 -d"${secs}s" "http://127.0.0.1:$port/")
  d_node=$(($(ticks "$node") - n0))
  d_worker=$(($(ticks "$worker") - w0))
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "$tree $scenario: errors under load:" >&2
    grep -E 'Non-2xx|Socket errors' <<<"$out" >&2
  fi
  if grep -q MaxListenersExceeded "$tmp/server.$port.log"; then
    echo "$tree $scenario: MaxListenersExceededWarning in the server's log" >&2
  fi
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  kill "$node"
  wait "$node" 2>/dev/null || true
  awk -v n="$n" -v s="$secs" -v a="$d_node" -v b="$d_worker" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.0f %.1f %.1f\n", n / s, a / hz * 1e6 / n, b / hz * 1e6 / n }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

results="$tmp/results"
: >"$results"
for r in $(seq "$rounds"); do
  for scenario in wsgi-hello asgi-hello; do
    for t in "${!trees[@]}"; do
      line=$(measure "${trees[$t]}" "$scenario")
      echo "$t $scenario $r $line" >>"$results"
      echo "round $r tree $t (${trees[$t]}) $scenario: req/s Node-us worker-us = $line" >&2
    done
  done
done

echo "wrk -t1 -c64 -d${secs}s, 1 worker, $rounds rounds, medians; CPU = user + system of the process, all threads"
printf '%-5s %-11s %9s %12s %14s  %s\n' tree scenario req/s 'Node us/req' 'worker us/req' path
for t in "${!trees[@]}"; do
  for scenario in wsgi-hello asgi-hello; do
    rps=$(awk -v t="$t" -v s="$scenario" '$1 == t && $2 == s {print $4}' "$results" | median)
    nus=$(awk -v t="$t" -v s="$scenario" '$1 == t && $2 == s {print $5}' "$results" | median)
    wus=$(awk -v t="$t" -v s="$scenario" '$1 == t && $2 == s {print $6}' "$results" | median)
    printf '%-5s %-11s %9.0f %12.1f %14.1f  %s\n' "$t" "$scenario" "$rps" "$nus" "$wus" "${trees[$t]}"
  done
done
