#!/usr/bin/env bash
# Quick start: installs what is missing, starts Redis and the gateway (local backend, bwrap-host
# runtime; see config/quickstart.yaml), then creates a task with curl and reads it back until it ends.
# The gateway keeps running afterwards; `bash scripts/quickstart.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${TES_GATEWAY_PORT:-8000}
base="http://127.0.0.1:$port/ga4gh/tes/v1"
log=/var/tmp/tes-gateway-quickstart/gateway.log
pid_file=/var/tmp/tes-gateway-quickstart/gateway.pid

if [[ ${1:-} == stop ]]; then
  # shellcheck source=scripts/node-env.sh
  . scripts/node-env.sh
  exec node dist/src/main.js stop --pid-file "$pid_file"
fi
[[ $# -eq 0 ]] || { echo "usage: bash scripts/quickstart.sh [stop]" >&2; exit 2; }

bash scripts/install-deps.sh
# shellcheck source=scripts/node-env.sh
. scripts/node-env.sh
bash scripts/redis-up.sh
[[ -f dist/src/main.js && ! src -nt dist/src/main.js ]] || npm run -s build
mkdir -p /var/tmp/tes-gateway-quickstart/data /var/tmp/tes-gateway-quickstart/tasks

if curl -sf "$base/service-info" >/dev/null; then
  echo "gateway: already running at $base"
else
  TES_GATEWAY_PORT=$port setsid node dist/src/main.js serve --config config/quickstart.yaml \
    --pid-file "$pid_file" >>"$log" 2>&1 </dev/null &
  echo "gateway: starting on node $(node --version) (pid $!, log $log)"
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
# shellcheck disable=SC2016 # $(...) and $NAME are for the task's shell, not this one
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
echo "the gateway keeps running at $base (pid $(cat "$pid_file" 2>/dev/null || echo unknown));" \
  "stop it with: bash scripts/quickstart.sh stop"
[[ $state == COMPLETE ]]
