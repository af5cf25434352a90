#!/usr/bin/env bash
# The main job: an unmodified busybox container whose workload runs on the
# (simulated) McKernel LWK through lwk-runc. Shows the workload's output, that it
# ran under mcexec pinned to the LWK's CPUs, the LWK RUNNING while the container
# ran, and the LWK shut down and every resource released afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

RUNTIME=$PWD/target/release/lwk-runc
work=$(mktemp -d /tmp/lwk-demo.XXXXXX)
export LWK_SIM_ROOT=$work/node LWK_SIM_CPUS=8 LWK_SIM_BOOT_DELAY_MS=300
config=$work/lwk-runc.toml
sed -e "s#/run/lwk-sim#$LWK_SIM_ROOT#g" -e "s#/run/lwk-runc-lwk#$work/leases#" config/sim.toml > "$config"
export LWK_RUNC_CONFIG=$config
cleanup() {
  "$RUNTIME" --root "$work/state" delete --force demo >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$LWK_SIM_ROOT"
/opt/lwk-sim/bin/lwk-sim modprobe

# A bundle: static busybox, nothing else (no libc in the rootfs at all).
bundle=$work/bundle
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs"/{proc,sys,dev,tmp}
cp /bin/busybox "$bundle/rootfs/bin/"
for a in sh cat grep echo sleep tr; do ln -s busybox "$bundle/rootfs/bin/$a"; done
(cd "$bundle" && "$RUNTIME" spec)
python3 - "$bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["env"] = ["PATH=/bin", "LWK_KERNEL=mckernel"]
c["process"]["args"] = ["sh", "-c",
    "echo 'hello from a container on the LWK';"
    "echo \"  my CPUs:      $(grep Cpus_allowed_list /proc/self/status | tr -d '\\t' | cut -d: -f2)\";"
    "echo \"  my launcher:  pid $PPID, $(tr '\\0' ' ' < /proc/$PPID/cmdline)\";"
    "sleep 1"]
json.dump(c, open(p, "w"), indent=1)
PY
# busybox cut is an applet too
ln -s busybox "$bundle/rootfs/bin/cut"

echo
echo "==> lwk-runc run demo   (LWK_KERNEL=mckernel in the container's env)"
"$RUNTIME" --root "$work/state" run --bundle "$bundle" demo &
run_pid=$!
sleep 0.7
echo
echo "==> while it runs: lwk-runc lwk status"
"$RUNTIME" lwk status | sed 's/^/  /'
wait "$run_pid"
echo
echo "==> after it exited"
"$RUNTIME" lwk status | sed 's/^/  /'
instances=$(cd "$LWK_SIM_ROOT/dev" && ls -d mcos* 2>/dev/null || true)
echo "  OS instances:      ${instances:-none (destroyed)}"
echo "  CPUs reserved:     '$(/opt/lwk-sim/bin/ihkconfig 0 query cpu)'"
echo "  memory reserved:   '$(/opt/lwk-sim/bin/ihkconfig 0 query mem)'"
echo "  LWK tool calls (from the simulator's calls.log):"
cut -f2,3,4 "$LWK_SIM_ROOT/calls.log" | grep -v 'get status' | sed 's/^/    /'
echo "    (+ $(grep -c 'get status' "$LWK_SIM_ROOT/calls.log") status polls)"
