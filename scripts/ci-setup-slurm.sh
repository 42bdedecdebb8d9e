#!/usr/bin/env bash
# CI: install a single-node SLURM (with accounting) from Debian's packages, then start it with slurm-up.sh.
# Needs root and apt. Safe to run twice: apt skips installed packages and slurm-up.sh is idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

packages=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    apt-get update
    # The packages' postinst scripts try to start services; policy-rc.d or no systemd refuses that, which is fine:
    # slurm-up.sh starts every daemon itself.
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# On a machine with systemd (e.g. a CI runner) the packages start their own services with the packaged configs;
# stop them so slurm-up.sh can start every daemon with the generated configs and record its pids.
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl stop slurmd slurmctld slurmdbd mariadb munge 2>/dev/null || true
fi
exec "$here/slurm-up.sh"
