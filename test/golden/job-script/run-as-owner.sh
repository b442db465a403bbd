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
rm -rf -- job-end system-error exec-0 exec-1
# The end of the script, however it ends: the reconciler then looks for the job in accounting soon.
trap 'record job-end "$(stamp)"' EXIT

if ! command -v -- "$runtime" > /dev/null 2>&1; then
  record system-error "the container runtime $runtime was not found on $(hostname); install it or set container.executable"
  exit 127
fi
# The container's /tmp and /var/tmp, and a folder for each executor's records: made here, where
# the job runs, rather than by the gateway before it.
mkdir -p -- tmp var-tmp exec-0 exec-1

mounts=(
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/tmp,dst=/tmp'
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/mnt/data,dst=/data'
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/mnt/scratch,dst=/scratch'
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/var-tmp,dst=/var/tmp'
  --mount 'type=bind,src=/shared/input 0,dst=/data/ref.fa,ro'
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/inputs/1/content,dst=/data/script.sh,ro'
)
options=(exec --containall --cleanenv)

# Record why the job stops, and stop it.
refuse() { record system-error "$1"; printf '%s\n' "$1" >&2; exit 121; }
# realpath of $2 (mode $1: -e must exist, -m may be missing) into $resolved, keeping a trailing newline.
resolve() { resolved=$(realpath "$1" -- "$2" && printf x) && resolved=${resolved%$'\n'x}; }
# inside FIELD PATH HOST_PATH PLACE PLACE_HOST_DIR: HOST_PATH lies in a writable place of the task,
# where the task may have made links. Its real path, left in $resolved, must lie inside the place
# and, if it exists, be a regular file.
inside() {
  local place
  resolve -e "$5" || refuse "$1: the writable place $4 is missing on $(hostname)"
  place=$resolved
  resolve -m "$3" || refuse "$1: $2 cannot be resolved (a loop of symbolic links?); the gateway does not follow links a task makes"
  case $resolved in
  "$place"/*) ;;
  *) refuse "$1: $2 resolves to $resolved, outside the task's writable place $4; the gateway does not follow links a task makes" ;;
  esac
  if [ -e "$resolved" ] && [ ! -f "$resolved" ]; then refuse "$1: $2 is not a regular file"; fi
}
# owned FIELD SOURCE ROOT dir|file: an input of a task run as its owner. The gateway did not look at
# it; the job, running as the owner, checks that the owner may reach it, that it lies inside its
# allowed root, is of its kind, and may be read, before any executor runs.
owned() {
  local root
  resolve -e "$3" || refuse "$1: the allowed root $3 does not exist on $(hostname), or $(id -un) may not reach it"
  root=$resolved
  resolve -e "$2" || refuse "$1: $2 does not exist, or $(id -un) may not reach it (the job runs as $(id -un), with its permissions)"
  case $resolved in
  "$root" | "$root"/*) ;;
  *) refuse "$1: $2 resolves to $resolved, outside the allowed root $3" ;;
  esac
  if [ "$4" = dir ]; then
    [ -d "$resolved" ] || refuse "$1: $2 is not a directory"
    { [ -r "$resolved" ] && [ -x "$resolved" ]; } || refuse "$1: $(id -un) may not read the directory $2"
  else
    [ -f "$resolved" ] || refuse "$1: $2 is not a regular file (set type DIRECTORY for a folder)"
    [ -r "$resolved" ] || refuse "$1: $(id -un) may not read $2"
  fi
}
# The inputs named by path, checked as the user the job runs as.
owned 'inputs[0]' '/shared/input 0' /shared file

# executor 0
record exec-0/start "$(stamp)"
APPTAINERENV_SAMPLE=NA12878 APPTAINERENV_THREADS=2 "$runtime" "${options[@]}" --pwd /data "${mounts[@]}" docker://biocontainers/bwa:0.7.17 bash /data/script.sh \
  < /dev/null > exec-0/stdout 2> exec-0/stderr
rc=$?
record exec-0/end "$(stamp)"
record exec-0/exit_code "$rc"
inside 'executors[0].stdout' /data/logs/stdout.txt /var/lib/tes-gateway/tasks/01jd0000000000000000000000/mnt/data/logs/stdout.txt /data /var/lib/tes-gateway/tasks/01jd0000000000000000000000/mnt/data
cp -- exec-0/stdout "$resolved"
[ "$rc" -eq 0 ] || exit "$rc"

# executor 1
record exec-1/start "$(stamp)"
"$runtime" "${options[@]}" "${mounts[@]}" docker://alpine sh -c 'ls /data > /data/logs/listing' \
  < /dev/null > exec-1/stdout 2> exec-1/stderr
rc=$?
record exec-1/end "$(stamp)"
record exec-1/exit_code "$rc"

exit 0
