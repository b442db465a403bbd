#!/bin/bash
# Client values below are single-quoted on purpose: a `$` in them is text, never code.
# shellcheck disable=SC2016
# Job script of TES task 01jd0000000000000000000000, written by tes-gateway.
# Runs the executors one after another, each in a container, and records start time, end time
# and exit code of each under exec-<n>/ in the task directory.
set -u
task_dir=/var/lib/tes-gateway/tasks/01jd0000000000000000000000
runtime=/opt/singularity/bin/singularity
cd -- "$task_dir" || { echo "cannot enter the task directory $task_dir" >&2; exit 120; }

stamp() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }
# Write a result file whole: a reader never sees half of it.
record() { printf '%s\n' "$2" > "$1.tmp" && mv -f -- "$1.tmp" "$1"; }
# The end of the script, however it ends: the reconciler then looks for the job in accounting soon.
trap 'record job-end "$(stamp)"' EXIT

if ! command -v -- "$runtime" > /dev/null 2>&1; then
  record system-error "the container runtime $runtime was not found on $(hostname); install it or set container.executable"
  exit 127
fi
mkdir -p -- exec-0 exec-1

mounts=(
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/tmp,dst=/tmp'
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/mnt/data,dst=/data'
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/mnt/scratch,dst=/scratch'
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/var-tmp,dst=/var/tmp'
  --mount 'type=bind,src=/shared/input 0,dst=/data/ref.fa,ro'
  --mount 'type=bind,src=/var/lib/tes-gateway/tasks/01jd0000000000000000000000/inputs/1/content,dst=/data/script.sh,ro'
)
options=(exec --containall --cleanenv --nv --no-home)

# executor 0
record exec-0/start "$(stamp)"
SINGULARITYENV_SAMPLE=NA12878 SINGULARITYENV_THREADS=2 "$runtime" "${options[@]}" --pwd /data "${mounts[@]}" docker://biocontainers/bwa:0.7.17 bash /data/script.sh \
  < /dev/null > exec-0/stdout 2> exec-0/stderr
rc=$?
record exec-0/end "$(stamp)"
record exec-0/exit_code "$rc"
cp -- exec-0/stdout /var/lib/tes-gateway/tasks/01jd0000000000000000000000/mnt/data/logs/stdout.txt
[ "$rc" -eq 0 ] || exit "$rc"

# executor 1
record exec-1/start "$(stamp)"
"$runtime" "${options[@]}" "${mounts[@]}" docker://alpine sh -c 'ls /data > /data/logs/listing' \
  < /dev/null > exec-1/stdout 2> exec-1/stderr
rc=$?
record exec-1/end "$(stamp)"
record exec-1/exit_code "$rc"

exit 0
