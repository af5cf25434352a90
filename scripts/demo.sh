#!/usr/bin/env bash
# The main job: an MPI job whose ranks share one container on the (simulated)
# McKernel LWK, through `mpirun ... lwk-runc conexec`. Shows each rank's output (rank,
# mount namespace, launcher `mcexec -n 4`, its own LWK CPU), the LWK RUNNING and the
# job's one container while the job ran, and afterwards the LWK shut down, every
# resource released and nothing left, with the LWK tool calls the runtime made.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

RUNTIME=$PWD/target/release/lwk-runc
work=$(mktemp -d /tmp/lwk-demo.XXXXXX)
export LWK_SIM_ROOT=$work/node LWK_SIM_CPUS=8 LWK_SIM_BOOT_DELAY_MS=300
config=$work/lwk-runc.toml
# The simulator's config, with McKernel on CPUs 1-4: one each for four ranks.
sed -e "s#/run/lwk-sim#$LWK_SIM_ROOT#g" -e "s#/run/lwk-runc-lwk#$work/leases#" \
  -e 's#^cpus = "1"#cpus = "1-4"#' config/sim.toml > "$config"
export LWK_RUNC_CONFIG=$config
cleanup() {
  "$RUNTIME" --root "$work/state" lwk gc >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$LWK_SIM_ROOT"
/opt/lwk-sim/bin/lwk-sim modprobe

# An MPI program (each rank prints where it runs and joins one MPI_Allreduce) and a
# small rootfs with it and Debian's Open MPI: busybox, the MPI tree, their libraries.
mpicc -O2 -o "$work/mpi_hello" conformance-tests/mpi/mpi_hello.c
bash conformance-tests/mpi/make-rootfs.sh "$work/rootfs" "$work/mpi_hello"

echo
echo "==> mpirun -n 4 lwk-runc conexec --lwk mckernel --rootfs ROOTFS -- mpi_hello"
(cd "$work" && MPI_HELLO_SLEEP_MS=1500 mpirun --allow-run-as-root --oversubscribe -n 4 \
  "$RUNTIME" --root "$work/state" conexec --lwk mckernel --rootfs "$work/rootfs" \
  -- /usr/local/bin/mpi_hello 2> >(grep -v mca_base_component_repository_open >&2) \
  | sed -e 's/^/  /' -e 's/_/ /g') &
job=$!
sleep 1.2
echo
echo "==> while it runs: one container for the job, and lwk-runc lwk status"
"$RUNTIME" --root "$work/state" list | sed 's/^/  /'
"$RUNTIME" lwk status | sed 's/^/  /'
wait "$job"
echo
echo "  (one mount namespace, one launcher parent: one container; mcexec -n 4 split CPUs 1-4)"
echo
echo "==> after the job"
sleep 0.5
"$RUNTIME" lwk status | sed 's/^/  /'
echo "  containers left:   $("$RUNTIME" --root "$work/state" list -q | wc -l)"
instances=$(cd "$LWK_SIM_ROOT/dev" && ls -d mcos* 2>/dev/null || true)
echo "  OS instances:      ${instances:-none (destroyed)}"
echo "  CPUs reserved:     '$(/opt/lwk-sim/bin/ihkconfig 0 query cpu)'"
echo "  memory reserved:   '$(/opt/lwk-sim/bin/ihkconfig 0 query mem)'"
echo "  LWK tool calls (from the simulator's calls.log):"
cut -f2,3,4 "$LWK_SIM_ROOT/calls.log" | grep -v 'get status' | sed 's/^/    /'
echo "    (+ $(grep -c 'get status' "$LWK_SIM_ROOT/calls.log") status polls)"
