#!/bin/sh
# Installs Debian's current security updates of the servers the suites run
# (Prosody, ejabberd) and of every package they depend on, libexpat1 among
# them (both servers' XML parsers load it), as a maintained Debian 12 has
# them, and prints what it upgraded. Only `make test-backports` (CI's second
# phase) or `make use-security-updates` runs this.
set -eu
if [ "$(id -u)" != 0 ]; then
    echo "error: installing security updates changes this machine's packages: run as root" >&2
    echo "       (sudo make use-security-updates), or: apt-get update && apt-get upgrade" >&2
    exit 1
fi
servers="prosody ejabberd"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
apt-get update -qq
# shellcheck disable=SC2086
apt-cache depends --recurse --installed --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances $servers | grep -v '^[ <]' | sort -u > "$tmp/depended"
apt list --upgradable 2>/dev/null | awk -F/ '$2 ~ /-security/ { print $1 }' | sort -u > "$tmp/updated"
packages=$(comm -12 "$tmp/depended" "$tmp/updated")
if [ -n "$packages" ]; then
    # shellcheck disable=SC2086
    dpkg-query -W -f='${Package} ${Version}\n' $packages > "$tmp/before"
    # shellcheck disable=SC2086
    "$(dirname "$0")/install-deps.sh" --from bookworm-security $packages
    echo "security updates installed:"
    while read -r package before; do
        echo "  $package $before -> $(dpkg-query -W -f='${Version}' "$package")"
    done < "$tmp/before"
else
    echo "security updates: none pending for $servers and what they depend on"
fi
echo "libexpat1 $(dpkg-query -W -f='${Version}' libexpat1)"
