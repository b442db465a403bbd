#!/usr/bin/env bash
# The real TES clients the client tests run (test/clients/), installed from Debian only when missing:
# Debian 12's toil 5.9.2 and snakemake 7.21, and what py-tes 1.1.2 needs (requests, attrs, dateutil).
# py-tes itself and the runners live in ../shared/clients beside the project, never in it.
# Executors run with the bwrap-host runtime over this host's filesystem, so the commands the clients
# send inside their images must work here too: Snakemake's `python -m snakemake` needs `python`
# (python-is-python3), Toil's `_toil_contained_executor` comes with the toil package.
# Needs root to install. Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=$(cd .. && pwd)/shared/clients
for f in run-toil.sh run-snakemake7.sh py-tes/tes/__init__.py; do
  if [[ ! -e "$clients/$f" ]]; then
    echo "clients: $clients/$f is missing; the client tests need the shared clients folder (shared/clients) beside the project" >&2
    exit 1
  fi
done

packages=(toil snakemake python3-requests python3-attr python3-dateutil python-is-python3)
bash scripts/apt-install.sh clients "${packages[@]}"

# What the runners call: fail here, naming it, rather than in the middle of a test.
/usr/bin/python3 -c 'import toil.version, snakemake, requests, attr, dateutil' ||
  { echo "clients: Debian's python3 cannot import toil, snakemake, requests, attr or dateutil" >&2; exit 1; }
PYTHONPATH="$clients/py-tes" /usr/bin/python3 -c 'import tes' ||
  { echo "clients: py-tes in $clients/py-tes does not import with /usr/bin/python3" >&2; exit 1; }
for cmd in /usr/bin/python /usr/bin/snakemake /usr/bin/_toil_contained_executor; do
  [[ -x $cmd ]] || { echo "clients: $cmd is missing after installing ${packages[*]}" >&2; exit 1; }
done
