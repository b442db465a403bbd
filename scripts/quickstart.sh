#!/usr/bin/env bash
# Quick start: installs what is missing, starts Redis and the gateway (local backend, bwrap-host
# runtime; see config/quickstart.yaml), then creates a task with curl and reads it back until it ends.
# The gateway keeps running afterwards; the last lines say how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${TES_GATEWAY_PORT:-8000}
base="http://127.0.0.1:$port/ga4gh/tes/v1"
log=/var/tmp/tes-gateway-quickstart/gateway.log

bash scripts/install-deps.sh
bash scripts/redis-up.sh
[[ -f dist/src/main.js && ! src -nt dist/src/main.js ]] || npm run -s build
mkdir -p /var/tmp/tes-gateway-quickstart/data /var/tmp/tes-gateway-quickstart/tasks

if curl -sf "$base/service-info" >/dev/null; then
  echo "gateway: already running at $base"
else
  TES_GATEWAY_PORT=$port setsid node dist/src/main.js serve --config config/quickstart.yaml >>"$log" 2>&1 < /dev/null &
  echo "gateway: starting (pid $!, log $log)"
  for _ in $(seq 1 100); do
    curl -sf "$base/service-info" >/dev/null && break
    sleep 0.1
  done
  curl -sf "$base/service-info" >/dev/null || { echo "gateway: did not start; see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
fi

echo
echo "\$ curl -s $base/service-info"
curl -s "$base/service-info"
echo
echo
task='{
  "name": "quick start",
  "inputs": [{"path": "/data/greeting.txt", "content": "hello from a TES input\n"}],
  "executors": [
    {"image": "alpine", "command": ["sh", "-c", "cat /data/greeting.txt; echo \"running as $(id -un) in $(pwd) with NAME=$NAME\""],
     "workdir": "/work", "env": {"NAME": "quick start"}},
    {"image": "alpine", "command": ["sh", "-c", "wc -c < /data/greeting.txt"]}
  ]
}'
echo "\$ curl -s -X POST $base/tasks -H 'Content-Type: application/json' -d '...'"
id=$(curl -s -X POST "$base/tasks" -H 'Content-Type: application/json' -d "$task" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
[[ -n $id ]] || { echo "quickstart: the task was not created" >&2; exit 1; }
echo "{\"id\":\"$id\"}"
echo
state=
for _ in $(seq 1 300); do
  state=$(curl -s "$base/tasks/$id" | sed -n 's/.*"state":"\([A-Z_]*\)".*/\1/p')
  case $state in COMPLETE | EXECUTOR_ERROR | SYSTEM_ERROR | CANCELED | PREEMPTED) break ;; esac
  sleep 0.2
done
echo "\$ curl -s '$base/tasks/$id?view=FULL'"
curl -s "$base/tasks/$id?view=FULL"
echo
echo
echo "task $id ended $state"
echo "the gateway keeps running at $base; stop it with: pkill -f 'dist/src/main.js serve --config config/quickstart.yaml'"
[[ $state == COMPLETE ]]
