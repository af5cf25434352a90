#!/usr/bin/env bash
# Builds a small rootfs that runs Open MPI programs linked against Debian's Open MPI:
# busybox, the programs given, the whole Open MPI tree (components, the pmix2 tree,
# /etc/openmpi, /usr/share/openmpi) and the shared-library closure of all of it.
#   make-rootfs.sh ROOTFS PROGRAM...
# Programs land in ROOTFS/usr/local/bin. Needs busybox-static and libopenmpi-dev.
set -euo pipefail
root=${1:?usage: make-rootfs.sh ROOTFS PROGRAM...}
shift
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
ompi=/usr/lib/$multiarch/openmpi
pmix=/usr/lib/$multiarch/pmix2
for need in /bin/busybox "$ompi" "$pmix" /etc/openmpi /usr/share/openmpi; do
  [[ -e $need ]] || { echo "make-rootfs.sh: $need is missing; install busybox-static and libopenmpi-dev" >&2; exit 1; }
done

# Debian's merged /usr: /lib and /lib64 are links into /usr, so library paths the
# loader and ldd name (/lib/..., /lib64/...) resolve the same way inside.
mkdir -p "$root"/{bin,sbin,usr/bin,usr/lib,usr/lib64,usr/local/bin,etc,proc,sys,dev,tmp,root}
ln -sfn usr/lib "$root/lib"
ln -sfn usr/lib64 "$root/lib64"
cp /bin/busybox "$root/bin/busybox"
for app in $("$root/bin/busybox" --list); do
  [[ -e $root/bin/$app ]] || ln -s busybox "$root/bin/$app"
done
chmod 1777 "$root/tmp"

copy() { # copy a host path into the rootfs at its physical place, following symlinks
  local dir at
  dir=$(readlink -f "$(dirname "$1")")
  at=$dir/$(basename "$1")
  [[ -e $root$at || -L $root$at ]] && return 0
  mkdir -p "$root$dir"
  cp -a "$at" "$root$at"
  if [[ -L $at ]]; then # each link of a chain (e.g. through /etc/alternatives)
    local t
    t=$(readlink "$at")
    [[ $t == /* ]] || t=$dir/$t
    copy "$t"
  fi
}

objects=()
for prog in "$@"; do
  cp "$prog" "$root/usr/local/bin/"
  objects+=("$prog")
done
for tree in "$ompi" "$pmix" /etc/openmpi /usr/share/openmpi; do
  copy "$tree"
done
while IFS= read -r -d '' so; do objects+=("$so"); done \
  < <(find "$ompi" "$pmix" -name '*.so*' -type f -print0)

# The closure: every library ldd names for every program and component.
libs=$(for o in "${objects[@]}"; do ldd "$o" 2>/dev/null; done \
  | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u)
for l in $libs; do copy "$l"; done
copy /lib64/ld-linux-x86-64.so.2

echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$(hostname)" > "$root/etc/hosts"
