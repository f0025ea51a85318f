#!/bin/sh
# Enrolls the lab's two hosts with the lab's CA (run in vagrant/ after `vagrant up`):
# a single-use token per host from the CA box, then `smith-host activate` on the host.
# Running it again re-enrolls nothing that is already enrolled (activate says so).
set -eu

on() { vm=$1; shift; vagrant ssh "$vm" -c "$*" 2>/dev/null | tr -d '\r'; }

fingerprint=$(on ca cat /etc/smith-ca.fingerprint)
[ -n "$fingerprint" ] || { echo "enroll.sh: the CA box has no fingerprint yet: run 'vagrant up ca'" >&2; exit 1; }

enroll() {
    host=$1 tags=$2
    token=$(on ca sudo smith-lab host token --tags "$tags" --ttl 15m --json |
        sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
    [ -n "$token" ] || { echo "enroll.sh: no token for $host" >&2; exit 1; }
    echo "== $host ($tags)"
    on "$host" sudo smith-host activate --ca https://192.168.56.10:8443 \
        --ca-fingerprint "$fingerprint" --token "$token" --name "$host"
    on "$host" sudo smith-host status
}

enroll dev-1 env=dev,os=debian
enroll prod-1 env=prod,os=rocky
