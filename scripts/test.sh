#!/usr/bin/env bash
# Runs every test of cf-allowlist for real: unit and fixture tests, the HTTP fetcher against a
# loopback server, and the backends and the binary against real nftables, iptables (nft and
# legacy), ipset and ufw inside throwaway network namespaces. Never touches the host's ruleset.
#
# Needs root (network namespaces, CAP_NET_ADMIN). Installs the firewall tools when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: the firewall tests need root (network namespaces); run it as root" >&2
    exit 1
fi

need=()
for tool in nft iptables-nft iptables-legacy ipset ufw ip flock python3 openssl nginx apache2 apachectl fail2ban-client fail2ban-server; do
    command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing what the tests need (missing: ${need[*]})" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nftables iptables ipset ufw iproute2 util-linux python3 openssl >/dev/null
    # The web servers and Fail2Ban are test tools here: installing them must start nothing on
    # the host (policy-rc.d exit 101 refuses every service start).
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get install -y -qq --no-install-recommends nginx apache2 fail2ban >/dev/null
    if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# firewalld: the tests run their own daemon in namespaces, with a private D-Bus bus. The package
# must not start or enable it on the host (policy-rc.d refuses the start; the unit is masked).
if ! command -v firewall-cmd >/dev/null 2>&1 && ! PATH="$PATH:/usr/sbin:/sbin" command -v firewall-cmd >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    made=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made=1
    fi
    apt-get update -qq
    apt-get install -y -qq firewalld >/dev/null
    if [ -n "$made" ]; then rm -f /usr/sbin/policy-rc.d; fi
    systemctl disable firewalld >/dev/null 2>&1 || true
    systemctl mask firewalld >/dev/null 2>&1 || true
fi

# The tests start nginx, Apache and Fail2Ban only inside their namespaces; one running here
# would be the host's (or a package's): refuse rather than test next to it.
for daemon in nginx apache2 fail2ban-server firewalld; do
    if pgrep -x "$daemon" >/dev/null; then
        echo "scripts/test.sh: $daemon is running on this host; stop and disable it (the tests run their own in namespaces)" >&2
        exit 1
    fi
done
export PATH="$PATH:/usr/sbin:/sbin"

# Leftovers of an interrupted earlier run (namespaces are normally deleted by each test's guard).
for ns in $(ip netns list 2>/dev/null | awk '/^cfa-/ {print $1}'); do
    # An interrupted test may leave its daemons (firewalld, dbus-daemon, servers) in there.
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns delete "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
done

cargo test --workspace --locked "$@"
scripts/test-packaging.sh
scripts/test-ansible.sh
