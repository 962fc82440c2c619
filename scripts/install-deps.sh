#!/bin/sh
# Installs the Debian packages that a make target needs, when missing.
# Usage: install-deps.sh PACKAGE...   (Debian package names)
#        install-deps.sh --from SUITE PACKAGE...   (installs them from
#        SUITE, e.g. bookworm-backports, installed or not)
set -eu
suite=""
if [ "${1:-}" = --from ]; then
    suite=$2
    shift 2
fi
missing=""
for pkg in "$@"; do
    [ -z "$suite" ] && dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "error: missing Debian packages:$missing" >&2
    echo "       run as root, or: sudo apt-get install${suite:+ -t $suite}$missing" >&2
    exit 1
fi
echo "installing Debian packages${suite:+ from $suite}:$missing"
export DEBIAN_FRONTEND=noninteractive
# Servers (prosody, ejabberd) are run by the tests on loopback only: keep
# their packages from starting the system-wide service while installing.
blocker=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    blocker=/usr/sbin/policy-rc.d
fi
trap '[ -n "$blocker" ] && rm -f "$blocker"' EXIT
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends ${suite:+-t "$suite"} $missing >/dev/null
