#!/bin/sh
# Moves this machine's Prosody and ejabberd to Debian's bookworm-backports
# versions (Prosody 13, ejabberd 24.12): adds the bookworm-backports suite
# to apt's sources, from the same mirror, components and key as the
# machine's bookworm entry, and installs both servers from it. Only `make
# test-backports` (or `make use-backports`) runs this; see README.md for
# going back to stable's versions.
set -eu
if [ "$(id -u)" != 0 ]; then
    echo "error: moving to the bookworm-backports servers changes this machine's packages: run as root" >&2
    echo "       (sudo make test-backports), or see README.md to do it by hand" >&2
    exit 1
fi

LIST=/etc/apt/sources.list.d/cmr-bookworm-backports.sources

# The bookworm entry of apt's sources, as "URI|COMPONENTS|SIGNED-BY".
bookworm_entry() {
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        # deb822: the first stanza of Types deb whose Suites list bookworm.
        awk '
            function flush() {
                if (deb && suite && uri != "" && !done) { print uri "|" comps "|" key; done = 1 }
                deb = 0; suite = 0; uri = ""; comps = ""; key = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            {
                field = tolower($1); sub(/:$/, "", field)
                value = $0; sub(/^[^:]*:[ \t]*/, "", value)
                if (field == "types") { deb = (" " value " ") ~ /[ \t]deb[ \t]/ }
                else if (field == "suites") { suite = (" " value " ") ~ /[ \t]bookworm[ \t]/ }
                else if (field == "uris") { split(value, u, /[ \t]+/); uri = u[1] }
                else if (field == "components") { comps = value }
                else if (field == "signed-by") { key = value }
            }
            END { flush() }
        ' /etc/apt/sources.list.d/debian.sources
    elif [ -f /etc/apt/sources.list ]; then
        # One-line style: deb [options] URI bookworm COMPONENTS...
        awk '
            $1 != "deb" || done { next }
            {
                key = ""; i = 2
                if ($2 ~ /^\[/) {
                    while (i <= NF) {
                        option = $i; gsub(/[][]/, "", option)
                        if (option ~ /^signed-by=/) { key = substr(option, 11) }
                        if ($i ~ /\]$/) { i++; break }
                        i++
                    }
                }
                if ($(i + 1) != "bookworm") next
                comps = ""
                for (j = i + 2; j <= NF; j++) comps = comps (comps == "" ? "" : " ") $j
                print $i "|" comps "|" key; done = 1
            }
        ' /etc/apt/sources.list
    fi
}

if grep -rqs --include='*.list' --include='*.sources' --include=sources.list \
        '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "apt already has bookworm-backports"
else
    entry=$(bookworm_entry)
    if [ -z "$entry" ]; then
        echo "error: no bookworm entry in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list" >&2
        exit 1
    fi
    uri=${entry%%|*}
    rest=${entry#*|}
    components=${rest%%|*}
    key=${rest#*|}
    {
        echo "Types: deb"
        echo "URIs: $uri"
        echo "Suites: bookworm-backports"
        echo "Components: $components"
        if [ -n "$key" ]; then echo "Signed-By: $key"; fi
    } > "$LIST"
    echo "added bookworm-backports ($uri, $components) in $LIST"
fi

"$(dirname "$0")/install-deps.sh" --from bookworm-backports prosody ejabberd
echo "installed from bookworm-backports: prosody $(dpkg-query -W -f='${Version}' prosody)," \
    "ejabberd $(dpkg-query -W -f='${Version}' ejabberd)"
