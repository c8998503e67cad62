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
# OpenSSL's TPM 2.0 provider and PKCS#11 engine: the agent's TLS tunnel (openssl s_client) signs
# handshakes with them, for mutual TLS with keys that never leave the TPM or the token.
ls /usr/lib/*/ossl-modules/tpm2.so >/dev/null 2>&1 || need+=(tpm2-openssl)
ls /usr/lib/*/engines-3/pkcs11.so >/dev/null 2>&1 || need+=(libengine-pkcs11-openssl)
# tpm2-abrmd on a private session bus: the resource manager in front of swtpm in the agent's TLS
# tests (a device has the kernel's, /dev/tpmrm0).
have_cmd tpm2-abrmd || [ -x /usr/sbin/tpm2-abrmd ] || need+=(tpm2-abrmd)
ls /usr/lib/*/libtss2-tcti-tabrmd.so.0 >/dev/null 2>&1 || need+=(libtss2-tcti-tabrmd0)
have_cmd dbus-daemon || need+=(dbus-daemon)
[ -f /usr/share/dbus-1/session.conf ] || need+=(dbus-session-bus-common)
# xdelta3: the server generates binary deltas between releases with it (devices apply them in JavaScript).
have_cmd xdelta3 || need+=(xdelta3)
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
