#!/usr/bin/env bash
# Makes apt know bookworm-backports, from the machine's own Debian mirror (its debian.sources
# with the suite changed), unless it already does. Used for QEMU >= 9.1 (tests/nested-svm) and
# for the newer of the two stock kernels ci/linux/fetch.sh puts in its cache.
set -euo pipefail
if apt-cache policy 2>/dev/null | grep -q 'bookworm-backports'; then
  exit 0
fi
if [ ! -f /etc/apt/sources.list.d/backports.sources ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  awk '/^Types:/ && !t {t=$0} /^URIs:/ && !u {u=$0} END {print t; print u;
       print "Suites: bookworm-backports"; print "Components: main";
       print "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"}' \
    /etc/apt/sources.list.d/debian.sources > /etc/apt/sources.list.d/backports.sources
fi
apt-get update -qq
