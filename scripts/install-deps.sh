#!/usr/bin/env bash
# Installs the Debian packages that the demo, the tests and the benchmarks need (the real
# peers: nginx, php-cgi, fcgiwrap, wrk, ...). Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail
PACKAGES=(
  nginx-light wrk curl procps iproute2 git perl python3
  # TLS: the tests make their CA and certificates, and probe old protocols, with openssl
  openssl
  # testssl.sh scans the TLS defaults (test/http/testssl.test.ts)
  testssl.sh
  fcgiwrap spawn-fcgi php-cgi
  uwsgi uwsgi-plugin-python3 python3-flask
  php-fpm libfcgi-bin
  # Python apps and the WSGI/ASGI peers
  python3-django python3-starlette python3-fastapi python3-websockets
  gunicorn python3-uvicorn python3-uvloop python3-httptools python3-hypercorn python3-daphne
  # promtool checks the metrics exposition (test/http/metrics.test.ts)
  prometheus
  # systemd-socket-activate and systemd-notify (test/cli/systemd.test.ts)
  systemd
  # Let's Encrypt's ACME test server: automatic certificates (test/acme/certificates.test.ts)
  pebble
  # nghttp and h2load: the HTTP/2 tests (test/http/h2.test.ts) and the h2 benchmarks (bench/h2load.ts)
  nghttp2-client
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts nginx (and php-fpm) as services on install; the tests start their own.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now 'php*-fpm' >/dev/null 2>&1 || true; fi
  $SUDO pkill -x nginx 2>/dev/null || true
fi
