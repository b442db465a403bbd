#!/usr/bin/env bash
# Makes sure a Redis answers at TES_GATEWAY_REDIS_URL (default redis://127.0.0.1:6379): reuses one
# that runs, else installs Debian's redis-server when missing and starts it without persistence.
set -euo pipefail

url=${TES_GATEWAY_REDIS_URL:-redis://127.0.0.1:6379}
hostport=${url#redis://}
hostport=${hostport##*@}
hostport=${hostport%%/*}
host=${hostport%%:*}
port=${hostport##*:}
[[ $port == "$host" ]] && port=6379

ping() { redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG; }

if command -v redis-cli >/dev/null && ping; then
  echo "redis: up at $host:$port"
  exit 0
fi
case $host in
  127.0.0.1 | localhost) ;;
  *) echo "redis: nothing answers at $host:$port and it is not this machine; start it there" >&2; exit 1 ;;
esac
if ! command -v redis-server >/dev/null; then
  echo "redis: installing redis-server (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
fi
mkdir -p /var/lib/redis /var/log/redis
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir /var/lib/redis --logfile /var/log/redis/tes-gateway.log
for _ in $(seq 1 50); do
  if ping; then echo "redis: started at $host:$port"; exit 0; fi
  sleep 0.1
done
echo "redis: failed to start on port $port; see /var/log/redis/tes-gateway.log" >&2
tail -n 20 /var/log/redis/tes-gateway.log >&2 || true
exit 1
