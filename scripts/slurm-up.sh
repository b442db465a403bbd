#!/usr/bin/env bash
# Brings up (or repairs) a single-node Slurm cluster with accounting on this machine:
# munged, a private MariaDB, slurmdbd, slurmctld and slurmd, none under systemd.
# Safe to run repeatedly: what already runs with the current configuration is left alone.
# Needs root. Debian 12 (Slurm 22.05).
set -eEuo pipefail

# Everything the cluster and the project's tests need from Debian, installed in one apt call.
SLURM_UP_PACKAGES=(
    munge mariadb-server mariadb-client
    slurmctld slurmd slurm-client slurmdbd slurm-wlm-mysql-plugin
    bubblewrap squashfs-tools busybox-static bash-static shellcheck
)
CLUSTER_NAME=tesgw
# CPUs the node advertises (config_overrides), independent of the real core count.
NODE_CPUS=16
# Memory left to the OS and the daemons, in MiB.
OS_RESERVED_MIB=1024
# Upper bound, in seconds, for each daemon to come up.
START_TIMEOUT=${SLURM_UP_TIMEOUT:-60}
# "auto" uses cgroup v1 when usable; "no" forces the fallback (to test a cgroup-less site).
CGROUP_MODE=${SLURM_UP_CGROUP:-auto}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATE_DIR=$SCRIPT_DIR/slurm
# shellcheck source=slurm/lib.sh
source "$TEMPLATE_DIR/lib.sh"

STEP=startup
NODE_HOST=
NODE_MEM_MIB=
JOB_CONTROL=
# Set by write_if_changed; per-daemon flags say a running daemon must be restarted.
FILE_CHANGED=0
RESTART_MARIADB=0
RESTART_SLURMDBD=0
RESTART_SLURMCTLD=0
RESTART_SLURMD=0

say() { printf 'slurm: %s\n' "$*"; }

# Exit status meaning "failure already reported", so that a failure inside a command
# substitution is not reported a second time by the caller's ERR trap.
REPORTED=97

# Reports which step failed and where to look, then exits. Extra arguments are log files.
fail() {
    local message=$1
    shift
    printf 'slurm-up: FAILED at step "%s": %s\n' "$STEP" "$message" >&2
    show_log_tails "$@"
    exit "$REPORTED"
}

on_unexpected_error() {
    local command=$1 status=$2 line=$3
    if ((status != REPORTED)); then
        printf 'slurm-up: FAILED at step "%s": command "%s" exited with status %s (line %s)\n' \
            "$STEP" "$command" "$status" "$line" >&2
    fi
    exit "$REPORTED"
}
trap 'on_unexpected_error "$BASH_COMMAND" "$?" "$LINENO"' ERR

# Writes stdin to $1 (owner $2, mode $3) only when the content differs, so an unchanged
# configuration never triggers a restart. Sets FILE_CHANGED to 1 or 0.
write_if_changed() {
    local dest=$1 owner=$2 mode=$3 tmp
    tmp=$(mktemp "$dest.XXXXXX")
    cat >"$tmp"
    if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        FILE_CHANGED=0
    else
        chown "$owner" "$tmp"
        chmod "$mode" "$tmp"
        mv -f "$tmp" "$dest"
        FILE_CHANGED=1
    fi
    # slurmdbd and munged refuse files with loose permissions, so repair them even when unchanged.
    if [[ $(stat -c '%U:%G %a' "$dest") != "$owner ${mode#0}" ]]; then
        chown "$owner" "$dest"
        chmod "$mode" "$dest"
    fi
}

