#!/usr/bin/env bash
# Installs what lwk-runc needs on a fresh Debian 12 machine (as root), builds it,
# and installs the LWK simulator at /opt/lwk-sim. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  pkg-config libseccomp-dev   # libcontainer's seccomp support
  runc                        # the reference runtime the suite and benches compare against
  docker.io                   # the Docker end-to-end tests (private dockerd)
  podman                      # the podman end-to-end test (private storage, no daemon)
  containerd                  # the containerd and CRI tests (private containerd, ctr, runc v2 shim)
  protobuf-compiler           # protoc, for the CRI test's client (k8s-cri's build script)
  busybox-static              # the test and demo rootfs
  musl-tools                  # a musl-only rootfs for the launcher-closure test
  patchelf                    # makes a dynamically linked launcher run in any rootfs
  procps util-linux psmisc    # ps (lwk-runc ps), unshare (simulator tests)
  hyperfine time python3      # benchmarks
  openmpi-bin libopenmpi-dev  # the conexec tests and parity bench: mpirun, mpicc
  dpkg-dev man-db             # the package test: cargo-deb's dpkg-shlibdeps, man lwk-runc
  slurm-wlm munge iproute2    # the Slurm tests' private cluster (conformance-tests/cluster)
  skopeo docker-registry openssl  # the image tests: layouts, a private registry with TLS
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian packages (`cargo xtask deb`): cargo-deb, pinned to the release tested here.
cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $cargo_deb_version"; then
  echo "==> installing cargo-deb $cargo_deb_version"
  cargo install cargo-deb --version "$cargo_deb_version" --locked --quiet
fi

echo "==> building lwk-runc and lwk-sim (release)"
cargo build --release --workspace --quiet

echo "==> installing the LWK simulator at /opt/lwk-sim"
rm -rf /opt/lwk-sim.new
target/release/lwk-sim install --prefix /opt/lwk-sim.new
rm -rf /opt/lwk-sim
mv /opt/lwk-sim.new /opt/lwk-sim
