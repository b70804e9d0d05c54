#!/usr/bin/env bash
# The README's demo: a local nginx on 127.0.0.1:8080 with its own prefix, three backends,
# `obreconcile apply examples/quickstart`, traffic through it, a second apply that changes
# nothing. Everything it starts is stopped on exit (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
OBR=${OBR:-.venv/bin/obreconcile}
DEMO=/tmp/obreconcile-demo
PREFIX=$DEMO/nginx
CONF=$PREFIX/nginx.conf
export OBRECONCILE_STORE="sqlite:///$DEMO/state.db"
pids=()

cleanup() {
  set +e
  if [ -f "$PREFIX/nginx.pid" ]; then nginx -p "$PREFIX" -c "$CONF" -s quit 2>/dev/null; fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT INT TERM

for port in 8080 9001 9002 9003; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port on 127.0.0.1 is in use; stop what holds it and run again" >&2
    exit 1
  fi
done

rm -rf "$DEMO"
mkdir -p "$PREFIX/logs" "$PREFIX/temp"
cat > "$CONF" <<NGINX
# The demo access node's own nginx.conf: obreconcile owns only $PREFIX/openbalancer.
worker_processes 1;
pid $PREFIX/nginx.pid;
error_log $PREFIX/logs/error.log notice;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $PREFIX/temp/body;
    proxy_temp_path $PREFIX/temp/proxy;
    fastcgi_temp_path $PREFIX/temp/fastcgi;
    uwsgi_temp_path $PREFIX/temp/uwsgi;
    scgi_temp_path $PREFIX/temp/scgi;
    include $PREFIX/openbalancer/http/*.conf;
}
stream {
    include $PREFIX/openbalancer/stream/*.conf;
}
NGINX

for i in 1 2 3; do
  python3 scripts/demo_backend.py "900$i" "backend-$i" & pids+=($!)
done
nginx -p "$PREFIX" -c "$CONF"
echo "== nginx runs with no managed files yet; backends on 127.0.0.1:9001-9003"

echo "== obreconcile plan examples/quickstart"
$OBR plan examples/quickstart
echo "== obreconcile apply examples/quickstart"
$OBR apply examples/quickstart

echo "== traffic through nginx on 127.0.0.1:8080"
for host in web.localhost api.localhost; do
  printf '%s ->' "$host"
  for _ in 1 2 3 4 5 6; do printf ' %s' "$(curl -fsS -H "Host: $host" http://127.0.0.1:8080/)"; done
  echo
done
printf 'unknown.localhost -> HTTP %s\n' "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: unknown.localhost' http://127.0.0.1:8080/)"

echo "== a second apply changes nothing"
$OBR apply examples/quickstart
$OBR plan --detailed-exitcode examples/quickstart >/dev/null && echo "plan: no changes (exit 0)"
