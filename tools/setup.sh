#!/usr/bin/env bash
# Installs every Debian 12 package taskmoe-serve needs. Idempotent: when everything is
# present it only checks (a fraction of a second) and returns.
# Usage: tools/setup.sh [serve|test]
#   serve (default)  build the C++ code and run the server
#   test             also what the test suite needs: sanitizer runtimes, Python with PyTorch
#                    (the reference trainer's tests and fixtures), gettext for the corpus
set -euo pipefail

build_packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  clang-format
  libdnnl-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev
  prometheus-cpp-dev
  libcivetweb-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  nlohmann-json3-dev
)
# prometheus: promtool checks a live metrics scrape and deploy/prometheus, and the deploy
# test runs the Prometheus server; python3-grpcio/-grpc-tools: the Python client example;
# yamllint, python3-yaml and kubectl: tools/check-deploy.sh; openssl: the TLS tests make
# their certificates.
test_packages=(python3 python3-numpy python3-sentencepiece python3-torch gettext
  prometheus python3-grpcio python3-grpc-tools yamllint python3-yaml openssl)
# The playground's browser test (tests/server/playground_test.py): Debian's Chromium, its
# WebDriver and Selenium. tools/docker-test.sh: Docker's daemon and client, debootstrap for the
# base image and curl; tools/shard-test.sh: HAProxy in front of two servers.
test_packages+=(chromium chromium-driver python3-selenium docker.io debootstrap curl haproxy)
# tools/fuzz.sh (docs/fuzzing.md): clang, its libFuzzer and sanitizer runtimes (libclang-rt-dev,
# which clang only recommends), its OpenMP runtime (libomp-dev) and llvm-symbolizer (llvm) for
# readable crash reports.
test_packages+=(clang libclang-rt-dev libomp-dev llvm)
# kubectl renders deploy/k8s. Debian's is in kubernetes-client; a kubectl that is already
# installed (another package, or a newer release) is used as it is, since installing
# kubernetes-client beside it would clash over /usr/bin/kubectl.
# tools/emulated-cpu-test.sh: QEMU's user mode, to run the build on CPUs without AVX-512 or AVX2.
test_packages+=(qemu-user)
if ! command -v kubectl >/dev/null 2>&1; then test_packages+=(kubernetes-client); fi

profile="${1:-serve}"
case "$profile" in
  serve) wanted=("${build_packages[@]}") ;;
  test) wanted=("${build_packages[@]}" "${test_packages[@]}") ;;
  *)
    echo "setup: unknown profile '$profile' (expected serve or test)" >&2
    exit 2
    ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#wanted[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
