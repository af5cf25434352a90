#!/usr/bin/env bash
# A private Slurm cluster on one machine: slurmctld, munged and N slurmd, each node in
# namespaces of its own, for trying lwk-runc under Slurm by hand and for the Slurm
# tests (conformance-tests/tests/slurm.rs). See README.md next to this file.
#
#   cluster.sh up DIR [--nodes N]     bring it up (N = 3 by default) and wait until idle
#   cluster.sh run DIR CMD...         a Slurm client (srun, sinfo, scancel...) on the head
#   cluster.sh enter DIR NODE [CMD]   a shell (or CMD) on a node (node1, node2, ...)
#   cluster.sh down DIR               stop all of it; DIR keeps the logs
#
# A node is PID, network, UTS, mount and cgroup namespaces of its own: its hostname, an
# address on a bridge inside the head's network namespace, its own /run (lwk-runc's
# --root and lease directory, the simulated LWK), its own /etc/lwk-runc and its own
# cgroup tree (a subtree of the host's). Nothing is written outside DIR but that
# subtree; nothing listens outside the cluster's namespaces. Ending the head's and the
# nodes' `unshare` processes ends every process of the cluster.
#
# Environment: RUNTIME (default <repo>/target/release/lwk-runc), LWK_SIM_PREFIX
# (default /opt/lwk-sim), OCI_CONF (default <repo>/config/engines/oci.conf),
# NODE_CPUS (simulated CPUs per node, default 8), SLURMD_CPUS (CPUs each node offers
# Slurm, default 4).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
self=$here/cluster.sh

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

# The head's bridge address and the nodes' (node K is .K+1). They exist only inside the
# head's network namespace, so two clusters never meet.
subnet=10.77.0
ctld_port=6817
slurmd_port=6818

# Recorded pids carry their start time, so that a recycled pid is never signalled.
start_time() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }
record_pid() { echo "$2 $(start_time "$2")" >"$1/pids/$3"; }
live_pid() { # DIR NAME: the recorded pid, if that process still runs
  local f=$1/pids/$2 pid st
  [[ -f $f ]] || return 1
  read -r pid st <"$f"
  [[ -n $pid && $(start_time "$pid") == "$st" ]] || return 1
  echo "$pid"
}
ns_init() { # DIR NAME: host pid of PID 1 in the namespaces of the `unshare` named NAME
  local u c own
  u=$(live_pid "$1" "$2") || return 1
  own=$(readlink "/proc/$u/ns/pid") || return 1
  # Its child in another PID namespace (a node's launcher may leave a zombie of its own
  # from before it became `unshare`).
  for c in $(cat "/proc/$u/task/$u/children" 2>/dev/null); do
    [[ $(readlink "/proc/$c/ns/pid" 2>/dev/null) != "$own" && -n $(readlink "/proc/$c/ns/pid" 2>/dev/null) ]] || continue
    echo "$c"
    return 0
  done
  return 1
}

