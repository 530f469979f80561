#!/usr/bin/env bash
# Installs what the benchmark's side-by-side comparison needs: Debian's ngircd (an IRC
# server built with TLS) and openssl. Nothing else is changed on the machine: the bench
# generates its own throwaway certificate and ngircd.conf in a temporary directory and
# starts ngircd itself (`ngircd -n -f CONF`) on 127.0.0.1.
#
# Usage (as root, or with sudo): bash benches/setup-ngircd.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E bash "$0" "$@"
fi
apt-get update
apt-get install -y ngircd openssl
