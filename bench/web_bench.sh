#!/usr/bin/env bash
# zync-web vs nginx, same files, same machine, one run: requests/s for a
# 1 KiB file with keep-alive, and MB/s for a 100 MiB file, measured by wrk.
# Both servers log every request to a file (fair: zync-web's access log is on).
# Needs nginx and wrk (Debian: apt-get install nginx-light wrk).
# Usage: bench/web_bench.sh [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk" >&2; exit 2; }
cargo build --release -q -p zync-web
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [[ -f $work/nginx.pid ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"' EXIT
# nginx's workers drop privileges: the files must be world-readable.
chmod 755 "$work"
mkdir -p "$work/root"
head -c 1024 /dev/urandom > "$work/root/small.bin"
head -c $((100 * 1024 * 1024)) /dev/urandom > "$work/root/big.bin"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
np=$(port); zp=$(port)

cat > "$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log $work/nginx-access.log;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  types { application/octet-stream bin; }
  server { listen 127.0.0.1:$np; root $work/root; }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"
target/release/zync-web --root "$work/root" --listen "127.0.0.1:$zp" 2>"$work/zync-web.log" &
# Measure nothing unless both servers return the right bytes.
for p in $np $zp; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/small.bin" && break; sleep 0.05; done
  for f in small.bin big.bin; do
    curl -sf "http://127.0.0.1:$p/$f" | cmp -s - "$work/root/$f" || { echo "port $p does not serve $f correctly" >&2; exit 1; }
  done
done

rps() { wrk -t2 -c64 -d"${dur}s" "http://127.0.0.1:$1/small.bin" | awk '/Requests\/sec/ {print $2}'; }
mbps() { wrk -t2 -c4 -d"${dur}s" "http://127.0.0.1:$1/big.bin" | awk '/Transfer\/sec/ {v=$2; u=substr(v,length(v)-1); n=substr(v,1,length(v)-2); if(u=="GB") n*=1024; else if(u=="KB") n/=1024; printf "%.0f", n}'; }

echo "1 KiB file, keep-alive, 64 connections, ${dur}s each:"
n_rps=$(rps "$np"); z_rps=$(rps "$zp")
printf '  nginx     %10.0f req/s\n  zync-web  %10.0f req/s   (%.0f%% of nginx; target >= 50%%)\n' "$n_rps" "$z_rps" "$(echo "100*$z_rps/$n_rps" | bc -l)"
echo "100 MiB file, 4 connections, ${dur}s each:"
n_mb=$(mbps "$np"); z_mb=$(mbps "$zp")
printf '  nginx     %10.0f MB/s\n  zync-web  %10.0f MB/s    (%.0f%% of nginx; target >= 80%%)\n' "$n_mb" "$z_mb" "$(echo "100*$z_mb/$n_mb" | bc -l)"
