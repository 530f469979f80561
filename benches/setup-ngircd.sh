#!/usr/bin/env bash
# Installs what the benchmark's side-by-side comparison needs: Debian's ngircd (an IRC
# server built with TLS) and openssl. Nothing else is changed on the machine: the bench
# generates its own throwaway certificate and ngircd.conf in a temporary directory and
# starts ngircd itself (`ngircd -n -f CONF`) on 127.0.0.1. Idempotent: does nothing when
# both are there already.
#
# Usage (as root, or with sudo): bash benches/setup-ngircd.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if command -v ngircd >/dev/null 2>&1 || [ -x /usr/sbin/ngircd ]; then
  if command -v openssl >/dev/null 2>&1; then
    echo "setup-ngircd: ngircd and openssl already installed"
    exit 0
  fi
fi
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E bash "$0" "$@"
fi
apt-get update
apt-get install -y ngircd openssl
