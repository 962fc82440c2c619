#!/bin/sh
# Where the installed ejabberd is, whatever its version, as dpkg knows it:
# the one place the Makefile and the conformance fixture learn it from.
# Usage: ejabberd-paths.sh dir           its library folder (.../ejabberd-VERSION: ebin/, include/)
#        ejabberd-paths.sh version       the package's version (e.g. 23.01-1)
#        ejabberd-paths.sh xmpp-include  the include/ of the p1_xmpp it depends on
# Fails, naming the package to install, when ejabberd is not installed.
set -eu
installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
if ! installed ejabberd; then
    echo "error: ejabberd is not installed: apt-get install ejabberd erlang-dev (or, as root, make ejabberd-deps)" >&2
    exit 1
fi
case "${1:-dir}" in
    dir)
        # The package's .../ejabberd-VERSION folder that holds ebin/.
        for path in $(dpkg-query -L ejabberd | grep -E '^/usr/lib/.*/ejabberd-[0-9][^/]*$'); do
            if [ -d "$path/ebin" ]; then
                echo "$path"
                exit 0
            fi
        done
        echo "error: the ejabberd package has no ebin/ folder under /usr/lib (dpkg -L ejabberd)" >&2
        exit 1
        ;;
    version)
        dpkg-query -W -f='${Version}\n' ejabberd
        ;;
    xmpp-include)
        for path in $(dpkg-query -L erlang-p1-xmpp 2>/dev/null | grep -E '/p1_xmpp-[^/]*/include$'); do
            echo "$path"
            exit 0
        done
        echo "error: no p1_xmpp headers: apt-get install erlang-p1-xmpp" >&2
        exit 1
        ;;
    *)
        echo "usage: $0 dir|version|xmpp-include" >&2
        exit 2
        ;;
esac
