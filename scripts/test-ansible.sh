#!/usr/bin/env bash
# Tests the Ansible collection cfallowlist.cf_allowlist (packaging/ansible/) for real:
#  - ansible-test sanity --local --requirements --python 3.11 on the collection, clean but for
#    the ignores in tests/sanity/ignore-*.txt (each with its reason);
#  - the modules' unit tests (pytest): argument handling, the command lines, the JSON-to-result
#    mapping, the role's variables against meta/argument_specs.yml;
#  - ansible-galaxy builds and installs the collection; ansible-doc reads its modules and role;
#  - the role's configuration template at its defaults is equal in effect to the binary's
#    built-in defaults and writes every key of the configuration; its systemd drop-ins pass
#    systemd-analyze verify with the packaged units;
#  - a fleet: one playbook applies the role to several hosts at once (forks > 1), each host a
#    fresh network namespace (cfa-ans-*) with its own configuration, state, binary, list server
#    on its own loopback and backend (nftables, ufw, iptables). --check --diff reports changed
#    everywhere and changes nothing; the real run applies; a second run and a second check report
#    changed=0; a host whose list server turns to an HTML page fails alone, its firewall as it
#    was, while the others apply a shrunk list; the audit module; purge (state=absent) in check
#    mode, for real, and idempotent; a configuration check-config refuses; the role's refusals
#    of bad variables and its package path (a .deb, in check mode).
#
# Ansible reaches each host with `ansible_connection: local` and an interpreter that is
# `ip netns exec NS python3`: modules run inside the host's namespace, whose /etc/ufw (for the ufw
# host) is a private copy under /etc/netns/NS/. Nothing is written in /etc but there; the
# machine's own ruleset, ipsets and /etc/ufw are compared before and after; namespaces, list
# servers and files are removed on any exit.
#
# ansible-core and pytest come from PyPI into a virtualenv under CFA_ANSIBLE_CACHE (default
# /tmp/cfa-ansible-cache), reused when present; HOME points there for every Ansible command, so
# root's ~/.ansible is not used. ansible-test bootstraps pip in its sanity virtualenvs with a
# get-pip.py from a host these machines cannot reach: the script puts a stand-in where
# ansible-test caches it, which bootstraps from the interpreter's own ensurepip instead.
#
# As root. Prints "N passed, N failed" last; exits 1 if anything failed. CFA_ANSIBLE_KEEP=1 keeps
# the work directory (the playbooks' logs, each host's files) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

ANSIBLE_CORE_VERSION=2.19.14
PYTEST_VERSION=9.2.0
PYTHON_VERSION=3.11
collection=$root/packaging/ansible/ansible_collections/cfallowlist/cf_allowlist
role=$collection/roles/cf_allowlist
fixtures=$root/tests/fixtures/cloudflare

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test-ansible.sh: needs root (network namespaces, firewalls); run it as root" >&2
    exit 1
fi
export PATH="$PATH:/usr/sbin:/sbin"
started=$SECONDS

need=()
for tool in nft iptables-legacy ipset ufw ip "python$PYTHON_VERSION" dpkg-deb systemd-analyze; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "test-ansible: installing what the tests need (missing: ${need[*]})" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nftables iptables ipset ufw iproute2 python3 python3-venv dpkg systemd >/dev/null
fi
python=$(command -v "python$PYTHON_VERSION") || {
    echo "scripts/test-ansible.sh: needs python$PYTHON_VERSION (ansible-test sanity --python $PYTHON_VERSION)" >&2
    exit 1
}
host_python=/usr/bin/python3
[ -x "$host_python" ] || host_python=$python
ip_bin=$(command -v ip)

