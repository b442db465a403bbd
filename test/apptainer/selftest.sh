#!/usr/bin/env bash
# selftest.sh — checks the bubblewrap runtime against the Apptainer behaviour the gateway relies on,
# in three modes, and the test stand-in's pull:
#   host    libexec/apptainer-bwrap, root = the host's file system, read-only (the product's fallback)
#   rootfs  libexec/apptainer-bwrap with APPTAINER_BWRAP_ROOTFS = the busybox image, unpacked
#   sif     test/apptainer/apptainer exec busybox.sif (the stand-in the project's tests use)
# Prints PASS/FAIL per check and the per-call overhead; exits 1 when a check failed.
# Usage: test/apptainer/selftest.sh [-n]   (-n: skip the overhead measurement)
# shellcheck disable=SC2016  # single-quoted scripts are meant to expand inside the container
set -euo pipefail

HERE=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly RUNTIME=$HERE/../../libexec/apptainer-bwrap
readonly STANDIN=$HERE/apptainer
readonly TIMING_CALLS=20

WORK=$(mktemp -d "${TMPDIR:-/tmp}/apptainer-selftest.XXXXXX")
readonly WORK
trap 'rm -rf -- "$WORK"' EXIT
export APPTAINER_STANDIN_CACHEDIR=$WORK/cache
unset APPTAINER_BWRAP_ROOTFS APPTAINER_BWRAP_IMAGE_RESOLVER APPTAINER_BIND APPTAINER_BINDPATH

PASSED=0 FAILED=0 T="" MODE="" IMG="" RC=0 OUT="" ERR=""
RT=()

# pass/fail report on $T, the check being made.
pass() {
	PASSED=$((PASSED + 1))
	printf 'PASS  %-7s %s\n' "$MODE" "$T"
}

fail() {
	FAILED=$((FAILED + 1))
	printf 'FAIL  %-7s %s\n' "$MODE" "$T"
	printf '        rc=%s stdout=%q stderr=%q\n' "$RC" "${OUT:0:300}" "${ERR:0:300}"
}

# check NAME CONDITION... — CONDITION is a command; PASS when it succeeds.
check() {
	T=$1
	shift
	if "$@"; then pass; else fail; fi
}

# run [OPTIONS] -- COMMAND... : runs COMMAND in the container of the current mode, stdin from
# /dev/null; sets RC, OUT, ERR.
run() {
	local opts=()
	while [[ $1 != -- ]]; do
		opts+=("$1")
		shift
	done
	shift
	run_raw "${RT[@]}" "${opts[@]}" "$IMG" "$@" </dev/null
}

run_raw() {
	if "$@" >"$WORK/out" 2>"$WORK/err"; then RC=0; else RC=$?; fi
	OUT=$(<"$WORK/out")
	ERR=$(<"$WORK/err")
}

# verdict NAME RC ACTUAL == EXPECTED — PASS when RC is 0 and ACTUAL equals EXPECTED.
verdict() {
	T=$1
	if [[ $2 == 0 && $3 == "$5" ]]; then pass; else fail; fi
}

is_fatal_255() { [[ $RC == 255 && $ERR == *'FATAL:   '* ]]; }

wait_for_file() {
	local file=$1 i
	for ((i = 0; i < 500; i++)); do
		[[ -e $file ]] && return 0
		sleep 0.01
	done
	return 1
}

no_process_with() { ! pgrep -f -- "$1" >/dev/null; }

# ---------------------------------------------------------------------------------------------

setup() {
	"$HERE/build-images.sh" "$WORK/images"
	SIF=$WORK/images/busybox.sif
	ROOTFS=$WORK/rootfs
	unsquashfs -q -n -no-xattrs -d "$ROOTFS" -o 32768 "$SIF" >/dev/null
	D=$WORK/data
	mkdir -p "$D/ro" "$D/rw" "$D/odd"
	echo original >"$D/ro/file"
	ODD_DIR="$D/odd/dir with space, comma and \"quote\""
	mkdir -p "$ODD_DIR"
	echo odd-content >"$ODD_DIR/file"
}

# The image's entries plus the mount points the runtime adds: /dev /proc /sys /var/tmp and $HOME.
image_root_listing() {
	local home
	home=$(getent passwd "$UID" | cut -d: -f6)
	home=${home#/}
	printf '%s\n' bin dev etc proc sys tmp usr var "${home%%/*}" | sort -u
}

use_mode() {
	MODE=$1
	case $MODE in
	host) RT=("$RUNTIME" exec) IMG=$SIF ;;
	rootfs) RT=(env "APPTAINER_BWRAP_ROOTFS=$ROOTFS" "$RUNTIME" exec) IMG=$SIF ;;
	sif) RT=("$STANDIN" exec) IMG=$SIF ;;
	esac
	rm -rf -- "${D:?}/rw" && mkdir -p "$D/rw"
}

