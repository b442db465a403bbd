#!/usr/bin/env bash
# Sets this machine up for the run-as-user tests and benchmark (identity.runAs: user), idempotently:
#   - Debian's sudo (and python3, for the syslog stand-in);
#   - group tes-users; the service account tesgw (not in the group); tes-alice and tes-bob (uid >= 1000,
#     in the group, with homes); tes-carol (uid >= 1000, not in the group); tes-low (uid 900, in it);
#   - their Slurm associations: account tes-lab on the test cluster, with all five users;
#   - the work root /var/tmp/tes-gateway-test/work (tesgw, mode 1733);
#   - the helper, installed by scripts/install-helper.sh at /usr/local/libexec/tes-gateway-test/, with
#     its configuration /etc/tes-gateway-test/helper.conf (node and program from this checkout);
#   - the sudoers rule /etc/sudoers.d/tes-gateway-test, from docs/sudoers.tes-gateway;
#   - a syslog stand-in (scripts/run-as-user/syslog-sink.py) on /run/tes-gateway-test/syslog.sock that
#     appends every record to /var/log/tes-gateway-test/syslog.log, where the tests read them: machines
#     like this one run no syslog daemon. The product's default stays /dev/log.
# Needs root and the test cluster (bash scripts/slurm-up.sh). Prints one line: what it did.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$(pwd -P)
# shellcheck source=scripts/slurm/lib.sh
source scripts/slurm/lib.sh

readonly GROUP=tes-users
readonly SERVICE_USER=tesgw
readonly MEMBERS=(tes-alice tes-bob)
readonly OUTSIDER=tes-carol
readonly LOW_USER=tes-low LOW_UID=900
readonly MIN_UID=1000
readonly ACCOUNT=tes-lab
readonly CLUSTER=tesgw
readonly TEST_ROOT=/var/tmp/tes-gateway-test
readonly WORK_ROOT=$TEST_ROOT/work
readonly HELPER=/usr/local/libexec/tes-gateway-test/tes-gateway-helper
readonly CONF_DIR=/etc/tes-gateway-test
readonly CONF=$CONF_DIR/helper.conf
readonly SUDOERS=/etc/sudoers.d/tes-gateway-test
readonly SUDOERS_SNIPPET=docs/sudoers.tes-gateway
readonly SNIPPET_HELPER=/usr/libexec/tes-gateway/tes-gateway-helper
readonly SYSLOG_RUN=/run/tes-gateway-test
readonly SYSLOG_SOCKET=$SYSLOG_RUN/syslog.sock
readonly SYSLOG_PIDFILE=$SYSLOG_RUN/syslog-sink.pid
readonly SYSLOG_LOG_DIR=/var/log/tes-gateway-test
readonly SYSLOG_LOG=$SYSLOG_LOG_DIR/syslog.log
readonly SYSLOG_SINK=$PROJECT/scripts/run-as-user/syslog-sink.py

DONE=()
fail() {
  printf 'run-as-user-setup: %s\n' "$*" >&2
  exit 1
}
did() { DONE+=("$*"); }

[[ $EUID -eq 0 ]] || fail "run as root (it creates users, installs sudo and a root-owned helper)"
# Two test files (or a test and the bench) may set up at once: one at a time.
mkdir -p /run/lock
exec 8>/run/lock/tes-run-as-user-setup.lock
flock -w 120 8 || fail "another run-as-user-setup.sh has held /run/lock/tes-run-as-user-setup.lock for 120 s"

bash scripts/apt-install.sh run-as-user sudo python3
command -v sbatch >/dev/null || fail "sbatch is not installed: start the test cluster first (bash scripts/slurm-up.sh)"
SLURM_BIN_DIR=$(dirname "$(command -v sbatch)")
# shellcheck source=scripts/node-env.sh
. scripts/node-env.sh
NODE=$(realpath -e "$(command -v node)") || fail "node is not on PATH (run scripts/install-deps.sh)"

# ---- users and groups ---------------------------------------------------------------------------

user_uid() { id -u -- "$1" 2>/dev/null; }
in_group() { id -Gn -- "$1" | tr ' ' '\n' | grep -qxF "$GROUP"; }

if ! getent group "$GROUP" >/dev/null; then
  groupadd "$GROUP"
  did "group $GROUP"