# Prints template $1 with each @KEY@ replaced by the value of a KEY=VALUE argument.
render_template() {
    local template=$1 text pair
    shift
    [[ -r $template ]] || fail "template $template is missing"
    text=$(<"$template")
    for pair in "$@"; do
        text=${text//"@${pair%%=*}@"/"${pair#*=}"}
    done
    if [[ $text =~ @[A-Z_]+@ ]]; then
        fail "placeholder ${BASH_REMATCH[0]} in $template has no value"
    fi
    printf '%s\n' "$text"
}

# Creates directory $1 when missing and gives it owner $2 and mode $3; an existing
# directory only has its owner corrected (package defaults are otherwise respected).
ensure_dir() {
    local dir=$1 owner=$2 mode=$3
    if [[ ! -d $dir ]]; then
        install -d -o "${owner%%:*}" -g "${owner##*:}" -m "$mode" "$dir"
    elif [[ $(stat -c '%U:%G' "$dir") != "$owner" ]]; then
        chown "$owner" "$dir"
    fi
}

# Waits until command "$@" succeeds or the start timeout passes.
wait_until() {
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

install_packages() {
    STEP="install packages"
    local missing=() pkg installed
    # One dpkg-query for all packages; unknown names are simply absent from its output.
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${SLURM_UP_PACKAGES[@]}" 2>/dev/null || true)
    for pkg in "${SLURM_UP_PACKAGES[@]}"; do
        grep -qx "$pkg installed" <<<"$installed" || missing+=("$pkg")
    done
    ((${#missing[@]} > 0)) || return 0
    say "installing ${missing[*]}"
    # Packages must not start their own daemons (munged with other options, the system MariaDB):
    # this script starts exactly what it needs. Respect a policy that is already in place.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    local log
    log=$(mktemp /tmp/slurm-up-apt.XXXXXX)
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get -o DPkg::Lock::Timeout=120 update >"$log" 2>&1; then
        fail "apt-get update failed (full output in $log)" "$log"
    fi
    if ! apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
        fail "apt-get install failed (full output in $log)" "$log"
    fi
    rm -f "$log"
    if ((own_policy)); then
        rm -f "$policy"
        trap - EXIT
    fi
}

# Slurm identifies nodes by short host name, and slurmctld must resolve its own.
ensure_hostname() {
    STEP="host name"
    NODE_HOST=$(hostname -s)
    [[ -n $NODE_HOST ]] || fail "hostname -s printed nothing"
    if ! getent hosts "$NODE_HOST" >/dev/null; then
        printf '127.0.0.1 %s\n' "$NODE_HOST" >>/etc/hosts
        say "added 127.0.0.1 $NODE_HOST to /etc/hosts"
    fi
}

ensure_directories() {
    STEP="directories"
    ensure_dir "$SLURM_ETC" root:root 0755
    ensure_dir "$TES_ETC" root:root 0755
    ensure_dir "$SLURM_RUN" slurm:slurm 0755
    ensure_dir "$SLURM_LOG" slurm:slurm 0755
    ensure_dir "$SLURMCTLD_STATE" slurm:slurm 0755
    ensure_dir "$SLURMD_SPOOL" root:root 0755
    ensure_dir "$MUNGE_RUN" munge:munge 0755
    ensure_dir /var/log/munge munge:munge 0700
    ensure_dir /var/lib/munge munge:munge 0700
    ensure_dir "$MARIADB_BASE" mysql:mysql 0750
    ensure_dir "$MARIADB_RUN" mysql:mysql 0755
}

# True when cgroup v1 memory and freezer hierarchies exist and accept new groups: then
# Slurm can confine jobs and the kernel's OOM killer marks them OUT_OF_MEMORY.
cgroup_v1_usable() {
    local controller probe
    for controller in memory freezer; do
        [[ $(stat -f -c %T "/sys/fs/cgroup/$controller" 2>/dev/null) == cgroupfs ]] || return 1
        probe=/sys/fs/cgroup/$controller/tes-slurm-probe.$$
        mkdir "$probe" 2>/dev/null || return 1
        rmdir "$probe" 2>/dev/null || true
    done
    [[ -e /sys/fs/cgroup/memory/memory.limit_in_bytes ]]
}

write_slurm_config() {
    STEP="slurm configuration"
    local hw real_mem node_line
    hw=$(slurmd -C 2>/dev/null | head -n 1) || true
    [[ $hw =~ RealMemory=([0-9]+) ]] || fail "could not read RealMemory from 'slurmd -C' (got: ${hw:-nothing})"
    real_mem=${BASH_REMATCH[1]}
    NODE_MEM_MIB=$((real_mem - OS_RESERVED_MIB))
    # On a small machine keep at least half the memory for jobs rather than going to zero.
    ((NODE_MEM_MIB >= real_mem / 2)) || NODE_MEM_MIB=$((real_mem / 2))
    node_line="NodeName=$NODE_HOST NodeAddr=127.0.0.1 NodeHostname=$NODE_HOST CPUs=$NODE_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$NODE_CPUS ThreadsPerCore=1 RealMemory=$NODE_MEM_MIB State=UNKNOWN"

    local mode_text proctrack task gather_params
    case $CGROUP_MODE in
        auto | no) ;;
        *) fail "SLURM_UP_CGROUP must be 'auto' or 'no', not '$CGROUP_MODE'" ;;
    esac
    if [[ $CGROUP_MODE == auto ]] && cgroup_v1_usable; then
        JOB_CONTROL="cgroup v1"
        mode_text="cgroup v1 (the kernel enforces --mem; OOM ends as OUT_OF_MEMORY)"
        proctrack=proctrack/cgroup
        task=task/cgroup
        gather_params="# JobAcctGatherParams: none, cgroups enforce --mem"
    else
        JOB_CONTROL="no cgroups"
        mode_text="no cgroups (memory cgroups unusable or disabled; Slurm polls usage and kills jobs over --mem, which end as FAILED 0:9)"
        proctrack=proctrack/linuxproc
        task=task/none
        gather_params="JobAcctGatherParams=OverMemoryKill"
    fi

    local content
    content=$(render_template "$TEMPLATE_DIR/slurm.conf.in" \
        "CLUSTER=$CLUSTER_NAME" "HOST=$NODE_HOST" "NODE_LINE=$node_line" \
        "JOB_CONTROL_MODE=$JOB_CONTROL" "PROCTRACK_TYPE=$proctrack" "TASK_PLUGIN=$task" \
        "JOBACCT_GATHER_PARAMS=$gather_params")
    write_if_changed "$SLURM_CONF_FILE" root:root 0644 <<<"$content"
    if ((FILE_CHANGED)); then
        say "job control: $mode_text"
        RESTART_SLURMCTLD=1
        RESTART_SLURMD=1
    fi

    if [[ $JOB_CONTROL == "cgroup v1" ]]; then
        local swap_lines="# No swap accounting in this kernel: a job may swap beyond --mem."
        if [[ -e /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes ]]; then
            # Without this, a machine with swap would page a job out instead of ending it at --mem.
            swap_lines=$'ConstrainSwapSpace=yes\nAllowedSwapSpace=0'
        fi
        content=$(render_template "$TEMPLATE_DIR/cgroup.conf.in" "SWAP_LINES=$swap_lines")
        write_if_changed "$CGROUP_CONF_FILE" root:root 0644 <<<"$content"
        if ((FILE_CHANGED)); then RESTART_SLURMD=1; fi
    fi
}

write_accounting_config() {
    STEP="accounting configuration"
    if [[ ! -s $SLURMDB_PASSWORD_FILE ]]; then
        local fresh
        fresh=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
        (umask 077 && printf '%s\n' "$fresh" >"$SLURMDB_PASSWORD_FILE")
    fi
    chmod 0600 "$SLURMDB_PASSWORD_FILE"
    local password
    password=$(<"$SLURMDB_PASSWORD_FILE")

    local content
    content=$(render_template "$TEMPLATE_DIR/mariadb.cnf.in" \
        "MARIADB_SOCKET=$MARIADB_SOCKET" "MARIADB_PORT=$MARIADB_PORT" \
        "MARIADB_DATADIR=$MARIADB_DATADIR" "MARIADB_PIDFILE=$MARIADB_PIDFILE" \
        "MARIADB_LOG=$MARIADB_LOG")
    write_if_changed "$MARIADB_CNF" root:root 0644 <<<"$content"
    if ((FILE_CHANGED)); then RESTART_MARIADB=1; fi

    # slurmdbd refuses to start unless its configuration belongs to SlurmUser with mode 0600.
    content=$(render_template "$TEMPLATE_DIR/slurmdbd.conf.in" \
        "HOST=$NODE_HOST" "MARIADB_PORT=$MARIADB_PORT" "DB_PASSWORD=$password")
    write_if_changed "$SLURMDBD_CONF_FILE" slurm:slurm 0600 <<<"$content"
    if ((FILE_CHANGED)); then RESTART_SLURMDBD=1; fi
}

munge_works() {
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1
}

ensure_munged() {
    STEP="munged"
    local key_dir=${MUNGE_KEY%/*}
    ensure_dir "$key_dir" munge:munge 0700
    if [[ ! -s $MUNGE_KEY ]]; then
        (umask 077 && head -c 1024 /dev/urandom >"$MUNGE_KEY")
        say "created munge key $MUNGE_KEY"
    fi
    # munged refuses a key that others can read.
    if [[ $(stat -c '%U %a' "$MUNGE_KEY") != "munge 400" ]]; then
        chown munge:munge "$MUNGE_KEY"
        chmod 0400 "$MUNGE_KEY"
    fi

    if munge_works; then
        return 0
    fi
    local pid
    if pid=$(daemon_pid "$MUNGE_PIDFILE" munged); then
        say "munged (pid $pid) does not answer; restarting it"
        stop_pid munged "$pid" 10 || fail "could not stop unresponsive munged (pid $pid)"
    fi
    say "starting munged"
    # --force: a munged killed earlier leaves its socket behind, which would block the start.
    if ! (close_inherited_fds && exec "${CLEAN_ENV[@]}" runuser -u munge -- /usr/sbin/munged --force) \
        </dev/null >>/var/log/munge/munged.start.log 2>&1; then
        fail "munged did not start; see /var/log/munge" /var/log/munge/munged.start.log "$MUNGE_LOG"
    fi
    wait_until munge_works ||
        fail "munged started but 'munge -n | unmunge' still fails after ${START_TIMEOUT}s" \
            /var/log/munge/munged.start.log "$MUNGE_LOG"
}

mariadb_ping() {
    mariadb-admin --defaults-file="$MARIADB_CNF" --connect-timeout=2 ping
}

# The slurm account can log in over TCP exactly as slurmdbd will.
slurm_db_login_works() {
    MYSQL_PWD=$(<"$SLURMDB_PASSWORD_FILE") mariadb --defaults-file="$MARIADB_CNF" \
        --protocol=TCP -h 127.0.0.1 -P "$MARIADB_PORT" -u slurm --connect-timeout=2 \
        -e 'SELECT 1' >/dev/null 2>&1
}

ensure_mariadb() {
    STEP="private MariaDB"
    local marker=$MARIADB_BASE/.initialized pid
    if [[ ! -e $marker ]]; then
        if pid=$(private_mariadb_pid); then
            stop_pid "private mariadbd" "$pid" 30 || fail "could not stop private mariadbd (pid $pid)"
        fi
        # A half-initialised datadir (interrupted earlier) is useless; it only ever held our data.
        rm -rf "$MARIADB_DATADIR"
        say "initialising private MariaDB in $MARIADB_DATADIR"
        local init_log=$MARIADB_BASE/install-db.log
        if ! mariadb-install-db --defaults-file="$MARIADB_CNF" --user=mysql \
            --auth-root-authentication-method=socket --skip-test-db >"$init_log" 2>&1; then
            fail "mariadb-install-db failed" "$init_log" "$MARIADB_LOG"
        fi
        touch "$marker"
    fi

    if pid=$(private_mariadb_pid) && ((RESTART_MARIADB)); then
        say "restarting private MariaDB (configuration changed)"
        stop_pid "private mariadbd" "$pid" 60 || fail "could not stop private mariadbd (pid $pid)"
    fi
    if ! pid=$(private_mariadb_pid); then
        if (exec 3<>"/dev/tcp/127.0.0.1/$MARIADB_PORT") 2>/dev/null; then
            fail "port $MARIADB_PORT is taken by another program; the private MariaDB needs it (see: ss -ltnp)"
        fi
        say "starting private MariaDB on 127.0.0.1:$MARIADB_PORT"
        rm -f "$MARIADB_SOCKET"
        # mariadbd does not daemonise; setsid keeps it out of the caller's process group
        # so a job runner that kills its group does not take the database down.
        (close_inherited_fds && exec "${CLEAN_ENV[@]}" setsid /usr/sbin/mariadbd --defaults-file="$MARIADB_CNF") \
            </dev/null >>"$MARIADB_BASE/mariadbd.stdout.log" 2>&1 &
        local started=$!
        local deadline=$((SECONDS + START_TIMEOUT))
        until mariadb_ping >/dev/null 2>&1; do
            if ! pid_is_live "$started" && ! private_mariadb_pid >/dev/null; then
                fail "mariadbd exited during start-up" "$MARIADB_LOG" "$MARIADB_BASE/mariadbd.stdout.log"
            fi
            ((SECONDS < deadline)) ||
                fail "mariadbd does not answer ping after ${START_TIMEOUT}s" "$MARIADB_LOG"
            sleep 0.2
        done
    elif ! wait_until mariadb_ping; then
        fail "private mariadbd (pid $pid) runs but does not answer ping" "$MARIADB_LOG"
    fi

    if ! slurm_db_login_works; then
        say "creating MariaDB account for slurmdbd"
        local password sql
        password=$(<"$SLURMDB_PASSWORD_FILE")
        sql="CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
             CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$password';
             ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
             ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$password';
             GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
             GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
             FLUSH PRIVILEGES;"
        local out
        if ! out=$(mariadb --defaults-file="$MARIADB_CNF" -u root -e "$sql" 2>&1); then
            fail "could not create the slurm account in the private MariaDB: $out" "$MARIADB_LOG"
        fi
        slurm_db_login_works || fail "the slurm account still cannot log in over TCP 127.0.0.1:$MARIADB_PORT" "$MARIADB_LOG"
    fi
}

# Starts Slurm daemon $1 (which daemonises itself) unless it already runs; restarts it
# when $2 is 1. Later steps check that it actually answers.
start_slurm_daemon() {
    local name=$1 restart=$2 pidfile=$SLURM_RUN/$1.pid log=$SLURM_LOG/$1.log pid
    local start_log=$SLURM_LOG/$1.start.log
    if pid=$(daemon_pid "$pidfile" "$name"); then
        ((restart)) || return 0
        say "restarting $name (configuration changed)"
        stop_pid "$name" "$pid" 60 || fail "could not stop $name (pid $pid)" "$log"
    else
        say "starting $name"
    fi
    if ! (close_inherited_fds && exec "${CLEAN_ENV[@]}" setsid "/usr/sbin/$name") </dev/null >>"$start_log" 2>&1; then
        fail "$name exited at start-up" "$start_log" "$log"
    fi
}

# Waits until function $2 succeeds for Slurm daemon $1, failing early if the daemon has
# exited. $3 describes the awaited condition; further arguments are logs to show on failure.
wait_for_daemon() {
    local name=$1 check=$2 what=$3
    shift 3
    local deadline=$((SECONDS + START_TIMEOUT)) missing_since=
    until "$check" >/dev/null 2>&1; do
        if daemon_pid "$SLURM_RUN/$name.pid" "$name" >/dev/null; then
            missing_since=
        elif [[ -z $missing_since ]]; then
            missing_since=$SECONDS
        elif ((SECONDS - missing_since >= 3)); then
            # Slurm daemons fork before writing their pid file: a short absence is normal.
            fail "$name is not running (it exited during start-up)" "$@"
        fi
        if ((SECONDS >= deadline)); then
            # A check may offer a function that explains the current situation.
            if declare -F "${check}_detail" >/dev/null; then
                what+=" ($("${check}_detail" 2>&1 || true))"
            fi
            fail "$name runs, but after ${START_TIMEOUT}s $what" "$@"
        fi
        sleep 0.2
    done
}

slurmdbd_answers() {
    timeout 10 sacctmgr -n -P show cluster format=Cluster
}

ensure_slurmdbd() {
    STEP="slurmdbd"
    start_slurm_daemon slurmdbd "$RESTART_SLURMDBD"
    # The first start creates the accounting tables, which takes a few seconds.
    wait_for_daemon slurmdbd slurmdbd_answers "'sacctmgr show cluster' still gets no answer" \
        "$SLURM_LOG/slurmdbd.start.log" "$SLURM_LOG/slurmdbd.log" "$MARIADB_LOG"
}

ensure_cluster_registered() {
    STEP="register cluster"
    local clusters out
    clusters=$(slurmdbd_answers 2>&1) || fail "sacctmgr show cluster failed: $clusters" "$SLURM_LOG/slurmdbd.log"
    if ! grep -qx "$CLUSTER_NAME" <<<"$clusters"; then
        say "registering cluster $CLUSTER_NAME in accounting"
        out=$(timeout 20 sacctmgr -i add cluster "$CLUSTER_NAME" 2>&1) ||
            fail "sacctmgr add cluster $CLUSTER_NAME failed: $out" "$SLURM_LOG/slurmdbd.log"
    fi
}

slurmctld_answers() {
    local out
    out=$(timeout 5 scontrol ping 2>/dev/null) && [[ $out == *"is UP"* ]]
}

ensure_slurmctld() {
    STEP="slurmctld"
    start_slurm_daemon slurmctld "$RESTART_SLURMCTLD"
    wait_for_daemon slurmctld slurmctld_answers "'scontrol ping' does not report it UP" \
        "$SLURM_LOG/slurmctld.start.log" "$SLURM_LOG/slurmctld.log"
}

# Prints the node's state as sinfo shows it (idle, mixed, down*, drained, ...).
node_state() {
    local out
    out=$(timeout 5 sinfo -h -N -n "$NODE_HOST" -o '%T') || return 1
    printf '%s\n' "${out%%$'\n'*}"
}

NODE_RESUMED=0
# True when the node can run jobs. A node that is drained or down while slurmd runs is put
# back into service once: ReturnToService=2 does not undo a drain (e.g. "Kill task failed"
# left by an earlier run), and this node is the whole cluster.
node_usable() {
    local state reason
    state=$(node_state 2>/dev/null) || return 1
    case $state in
        idle | mixed | allocated | completing) return 0 ;;
        drain | drained | draining | down)
            if ((!NODE_RESUMED)); then
                NODE_RESUMED=1
                reason=$(timeout 5 sinfo -h -N -n "$NODE_HOST" -o '%E' 2>/dev/null || true)
                # fd 3 is the script's stdout: this runs with output silenced.
                say "node $NODE_HOST was $state (reason: ${reason%%$'\n'*}); resuming it" >&3
                timeout 5 scontrol update NodeName="$NODE_HOST" State=RESUME >/dev/null 2>&1 || true
            fi
            ;;
    esac
    return 1
}

node_usable_detail() {
    printf "sinfo shows it as '%s'; see 'scontrol show node %s'" "$(node_state 2>/dev/null || true)" "$NODE_HOST"
}

ensure_slurmd() {
    STEP="slurmd"
    start_slurm_daemon slurmd "$RESTART_SLURMD"
    STEP="node $NODE_HOST ready"
    wait_for_daemon slurmd node_usable "node $NODE_HOST is not idle" \
        "$SLURM_LOG/slurmd.start.log" "$SLURM_LOG/slurmd.log" "$SLURM_LOG/slurmctld.log"
}

# slurmctld has reported itself to slurmdbd; until then finished jobs never reach sacct.
controller_registered() {
    local host
    host=$(timeout 10 sacctmgr -n -P show cluster "$CLUSTER_NAME" format=ControlHost 2>/dev/null) || return 1
    [[ -n $host ]]
}

sacct_answers() {
    timeout 10 sacct -n -X -P -j 1 -o JobID
}

wait_for_accounting() {
    STEP="slurmctld registered in accounting"
    wait_until controller_registered ||
        fail "slurmctld has not registered with slurmdbd after ${START_TIMEOUT}s ('sacctmgr show cluster' shows no ControlHost)" \
            "$SLURM_LOG/slurmctld.log" "$SLURM_LOG/slurmdbd.log"
    STEP="sacct"
    wait_until sacct_answers ||
        fail "sacct does not answer after ${START_TIMEOUT}s" "$SLURM_LOG/slurmdbd.log"
}

main() {
    if ((EUID != 0)); then
        printf 'slurm-up: must run as root (it installs packages and starts system daemons)\n' >&2
        exit 1
    fi
    take_lock
    exec 3>&1
    install_packages
    ensure_hostname
    ensure_directories
    write_slurm_config
    write_accounting_config
    ensure_munged
    ensure_mariadb
    ensure_slurmdbd
    ensure_cluster_registered
    ensure_slurmctld
    ensure_slurmd
    wait_for_accounting
    say "up (cluster $CLUSTER_NAME, node $NODE_HOST, $NODE_CPUS cpus, $NODE_MEM_MIB MiB, $JOB_CONTROL)"
}

main "$@"
