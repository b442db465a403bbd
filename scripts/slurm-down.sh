#!/usr/bin/env bash
# Stops the single-node Slurm cluster started by slurm-up.sh: slurmd, slurmctld, slurmdbd,
# the private MariaDB and munged, in that order. Does nothing for parts that are not running.
# Configuration, accounting data and controller state are kept, so slurm-up.sh resumes them.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/lib.sh
source "$SCRIPT_DIR/slurm/lib.sh"

FAILED=0

say() { printf 'slurm: %s\n' "$*"; }

# Stops daemon $1 found through pid $2; $3 is the grace period before SIGKILL.
stop_one() {
    local label=$1 pid=$2 grace=$3
    if stop_pid "$label" "$pid" "$grace"; then
        say "stopped $label (pid $pid)"
    else
        printf 'slurm-down: %s (pid %s) is still running after SIGKILL\n' "$label" "$pid" >&2
        FAILED=1
    fi
}

stop_slurm_daemon() {
    local name=$1 pid
    if pid=$(daemon_pid "$SLURM_RUN/$name.pid" "$name"); then
        # slurmctld writes its state on SIGTERM; give it time on a busy queue.
        stop_one "$name" "$pid" 30
    fi
}

stop_private_mariadb() {
    local pid
    if pid=$(private_mariadb_pid); then
        # InnoDB flushes on SIGTERM; a SIGKILL only costs crash recovery at the next start.
        stop_one "private mariadbd" "$pid" 60
    fi
}

stop_munged() {
    local pid
    if pid=$(daemon_pid "$MUNGE_PIDFILE" munged); then
        stop_one munged "$pid" 10
    fi
}

main() {
    if ((EUID != 0)); then
        printf 'slurm-down: must run as root\n' >&2
        exit 1
    fi
    take_lock
    stop_slurm_daemon slurmd
    stop_slurm_daemon slurmctld
    stop_slurm_daemon slurmdbd
    stop_private_mariadb
    stop_munged

    # Job step daemons outlive slurmd by design; they reattach when slurmd starts again.
    local pid steps=0
    for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
        if pid_is_live "$pid" slurmstepd; then steps=$((steps + 1)); fi
    done
    if ((steps > 0)); then
        say "note: $steps slurmstepd process(es) of unfinished jobs are still running"
    fi

    if ((FAILED)); then
        printf 'slurm-down: some daemons could not be stopped (see above)\n' >&2
        exit 1
    fi
    say "down"
}

main "$@"
