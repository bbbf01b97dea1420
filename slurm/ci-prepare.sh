#!/usr/bin/env bash
# Install what the SLURM tests need: slurm-wlm (controller, node daemon, client), munge, slurmdbd and
# MariaDB for accounting. Idempotent: does nothing when everything is already installed.
# Runs as root in CI (.ci/run calls it); elsewhere it uses sudo when it can, and otherwise only reports.
set -uo pipefail

PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server mariadb-client)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "ci-prepare: SLURM packages already installed"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ci-prepare: no apt-get here; SLURM tests will be skipped (install ${missing[*]} by hand)" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "ci-prepare: not root and no password-less sudo; SLURM tests will be skipped" >&2
    exit 0
  fi
fi

export DEBIAN_FRONTEND=noninteractive
# Package scripts must not try to start daemons through systemd/init in a container: policy-rc.d says no.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi

try() {  # retry apt a few times: mirrors and dpkg locks are flaky in CI
  local n
  for n in 1 2 3; do
    "$@" && return 0
    echo "ci-prepare: '$*' failed (attempt $n), retrying" >&2
    sleep $((n * 5))
  done
  return 1
}

try $SUDO apt-get update -qq || echo "ci-prepare: apt-get update failed; trying the cached lists" >&2
if ! try $SUDO apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"; then
  echo "ci-prepare: could not install ${missing[*]}; SLURM tests will be skipped" >&2
  exit 0
fi
echo "ci-prepare: installed ${missing[*]}"
