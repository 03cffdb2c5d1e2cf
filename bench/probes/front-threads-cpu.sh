#!/bin/bash
# CPU per request of each thread of the Node front and of each Python worker, under wrk,
# with N front threads (docs/benchmarks.md, "Scaling model"). Usage (from the checkout,
# after npm run build): bench/probes/front-threads-cpu.sh N [SECONDS]; PROBE_NODE_OPTIONS=... for V8 flags
set -eu
n=${1:-1}
secs=${2:-5}
app=$(mktemp -d)
trap 'rm -rf "$app"' EXIT
cat > "$app/hello.py" <<'PY'
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]
PY
port=18090
NODE_OPTIONS="${PROBE_NODE_OPTIONS:-}" node dist/src/cli/main.js serve --wsgi hello:application --chdir "$app" --listen 127.0.0.1:$port \
  --front-processes "$n" > "$app/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$app"' EXIT
until grep -q 'front threads serve\|"listening"' "$app/log"; do sleep 0.2; done
sleep 2
workers=$(pgrep -P $pid -f gatehouse_worker || true)
snap() {
  for t in /proc/$pid/task/*; do echo "thread$(basename $t) $(awk '{print $14+$15}' $t/stat)"; done
  for w in $workers; do echo "python$w $(awk '{print $14+$15}' /proc/$w/stat)"; done
}
snap | sort > "$app/s1"
out=$(wrk -t1 -c64 -d${secs}s http://127.0.0.1:$port/ | grep 'requests in')
snap | sort > "$app/s2"
reqs=$(echo "$out" | awk '{print $1}')
echo "fronts=$n $out"
join "$app/s1" "$app/s2" | awk -v r="$reqs" '{d=$3-$2; if (d>5) printf "  %s %d ticks = %.1f us/req\n", $1, d, d*10000/r}'
