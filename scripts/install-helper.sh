#!/usr/bin/env bash
# Installs the run-as-user helper (libexec/tes-gateway-helper) at DEST_HELPER, root:root 0755, with its
# configuration path baked in as CONF_PATH (the helper's `readonly HELPER_CONF=...` line is rewritten).
# The directory of DEST_HELPER is created if needed, root-owned, mode 0755. Run as root.
# usage: install-helper.sh DEST_HELPER CONF_PATH
set -euo pipefail
cd "$(dirname "$0")/.."

if (($# != 2)); then
  echo "usage: $0 DEST_HELPER CONF_PATH" >&2
  exit 2
fi
dest=$1
conf=$2
# The same path rule as the helper's own for its configuration values, so the rewritten line needs no quoting.
path_re='^(/[A-Za-z0-9_.+-]+)+$'
for p in "$dest" "$conf"; do
  if [[ ! $p =~ $path_re ]]; then
    echo "install-helper: $p is not an absolute path of letters, digits and _ . + -" >&2
    exit 2
  fi
done
if ((EUID != 0)); then
  echo "install-helper: run as root (the helper must be root-owned)" >&2
  exit 1
fi

source_helper=libexec/tes-gateway-helper
marker='readonly HELPER_CONF=/etc/tes-gateway/helper.conf'
if [[ $(grep -cxF "$marker" "$source_helper") != 1 ]]; then
  echo "install-helper: $source_helper has no single line '$marker' to rewrite" >&2
  exit 1
fi

dir=${dest%/*}
(umask 022 && mkdir -p -- "$dir")
chown root:root -- "$dir"
chmod 0755 -- "$dir"
tmp=$(mktemp "$dir/.tes-gateway-helper.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
while IFS= read -r line || [[ -n $line ]]; do
  if [[ $line == "$marker" ]]; then
    printf 'readonly HELPER_CONF=%s\n' "$conf"
  else
    printf '%s\n' "$line"
  fi
done <"$source_helper" >"$tmp"
chown root:root -- "$tmp"
chmod 0755 -- "$tmp"
bash -n "$tmp"
# Replaced in one step: a running helper keeps reading the old file.
mv -f -- "$tmp" "$dest"
trap - EXIT
