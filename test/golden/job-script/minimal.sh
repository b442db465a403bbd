#!/bin/bash
# Client values below are single-quoted on purpose: a `$` in them is text, never code.
# shellcheck disable=SC2016
# Job script of TES task 01jd0000000000000000000000, written by tes-gateway.
# Runs the executors one after another, each in a container, and records start time, end time
# and exit code of each under exec-<n>/ in the task directory.
set -u
# What the job writes in the task directory is for the job's user only.
umask 077
# The job started from a small fixed environment: the system's programs only.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
task_dir=/var/lib/tes-gateway/tasks/01jd0000000000000000000000
runtime=apptainer
cd -- "$task_dir" || { echo "cannot enter the task directory $task_dir" >&2; exit 120; }

stamp() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }
# Write a result file whole: a reader never sees half of it.
record() { printf '%s\n' "$2" > "$1.tmp" && mv -f -- "$1.tmp" "$1"; }
# A job Slurm requeued runs this script again: what an earlier run left must not pass for its results.
rm -rf -- job-end system-error exec-0
# The end of the script, however it ends: the reconciler, woken by the end marker, then looks
# for the job in accounting.
end_marker=/var/lib/tes-gateway/tasks/.ends/01jd0000000000000000000000
trap 'record job-end "$(stamp)"; : 2> /dev/null > "$end_marker"' EXIT

if ! command -v -- "$runtime" > /dev/null 2>&1; then
  record system-error "the container runtime $runtime was not found on $(hostname); install it or set container.executable"
  exit 127
fi
# The container's /tmp and /var/tmp, and a folder for each executor's records: made here, where
# the job runs, rather than by the gateway before it.
mkdir -p -- tmp var-tmp exec-0

mounts=(
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/tmp,dst=/tmp'
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/var-tmp,dst=/var/tmp'
)
options=(exec --containall --cleanenv)

# executor 0
record exec-0/start "$(stamp)"
"$runtime" "${options[@]}" "${mounts[@]}" /images/busybox.sif echo hello \
  < /dev/null > exec-0/stdout 2> exec-0/stderr
rc=$?
record exec-0/end "$(stamp)"
record exec-0/exit_code "$rc"
[ "$rc" -eq 0 ] || exit "$rc"

exit 0
