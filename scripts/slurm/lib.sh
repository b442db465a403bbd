# shellcheck shell=bash disable=SC2034
# Shared settings and helpers for slurm-up.sh and slurm-down.sh.
# Sourced, never executed.

# Fixed locations: the client tools (sbatch, sacct, ...) find /etc/slurm/slurm.conf
# without SLURM_CONF, so the gateway and the tests need no extra environment.
SLURM_ETC=/etc/slurm
SLURM_CONF_FILE=$SLURM_ETC/slurm.conf
CGROUP_CONF_FILE=$SLURM_ETC/cgroup.conf
SLURMDBD_CONF_FILE=$SLURM_ETC/slurmdbd.conf
SLURM_RUN=/run/slurm
SLURM_LOG=/var/log/slurm
SLURMCTLD_STATE=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd

# munged keeps its Debian defaults: slurmctld's connection to slurmdbd ignores a moved socket in 22.05.
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_PIDFILE=$MUNGE_RUN/munged.pid
MUNGE_LOG=/var/log/munge/munged.log

# Private MariaDB for slurmdbd, kept apart from any system MariaDB on 3306.
TES_ETC=/etc/tes-slurm
MARIADB_CNF=$TES_ETC/mariadb.cnf
MARIADB_BASE=/var/lib/tes-slurm-mariadb
MARIADB_DATADIR=$MARIADB_BASE/data
MARIADB_LOG=$MARIADB_BASE/mariadbd.log
MARIADB_RUN=/run/tes-slurm-mariadb
MARIADB_SOCKET=$MARIADB_RUN/mariadbd.sock
MARIADB_PIDFILE=$MARIADB_RUN/mariadbd.pid
MARIADB_PORT=3307
SLURMDB_PASSWORD_FILE=$TES_ETC/slurmdb.password

# Bash 5.2 would otherwise expand '&' in ${var//pattern/replacement}.
shopt -u patsub_replacement 2>/dev/null || true

# Daemons get a minimal, predictable environment rather than whatever the caller had
# (a stray SLURM_CONF or PATH entry would otherwise leak into every job's prolog).
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)

# True when $1 is a running process (zombies count as gone: nothing reaps them here)
# whose command name is $2 (if given).
pid_is_live() {
    local pid=$1 want=${2:-} stat rest state comm
    [[ $pid =~ ^[1-9][0-9]*$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    # The command name sits in parentheses and may itself contain ") ", so cut at the last one.
    rest=${stat##*) }
    state=${rest%% *}
    [[ $state != Z && $state != X ]] || return 1
    if [[ -n $want ]]; then
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
        [[ $comm == "$want" ]] || return 1
    fi
    return 0
}

# Prints the pid of the live daemon named $2: from its pid file $1 if that is current,
# else the single live process with exactly that name (a daemon started with another pid file).
daemon_pid() {
    local pidfile=$1 name=$2 pid
    if [[ -r $pidfile ]] && read -r pid <"$pidfile" 2>/dev/null && pid_is_live "$pid" "$name"; then
        printf '%s\n' "$pid"
        return 0
    fi
    for pid in $(pgrep -x "$name" 2>/dev/null || true); do
        if pid_is_live "$pid" "$name"; then
            printf '%s\n' "$pid"
            return 0
        fi
    done
    return 1
}

# Prints the pid of the private mariadbd. Identified by its defaults file, never by name
# alone, so a system MariaDB on the same machine is never mistaken for it.
private_mariadb_pid() {
    local pid cmdline
    if [[ -r $MARIADB_PIDFILE ]] && read -r pid <"$MARIADB_PIDFILE" 2>/dev/null && pid_is_live "$pid" mariadbd; then
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
        if [[ $cmdline == *"--defaults-file=$MARIADB_CNF"* ]]; then
            printf '%s\n' "$pid"
            return 0
        fi
    fi
    for pid in $(pgrep -x mariadbd 2>/dev/null || true); do
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
        if [[ $cmdline == *"--defaults-file=$MARIADB_CNF"* ]] && pid_is_live "$pid" mariadbd; then
            printf '%s\n' "$pid"
            return 0
        fi
    done
    return 1
}

# Waits up to $2 seconds for process $1 to end; true if it did.
wait_pid_gone() {
    local pid=$1 limit=$2 deadline
    deadline=$((SECONDS + limit))
    while pid_is_live "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
    return 0
}

# Stops process $2 (called $1 in messages): SIGTERM, then SIGKILL after $3 seconds.
stop_pid() {
    local label=$1 pid=$2 grace=$3
    kill -TERM "$pid" 2>/dev/null || true
    if wait_pid_gone "$pid" "$grace"; then
        return 0
    fi
    printf '%s: %s (pid %s) ignored SIGTERM for %ss; sending SIGKILL\n' "${0##*/}" "$label" "$pid" "$grace" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 10
}

# Prints the last lines of each existing file given, for failure reports.
show_log_tails() {
    local file
    for file in "$@"; do
        [[ -s $file ]] || continue
        printf -- '--- last 25 lines of %s ---\n' "$file" >&2
        tail -n 25 "$file" >&2 || true
    done
}

# Closes every descriptor above 2 in the current (sub)shell. Call it in a subshell right
# before exec'ing a daemon: munged, slurmdbd and mariadbd keep inherited descriptors, which
# would hold the caller's pipes open (a test runner waiting for end of output would hang)
# and keep this script's lock taken.
close_inherited_fds() {
    local path fd
    for path in "/proc/$BASHPID/fd/"*; do
        fd=${path##*/}
        if ((fd > 2)); then
            exec {fd}>&-
        fi
    done
}

# Serialises slurm-up.sh and slurm-down.sh: two starts at once would launch daemons twice.
take_lock() {
    local lockfile=/run/lock/tes-slurm.lock
    mkdir -p "${lockfile%/*}"
    exec 9>"$lockfile"
    if ! flock -w 300 9; then
        printf '%s: another slurm-up.sh or slurm-down.sh has held %s for 300 s\n' "${0##*/}" "$lockfile" >&2
        exit 1
    fi
}
