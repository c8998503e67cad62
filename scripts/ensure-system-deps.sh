#!/usr/bin/env bash
# Installs the Debian packages Rampart's tests and benchmarks use, when they are missing.
# Safe to run repeatedly; it does nothing when everything is present.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }

have_cmd openssl || need+=(openssl)
have_cmd curl || need+=(curl)
have_pg || need+=(postgresql)
# SoftHSM2: the PKCS#11 token the key store's PKCS#11 backend is tested against.
have_cmd softhsm2-util || need+=(softhsm2)
have_cmd mosquitto_pub || need+=(mosquitto-clients)
# A software TPM 2.0 and tpm2-tools: the agent's TPM trust anchor is tested against them.
have_cmd swtpm || need+=(swtpm)
have_cmd tpm2_createprimary || need+=(tpm2-tools)
ls /usr/lib/*/libtss2-tcti-swtpm.so.0 >/dev/null 2>&1 || need+=(libtss2-tcti-swtpm0)
# The Mosquitto broker: the peer `npm run bench:gateway` measures the gateway against.
{ have_cmd mosquitto || [ -x /usr/sbin/mosquitto ]; } || need+=(mosquitto)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

echo "installing system packages: ${need[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif have_cmd sudo; then
  SUDO=(sudo -n)
else
  echo "error: missing ${need[*]} and not running as root (and no sudo); install them with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
