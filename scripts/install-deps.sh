#!/usr/bin/env bash
# The Debian packages the gateway and its tests use, installed only when missing:
# bubblewrap (the bwrap-host runtime and the test Apptainer stand-in), squashfs-tools, busybox-static
# and bash-static (test images), shellcheck (job script tests), curl (quick start).
set -euo pipefail

packages=(bubblewrap squashfs-tools busybox-static bash-static shellcheck curl ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  echo "deps: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  # `npm install` installs the locked versions too; npm 11's `npm ci` refuses this lock file because
  # it expects entries for other platforms' optional native modules.
  echo "deps: npm install (locked versions)"
  npm install --no-audit --no-fund --loglevel=error
fi
