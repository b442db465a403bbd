#!/usr/bin/env bash
# build-images.sh OUTDIR — builds the container images the tests use, offline, in about a second.
#
# Produces:
#   OUTDIR/busybox.sif                       a real SIF (squashfs primary partition) whose root holds
#                                            only: /bin/busybox (static) and its applet links,
#                                            /bin/bash (bash-static), /usr/bin/env, /tmp, /etc/passwd
#   OUTDIR/registry/docker_alpine_latest.sif  \
#   OUTDIR/registry/docker_busybox_latest.sif  > copies of busybox.sif, the fake registry that
#   OUTDIR/registry/docker_ubuntu_22.04.sif   /  test/apptainer/apptainer reads (FAKE_APPTAINER_REGISTRY)
#
# The ubuntu entry is the busybox image under another name: it exists so tests can pull a tagged
# reference, not to provide Ubuntu.
#
# Needs the Debian packages busybox-static, bash-static and squashfs-tools; siftool (Debian package
# siftool) is used when present, otherwise the squashfs is placed at byte offset 32768 of a file
# that is not a real SIF (the stand-in runtime accepts both).
#
# Re-running is cheap: nothing is rebuilt while the inputs are unchanged. Concurrent runs on one
# OUTDIR are serialised with a lock, and every output appears by rename, never half-written.
set -euo pipefail

readonly BUILD_FORMAT=1
readonly SQUASHFS_OFFSET=32768
readonly REGISTRY_NAMES=(docker_alpine_latest docker_busybox_latest docker_ubuntu_22.04)
readonly BUSYBOX=/bin/busybox
readonly BASH_STATIC=/bin/bash-static

die() {
	printf 'build-images.sh: %s\n' "$*" >&2
	exit 1
}

require_tools() {
	local tool
	for tool in mksquashfs unsquashfs flock; do
		command -v "$tool" >/dev/null || die "$tool is missing (apt-get install squashfs-tools util-linux)"
	done
	[[ -x $BUSYBOX ]] || die "$BUSYBOX is missing (apt-get install busybox-static)"
	[[ -x $BASH_STATIC ]] || die "$BASH_STATIC is missing (apt-get install bash-static)"
	# A dynamically linked busybox would not run in an image without a C library.
	local linkage
	linkage=$(LC_ALL=C ldd "$BUSYBOX" 2>&1 || true)
	if [[ $linkage != *'not a dynamic executable'* ]]; then
		die "$BUSYBOX is dynamically linked; install busybox-static instead of busybox"
	fi
}

# Everything that changes the image's content, so an unchanged stamp means nothing to do.
input_stamp() {
	local self
	self=$(cksum <"${BASH_SOURCE[0]}")
	printf 'format=%s script=%s busybox=%s bash=%s siftool=%s\n' "$BUILD_FORMAT" "$self" \
		"$(stat -L -c '%s:%Y' "$BUSYBOX")" "$(stat -L -c '%s:%Y' "$BASH_STATIC")" \
		"$(command -v siftool >/dev/null && echo yes || echo no)"
}

populate_rootfs() {
	local root=$1 applet
	mkdir -p "$root/bin" "$root/usr/bin" "$root/etc" "$root/tmp"
	chmod 1777 "$root/tmp"
	cp "$BUSYBOX" "$root/bin/busybox"
	cp "$BASH_STATIC" "$root/bin/bash"
	while IFS= read -r applet; do
		[[ -n $applet && ! -e $root/bin/$applet ]] || continue
		ln -s busybox "$root/bin/$applet"
	done < <("$BUSYBOX" --list)
	# Relative, so it resolves inside the image wherever the image is unpacked.
	ln -s ../../bin/busybox "$root/usr/bin/env"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
}

# Go's SIF library names architectures by number; siftool wants that number.
sif_arch_code() {
	case $(uname -m) in
	x86_64) echo 2 ;;
	i?86) echo 1 ;;
	aarch64) echo 4 ;;
	armv7l | armv6l) echo 3 ;;
	ppc64le) echo 6 ;;
	s390x) echo 11 ;;
	riscv64) echo 12 ;;
	*) die "no SIF architecture code for $(uname -m)" ;;
	esac
}

make_sif() {
	local squashfs=$1 sif=$2
	if command -v siftool >/dev/null; then
		siftool new "$sif" >/dev/null
		# datatype 4 = partition, partfs 1 = squashfs, parttype 2 = primary system partition
		siftool add --datatype 4 --partfs 1 --parttype 2 --partarch "$(sif_arch_code)" \
			"$sif" "$squashfs" >/dev/null
	else
		truncate -s "$SQUASHFS_OFFSET" "$sif"
		cat "$squashfs" >>"$sif"
	fi
	chmod 0755 "$sif"
}

# The image must unpack the way the stand-in runtime will unpack it.
verify_sif() {
	local sif=$1 offsets listing
	offsets=$(grep -obUa hsqs "$sif" || true)
	offsets=${offsets%%:*}
	[[ -n $offsets ]] || die "no squashfs partition found in $sif"
	listing=$(unsquashfs -o "$offsets" -ls "$sif" 2>&1) ||
		die "unsquashfs cannot read $sif at offset $offsets: $listing"
	[[ $'\n'$listing$'\n' == *$'\nsquashfs-root/bin/busybox\n'* ]] ||
		die "$sif does not list /bin/busybox when read at offset $offsets"
}

build_sif() {
	local outdir=$1 work
	work=$(mktemp -d "$outdir/.build.XXXXXX")
	# shellcheck disable=SC2064  # the path is fixed now, on purpose
	trap "rm -rf -- '$work'" EXIT
	populate_rootfs "$work/rootfs"
	mksquashfs "$work/rootfs" "$work/rootfs.squashfs" -noappend -all-root -no-xattrs \
		-all-time 0 -mkfs-time 0 -quiet -no-progress >/dev/null
	make_sif "$work/rootfs.squashfs" "$work/busybox.sif"
	verify_sif "$work/busybox.sif"
	mv -f -- "$work/busybox.sif" "$outdir/busybox.sif"
	rm -rf -- "$work"
	trap - EXIT
}

publish_registry() {
	local outdir=$1 name tmp
	mkdir -p "$outdir/registry"
	for name in "${REGISTRY_NAMES[@]}"; do
		if cmp -s "$outdir/busybox.sif" "$outdir/registry/$name.sif"; then
			continue
		fi
		tmp=$outdir/registry/.$name.sif.tmp.$$
		cp -- "$outdir/busybox.sif" "$tmp"
		mv -f -- "$tmp" "$outdir/registry/$name.sif"
	done
}

main() {
	[[ $# -eq 1 && -n $1 ]] || die "usage: build-images.sh OUTDIR"
	local outdir=$1 stamp lock
	require_tools
	mkdir -p "$outdir"
	exec {lock}>"$outdir/.build.lock"
	flock "$lock"
	stamp=$(input_stamp)
	if [[ ! -f $outdir/busybox.sif || $(cat "$outdir/.build.stamp" 2>/dev/null) != "$stamp" ]]; then
		build_sif "$outdir"
		printf '%s\n' "$stamp" >"$outdir/.build.stamp"
	fi
	publish_registry "$outdir"
}

main "$@"