check_binds() {
	run --containall --mount "type=bind,src=$D/ro,dst=/data/ro,ro" -- sh -c 'echo x > /data/ro/new'
	T="ro --mount refuses writes (EROFS)"
	if [[ $RC != 0 && $ERR == *"Read-only file system"* && ! -e $D/ro/new ]]; then pass; else fail; fi
	run --containall --mount "type=bind,src=$D/ro,dst=/data/ro,ro" -- cat /data/ro/file
	T="ro --mount is readable"
	if [[ $RC == 0 && $OUT == original ]]; then pass; else fail; fi
	run --containall -B "$D/ro:/b:ro" -- sh -c 'echo x > /b/new'
	T="ro --bind refuses writes"
	if [[ $RC != 0 && $ERR == *"Read-only file system"* && ! -e $D/ro/new ]]; then pass; else fail; fi
	run --containall --mount "type=bind,src=$D/rw,dst=/data/rw" -- sh -c 'echo hello > /data/rw/out'
	T="rw --mount is writable"
	if [[ $RC == 0 && $(cat "$D/rw/out") == hello ]]; then pass; else fail; fi
	run --containall --bind "$D/rw:/deep/er/path" -- sh -c 'echo deep > /deep/er/path/d && ls -d /deep/er'
	T="bind destination with missing parents is created"
	if [[ $RC == 0 && $(cat "$D/rw/d") == deep ]]; then pass; else fail; fi
	local quoted=${ODD_DIR//\"/\"\"}
	run --containall --mount "type=bind,\"src=$quoted\",\"dst=/in/a b,c \"\"q\"\"\"" -- \
		sh -c 'cat "/in/a b,c \"q\"/file" && echo w > "/in/a b,c \"q\"/written"'
	T="CSV-quoted --mount with space, comma and quote"
	if [[ $RC == 0 && $OUT == odd-content && -f $ODD_DIR/written ]]; then pass; else fail; fi
	run --containall --bind "$WORK/no-such-dir:/x" -- true
	check "missing bind source is FATAL 255" is_fatal_255
	run --containall --mount 'type=bind,src=/a"b,dst=/x' -- true
	check "malformed --mount is FATAL 255" is_fatal_255
}

check_workdir_and_root() {
	run --containall --bind "$D/rw:/data/rw" --pwd /data/rw -- pwd
	T="--pwd is the working directory"
	if [[ $RC == 0 && $OUT == /data/rw ]]; then pass; else fail; fi
	run --containall --pwd /no/such/dir -- true
	check "--pwd missing in the container is FATAL 255" is_fatal_255
	run --containall -- sh -c 'touch /newfile'
	T="root file system is read-only"
	if [[ $RC != 0 && $ERR == *"Read-only file system"* ]]; then pass; else fail; fi
	# the host's /tmp holds at least this test's own directory
	run --containall -- sh -c 'ls -A /tmp; echo t > /tmp/t && cat /tmp/t'
	T="/tmp is private, empty and writable"
	if [[ $RC == 0 && $OUT == t ]]; then pass; else fail; fi
	run --containall -- sh -c 'cd && echo h > ./h && cat ./h && ls -A'
	verdict "\$HOME is an empty writable directory" "$RC" "$OUT" == $'h\nh'
	if [[ $MODE == host ]]; then
		run --containall -- sh -c 'test -x /usr/bin/bwrap && test -f /etc/os-release'
		T="host mode sees the host's /usr/bin and /etc"
		if [[ $RC == 0 ]]; then pass; else fail; fi
	else
		run --containall -- sh -c 'test ! -e /etc/os-release && test ! -e /usr/bin/bwrap && test -x /bin/busybox && test -x /bin/bash && ls /'
		verdict "root is the image (no host /etc/os-release)" "$RC" "$OUT" == "$(image_root_listing)"
		run --containall -- /usr/bin/env bash -c 'echo "$BASH_VERSION"'
		T="image has bash and /usr/bin/env"
		if [[ $RC == 0 && -n $OUT ]]; then pass; else fail; fi
	fi
}

check_environment() {
	local value expected_names
	value=$'sp ace "dq" \'sq\' $(id) `id` \\back\nnew line \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 raw\xff tab\t\n'
	printf '%s' "$value" >"$WORK/expected-foo"
	run_raw env CALLER_SECRET=s3cret "APPTAINERENV_FOO=$value" "${RT[@]}" --containall \
		--bind "$D/rw:/data/rw" "$IMG" sh -c 'printf %s "$FOO" > /data/rw/foo; env' </dev/null
	T="--cleanenv hides the caller's variables"
	if [[ $RC == 0 && $OUT != *CALLER_SECRET* && $OUT != *s3cret* ]]; then pass; else fail; fi
	check "APPTAINERENV_FOO arrives as FOO, byte for byte" cmp -s "$WORK/expected-foo" "$D/rw/foo"
	run_raw env -i "PATH=$PATH" APPTAINERENV_A=1 "$RUNTIME" --version
	run_raw env -i "PATH=$PATH" APPTAINERENV_A=1 "${RT[@]}" --containall "$IMG" env </dev/null
	expected_names=$'A\nAPPTAINER_CONTAINER\nAPPTAINER_NAME\nHOME\nLANG\nPATH\nPWD'
	verdict "--cleanenv environment is exactly the documented set" "$RC" "$(printf '%s\n' "$OUT" | cut -d= -f1 | sort)" == "$expected_names"
	run_raw env SINGULARITYENV_S=from-singularity APPTAINERENV_T=apptainer SINGULARITYENV_T=singularity \
		"${RT[@]}" --containall --env 'U=x,y' --env V=1,W=2 "$IMG" sh -c 'echo "$S|$T|$U|$V|$W"' </dev/null
	T="SINGULARITYENV_, precedence, --env pflag parsing"
	if [[ $RC == 0 && $OUT == "from-singularity|apptainer|x,y|1|2" ]]; then pass; else fail; fi
	run_raw env APPTAINERENV_HOME=/elsewhere "${RT[@]}" --containall "$IMG" true </dev/null
	check "APPTAINERENV_HOME is FATAL 255" is_fatal_255
	run_raw env APPTAINERENV_PATH=/opt/x APPTAINERENV_APPEND_PATH=/bin "${RT[@]}" --containall "$IMG" sh -c 'echo "$PATH"' </dev/null
	T="APPTAINERENV_PATH and _APPEND_PATH"
	if [[ $RC == 0 && $OUT == /opt/x:/bin ]]; then pass; else fail; fi
	run_raw env KEEP_ME=yes "${RT[@]}" --contain "$IMG" sh -c 'echo "$KEEP_ME"' </dev/null
	T="without --cleanenv the caller's environment passes"
	if [[ $RC == 0 && $OUT == yes ]]; then pass; else fail; fi
}

check_exit_codes_and_io() {
	run --containall -- sh -c 'exit 3'
	T="exit code 3 is propagated"
	if [[ $RC == 3 ]]; then pass; else fail; fi
	run --containall -- sh -c 'kill -KILL $$'
	T="command killed by SIGKILL gives 137"
	if [[ $RC == 137 ]]; then pass; else fail; fi
	run --containall -- no-such-command
	check "command not found is FATAL 255" is_fatal_255
	if [[ $MODE == sif ]]; then
		run_raw "${RT[@]}" --containall "$WORK/no-such.sif" true </dev/null
		check "missing image is FATAL 255" is_fatal_255
	else
		run_raw "${RT[@]}" --containall alpine:3.19 sh -c 'echo "$APPTAINER_NAME"' </dev/null
		verdict "an image reference is accepted and not used" "$RC" "$OUT" == alpine:3.19
	fi
	run --containall --no-such-option -- true
	check "unknown option is FATAL 255" is_fatal_255
	run --containall -- sh -c 'echo out; echo err >&2'
	T="stdout and stderr pass through separately"
	if [[ $RC == 0 && $OUT == out && $ERR == err ]]; then pass; else fail; fi
	if printf 'in\xffput' | "${RT[@]}" --containall "$IMG" cat >"$WORK/stdin-out" 2>"$WORK/err"; then RC=0; else RC=$?; fi
	T="stdin passes through"
	if [[ $RC == 0 && $(od -An -tx1 "$WORK/stdin-out") == $(printf "in\xffput" | od -An -tx1) ]]; then pass; else fail; fi
}

# A TERM to the runtime process must reach the command: it dies (143) or handles it.
check_signals() {
	local token pid ready=$D/rw/ready
	token="sleep 3141$((RANDOM % 900 + 100))"
	rm -f -- "$ready"
	"${RT[@]}" --containall --bind "$D/rw:/w" "$IMG" sh -c "echo > /w/ready; exec $token" </dev/null &
	pid=$!
	wait_for_file "$ready" || true
	kill -TERM "$pid"
	if wait "$pid"; then RC=0; else RC=$?; fi
	sleep 0.1
	T="kill -TERM of the runtime gives 143, command gone"
	if [[ $RC == 143 ]] && no_process_with "$token"; then pass; else fail; fi

	rm -f -- "$ready" "$D/rw/got"
	"${RT[@]}" --containall --bind "$D/rw:/w" "$IMG" \
		sh -c 'trap "echo TERM > /w/got; exit 0" TERM; echo > /w/ready; while :; do sleep 0.05; done' </dev/null &
	pid=$!
	wait_for_file "$ready" || true
	kill -TERM "$pid"
	if wait "$pid"; then RC=0; else RC=$?; fi
	T="TERM is forwarded: the command can handle it"
	if [[ $RC == 0 && $(cat "$D/rw/got" 2>/dev/null) == TERM ]]; then pass; else fail; fi

	token="sleep 3142$((RANDOM % 900 + 100))"
	rm -f -- "$ready"
	setsid "${RT[@]}" --containall --bind "$D/rw:/w" "$IMG" sh -c "echo > /w/ready; exec $token" </dev/null &
	pid=$!
	wait_for_file "$ready" || true
	kill -TERM -- "-$pid"
	if wait "$pid"; then RC=0; else RC=$?; fi
	sleep 0.1
	T="process-group TERM gives 143, command gone"
	if [[ $RC == 143 ]] && no_process_with "$token"; then pass; else fail; fi

	token="sleep 3143$((RANDOM % 900 + 100))"
	rm -f -- "$ready"
	"${RT[@]}" --containall --bind "$D/rw:/w" "$IMG" sh -c "echo > /w/ready; exec $token" </dev/null &
	pid=$!
	wait_for_file "$ready" || true
	kill -KILL "$pid"
	{ wait "$pid"; } 2>/dev/null || true
	sleep 0.2
	check "SIGKILL of the runtime leaves no command behind" no_process_with "$token"
}

check_versions() {
	MODE=cli
	run_raw "$RUNTIME" --version
	T="apptainer-bwrap --version"
	if [[ $OUT == "apptainer-bwrap version 1.0.0" ]]; then pass; else fail; fi
	run_raw "$STANDIN" --version
	T="stand-in --version"
	if [[ $OUT == "apptainer version 1.3.6" ]]; then pass; else fail; fi
	run_raw "$RUNTIME" exec --help
	T="exec --help"
	if [[ $RC == 0 && $OUT == *--containall* ]]; then pass; else fail; fi
}

check_unprivileged() {
	MODE=host
	if ((EUID != 0)) || ! id nobody >/dev/null 2>&1 || ! command -v setpriv >/dev/null; then
		printf 'SKIP  %-7s %s\n' "$MODE" "unprivileged run (needs root, setpriv and user nobody)"
		return 0
	fi
	# the image is a URI: nobody cannot read the test's files, and host mode ignores the image
	run_raw setpriv --reuid=nobody --regid=nogroup --clear-groups "$RUNTIME" exec --containall docker://busybox sh -c 'id -u; cd; touch x'
	T="runs unprivileged (user namespace)"
	if [[ $RC == 0 && $OUT == "$(id -u nobody)" ]]; then pass; else fail; fi
}

check_pull() {
	MODE=pull
	local reg=$WORK/images/registry dest=$WORK/pulled log=$WORK/pull.log i start elapsed
	mkdir -p "$dest"
	export FAKE_APPTAINER_REGISTRY=$reg FAKE_APPTAINER_PULL_LOG=$log
	run_raw "$STANDIN" pull "$dest/a.sif" docker://alpine
	T="pull docker://alpine copies the registry image"
	if [[ $RC == 0 && $ERR == *"INFO:    "* ]] && cmp -s "$dest/a.sif" "$reg/docker_alpine_latest.sif"; then pass; else fail; fi
	run_raw "$STANDIN" pull "$dest/a.sif" alpine
	check "pull onto an existing file without --force is FATAL 255" is_fatal_255
	run_raw "$STANDIN" pull --force "$dest/a.sif" docker://busybox:latest
	T="pull --force overwrites"
	if [[ $RC == 0 ]]; then pass; else fail; fi
	run_raw "$STANDIN" pull "$dest/none.sif" docker://no-such-image:1.0
	T="unknown image: FATAL 255 manifest unknown, no file"
	if is_fatal_255 && [[ $ERR == *"manifest unknown"* && ! -e $dest/none.sif ]]; then pass; else fail; fi
	T="every pull attempt is logged"
	if [[ $(wc -l <"$log") == 4 && $(tail -n 1 "$log") == docker://no-such-image:1.0 ]]; then pass; else fail; fi
	start=$EPOCHREALTIME
	run_raw env FAKE_APPTAINER_PULL_DELAY_MS=300 "$STANDIN" pull -F "$dest/a.sif" docker://ubuntu:22.04
	elapsed=$((${EPOCHREALTIME/./} - ${start/./}))
	T="FAKE_APPTAINER_PULL_DELAY_MS delays the pull"
	if [[ $RC == 0 ]] && ((elapsed >= 300000)); then pass; else fail; fi
	for i in 1 2 3 4 5 6; do
		FAKE_APPTAINER_PULL_DELAY_MS=50 "$STANDIN" pull -F "$dest/c.sif" docker://alpine 2>/dev/null &
	done
	RC=0
	for i in 1 2 3 4 5 6; do wait -n || RC=$?; done
	T="concurrent pulls to one file all succeed, file intact"
	if [[ $RC == 0 ]] && cmp -s "$dest/c.sif" "$reg/docker_alpine_latest.sif" && [[ -z $(find "$dest" -name ".*") ]]; then pass; else fail; fi
	cp "$SIF" "$dest/fresh.sif"
	for i in 1 2 3 4 5 6; do
		"$STANDIN" exec --containall "$dest/fresh.sif" true </dev/null &
	done
	RC=0
	for i in 1 2 3 4 5 6; do wait -n || RC=$?; done
	T="concurrent first use of a new .sif unpacks it safely"
	if [[ $RC == 0 ]]; then pass; else fail; fi
	run_raw "$STANDIN" exec --containall docker://alpine cat /etc/passwd
	T="exec docker://alpine resolves through the registry"
	if [[ $RC == 0 && $OUT == root:* ]]; then pass; else fail; fi
	T="registry names"
	if [[ $("$STANDIN" fake-registry-name alpine) == docker_alpine_latest.sif &&
		$("$STANDIN" fake-registry-name docker.io/library/ubuntu:22.04) == docker_ubuntu_22.04.sif &&
		$("$STANDIN" fake-registry-name library://x/y/z) == library_x_y_z_latest.sif ]]; then pass; else fail; fi
	unset FAKE_APPTAINER_REGISTRY FAKE_APPTAINER_PULL_LOG
}

# Milliseconds per call of COMMAND..., averaged over TIMING_CALLS calls.
ms_per_call() {
	local i start end
	start=$EPOCHREALTIME
	for ((i = 0; i < TIMING_CALLS; i++)); do "$@" </dev/null >/dev/null; done
	end=$EPOCHREALTIME
	local us=$(((${end/./} - ${start/./}) / TIMING_CALLS))
	printf '%d.%01d' $((us / 1000)) $((us % 1000 / 100))
}

report_overhead() {
	local bare host rootfs sif plain
	"$STANDIN" exec --containall "$SIF" true # unpack once, outside the measurement
	plain=$(ms_per_call /bin/true)
	bare=$(ms_per_call bwrap --ro-bind / / --dev /dev --proc /proc --unshare-pid --die-with-parent /bin/true)
	host=$(ms_per_call "$RUNTIME" exec --containall "$SIF" true)
	rootfs=$(ms_per_call env "APPTAINER_BWRAP_ROOTFS=$ROOTFS" "$RUNTIME" exec --containall "$SIF" true)
	sif=$(ms_per_call "$STANDIN" exec --containall "$SIF" true)
	printf 'INFO  overhead per call (ms, mean of %d): /bin/true %s | bare bwrap %s | host %s | rootfs %s | sif (stand-in) %s\n' \
		"$TIMING_CALLS" "$plain" "$bare" "$host" "$rootfs" "$sif"
}

main() {
	local timing=1 mode
	if [[ ${1:-} == -n ]]; then timing=0; fi
	setup
	check_versions
	for mode in host rootfs sif; do
		use_mode "$mode"
		check_binds
		check_workdir_and_root
		check_environment
		check_exit_codes_and_io
		check_signals
	done
	check_unprivileged
	check_pull
	if ((timing)); then report_overhead; fi
	printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
	((FAILED == 0))
}

main "$@"
