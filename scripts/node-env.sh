# shellcheck shell=sh
# Sourced, by bash or sh, from the project's root: puts the project's own Node.js 22
# (.tools/node22, which scripts/install-deps.sh installs from the npm registry when this machine's
# node is older) first on PATH, so that npm, tsc, jest, the gateway and the benchmark all run on it.
# Does nothing when the machine's own node is 22 or later.
if [ -x .tools/node22/node_modules/.bin/node ] &&
  [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 22 ]; then
  PATH="$PWD/.tools/node22/node_modules/.bin:$PATH"
  export PATH
fi