fi
# new_user NAME [useradd options...]: creates NAME (own group, home, bash) unless it exists.
new_user() {
  local name=$1
  shift
  if ! getent passwd "$name" >/dev/null; then
    useradd --create-home --user-group --shell /bin/bash "$@" "$name"
    did "user $name"
  fi
}
# member NAME yes|no: puts NAME in the group or takes it out.
member() {
  if [[ $2 == yes ]] && ! in_group "$1"; then
    usermod -a -G "$GROUP" "$1"
    did "$1 joined $GROUP"
  elif [[ $2 == no ]] && in_group "$1"; then
    gpasswd -d "$1" "$GROUP" >/dev/null
    did "$1 left $GROUP"
  fi
}

if ! getent passwd "$SERVICE_USER" >/dev/null; then
  useradd --system --user-group --create-home --home-dir "/var/lib/$SERVICE_USER" --shell /usr/sbin/nologin "$SERVICE_USER"
  did "service account $SERVICE_USER"
fi
member "$SERVICE_USER" no
for u in "${MEMBERS[@]}" "$OUTSIDER"; do
  new_user "$u" --key "UID_MIN=$MIN_UID"
  (($(user_uid "$u") >= MIN_UID)) || fail "user $u exists with uid $(user_uid "$u"), below $MIN_UID: remove it (userdel -r $u) and run again"
done
for u in "${MEMBERS[@]}"; do member "$u" yes; done
member "$OUTSIDER" no
if ! getent passwd "$LOW_USER" >/dev/null; then
  holder=$(getent passwd "$LOW_UID" | cut -d: -f1) || true
  [[ -z $holder ]] || fail "uid $LOW_UID, wanted for $LOW_USER, belongs to $holder already"
  new_user "$LOW_USER" --uid "$LOW_UID" --key "UID_MIN=$LOW_UID"
fi
[[ $(user_uid "$LOW_USER") == "$LOW_UID" ]] || fail "user $LOW_USER exists with uid $(user_uid "$LOW_USER"), not $LOW_UID: remove it (userdel -r $LOW_USER) and run again"
member "$LOW_USER" yes

# ---- Slurm associations -------------------------------------------------------------------------

sacctmgr_do() {
  local out
  out=$(timeout 30 sacctmgr -i "$@" 2>&1) || fail "sacctmgr $* failed: $out"
}
accounts=$(timeout 20 sacctmgr -n -P show account "$ACCOUNT" format=Account 2>&1) ||
  fail "sacctmgr cannot reach slurmdbd (start the cluster: bash scripts/slurm-up.sh): $accounts"
if ! grep -qxF "$ACCOUNT" <<<"$accounts"; then
  sacctmgr_do add account "$ACCOUNT" "Cluster=$CLUSTER" Description=tes-gateway-tests Organization=tes
  did "Slurm account $ACCOUNT"
fi
assoc=$(timeout 20 sacctmgr -n -P show assoc where "account=$ACCOUNT" "cluster=$CLUSTER" format=User 2>&1) ||
  fail "sacctmgr show assoc failed: $assoc"
for u in "${MEMBERS[@]}" "$OUTSIDER" "$LOW_USER" "$SERVICE_USER"; do
  if ! grep -qxF "$u" <<<"$assoc"; then
    sacctmgr_do add user "$u" "Account=$ACCOUNT" "Cluster=$CLUSTER"
    did "Slurm user $u"
  fi
done

# ---- work root, paths the accounts need -----------------------------------------------------------

install -d -o root -g root -m 0755 "$TEST_ROOT"
install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 1733 "$WORK_ROOT"

# The gateway runs from this checkout as tesgw, and the helper's `finish` runs this checkout's node
# and program as the users: every directory on the way must let others through (execute only).
dir=$PROJECT
while [[ $dir != / ]]; do
  if [[ $(stat -c %A "$dir") != ?????????x* ]]; then
    chmod o+x "$dir"
    did "o+x on $dir"
  fi
  dir=$(dirname "$dir")
done
runuser -u "$SERVICE_USER" -- test -r "$PROJECT/package.json" ||
  fail "$SERVICE_USER cannot read $PROJECT/package.json: make the checkout readable by others (chmod -R o+rX $PROJECT)"
runuser -u "${MEMBERS[0]}" -- "$NODE" --version >/dev/null ||
  fail "${MEMBERS[0]} cannot run $NODE: it must be executable by every user (chmod o+rx and o+x on its directories)"