# ---------------------------------------------------------------------------------------------
# Results.
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() {
    failed=$((failed + 1))
    echo "not ok - $1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/    /' | head -60; fi
}
finish() {
    echo "# $((SECONDS - started)) s"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
die() {
    not_ok "$1" "${2:-}"
    finish || true
    exit 1
}

# ---------------------------------------------------------------------------------------------
# State, and the cleanup that runs on every exit.
work=$(mktemp -d /tmp/cfa-ans-test.XXXXXX)
namespaces=()
pids=()
cleanup() {
    local pid ns
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "${namespaces[@]}"; do
        ip netns delete "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    # ansible-test runs its tools with an environment of its own, which writes bytecode.
    find "$collection" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
    rm -rf "$collection/tests/output"
    if [ -n "${CFA_ANSIBLE_KEEP:-}" ]; then echo "# kept $work (CFA_ANSIBLE_KEEP)"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Leftovers of an interrupted earlier run of this script.
for ns in $(ip netns list 2>/dev/null | awk '/^cfa-ans-/ {print $1}'); do
    ip netns delete "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
done

# The host's firewall and /etc/ufw, compared at the end (counters aside).
host_state() {
    nft list ruleset 2>/dev/null | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/g'
    if [ -e /proc/net/ip_tables_names ]; then iptables-legacy-save 2>/dev/null | grep -E '^[-:*]' | sed -E 's/ \[[0-9]+:[0-9]+\]//'; fi
    if [ -e /proc/net/ip6_tables_names ]; then ip6tables-legacy-save 2>/dev/null | grep -E '^[-:*]' | sed -E 's/ \[[0-9]+:[0-9]+\]//'; fi
    ipset save 2>/dev/null || true
    [ ! -d /etc/ufw ] || tar -C /etc -cf - ufw default/ufw 2>/dev/null | sha256sum
}
host_before=$(host_state | sha256sum)

# ---------------------------------------------------------------------------------------------
echo "# setup ($((SECONDS - started)) s)"
# The binary (a release build: the other scripts build the same one).
if ! out=$(cargo build --release --locked --quiet 2>&1); then die "cargo build --release --locked" "$out"; fi
bin=$(cargo metadata --format-version 1 --no-deps --locked |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)/release/cf-allowlist
[ -x "$bin" ] || die "the release binary exists at $bin"

cache=${CFA_ANSIBLE_CACHE:-/tmp/cfa-ansible-cache}
venv=$cache/venv-ansible-core-$ANSIBLE_CORE_VERSION
home=$cache/home
mkdir -p "$home"
# From here on HOME is the cache's (cargo, which needs the real one, has run): Ansible's and
# ansible-test's ~/.ansible and pip's cache live there, not in root's home.
export HOME=$home
# No __pycache__ in the collection's tree (ansible-doc and the template runs import from it).
export PYTHONDONTWRITEBYTECODE=1
# .complete: written once everything is installed (an interrupted install is started over).
if [ ! -e "$venv/.complete" ]; then
    echo "# creating $venv (once)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    if ! out=$("$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "ansible-core==$ANSIBLE_CORE_VERSION" "pytest==$PYTEST_VERSION" 2>&1); then
        die "pip install ansible-core==$ANSIBLE_CORE_VERSION pytest==$PYTEST_VERSION" "$out"
    fi
    touch "$venv/.complete"
fi
vpy=$venv/bin/python
"$vpy" -c 'import ansible, pytest' || die "the virtualenv $venv imports ansible and pytest"
ok "ansible-core $("$venv/bin/ansible" --version | sed -n '1s/.*core \([0-9.]*\).*/\1/p') and pytest in $venv"

# ---------------------------------------------------------------------------------------------
echo "# ansible-test sanity ($((SECONDS - started)) s)"
# ansible-test caches get-pip.py as ~/.ansible/test/cache/get_pip_<pip version, dots as
# underscores>.py and runs it as `python get_pip.py [pip options] pip==V --no-setuptools
# --no-wheel`. Both the version and the name are read from ansible-test's own source, so that an
# upgrade of ansible-core that changes either fails here, loudly, instead of downloading.
ansible_test=$("$vpy" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')
if ! grep -q "get_pip_%s.py' % pip_version.replace(\".\", \"_\")" \
    "$ansible_test/_util/target/setup/requirements.py"; then
    die "ansible-test caches get-pip.py as ~/.ansible/test/cache/get_pip_<version>.py" \
        "its bootstrap in $ansible_test/_util/target/setup/requirements.py changed: adapt this script"
fi
pip_version=$("$vpy" -c 'import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="'"$PYTHON_VERSION"'"))["pip"])')
get_pip=$home/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$get_pip")"
cat >"$get_pip" <<'EOF'
"""Stands in for get-pip.py (written by scripts/test-ansible.sh): pip from the interpreter's
own ensurepip, then the requested pip from the package index. ensurepip runs in a child process
because in-process it clears the PIP_* settings and pip's configuration for the whole process."""
import subprocess
import sys

OWN = ('--no-setuptools', '--no-wheel')
args = [arg for arg in sys.argv[1:] if arg not in OWN]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--upgrade'] + args)
if '--no-setuptools' in sys.argv[1:]:
    # Python 3.11's ensurepip brings setuptools too; get-pip.py would not have.
    subprocess.call([sys.executable, '-m', 'pip', 'uninstall', '--yes', '--quiet', 'setuptools'])
EOF
ok "get-pip.py stand-in from ensurepip at ~/.ansible/test/cache/$(basename "$get_pip") (pip $pip_version)"

rm -rf "$collection/tests/output"
sanity_log=$work/sanity.log
if (cd "$collection" && PATH="$venv/bin:$PATH" \
    ansible-test sanity --local --requirements --python "$PYTHON_VERSION" >"$sanity_log" 2>&1); then
    ran=$(grep -c '^Running sanity test' "$sanity_log" || true)
    ok "ansible-test sanity: $ran tests clean, ignores kept: $(grep -c . "$collection"/tests/sanity/ignore-*.txt | paste -sd' ')"
else
    not_ok "ansible-test sanity --local --requirements --python $PYTHON_VERSION" \
        "$(grep -E '^(ERROR|FATAL)|^[a-z-]+$' "$sanity_log" | tail -40)"
fi
skipped=$(grep -iE 'skipping|not found|unavailable' "$sanity_log" | grep -v 'Requirement' || true)
[ -z "$skipped" ] && ok "ansible-test sanity skipped no test" ||
    not_ok "ansible-test sanity skipped no test" "$skipped"
rm -rf "$collection/tests/output"

# ---------------------------------------------------------------------------------------------
echo "# unit tests ($((SECONDS - started)) s)"
if out=$(cd "$collection" && PYTHONPATH=$root/packaging/ansible \
    "$vpy" -m pytest -p no:cacheprovider -q tests/unit 2>&1); then
    ok "pytest tests/unit: $(tail -1 <<<"$out")"
else not_ok "pytest tests/unit" "$(tail -40 <<<"$out")"; fi

# ---------------------------------------------------------------------------------------------
echo "# ansible-galaxy build and install ($((SECONDS - started)) s)"
# As a platform team publishes it: the tarball holds no test output, installs, and ansible-doc
# reads every module and the role from the installed copy.
if out=$(cd "$work" && "$venv/bin/ansible-galaxy" collection build --output-path "$work/galaxy" "$collection" 2>&1) &&
    tarball=$(ls "$work"/galaxy/cfallowlist-cf_allowlist-*.tar.gz) &&
    out=$("$venv/bin/ansible-galaxy" collection install -p "$work/installed" "$tarball" 2>&1); then
    listing=$(tar -tzf "$tarball")
    docs=$(for plugin in sync audit; do
        ANSIBLE_COLLECTIONS_PATH=$work/installed "$venv/bin/ansible-doc" "cfallowlist.cf_allowlist.$plugin" 2>&1 | head -1
    done
    ANSIBLE_COLLECTIONS_PATH=$work/installed "$venv/bin/ansible-doc" -t role cfallowlist.cf_allowlist.cf_allowlist 2>&1 | head -1)
    if grep -q '^roles/cf_allowlist/meta/argument_specs.yml$' <<<"$listing" && ! grep -q 'tests/output' <<<"$listing" &&
        [ "$(grep -c '^> ' <<<"$docs")" = 3 ]; then
        ok "ansible-galaxy collection build and install $(basename "$tarball"); ansible-doc reads sync, audit and the role"
    else not_ok "the built collection installs and ansible-doc reads sync, audit and the role" "$docs"$'\n'"$listing"; fi
else not_ok "ansible-galaxy collection build and install" "$out"; fi

# ---------------------------------------------------------------------------------------------
# Ansible for the rest: a configuration of its own.
cat >"$work/ansible.cfg" <<EOF
[defaults]
inventory = $work/inventory.yml
collections_path = $root/packaging/ansible
forks = 8
retry_files_enabled = false
nocolor = true
local_tmp = $work/ansible-tmp/local
remote_tmp = $work/ansible-tmp/remote
deprecation_warnings = true
EOF
run_ansible() { # COMMAND ARGS...: ansible or ansible-playbook with the test's configuration
    local command=$1
    shift
    ANSIBLE_CONFIG=$work/ansible.cfg "$venv/bin/$command" "$@"
}

echo "# role: the configuration template ($((SECONDS - started)) s)"
effective() { "$bin" -c "$1" check-config --output json 2>&1 | sed 's/"path":"[^"]*",//'; }
: >"$work/empty.yaml"
printf 'all:\n  hosts:\n    controller:\n      ansible_connection: local\n      ansible_python_interpreter: %s\n' \
    "$vpy" >"$work/inventory.yml"
if out=$(run_ansible ansible controller -m ansible.builtin.template \
    -a "src=$role/templates/config.yaml.j2 dest=$work/defaults.yaml mode=0644" \
    -e "@$role/defaults/main.yml" 2>&1); then
    [ "$(effective "$work/defaults.yaml")" = "$(effective "$work/empty.yaml")" ] &&
        ok "the role's config.yaml at its default variables is equal in effect to the built-in defaults" ||
        not_ok "the role's config.yaml at its default variables is equal in effect to the built-in defaults" \
            "$(diff <(effective "$work/empty.yaml") <(effective "$work/defaults.yaml"))"
    keys=$(effective "$work/empty.yaml" | "$vpy" -c 'import json,sys; print("\n".join(sorted(json.load(sys.stdin)["config"])))')
    written=$(grep -oE '^[a-z_]+:' "$work/defaults.yaml" | tr -d : | sort)
    [ "$keys" = "$written" ] && ok "the role's config.yaml writes every key of the configuration" ||
        not_ok "the role's config.yaml writes every key of the configuration" "$(diff <(echo "$keys") <(echo "$written"))"
else
    not_ok "ansible template renders the role's config.yaml at its defaults" "$out"
fi

# The units' drop-in for non-default paths (the timer itself needs systemd as PID 1, which this
# machine may not have): rendered from the role's template for both units, then checked by
# systemd-analyze verify together with the packaged units (SYSTEMD_UNIT_PATH makes it read the
# drop-ins from there).
sd=$work/systemd
mkdir -p "$sd"
cp packaging/systemd/cf-allowlist.service packaging/systemd/boot/cf-allowlist-boot.service "$sd/"
rendered=true
for spec in "cf-allowlist.service|sync -q" "cf-allowlist-boot.service|sync --offline -q"; do
    unit=${spec%%|*}
    mkdir -p "$sd/$unit.d"
    vars=$("$vpy" -c 'import json, sys
print(json.dumps(dict(item=dict(unit=sys.argv[1], sync=sys.argv[2]), cf_allowlist_install="none",
                      cf_allowlist_binary_path=sys.argv[3], cf_allowlist_config_path="/srv/cfa/config.yaml",
                      cf_allowlist_state_dir="/srv/cfa/state")))' "$unit" "${spec#*|}" "$bin")
    if ! out=$(run_ansible ansible controller -m ansible.builtin.template \
        -a "src=$role/templates/service-override.conf.j2 dest=$sd/$unit.d/50-cf-allowlist-role.conf mode=0644" \
        -e "@$role/defaults/main.yml" -e "$vars" 2>&1); then
        rendered=false
        not_ok "ansible template renders the role's drop-in for $unit" "$out"
    fi
done
if $rendered; then
    verify=$(cd "$sd" && SYSTEMD_UNIT_PATH="$sd:" systemd-analyze verify --man=no \
        "$sd/cf-allowlist.service" "$sd/cf-allowlist-boot.service" 2>&1) && verified=true || verified=false
    execs=$(grep -h '^ExecStart=.' "$sd"/*.d/*.conf)
    want_execs="ExecStart=$bin --config /srv/cfa/config.yaml sync -q
ExecStart=$bin --config /srv/cfa/config.yaml sync --offline -q"
    if $verified && [ -z "$verify" ] && [ "$(sort <<<"$execs")" = "$(sort <<<"$want_execs")" ]; then
        ok "the role's drop-ins (other binary, config and state paths) pass systemd-analyze verify with both packaged units"
    else not_ok "the role's drop-ins pass systemd-analyze verify with both packaged units" "$verify"$'\n'"$execs"; fi
fi

# ---------------------------------------------------------------------------------------------
echo "# fleet: hosts ($((SECONDS - started)) s)"
# Each host: a namespace with lo up, a directory with its list server's files (the Cloudflare API
# answer and the two text lists), its configuration, state, lock and binary paths, and the
# interpreter that enters its namespace.
hosts=(nft ufw ipt bad)
declare -A backend=([nft]=nftables [ufw]=ufw [ipt]=iptables [bad]=nftables)
# ipt: the binary is "already installed" (install: none); the others get a copy (install: binary).
declare -A install=([nft]=binary [ufw]=binary [ipt]=none [bad]=binary)
port=8080
serve_list() { # HOST DIR: the list server's files, from the fixtures
    mkdir -p "$2/client/v4"
    cp "$fixtures/api-client-v4-ips.json" "$2/client/v4/ips"
    cp "$fixtures/ips-v4" "$fixtures/ips-v6" "$2/"
}
ns_of() { echo "cfa-ans-$$-$1"; }
for h in "${hosts[@]}"; do
    ns=$(ns_of "$h")
    ip netns add "$ns"
    namespaces+=("$ns")
    ip netns exec "$ns" ip link set lo up
    d=$work/$h
    mkdir -p "$d/run" "$d/check"
    serve_list "$h" "$d/www"
    printf '#!/bin/sh\n# Python inside %s, for Ansible.\nexec %s netns exec %s %s "$@"\n' \
        "$ns" "$ip_bin" "$ns" "$host_python" >"$d/python"
    chmod 755 "$d/python"
    ip netns exec "$ns" "$host_python" -m http.server "$port" --bind 127.0.0.1 \
        --directory "$d/www" >"$d/http.log" 2>&1 &
    pids+=($!)
done
# ufw: a private /etc/ufw and /etc/default/ufw in the namespace, enabled there only.
ufw_ns=$(ns_of ufw)
mkdir -p "/etc/netns/$ufw_ns"
cp -a /etc/ufw "/etc/netns/$ufw_ns/ufw"
cp -a /etc/default "/etc/netns/$ufw_ns/default"
if ! out=$(ip netns exec "$ufw_ns" ufw --force enable 2>&1); then die "ufw --force enable in $ufw_ns" "$out"; fi
for h in "${hosts[@]}"; do
    for _ in $(seq 50); do
        ip netns exec "$(ns_of "$h")" "$host_python" -c \
            "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/ips-v4', timeout=1)" \
            2>/dev/null && continue 2
        sleep 0.1
    done
    die "the list server of $h answers on 127.0.0.1:$port in its namespace" "$(cat "$work/$h/http.log")"
done
ok "${#hosts[@]} hosts: namespaces $(ns_of '*'), each with a list server on its loopback; ufw enabled in $ufw_ns only"

{
    echo "all:"
    echo "  vars:"
    echo "    ansible_connection: local"
    echo "    cf_allowlist_binary_src: $bin"
    echo "    cf_allowlist_sources:"
    echo "      - cloudflare:"
    echo "          api_url: http://127.0.0.1:$port/client/v4/ips"
    echo "          text_urls: [http://127.0.0.1:$port/ips-v4, http://127.0.0.1:$port/ips-v6]"
    echo "  children:"
    echo "    origins:"
    echo "      hosts:"
    for h in "${hosts[@]}"; do
        d=$work/$h
        echo "        $h:"
        echo "          ansible_python_interpreter: $d/python"
        echo "          cf_allowlist_backend: ${backend[$h]}"
        echo "          cf_allowlist_install: ${install[$h]}"
        if [ "${install[$h]}" = none ]; then
            echo "          cf_allowlist_binary_path: $bin"
        else
            echo "          cf_allowlist_binary_path: $d/sbin/cf-allowlist"
        fi
        echo "          cf_allowlist_config_path: $d/etc/config.yaml"
        echo "          cf_allowlist_state_dir: $d/state"
        echo "          cf_allowlist_lock_file: $d/run/cf-allowlist.lock"
        # ufw's dry run keeps its copies in a directory of its own instead of /tmp.
        [ "$h" != ufw ] || echo "          cf_allowlist_check_tmpdir: $d/check"
    done
    # Hosts whose variables the role must refuse, and one installing a .deb (in check mode only:
    # a real dpkg -i would install on this machine, which scripts/test-packaging.sh does with
    # care). They share nft's namespace and touch nothing.
    echo "    misconfigured:"
    echo "      vars:"
    echo "        ansible_python_interpreter: $work/nft/python"
    echo "        cf_allowlist_config_path: $work/misc/etc/config.yaml"
    echo "        cf_allowlist_binary_path: $work/misc/sbin/cf-allowlist"
    echo "      hosts:"
    echo "        bad_port: {cf_allowlist_install: none, cf_allowlist_ports: [http]}"
    echo "        timer_without_package: {cf_allowlist_install: binary, cf_allowlist_timer: enabled}"
    echo "        binary_without_src: {cf_allowlist_install: binary, cf_allowlist_binary_src: ''}"
    echo "        bad_family: {cf_allowlist_install: none, cf_allowlist_families: [ipv5]}"
    echo "    packaged:"
    echo "      hosts:"
    echo "        deb:"
    echo "          ansible_python_interpreter: $work/nft/python"
    echo "          cf_allowlist_install: package"
    echo "          cf_allowlist_package_file: $work/pkg/cf-allowlist_0.1.0-1_amd64.deb"
    echo "          cf_allowlist_package_dest_dir: $work/deb/dest"
    echo "          cf_allowlist_binary_path: $work/deb/usr/sbin/cf-allowlist"
    echo "          cf_allowlist_config_path: $work/deb/etc/config.yaml"
} >"$work/inventory.yml"

# The firewall of a host, as its tools show it (counters aside), and our entries in it.
fw_state() {
    local ns
    ns=$(ns_of "$1")
    ip netns exec "$ns" nft list ruleset 2>&1 | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/g'
    ip netns exec "$ns" iptables-legacy-save 2>/dev/null | grep -E '^[-:*]' | sed -E 's/ \[[0-9]+:[0-9]+\]//' || true
    ip netns exec "$ns" ip6tables-legacy-save 2>/dev/null | grep -E '^[-:*]' | sed -E 's/ \[[0-9]+:[0-9]+\]//' || true
    ip netns exec "$ns" ipset save 2>/dev/null || true
    if [ -d "/etc/netns/$ns/ufw" ]; then cat "/etc/netns/$ns/ufw/user.rules" "/etc/netns/$ns/ufw/user6.rules"; fi
}
fw_hashes() { for h in "${hosts[@]}"; do echo "$h $(fw_state "$h" | sha256sum | cut -c1-16)"; done; }
live_entries() { # HOST: our ranges in its firewall, sorted, read with the backend's own tool
    local ns
    ns=$(ns_of "$1")
    case ${backend[$1]} in
    nftables)
        for set in allow_v4 allow_v6; do
            ip netns exec "$ns" nft -j list set inet cf_allowlist "$set" 2>/dev/null || true
        done | "$host_python" -c 'import json, sys
for line in sys.stdin:
    for item in json.loads(line)["nftables"]:
        for e in item.get("set", {}).get("elem", []):
            p = e.get("prefix") if isinstance(e, dict) else None
            print("%s/%s" % (p["addr"], p["len"]) if p else e)'
        ;;
    ufw) ip netns exec "$ns" ufw status | sed -nE 's|^80,443/tcp( \(v6\))? +ALLOW +([0-9a-f.:]+/[0-9]+) +# cf-allowlist$|\2|p' ;;
    iptables)
        for set in cf-allowlist-v4 cf-allowlist-v6; do
            ip netns exec "$ns" ipset list "$set" 2>/dev/null | sed -n '/^Members:/,$p' | grep -E '^[0-9a-f.:]+/[0-9]+$' || true
        done
        ;;
    esac | sort
}
want_all=$(cat "$fixtures/ips-v4" <(echo) "$fixtures/ips-v6" | grep . | sort)
removed_range=103.31.4.0/22
want_shrunk=$(grep -vx "$removed_range" <<<"$want_all")
grep -qx "$removed_range" <<<"$want_all" || die "the fixture list holds $removed_range"

# play NAME [ARGS...]: the fleet playbook, its output in $work/NAME.log and each host's sync
# result in $work/results/NAME/HOST.json; returns ansible-playbook's exit code.
play() {
    local name=$1
    shift
    mkdir -p "$work/results/$name"
    run_ansible ansible-playbook "$root/packaging/ansible/fleet/site.yml" \
        -e "fleet_results=$work/results/$name" "$@" >"$work/$name.log" 2>&1
}
recap() { # NAME HOST FIELD: a number of the PLAY RECAP line of HOST
    sed -nE "s/^$2 +: .*\<$3=([0-9]+).*/\1/p" "$work/$1.log" | tail -1
}
result() { # NAME HOST PYTHON-EXPRESSION over r, the saved sync result
    "$vpy" -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$work/results/$1/$2.json" "$3" 2>&1
}
all_recap() { # NAME FIELD: "host=N ..." for every host of the fleet
    local h
    for h in "${hosts[@]}"; do printf '%s=%s ' "$h" "$(recap "$1" "$h" "$2")"; done
}
log_tail() { grep -vE '^\s*$' "$work/$1.log" | tail -40; }
fleet_files() { # what the role would create on each host
    local h
    for h in "${hosts[@]}"; do
        for f in "$work/$h/etc/config.yaml" "$work/$h/sbin/cf-allowlist" "$work/$h/state"; do
            [ ! -e "$f" ] || echo "$f"
        done
    done
}
check_tmp() { find /tmp -maxdepth 1 -name 'cf-allowlist-check.*' | wc -l; }

# ---------------------------------------------------------------------------------------------
echo "# fleet: --check --diff on fresh hosts ($((SECONDS - started)) s)"
fw_fresh=$(fw_hashes)
tmp_before=$(check_tmp)
if play check --check --diff; then ok "ansible-playbook --check --diff succeeds on ${#hosts[@]} hosts at once (forks 8)"
else not_ok "ansible-playbook --check --diff succeeds on every host" "$(log_tail check)"; fi
for h in "${hosts[@]}"; do
    c=$(recap check "$h" changed)
    r=$(result check "$h" '(r["changed"], r["dry_run"], r["backend"], len(r["added"]["ipv4"]), len(r["added"]["ipv6"]), len(r["diff"]))')
    if [ "${c:-0}" -ge 1 ] && [ "$r" = "(True, True, '${backend[$h]}', 15, 7, 2)" ]; then
        ok "check: $h reports changed (changed=$c): the dry run would add 15 IPv4 and 7 IPv6 ranges with ${backend[$h]}, one diff per family"
    else not_ok "check: $h reports changed, the dry run adds 15+7 ranges with ${backend[$h]}" "changed=$c result=$r"; fi
done
after_text=$(result check nft '"".join(d["after"] for d in r["diff"])' | grep . | sort)
[ "$after_text" = "$want_all" ] && ok "check --diff: the allowlist diff's 'after' is the served list, one CIDR a line" ||
    not_ok "check --diff: the allowlist diff's 'after' is the served list" "$(diff <(echo "$want_all") <(echo "$after_text"))"
grep -q '^+173.245.48.0/20$' "$work/check.log" && grep -q '^+2400:cb00::/32$' "$work/check.log" &&
    ok "check --diff: the output shows the ranges to add" || not_ok "check --diff: the output shows the ranges to add" "$(log_tail check)"
[ "$(fw_hashes)" = "$fw_fresh" ] && ok "check: every host's firewall (nft, iptables-legacy, ipset, ufw rules) is unchanged" ||
    not_ok "check: every host's firewall is unchanged" "$(diff <(echo "$fw_fresh") <(fw_hashes))"
left=$(fleet_files; find "$work/ufw/check" -mindepth 1)
[ -z "$left" ] && [ "$(check_tmp)" = "$tmp_before" ] && grep -q "$work/ufw/check/cf-allowlist-check" <<<"$(result check ufw 'r["cmd"]')" &&
    ok "check: no configuration, binary or state written; the dry run's temporary directory (ufw: cf_allowlist_check_tmpdir) removed" ||
    not_ok "check: no configuration, binary or state written; the dry run's temporary directory removed" "$left"

# ---------------------------------------------------------------------------------------------
echo "# fleet: apply ($((SECONDS - started)) s)"
if play apply --diff; then ok "ansible-playbook (the real run) succeeds on every host"
else not_ok "ansible-playbook (the real run) succeeds on every host" "$(log_tail apply)"; fi
for h in "${hosts[@]}"; do
    c=$(recap apply "$h" changed)
    r=$(result apply "$h" '(r["changed"], r["dry_run"])')
    live=$(live_entries "$h")
    if [ "${c:-0}" -ge 1 ] && [ "$r" = "(True, False)" ] && [ "$live" = "$want_all" ]; then
        ok "apply: $h changed (changed=$c); ${backend[$h]} holds exactly the 22 served ranges"
    else not_ok "apply: $h changed; ${backend[$h]} holds the 22 served ranges" \
        "changed=$c result=$r"$'\n'"$(diff <(echo "$want_all") <(echo "$live"))"; fi
done
bad_configs=$(for h in "${hosts[@]}"; do
    ip netns exec "$(ns_of "$h")" "$bin" -c "$work/$h/etc/config.yaml" check-config -q 2>&1 || echo "$h: refused"
    [ "$(stat -c %a "$work/$h/state")" = 700 ] || echo "$h: state_dir mode $(stat -c %a "$work/$h/state")"
done)
[ -z "$bad_configs" ] && ok "apply: every host's written configuration passes check-config; state_dir 0700" ||
    not_ok "apply: every host's written configuration passes check-config" "$bad_configs"
[ -x "$work/nft/sbin/cf-allowlist" ] && cmp -s "$bin" "$work/nft/sbin/cf-allowlist" &&
    ok "apply: install=binary copied the binary to the host's cf_allowlist_binary_path" ||
    not_ok "apply: install=binary copied the binary to the host's cf_allowlist_binary_path"

# ---------------------------------------------------------------------------------------------
echo "# fleet: idempotence ($((SECONDS - started)) s)"
fw_applied=$(fw_hashes)
if play again; then ok "ansible-playbook again succeeds"; else not_ok "ansible-playbook again succeeds" "$(log_tail again)"; fi
changes=$(all_recap again changed)
results=$(for h in "${hosts[@]}"; do result again "$h" 'r["changed"]'; done | sort -u)
[ "$changes" = "$(printf '%s=0 ' "${hosts[@]}")" ] && [ "$results" = False ] &&
    ok "second run: changed=0 on every host ($changes)" || not_ok "second run: changed=0 on every host" "$changes / $results"
if play recheck --check --diff; then :; else not_ok "ansible-playbook --check on the converged fleet succeeds" "$(log_tail recheck)"; fi
changes=$(all_recap recheck changed)
[ "$changes" = "$(printf '%s=0 ' "${hosts[@]}")" ] &&
    ok "--check --diff on the converged fleet: changed=0 on every host" ||
    not_ok "--check --diff on the converged fleet: changed=0 on every host" "$changes"
[ "$(fw_hashes)" = "$fw_applied" ] && ok "the second run and the second check left every firewall as it was" ||
    not_ok "the second run and the second check left every firewall as it was" "$(diff <(echo "$fw_applied") <(fw_hashes))"

# ---------------------------------------------------------------------------------------------
echo "# fleet: one host's list server turns bad ($((SECONDS - started)) s)"
# bad: its server answers every list URL with an HTML page. The others: Cloudflare dropped a range.
html='<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body>blocked</body></html>'
for f in client/v4/ips ips-v4 ips-v6; do printf '%s\n' "$html" >"$work/bad/www/$f"; done
for h in nft ufw ipt; do
    "$vpy" -c 'import json, sys
path, gone = sys.argv[1], sys.argv[2]
doc = json.load(open(path))
doc["result"]["ipv4_cidrs"].remove(gone)
json.dump(doc, open(path, "w"))' "$work/$h/www/client/v4/ips" "$removed_range"
    grep -vx "$removed_range" "$fixtures/ips-v4" >"$work/$h/www/ips-v4" || true
done
bad_before=$(fw_state bad | sha256sum)
set +e
play badlist --diff
rc=$?
set -e
[ "$rc" -eq 2 ] && ok "ansible-playbook exits 2 (a host failed)" || not_ok "ansible-playbook exits 2 (a host failed)" "exit $rc"$'\n'"$(log_tail badlist)"
fails=$(all_recap badlist failed)
[ "$fails" = "nft=0 ufw=0 ipt=0 bad=1 " ] && ok "only the bad host failed ($fails)" || not_ok "only the bad host failed" "$fails"
fatal=$(sed -n 's/^fatal: \[bad\]: FAILED! => //p' "$work/badlist.log" | tail -1)
verdict=$(printf '%s' "$fatal" | "$vpy" -c 'import json, sys
r = json.load(sys.stdin)
print(r.get("error_kind"), r.get("rc"), "HTML" in r.get("msg", ""), "dry_run" in r, r.get("changed"))' 2>&1)
[ "$verdict" = "source 1 True False False" ] &&
    ok "the bad host's task failed through fail_json: error_kind=source, rc=1, the message names the HTML page" ||
    not_ok "the bad host failed with error_kind=source, rc=1, the message naming the HTML page" "$verdict"$'\n'"$fatal"
[ "$(fw_state bad | sha256sum)" = "$bad_before" ] && [ "$(live_entries bad)" = "$want_all" ] &&
    ok "the bad host's firewall is unchanged (still the 22 ranges of the last good list)" ||
    not_ok "the bad host's firewall is unchanged" "$(live_entries bad)"
for h in nft ufw ipt; do
    live=$(live_entries "$h")
    r=$(result badlist "$h" '(r["changed"], r["removed"]["ipv4"])')
    [ "$live" = "$want_shrunk" ] && [ "$r" = "(True, ['$removed_range'])" ] &&
        ok "the same run: $h removed $removed_range (${backend[$h]} holds the 21 others)" ||
        not_ok "the same run: $h removed $removed_range" "$r"$'\n'"$(diff <(echo "$want_shrunk") <(echo "$live"))"
done

# ---------------------------------------------------------------------------------------------
echo "# fleet: the audit module ($((SECONDS - started)) s)"
# A web server on nft's 80 and 443 (all addresses): its audit has nothing critical; the other
# hosts have nothing listening (critical: not_listening); bad's list cannot be had.
ip netns exec "$(ns_of nft)" "$host_python" -c 'import socket, time
socks = []
for port in (80, 443):
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port))
        s.listen()
        socks.append(s)
time.sleep(600)' &
pids+=($!)
sleep 0.5
module_play() { # NAME MODULE [ANSIBLE-ARGS...]: packaging/ansible/fleet/module.yml over the fleet;
    # each host's result in $work/results/NAME/HOST.json, the output in $work/NAME.log
    local name=$1 module=$2
    shift 2
    mkdir -p "$work/results/$name"
    run_ansible ansible-playbook "$root/packaging/ansible/fleet/module.yml" -e "fleet_module=$module" \
        -e "fleet_results=$work/results/$name" "$@" >"$work/$name.log" 2>&1
}
host_results() { # NAME PYTHON-EXPRESSION over r (a host's saved result): one line per host
    "$vpy" -c 'import json, os, sys
for h in sys.argv[3:]:
    path = os.path.join(sys.argv[1], h + ".json")
    r = json.load(open(path)) if os.path.exists(path) else {}
    print(h, eval(sys.argv[2]))' "$work/results/$1" "$2" "${hosts[@]}" 2>&1 || log_tail "$1"
}
set +e
module_play audit audit
rc=$?
set -e
got=$(host_results audit '(bool(r.get("failed")), r.get("worst"), r.get("error_kind"), r.get("changed"))')
want="nft (False, None, None, False)
ufw (True, 'critical', None, False)
ipt (True, 'critical', None, False)
bad (True, None, 'source', False)"
[ "$rc" -eq 2 ] && [ "$got" = "$want" ] &&
    ok "audit (fail_on: critical): nft passes (nothing found); ufw and ipt fail on not_listening; bad fails with error_kind=source" ||
    not_ok "audit (fail_on: critical) fails exactly where something is critical" "exit $rc"$'\n'"$got"$'\n'"$(log_tail audit)"
set +e
module_play audit_none audit -e fleet_fail_on=none --check
set -e
got=$(host_results audit_none '(bool(r.get("failed")), sorted(set(f["kind"] for f in r.get("findings", []) if f["severity"] == "critical")))')
want="nft (False, [])
ufw (False, ['not_listening'])
ipt (False, ['not_listening'])
bad (True, [])"
[ "$got" = "$want" ] && ok "audit fail_on: none (in check mode): the findings are returned; only the host whose audit cannot run fails" ||
    not_ok "audit fail_on: none returns the findings" "$got"

# ---------------------------------------------------------------------------------------------
echo "# fleet: purge through the sync module (state: absent) ($((SECONDS - started)) s)"
fw_before_purge=$(fw_hashes)
set +e
module_play purge_check sync -e fleet_state=absent --check --diff
rc=$?
set -e
got=$(host_results purge_check '(r.get("changed"), r.get("command"), r.get("dry_run"), r.get("after"), len(r.get("diff", [])))')
want=$(for h in "${hosts[@]}"; do echo "$h (True, 'purge', True, {'ipv4': [], 'ipv6': []}, 2)"; done)
[ "$rc" -eq 0 ] && [ "$got" = "$want" ] && [ "$(fw_hashes)" = "$fw_before_purge" ] &&
    ok "purge --check --diff: would remove the allowlist on every host; no firewall changed" ||
    not_ok "purge --check --diff: would remove the allowlist on every host; no firewall changed" "exit $rc"$'\n'"$got"
set +e
module_play purge sync -e fleet_state=absent
rc=$?
set -e
left=$(for h in "${hosts[@]}"; do live_entries "$h" | sed "s/^/$h: /"; done)
got=$(host_results purge '(r.get("changed"), r.get("dry_run"))' | awk '{$1=""; print}' | sort -u)
[ "$rc" -eq 0 ] && [ "$got" = " (True, False)" ] && [ -z "$left" ] &&
    ok "purge: changed on every host; no entry of ours left in any firewall" ||
    not_ok "purge: changed on every host; no entry of ours left" "exit $rc $got"$'\n'"$left"
set +e
module_play purge_again sync -e fleet_state=absent
rc=$?
set -e
got=$(host_results purge_again 'r.get("changed")' | awk '{print $2}' | sort -u)
[ "$rc" -eq 0 ] && [ "$got" = False ] && [ "$(recap purge_again nft changed)" = 0 ] &&
    ok "purge again: changed=false on every host" || not_ok "purge again: changed=false on every host" "exit $rc $got"
set +e
module_play purge_force sync -e fleet_state=absent -e fleet_force=true
rc=$?
set -e
got=$(host_results purge_force '(r.get("failed"), r.get("msg", "")[:30], "cmd" in r)' | awk '{$1=""; print}' | sort -u)
[ "$rc" -eq 2 ] && [ "$got" = " (True, 'force: only with state=present', False)" ] &&
    ok "state=absent with force=true is refused before anything runs" ||
    not_ok "state=absent with force=true is refused" "exit $rc $got"

# ---------------------------------------------------------------------------------------------
echo "# role: refusals and the package path ($((SECONDS - started)) s)"
# A value only the binary knows to refuse (an unknown key): check-config stops it, in check mode
# (the dry run's copy of the configuration) and for real (before it replaces the file).
config_before=$(sha256sum <"$work/nft/etc/config.yaml")
fw_nft=$(fw_state nft | sha256sum)
badkey='{"cf_allowlist_fetch": {"timeout": "10s", "retry": 3}}'
for mode in check real; do
    set +e
    if [ "$mode" = check ]; then play "badkey_$mode" --limit nft -e "$badkey" --check; else play "badkey_$mode" --limit nft -e "$badkey"; fi
    rc=$?
    set -e
    line=$(grep -E '^fatal: \[nft\]' "$work/badkey_$mode.log" | head -1)
    if [ "$rc" -eq 2 ] && grep -qF 'unknown field `retry`' <<<"$line" && grep -q '"exit_status": 78' <<<"$line" &&
        [ "$(sha256sum <"$work/nft/etc/config.yaml")" = "$config_before" ] && [ "$(fw_state nft | sha256sum)" = "$fw_nft" ]; then
        ok "a configuration check-config refuses fails the play ($mode run), naming the key; the old file and the firewall stay"
    else not_ok "a configuration check-config refuses fails the play ($mode run); the old file stays" "exit $rc"$'\n'"${line:-$(log_tail "badkey_$mode")}"; fi
done

set +e
play misconfigured --check -e fleet_hosts=misconfigured
set -e
for spec in \
    "bad_port|cf_allowlist_ports" \
    "bad_family|cf_allowlist_families" \
    "timer_without_package|cf_allowlist_timer=enabled needs the package's systemd units" \
    "binary_without_src|cf_allowlist_install=binary needs cf_allowlist_binary_src"; do
    h=${spec%%|*}
    why=${spec#*|}
    line=$(grep -E "^fatal: \[$h\]" "$work/misconfigured.log" | head -1)
    if [ "$(recap misconfigured "$h" failed)" = 1 ] && grep -qF "$why" <<<"$line"; then
        ok "the role refuses $h before changing anything ($why)"
    else not_ok "the role refuses $h ($why)" "${line:-$(log_tail misconfigured)}"; fi
done
[ ! -e "$work/misc" ] && ok "the refused hosts got no file" || not_ok "the refused hosts got no file" "$(find "$work/misc")"

# A .deb to copy (a stub: in check mode it is copied nowhere and never installed).
mkdir -p "$work/pkg/stub/DEBIAN"
printf 'Package: cf-allowlist\nVersion: 0.1.0-1\nArchitecture: amd64\nMaintainer: test <test@example.invalid>\nDescription: stub for the role test\n' \
    >"$work/pkg/stub/DEBIAN/control"
dpkg-deb --build --root-owner-group "$work/pkg/stub" "$work/pkg/cf-allowlist_0.1.0-1_amd64.deb" >/dev/null
set +e
play packaged --check --diff -e fleet_hosts=packaged
rc=$?
set -e
tasks=$(grep -E '^(TASK|changed|ok|skipping|fatal)' "$work/packaged.log")
if [ "$rc" -eq 0 ] && [ "$(recap packaged deb changed)" -ge 1 ] &&
    grep -A1 'Copy the package to the host' <<<"$tasks" | grep -q '^changed: \[deb\]' &&
    grep -A1 'Install the .deb' <<<"$tasks" | grep -q '^skipping: \[deb\]' &&
    grep -q 'cf-allowlist is not installed yet' "$work/packaged.log" && [ ! -e "$work/deb" ]; then
    ok "install=package from a .deb, check mode: would copy and install it, says the dry run needs the binary, writes nothing"
else not_ok "install=package from a .deb, check mode" "exit $rc"$'\n'"$tasks"; fi

# ---------------------------------------------------------------------------------------------
[ "$(host_state | sha256sum)" = "$host_before" ] &&
    ok "this machine's own firewall, ipsets and /etc/ufw are as they were" ||
    not_ok "this machine's own firewall, ipsets and /etc/ufw are as they were"
finish
