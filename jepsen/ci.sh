#!/usr/bin/env bash
# The short fault-injection run for CI (about 35 s of wall time for the test
# phase): 30 s of the presence, master/time and messages workloads together
# (`all`) on 3 real heraldd nodes, each in its own network namespace, under
# partition + kill (and their part-kill composite); then the final phase:
# presence final reads, master/time final checks (a few seconds; at most
# ~15 s without clock faults) and the mailbox drain (under a second when
# healthy, at most 30 s). Exit status: 0 valid, 1 anomaly found, 2 unknown (checker time
# limit or interrupted), 3 the harness could not run. Needs root.
# Extra arguments are passed to `herald-jepsen test` (later ones win).
set -euo pipefail
cd "$(dirname "$0")/.."
bash jepsen/setup.sh
cargo build -q -p herald-node -p herald-jepsen
# Both binaries from this build, wherever CARGO_TARGET_DIR puts them.
bin="${CARGO_TARGET_DIR:-target}/debug"
exec "$bin/herald-jepsen" test --workload all --nemesis partition,kill \
  --nodes 3 --time-limit 30 --concurrency 6 --interval 5 --seed "${HJ_SEED:-42}" \
  --checker-time-limit 20 --heraldd "$bin/heraldd" "$@"
