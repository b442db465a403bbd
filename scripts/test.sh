#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, starts Redis and the single-node
# Slurm, sets up the run-as-user test users and helper (scripts/run-as-user-setup.sh), runs the static
# checks (types, lint with the import rules, format, generated-type drift, the shell scripts through
# the shell linter), the container runtime's self-test and every jest test against the real parts,
# then prints one line `N passed, N failed` (each check counts as one).
# Extra arguments go to jest (e.g. a test path).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mkdir -p .tmp

bash scripts/install-deps.sh || { echo "setup: installing dependencies failed"; echo "0 passed, 1 failed"; exit 1; }
# shellcheck source=scripts/node-env.sh
. scripts/node-env.sh
echo "node $(node --version), npm $(npm --version)"
bash scripts/redis-up.sh || { echo "setup: Redis is not available"; echo "0 passed, 1 failed"; exit 1; }
bash scripts/slurm-up.sh || { echo "setup: the single-node Slurm did not start"; echo "0 passed, 1 failed"; exit 1; }
bash scripts/clients-up.sh || { echo "setup: installing the real TES clients (toil, snakemake) failed"; echo "0 passed, 1 failed"; exit 1; }
bash scripts/run-as-user-setup.sh || { echo "setup: the run-as-user installation (test users, sudo, the helper, its sudoers rule) failed"; echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
for check in typecheck lint format:check check:types-drift lint:shell test:apptainer; do
  if npm run -s "$check" >".tmp/$check.log" 2>&1; then
    echo "check $check: passed"
    passed=$((passed + 1))
  else
    echo "check $check: FAILED"
    tail -n 40 ".tmp/$check.log"
    failed=$((failed + 1))
  fi
done

# The CLI tests run the built program.
npm run -s build >.tmp/build.log 2>&1 || { echo "build failed"; tail -n 40 .tmp/build.log; failed=$((failed + 1)); }
# Runs jest with the given arguments into the JSON file $1 and adds its counts to the totals. A test
# file that could not run at all (it has no results) counts as failed.
run_jest() {
  local out=$1
  shift
  rm -f "$out"
  node --experimental-vm-modules node_modules/jest/bin/jest.js --json --outputFile="$out" "$@"
  if [[ -s $out ]]; then
    read -r jp jf < <(OUT="$out" node -e 'const r=require(process.env.OUT); const broken=r.testResults.filter(t=>t.status==="failed"&&t.assertionResults.length===0).length; console.log(r.numPassedTests, r.numFailedTests+broken)')
    passed=$((passed + jp))
    failed=$((failed + jf))
  else
    echo "jest produced no results ($out)"
    failed=$((failed + 1))
  fi
}

if [[ $# -gt 0 ]]; then
  run_jest "$PWD/.tmp/jest.json" "$@"
else
  # The fault tests stop slurmctld, slurmdbd and a Redis: they run after the rest, one at a time, so
  # no other test meets their outages. The run-as-user tests share one installed helper, work root and
  # syslog stand-in, and their jobs run as other users: they run one at a time before the faults.
  run_jest "$PWD/.tmp/jest.json" --testPathIgnorePatterns '/test/faults/' '/test/run-as-user/'
  run_jest "$PWD/.tmp/jest-run-as-user.json" --runInBand test/run-as-user
  run_jest "$PWD/.tmp/jest-faults.json" --runInBand test/faults
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