# ---- helper, configuration, sudoers ---------------------------------------------------------------

# write_root_file PATH MODE: stdin becomes PATH (root-owned, MODE), replaced in one step when it changed.
write_root_file() {
  local path=$1 mode=$2 tmp
  tmp=$(mktemp "${path%/*}/.${path##*/}.XXXXXX")
  cat >"$tmp"
  chown root:root "$tmp"
  chmod "$mode" "$tmp"
  if cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    return 1
  fi
  mv -f "$tmp" "$path"
}

install -d -o root -g root -m 0755 "$CONF_DIR"
if write_root_file "$CONF" 0644 <<EOF; then did "config $CONF"; fi
# Written by scripts/run-as-user-setup.sh for the run-as-user tests; rewritten on every run.
work_root=$WORK_ROOT
min_uid=$MIN_UID
group=$GROUP
service_user=$SERVICE_USER
slurm_bin_dir=$SLURM_BIN_DIR
node=$NODE
program=$PROJECT/dist/src/run-as/user-side.js
syslog_socket=$SYSLOG_SOCKET
# The bench holds its jobs, to measure submission alone.
allow_option=--hold
EOF

before=$(sha256sum "$HELPER" 2>/dev/null || true)
bash scripts/install-helper.sh "$HELPER" "$CONF"
[[ $(sha256sum "$HELPER") == "$before" ]] || did "helper $HELPER"

snippet=$(<"$SUDOERS_SNIPPET")
[[ $snippet == *"$SNIPPET_HELPER"* ]] || fail "$SUDOERS_SNIPPET does not name $SNIPPET_HELPER"
candidate=$(mktemp /tmp/tes-sudoers.XXXXXX)
printf '%s\n' "${snippet//"$SNIPPET_HELPER"/"$HELPER"}" >"$candidate"
check=$(visudo -cf "$candidate" 2>&1) || {
  rm -f "$candidate"
  fail "the sudoers rule from $SUDOERS_SNIPPET does not parse: $check"
}
# A name with a dot is skipped by sudo's @includedir, so the half-written file is never read.
if write_root_file "$SUDOERS" 0440 <"$candidate"; then did "sudoers $SUDOERS"; fi
rm -f "$candidate"
check=$(visudo -c 2>&1) || fail "sudo's whole configuration does not parse after installing $SUDOERS: $check"

# ---- the syslog stand-in ----------------------------------------------------------------------------

sink_answers() { [[ -S $SYSLOG_SOCKET ]] && logger --socket-errors=on --socket "$SYSLOG_SOCKET" </dev/null 2>/dev/null; }
# The pid of the running stand-in, from its pid file, checked against its command line.
sink_pid() {
  local pid
  read -r pid 2>/dev/null <"$SYSLOG_PIDFILE" && pid_is_live "$pid" && grep -qF "$SYSLOG_SINK" "/proc/$pid/cmdline" &&
    printf '%s\n' "$pid"
}
install -d -o root -g root -m 0755 "$SYSLOG_RUN" "$SYSLOG_LOG_DIR"
if ! { sink_pid >/dev/null && sink_answers; }; then
  if pid=$(sink_pid); then
    stop_pid syslog-sink "$pid" 5
  fi
  rm -f "$SYSLOG_PIDFILE"
  (
    close_inherited_fds
    exec setsid /usr/bin/python3 "$SYSLOG_SINK" "$SYSLOG_SOCKET" "$SYSLOG_LOG" "$SYSLOG_PIDFILE" \
      </dev/null >>"$SYSLOG_LOG_DIR/syslog-sink.err" 2>&1
  ) &
  for _ in $(seq 100); do
    sink_answers && break
    sleep 0.05
  done
  sink_answers || fail "the syslog stand-in did not come up on $SYSLOG_SOCKET: $(tail -n 5 "$SYSLOG_LOG_DIR/syslog-sink.err")"
  did "syslog stand-in on $SYSLOG_SOCKET"
fi

if ((${#DONE[@]} == 0)); then
  echo "run-as-user: ready, nothing to change (helper $HELPER, config $CONF, sudoers $SUDOERS, syslog $SYSLOG_LOG)"
else
  IFS=';'
  echo "run-as-user: ready (helper $HELPER, config $CONF, sudoers $SUDOERS, syslog $SYSLOG_LOG); made: ${DONE[*]}"
fi