wait_until() { # SECONDS WHAT CMD...: run CMD every 0.1 s until it succeeds
  local secs=$1 what=$2 t=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    t=$((t + 1))
    ((t < secs * 10)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.1
  done
}

# The host's cgroup hierarchies, "MOUNTPOINT FSTYPE SUPEROPTS" per line.
cgroup_mounts() {
  awk '{ for (i = 7; $i != "-"; i++) ; if ($(i + 1) ~ /^cgroup2?$/) print $5, $(i + 1), $(i + 3) }' \
    /proc/self/mountinfo
}

join_cgroups() { # DIR NODE: move this shell into the node's cgroups
  local cg mp fs opts
  cg=$(cat "$1/cgroup")
  while read -r mp fs opts; do
    echo "$BASHPID" >"$mp/$cg/$2/cgroup.procs"
  done < <(cgroup_mounts)
}

write_slurm_conf() { # DIR N
  local dir=$1 n=$2 k
  cat >"$dir/etc/slurm.conf" <<EOF
# Written by cluster.sh for the cluster in $dir.
ClusterName=lwk
SlurmctldHost=head($subnet.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/socket/munge.sock
StateSaveLocation=$dir/ctld/state
SlurmctldPidFile=$dir/ctld/slurmctld.pid
SlurmctldLogFile=$dir/ctld/slurmctld.log
SlurmctldDebug=info
SlurmdSpoolDir=$dir/%n/spool
SlurmdPidFile=$dir/%n/slurmd.pid
SlurmdLogFile=$dir/%n/slurmd.log
SlurmdDebug=debug
# The nodes share the host's /tmp; the PMIx plugin's files there must be per node.
TmpFS=$dir/%n/tmp
# As at sites: steps are tracked by cgroup (each node has its own cgroup tree).
ProctrackType=proctrack/cgroup
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
MessageTimeout=20
InactiveLimit=0
NodeName=DEFAULT CPUs=${SLURMD_CPUS:-4} RealMemory=1024 State=UNKNOWN
EOF
  for ((k = 1; k <= n; k++)); do
    echo "NodeName=node$k NodeHostname=node$k NodeAddr=$subnet.$((k + 1))" >>"$dir/etc/slurm.conf"
  done
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$dir/etc/slurm.conf"
  echo "CgroupPlugin=cgroup/v1" >"$dir/etc/cgroup.conf"
}

write_lwk_config() { # FILE SIM_PREFIX: a node's /etc/lwk-runc/config.toml
  cat >"$1" <<EOF
# This node's lwk-runc configuration (written by cluster.sh): the simulated LWK whose
# state is the node's /run/lwk-sim, lwk-runc's default --root and lease_dir.
[mckernel]
enabled = true
ihkconfig = "$2/bin/ihkconfig"
ihkosctl = "$2/bin/ihkosctl"
mcexec = "$2/bin/mcexec"
mcreboot = "$2/bin/mcreboot.sh"
mcstop = "$2/bin/mcstop+release.sh"
dev_dir = "/run/lwk-sim/dev"
cpus = "1-4"
memory = "64M@0"
image = "$2/smp-x86/kernel/mckernel.img"
boot_timeout_secs = 20

[mos]
enabled = true
lwkctl = "$2/bin/lwkctl"
yod = "$2/bin/yod"
sysfs = "/run/lwk-sim/sys/kernel/mOS"
partition = "lwkcpus=0.1-4 lwkmem=auto"
EOF
}

cmd_up() {
  local dir=${1:?usage: cluster.sh up DIR [--nodes N]} n=3
  shift
  while (($#)); do
    case $1 in
      --nodes)
        n=${2:?--nodes needs a number}
        shift 2
        ;;
      *) die "unknown option $1" ;;
    esac
  done
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "--nodes wants 1 to 99, not $n"
  ((EUID == 0)) || die "run me as root (namespaces, mounts, cgroups, daemons)"
  local runtime=${RUNTIME:-$repo/target/release/lwk-runc}
  local sim=${LWK_SIM_PREFIX:-/opt/lwk-sim}
  local oci=${OCI_CONF:-$repo/config/engines/oci.conf}
  local need
  for need in slurmctld slurmd munged mungekey srun unshare nsenter ip; do
    command -v "$need" >/dev/null ||
      die "$need is missing: apt-get install slurm-wlm munge iproute2 util-linux (scripts/setup.sh does)"
  done
  [[ -x $runtime ]] || die "no runtime at $runtime: cargo build --release, or set RUNTIME"
  [[ -x $sim/bin/lwk-sim ]] || die "no simulator under $sim: lwk-sim install --prefix $sim, or set LWK_SIM_PREFIX"
  [[ -f $oci ]] || die "no oci.conf at $oci (set OCI_CONF)"
  cgroup_mounts | grep -q '^/sys/fs/cgroup/freezer cgroup ' ||
    die "this host has no cgroup v1 freezer hierarchy at /sys/fs/cgroup/freezer; the cluster needs v1 or hybrid cgroups (Slurm's proctrack/cgroup, one cgroup tree per node)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  case $dir/ in /run/* | /etc/*) die "DIR must not be under /run or /etc: the nodes get their own" ;; esac
  [[ -z $(ls -A "$dir") ]] || die "$dir is not empty: one cluster per directory"

  echo "$n" >"$dir/nodes"
  mkdir -p "$dir"/{etc,bin,pids,ctld/state,munge/socket}
  # Each node's cgroup subtree, under a name no other cluster has (`down` removes it).
  local cg=lwk-cluster-$$ mp fs opts k
  while read -r mp fs opts; do
    [[ ! -e $mp/$cg ]] || die "the cgroup $mp/$cg exists already (a cluster that was not brought down?)"
  done < <(cgroup_mounts)
  echo "$cg" >"$dir/cgroup"
  while read -r mp fs opts; do
    mkdir "$mp/$cg"
    for ((k = 1; k <= n; k++)); do mkdir "$mp/$cg/node$k"; done
    if [[ -f $mp/cpuset.cpus ]]; then # a v1 cpuset starts empty
      for sub in "$mp/$cg" "$mp/$cg"/node*; do
        cat "$mp/cpuset.cpus" >"$sub/cpuset.cpus"
        cat "$mp/cpuset.mems" >"$sub/cpuset.mems"
      done
    fi
  done < <(cgroup_mounts)

  ln -s "$runtime" "$dir/bin/lwk-runc"
  write_slurm_conf "$dir" "$n"
  cp "$oci" "$dir/etc/oci.conf"
  chmod 755 "$dir/munge" "$dir/munge/socket"
  mungekey -c -k "$dir/munge/munge.key" >/dev/null

  # The head: munged and slurmctld; its network namespace holds the bridge.
  unshare --fork --kill-child --pid --mount-proc --net --uts --propagation private \
    -- bash "$self" _head "$dir" </dev/null >"$dir/ctld/head.out" 2>&1 &
  record_pid "$dir" $! head
  for ((k = 1; k <= n; k++)); do
    mkdir -p "$dir/node$k"/{run/lwk-sim,run/lwk-runc,run/lwk-runc-lwk,etc.upper/lwk-runc,etc.work,lwk-runc,spool,tmp}
    write_lwk_config "$dir/node$k/lwk-runc/config.toml" "$sim"
    echo "cpus=${NODE_CPUS:-8}" >"$dir/node$k/run/lwk-sim/topology"
    LWK_SIM_ROOT=$dir/node$k/run/lwk-sim "$sim/bin/lwk-sim" modprobe >/dev/null
    bash "$self" _launch_node "$dir" "$k" </dev/null >"$dir/node$k/node.out" 2>&1 &
    record_pid "$dir" $! "node$k"
  done

  local head node
  wait_until 10 "the head's namespaces" ns_init "$dir" head
  head=$(ns_init "$dir" head)
  wait_until 10 "the head's bridge (see $dir/ctld/head.out)" nsenter -t "$head" -n ip link show lwkbr0
  for ((k = 1; k <= n; k++)); do
    wait_until 10 "node$k's namespaces (see $dir/node$k/node.out)" ns_init "$dir" "node$k"
    node=$(ns_init "$dir" "node$k")
    nsenter -t "$head" -n ip link add "lwkv$k" type veth peer name eth0 netns "$node"
    nsenter -t "$head" -n ip link set "lwkv$k" master lwkbr0 up
  done
  # The namespaces' PID 1s: `down` waits for them, the last of each namespace to go.
  for name in head $(seq -f 'node%g' 1 "$n"); do
    record_pid "$dir" "$(ns_init "$dir" "$name")" "$name.init"
  done
  wait_until 60 "slurmctld (see $dir/ctld/slurmctld.log)" cmd_run "$dir" scontrol ping
  wait_until 60 "every node to be idle (see $dir/node*/slurmd.log)" all_idle "$dir" "$n"
  echo "cluster up in $dir: $n node(s); try: $self run $dir srun -N$n hostname"
}

all_idle() {
  [[ $(cmd_run "$1" sinfo -h -N -o '%N %T' | sort -u | grep -c ' idle$') -eq $2 ]]
}

# PID 1 of the head's PID namespace: bridge, hostname, munged, slurmctld; reaps orphans.
cmd__head() {
  local dir=$1
  hostname head
  ip link set lo up
  ip link add lwkbr0 type bridge
  ip addr add "$subnet.1/24" dev lwkbr0
  ip link set lwkbr0 up
  munged -F -f --socket="$dir/munge/socket/munge.sock" --key-file="$dir/munge/munge.key" \
    --log-file="$dir/munge/munged.log" --pid-file="$dir/munge/munged.pid" \
    --seed-file="$dir/munge/munged.seed" >>"$dir/munge/munged.out" 2>&1 &
  wait_until 10 "munged (see $dir/munge/munged.log)" test -S "$dir/munge/socket/munge.sock"
  slurmctld -D -i -f "$dir/etc/slurm.conf" >>"$dir/ctld/slurmctld.out" 2>&1 &
  while :; do wait || true; sleep 1; done # bash reaps every child, orphans included
}

# Node K's `unshare`, started from inside the node's cgroups so that its cgroup
# namespace is rooted there.
cmd__launch_node() {
  join_cgroups "$1" "node$2"
  exec unshare --fork --kill-child --pid --mount-proc --net --uts --cgroup \
    --propagation private -- bash "$self" _node "$1" "$2"
}

# PID 1 of node K's PID namespace: takes its address once its veth is there, then its
# hostname, /run, /etc/lwk-runc and cgroup tree, and runs slurmd; reaps orphans.
cmd__node() {
  local dir=$1 k=$2 name=node$2 mp fs opts
  hostname "$name"
  ip link set lo up
  wait_until 10 "$name's network interface" ip link show eth0
  ip addr add "$subnet.$((k + 1))/24" dev eth0
  ip link set eth0 up
  mount --bind "$dir/$name/run" /run
  # /etc stays the host's, but for /etc/lwk-runc.
  mount -t overlay overlay \
    -o "lowerdir=/etc,upperdir=$dir/$name/etc.upper,workdir=$dir/$name/etc.work" /etc
  mount --bind "$dir/$name/lwk-runc" /etc/lwk-runc
  # The hierarchies mounted again from inside the cgroup namespace show the node's tree.
  while read -r mp fs opts; do
    umount "$mp"
    mount -t "$fs" -o "$opts" "$fs" "$mp"
  done < <(cgroup_mounts)
  cd /
  env -u LWK_RUNC_CONFIG -u LWK_SIM_ROOT PATH="$dir/bin:$PATH" \
    slurmd -D -N "$name" -f "$dir/etc/slurm.conf" >>"$dir/$name/slurmd.out" 2>&1 &
  while :; do wait || true; sleep 1; done
}

cmd_run() { # DIR CMD...: a client on the head, with the cluster's config and lwk-runc on PATH
  local dir=${1:?usage: cluster.sh run DIR CMD...} head
  shift
  head=$(ns_init "$dir" head) || die "the cluster in $dir is not running"
  SLURM_CONF=$dir/etc/slurm.conf PATH=$dir/bin:$PATH nsenter -t "$head" -n -u -- "$@"
}

cmd_enter() { # DIR NODE [CMD...]: a command on a node, in all its namespaces and cgroups
  local dir=${1:?usage: cluster.sh enter DIR NODE [CMD...]} name=${2:?which node?} node
  shift 2
  node=$(ns_init "$dir" "$name") || die "$name of the cluster in $dir is not running"
  (($#)) || set -- bash
  join_cgroups "$dir" "$name" # so that `down` ends whatever is started here
  PATH=$dir/bin:$PATH exec nsenter -t "$node" -p -n -u -m -C -- "$@"
}

cgroup_procs() { # DIR: the processes in the cluster's cgroups (all of them are its own)
  local cg mp fs opts
  cg=$(cat "$1/cgroup" 2>/dev/null) || return 0
  while read -r mp fs opts; do
    [[ -d $mp/$cg ]] && find "$mp/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
  done < <(cgroup_mounts) | sort -un
}

cmd_down() {
  local dir=${1:?usage: cluster.sh down DIR} n k t name pid ids id left
  dir=$(cd "$dir" && pwd)
  [[ -f $dir/nodes ]] || die "$dir holds no cluster"
  n=$(cat "$dir/nodes")
  if ns_init "$dir" head >/dev/null; then
    # Jobs first: slurmstepd deletes their containers as it would on a real node.
    cmd_run "$dir" scancel --quiet --full --user=root 2>/dev/null || true
    for ((t = 0; t < 150; t++)); do
      [[ -z $(cmd_run "$dir" squeue -h -o %i 2>/dev/null) ]] && break
      sleep 0.1
    done
  fi
  # Then any container left: deleting it drops its LWK lease, and tears the LWK down.
  for ((k = 1; k <= n; k++)); do
    ns_init "$dir" "node$k" >/dev/null || continue
    ids=$( (cmd_enter "$dir" "node$k" lwk-runc list -q) 2>/dev/null) || ids=
    for id in $ids; do
      (cmd_enter "$dir" "node$k" lwk-runc delete --force "$id") >/dev/null 2>&1 || true
    done
    (cmd_enter "$dir" "node$k" lwk-runc lwk gc) >/dev/null 2>&1 || true
  done
  # Killing an `unshare --kill-child` (which ignores SIGTERM while it waits) kills its
  # namespace's PID 1, and so every process of that node (or of the head).
  for name in head $(seq -f 'node%g' 1 "$n"); do
    pid=$(live_pid "$dir" "$name") && kill -KILL "$pid" 2>/dev/null
  done
  # A PID 1 exits once every other process of its namespace has.
  for name in head $(seq -f 'node%g' 1 "$n"); do
    for ((t = 0; t < 100; t++)); do
      pid=$(live_pid "$dir" "$name.init") || break
      [[ $(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
      sleep 0.1
    done
  done
  # A process that entered a node without its PID namespace, still in its cgroups.
  for ((t = 0; t < 100; t++)); do
    left=$(cgroup_procs "$dir")
    [[ -z $left ]] && break
    ((t % 10 == 9)) && kill -KILL $left 2>/dev/null
    sleep 0.1
  done
  [[ -z $left ]] || echo "cluster.sh: processes $left stay in the cluster's cgroups" >&2
  local cg mp fs opts
  if cg=$(cat "$dir/cgroup" 2>/dev/null); then
    while read -r mp fs opts; do
      for ((t = 0; t < 50; t++)); do
        [[ -d $mp/$cg ]] || break
        find "$mp/$cg" -depth -type d -exec rmdir {} + 2>/dev/null || sleep 0.1
      done
      [[ -d $mp/$cg ]] && echo "cluster.sh: cannot remove the cgroup $mp/$cg" >&2
    done < <(cgroup_mounts)
  fi
  echo "cluster in $dir is down; logs: $dir/ctld/, $dir/node*/slurmd.log"
}

cmd=${1:-}
shift || true
case $cmd in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  run) cmd_run "$@" ;;
  enter) cmd_enter "$@" ;;
  _head) cmd__head "$@" ;;
  _launch_node) cmd__launch_node "$@" ;;
  _node) cmd__node "$@" ;;
  *)
    sed -n '6,9p' "$self" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
