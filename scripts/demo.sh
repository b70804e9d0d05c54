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

echo "== obreconcile serve: health checks keep nginx converged (its log: $DEMO/serve.log)"
SERVE_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$OBR serve --listen "127.0.0.1:$SERVE_PORT" >"$DEMO/serve.log" 2>&1 & serve_pid=$!; pids+=($serve_pid)
until_true() {  # until_true SECONDS WHAT COMMAND...: poll every 0.2 s, fail after SECONDS
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "demo: timed out waiting for $what" >&2; tail -20 "$DEMO/serve.log" >&2; exit 1; fi
    sleep 0.2
  done
}
is_master() { curl -fsS "http://127.0.0.1:$SERVE_PORT/metrics" | grep -q '^obreconcile_master 1.0'; }
backend2_down() { grep -q '127.0.0.1:9002 .* down; # 127.0.0.1:9002' "$PREFIX/openbalancer/http/api.conf"; }
backend2_up() { ! backend2_down; }
api_traffic() {
  printf 'api.localhost ->'
  for _ in 1 2 3 4 5 6; do printf ' %s' "$(curl -fsS -H 'Host: api.localhost' http://127.0.0.1:8080/)"; done
  echo
}
until_true 20 "serve to become master" is_master
echo "serve is the master on 127.0.0.1:$SERVE_PORT (api: check api-health every 2s, rise 2, fall 2)"
api_traffic
echo "== kill backend-2: the check marks it down, backend-3 (failover tier 1) takes over"
kill "${pids[1]}"
killed=$SECONDS
until_true 20 "backend-2 to be rendered down" backend2_down
echo "backend-2 rendered down after ~$((SECONDS - killed))s:"
grep -E 'server .*# 127.0.0.1:900[23]' "$PREFIX/openbalancer/http/api.conf" | sed 's/^ */  /'
api_traffic
echo "== restart backend-2: back after rise × interval"
python3 scripts/demo_backend.py 9002 backend-2 & pids+=($!)
until_true 20 "backend-2 to come back" backend2_up
api_traffic
curl -fsS "http://127.0.0.1:$SERVE_PORT/metrics" | grep -E '^obreconcile_(backend_up|upstream_panic)\{.*upstream="api"' || true
grep -E 'health: |converged to' "$DEMO/serve.log" | sed 's/^/  log: /' || true
echo "== SIGTERM: serve finishes what it is doing and exits 0"
kill -TERM "$serve_pid"
wait "$serve_pid" && echo "serve stopped cleanly (exit 0)"
