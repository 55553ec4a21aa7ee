#!/usr/bin/env bash
# Builds cf-allowlist's .deb and .rpm and checks them for real:
#  - contents, conffiles, dependencies and maintainer scripts of both packages; lintian (no error,
#    only the warnings listed in LINTIAN_KEPT);
#  - the packaged config is equal in effect to the built-in defaults (as shipped and with every
#    setting uncommented) and documents every key;
#  - systemd-analyze verify of every unit (installed) and systemd-analyze security --offline,
#    exposure at most MAX_EXPOSURE; the cron.d file stands down under systemd;
#  - a real install cycle: dpkg -i, the installed man pages render, each completion script loads
#    in bash, zsh and fish and completes `cf-allowlist sy<TAB>` to `sync`, the installed binary
#    runs `sync --offline` in a network namespace of its own, plainly and inside an emulation of
#    the units' sandbox (packaging/tests/unit-sandbox.py) with nftables, iptables (legacy with
#    ipset, nft without) and ufw; dpkg --purge leaves no file and no unit behind.
#
# It never acts on this machine's firewall: no unit is enabled or started (the script checks),
# the cron.d file is diverted out of /etc/cron.d for the whole install (dpkg-divert), every run
# of the binary happens in a namespace made here (ufw gets a private copy of /etc/ufw), and the
# host's ruleset and /etc/ufw are compared before and after. The package is purged on any exit.
#
# As root. Installs what it needs when missing (apt-get; cargo install of cargo-deb and
# cargo-generate-rpm). Prints "N passed, N failed" last; exits 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

MAX_EXPOSURE=3.0
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
# Lintian warnings kept, with why:
#  initial-upload-closes-no-bugs: the package is not uploaded to Debian (no ITP bug to close).
LINTIAN_KEPT="initial-upload-closes-no-bugs"

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test-packaging.sh: needs root (dpkg -i, network namespaces); run it as root" >&2
    exit 1
fi
export PATH="$PATH:/usr/sbin:/sbin"
started=$SECONDS

# ---------------------------------------------------------------------------------------------
# Tools.
need=()
for tool in lintian rpm zsh fish dpkg-shlibdeps strip man groff nft iptables-legacy iptables-nft \
    ipset ufw ip systemd-analyze dpkg-divert gzip; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
/usr/bin/python3 -c 'import seccomp' 2>/dev/null || need+=(python3-seccomp)
if [ ${#need[@]} -gt 0 ]; then
    echo "test-packaging: installing what the checks need (missing: ${need[*]})" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends lintian rpm zsh fish dpkg-dev binutils man-db \
        groff-base nftables iptables ipset ufw iproute2 systemd python3 python3-seccomp gzip \
        >/dev/null
fi
for spec in "cargo-deb $CARGO_DEB_VERSION" "cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION"; do
    set -- $spec
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "test-packaging: cargo install --locked $1@$2 (once)" >&2
        cargo install --locked --quiet "$1@$2"
    fi
done

# ---------------------------------------------------------------------------------------------
# Results.
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() {
    failed=$((failed + 1))
    echo "not ok - $1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/    /' | head -40; fi
}
# check DESCRIPTION COMMAND...: runs the command, ok when it exits 0 (its output shown if not).
check() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$what"; else not_ok "$what" "$out"; fi
}
die() {
    not_ok "$1" "${2:-}"
    echo "$passed passed, $failed failed"
    exit 1
}

# ---------------------------------------------------------------------------------------------
# State, and the cleanup that runs on every exit.
work=$(mktemp -d /tmp/cfa-pkgtest.XXXXXX)
# The namespaces' state_dir and lock: under /run, which the units' ReadWritePaths= opens (the
# sandbox gives the service a private /tmp).
rt=$(mktemp -d /run/cfa-pkgtest.XXXXXX)
marker=/run/cfa-pkgtest.installed
cron_file=/etc/cron.d/cf-allowlist
namespaces=()

purge_ours() {
    if [ -e "$marker" ]; then
        dpkg --purge cf-allowlist >/dev/null 2>&1 || true
        rm -f "$marker"
    fi
    # Our diversion only (it diverts to a cfa-pkgtest directory). --no-rename: the diverted file
    # must never be moved into the live /etc/cron.d; it is deleted instead.
    local diverted
    diverted=$(dpkg-divert --truename "$cron_file" 2>/dev/null || true)
    if [[ "$diverted" == */cfa-pkgtest* ]]; then
        dpkg-divert --quiet --local --no-rename --remove "$cron_file" >/dev/null 2>&1 || true
        rm -f "$diverted"
    fi
}

cleanup() {
    local ns
    purge_ours
    for ns in "${namespaces[@]}"; do
        ip netns delete "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    rm -rf "$work" "$rt"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Leftovers of an interrupted earlier run of this script.
purge_ours
for ns in $(ip netns list 2>/dev/null | awk '/^cfa-pkg-/ {print $1}'); do
    ip netns delete "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
done
status=$(dpkg-query -W -f='${db:Status-Status}' cf-allowlist 2>/dev/null || true)
if [ -n "$status" ] && [ "$status" != not-installed ]; then
    die "cf-allowlist is not on this machine before the test (dpkg: $status)" \
        "the test would replace and purge it, with its configuration; remove it first"
fi
if [ -e "$cron_file" ] || [ -e /etc/cf-allowlist ]; then
    die "no $cron_file and no /etc/cf-allowlist on this machine before the test" \
        "they are not the test's: it would divert or purge them"
fi

# ---------------------------------------------------------------------------------------------
echo "# build"
if ! built=$(packaging/build.sh "$work/packages" 2>"$work/build.log"); then
    die "packaging/build.sh builds both packages" "$(tail -30 "$work/build.log")"
fi
deb=$(printf '%s\n' "$built" | grep '\.deb$')
rpm=$(printf '%s\n' "$built" | grep '\.rpm$')
ok "packaging/build.sh builds $(basename "$deb") and $(basename "$rpm")"
bin=$(cargo metadata --format-version 1 --no-deps --locked |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)/release/cf-allowlist

# ---------------------------------------------------------------------------------------------
echo "# package contents"
# The files each package installs (directories aside), sorted.
common="/etc/cf-allowlist/config.yaml
/etc/cron.d/cf-allowlist
/usr/lib/systemd/system/cf-allowlist-boot.service
/usr/lib/systemd/system/cf-allowlist.service
/usr/lib/systemd/system/cf-allowlist.timer
/usr/sbin/cf-allowlist
/usr/share/bash-completion/completions/cf-allowlist
/usr/share/doc/cf-allowlist/README.md
/usr/share/doc/cf-allowlist/SPEC.md
/usr/share/fish/vendor_completions.d/cf-allowlist.fish"
# One page per subcommand, as the generator wrote them (its own test checks them against clap).
pages=$(cd packaging/out/man && ls cf-allowlist*.8 | sed 's|^|/usr/share/man/man8/|; s|$|.gz|')
if ! grep -qx /usr/share/man/man8/cf-allowlist-sync.8.gz <<<"$pages"; then
    die "the generator wrote cf-allowlist(8) and a page per subcommand" "$pages"
fi
common+=$'\n'"$pages"
deb_expected=$(printf '%s\n' "$common" /usr/share/doc/cf-allowlist/changelog.Debian.gz \
    /usr/share/doc/cf-allowlist/copyright /usr/share/zsh/vendor-completions/_cf-allowlist | sort)
rpm_expected=$(printf '%s\n' "$common" /usr/share/doc/cf-allowlist/changelog \
    /usr/share/zsh/site-functions/_cf-allowlist | sort)

deb_files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|' | sort)
if [ "$deb_files" = "$deb_expected" ]; then ok "dpkg-deb -c: the .deb holds exactly the expected files"
else not_ok "dpkg-deb -c: the .deb holds exactly the expected files" \
    "$(diff <(echo "$deb_expected") <(echo "$deb_files"))"; fi
mode=$(dpkg-deb -c "$deb" | awk '$6 == "./usr/sbin/cf-allowlist" {print $1 " " $2}')
[ "$mode" = "-rwxr-xr-x 0/0" ] && ok "dpkg-deb -c: /usr/sbin/cf-allowlist is root's, 0755" ||
    not_ok "dpkg-deb -c: /usr/sbin/cf-allowlist is root's, 0755" "$mode"
if dpkg-deb -c "$deb" | grep -q 'var/lib/cf-allowlist'; then
    not_ok "the .deb does not ship /var/lib/cf-allowlist (StateDirectory= creates it)"
else ok "the .deb does not ship /var/lib/cf-allowlist (StateDirectory= creates it)"; fi

mkdir -p "$work/control"
dpkg-deb -e "$deb" "$work/control"
conffiles=$(sort "$work/control/conffiles")
[ "$conffiles" = $'/etc/cf-allowlist/config.yaml\n/etc/cron.d/cf-allowlist' ] &&
    ok "dpkg-deb -I: conffiles are config.yaml and the cron.d file" ||
    not_ok "dpkg-deb -I: conffiles are config.yaml and the cron.d file" "$conffiles"
info=$(dpkg-deb -I "$deb")
depends=$(printf '%s\n' "$info" | sed -n 's/^ Depends: //p')
recommends=$(printf '%s\n' "$info" | sed -n 's/^ Recommends: //p')
if [[ "$depends" == libc6* ]] && ! grep -Eq 'nftables|iptables|ufw|csf' <<<"$depends"; then
    ok "dpkg-deb -I: Depends ($depends) names no firewall tool"
else not_ok "dpkg-deb -I: Depends names no firewall tool" "$depends"; fi
[ "$recommends" = "nftables | iptables" ] && ok "dpkg-deb -I: Recommends: nftables | iptables" ||
    not_ok "dpkg-deb -I: Recommends: nftables | iptables" "$recommends"
# The maintainer scripts enable and start nothing (deb-systemd-helper only re-enables on upgrade
# what the operator had enabled: `was-enabled`).
scripts=$(cat "$work/control/postinst" "$work/control/prerm" "$work/control/postrm")
if grep -En 'deb-systemd-invoke (start|restart)|systemctl (--[a-z]+ )*(enable|start)' <<<"$scripts" ||
    [ "$(grep -c 'deb-systemd-helper enable' <<<"$scripts")" != \
        "$(grep -c 'was-enabled' <<<"$scripts")" ]; then
    not_ok "the .deb's maintainer scripts enable and start no unit"
else ok "the .deb's maintainer scripts enable and start no unit"; fi

lintian_out=$(lintian --pedantic "$deb" 2>&1 | grep -v '^running with root' || true)
errors=$(grep -E '^E: ' <<<"$lintian_out" || true)
warnings=$(grep -E '^W: ' <<<"$lintian_out" | awk '{print $3}' | sort -u || true)
unexpected=$(comm -23 <(printf '%s\n' $warnings | sed '/^$/d' | sort -u) \
    <(printf '%s\n' $LINTIAN_KEPT | sort -u))
if [ -z "$errors" ] && [ -z "$unexpected" ]; then
    ok "lintian --pedantic: no error; warnings kept: ${warnings:-none}"
else not_ok "lintian --pedantic: no error, no warning but $LINTIAN_KEPT" "$lintian_out"; fi

rpm_files=$(rpm -qlp "$rpm" 2>/dev/null | sort)
if [ "$rpm_files" = "$rpm_expected" ]; then ok "rpm -qlp: the .rpm holds exactly the expected files"
else not_ok "rpm -qlp: the .rpm holds exactly the expected files" \
    "$(diff <(echo "$rpm_expected") <(echo "$rpm_files"))"; fi
rpm_conf=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" 2>/dev/null |
    awk 'NF == 2 && $1 ~ /c/ {print $1 " " $2}' | sort)
[ "$rpm_conf" = $'cn /etc/cf-allowlist/config.yaml\ncn /etc/cron.d/cf-allowlist' ] &&
    ok "rpm -qcp: config.yaml and the cron.d file are %config(noreplace)" ||
    not_ok "rpm -qcp: config.yaml and the cron.d file are %config(noreplace)" \
        "$(rpm -qcp "$rpm" 2>&1; echo "$rpm_conf")"
rpm_req=$(rpm -qp --requires "$rpm" 2>/dev/null || true)
rpm_rec=$(rpm -qp --recommends "$rpm" 2>/dev/null || true)
if ! grep -Eq 'nftables|iptables|ufw|csf' <<<"$rpm_req" && [ "$rpm_rec" = "(nftables or iptables)" ]; then
    ok "rpm: Requires names no firewall tool; Recommends: $rpm_rec"
else not_ok "rpm: Requires names no firewall tool; Recommends: (nftables or iptables)" \
    "$rpm_req"$'\n'"$rpm_rec"; fi
if rpm -qp --scripts "$rpm" 2>/dev/null | grep -v '^\s*#' | grep -Eq 'systemctl (--[a-z-]+ )*(enable|start|preset)'; then
    not_ok "the .rpm's scriptlets enable and start no unit"
else ok "the .rpm's scriptlets enable and start no unit"; fi

# ---------------------------------------------------------------------------------------------
echo "# default configuration"
effective() { "$bin" -c "$1" check-config --output json 2>&1 | sed 's/"path":"[^"]*",//'; }
: >"$work/empty.yaml"
defaults=$(effective "$work/empty.yaml")
check "the packaged config.yaml passes check-config" "$bin" -c packaging/config.yaml check-config -q
[ "$(effective packaging/config.yaml)" = "$defaults" ] &&
    ok "the packaged config.yaml is equal in effect to the built-in defaults" ||
    not_ok "the packaged config.yaml is equal in effect to the built-in defaults" \
        "$(effective packaging/config.yaml)"
# Setting lines are '#key: ...' and '#  nested'; prose is '# text'. Uncommented, they must still
# be the defaults: the values the file shows are the real ones.
sed -E 's/^#([a-z_]|  [^ ])/\1/' packaging/config.yaml >"$work/uncommented.yaml"
[ "$(effective "$work/uncommented.yaml")" = "$defaults" ] &&
    ok "config.yaml with every setting uncommented is still the built-in defaults" ||
    not_ok "config.yaml with every setting uncommented is still the built-in defaults" \
        "$(effective "$work/uncommented.yaml")"
keys=$(printf '%s\n' "$defaults" | /usr/bin/python3 -c \
    'import json,sys; print("\n".join(sorted(json.load(sys.stdin)["config"])))')
shown=$(grep -oE '^[a-z_]+:' "$work/uncommented.yaml" | tr -d : | sort)
[ "$keys" = "$shown" ] && ok "config.yaml shows every top-level key of the configuration" ||
    not_ok "config.yaml shows every top-level key of the configuration" \
        "$(diff <(echo "$keys") <(echo "$shown"))"

# ---------------------------------------------------------------------------------------------
echo "# systemd units and cron"
units=(packaging/systemd/cf-allowlist.service packaging/systemd/boot/cf-allowlist-boot.service)
for unit in "${units[@]}"; do
    name=$(basename "$unit")
    out=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1 || true)
    exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
    if [ -n "$exposure" ] && awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN {exit !(e <= m)}'; then
        ok "systemd-analyze security --offline=yes $name: exposure $exposure (at most $MAX_EXPOSURE)"
    else not_ok "systemd-analyze security $name: exposure at most $MAX_EXPOSURE" \
        "$(grep -E 'Overall|✗' <<<"$out")"; fi
done
# One hardening for both services: the boot unit carries the same block.
hardening() { sed -n '/^# Hardening/,/^\[/p' "$1" | grep -v '^\[' | sed '/^$/d'; }
[ "$(hardening "${units[0]}")" = "$(hardening "${units[1]}")" ] &&
    ok "cf-allowlist-boot.service has the same hardening as cf-allowlist.service" ||
    not_ok "cf-allowlist-boot.service has the same hardening as cf-allowlist.service" \
        "$(diff <(hardening "${units[0]}") <(hardening "${units[1]}"))"
boot=${units[1]}
if grep -qx 'Before=network-pre.target shutdown.target' "$boot" &&
    grep -q '^After=.*nftables.service' "$boot" && grep -q '^ExecStart=.* sync --offline' "$boot"; then
    ok "the boot unit runs sync --offline after the firewall's unit, before network-pre.target"
else not_ok "the boot unit runs sync --offline after the firewall's unit, before network-pre.target"; fi
timer=packaging/systemd/cf-allowlist.timer
calendar=$(sed -n 's/^OnCalendar=//p' "$timer")
if systemd-analyze calendar "$calendar" >/dev/null 2>&1 && grep -qx 'Persistent=true' "$timer" &&
    grep -q '^RandomizedDelaySec=' "$timer"; then
    ok "the timer: OnCalendar=$calendar parses, RandomizedDelaySec=, Persistent=true"
else not_ok "the timer: OnCalendar= parses, RandomizedDelaySec=, Persistent=true"; fi

# The cron.d lines, run by dash as cron would, with a stand-in cf-allowlist first on PATH: with
# /run/systemd/system present they do nothing; without it they run the tool (a tmpfs over /run
# in a private mount namespace decides which; the host's /run is not touched).
mkdir -p "$work/stub"
printf '#!/bin/sh\necho "$*" >> %s/stub.log\n' "$work" >"$work/stub/cf-allowlist"
chmod +x "$work/stub/cf-allowlist"
cron_cmds=$(grep -Ev '^\s*(#|$|[A-Z]+=)' packaging/cron/cf-allowlist |
    awk -F'\t+' '{print $NF}')
cron_run() { # $1 = yes|no: whether /run/systemd/system exists; $2: the path the lines test
    rm -f "$work/stub.log"
    unshare -m --propagation private sh -c '
        mount -t tmpfs tmpfs /run && { [ "$1" = no ] || mkdir -p /run/systemd/system; }
        while IFS= read -r cmd; do
            cmd=$(printf "%s" "$cmd" | sed "s|/usr/sbin/cf-allowlist|$2|g")
            PATH="$0:/usr/sbin:/usr/bin:/sbin:/bin" dash -c "$cmd" || exit 1
        done' "$work/stub" "$1" "$2" <<<"$cron_cmds"
}
# Before the install /usr/sbin/cf-allowlist does not exist: the lines test the built binary's
# path instead (the stand-in on PATH is what they run).
if cron_run yes "$bin" && [ ! -e "$work/stub.log" ]; then
    ok "cron.d: every line stands down when /run/systemd/system exists (systemd is PID 1)"
else not_ok "cron.d: every line stands down when /run/systemd/system exists"; fi
if cron_run no "$bin" && [ "$(cat "$work/stub.log" 2>/dev/null)" = $'sync -q --random-delay 30m\nsync -q --offline' ]; then
    ok "cron.d: without systemd it runs sync -q --random-delay 30m and, at boot, sync -q --offline"
else not_ok "cron.d: without systemd it runs sync --random-delay 30m and sync --offline at boot" \
    "$(cat "$work/stub.log" 2>/dev/null)"; fi
if cron_run no /nonexistent/cf-allowlist && [ ! -e "$work/stub.log" ]; then
    ok "cron.d: once the package is removed (the conffile kept) every line stands down"
else not_ok "cron.d: once the package is removed (the conffile kept) every line stands down"; fi

# ---------------------------------------------------------------------------------------------
echo "# install cycle"
host_state() {
    nft list ruleset 2>/dev/null | sha256sum
    # iptables-legacy: the rules and any policy that is not ACCEPT (a table the kernel loads
    # meanwhile, empty and accepting, is no change of the firewall).
    if [ -e /proc/net/ip_tables_names ]; then iptables-legacy-save 2>/dev/null; fi |
        grep -E '^-A|^:[A-Z]+ (DROP|REJECT)' | sha256sum
    if [ -e /proc/net/ip6_tables_names ]; then ip6tables-legacy-save 2>/dev/null; fi |
        grep -E '^-A|^:[A-Z]+ (DROP|REJECT)' | sha256sum
    [ ! -d /etc/ufw ] || tar -C /etc -cf - ufw 2>/dev/null | sha256sum
}
units_state() { # every trace of our units outside the package's own files
    find /etc/systemd /run/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
        /var/lib/systemd/deb-systemd-helper-masked -name '*cf-allowlist*' 2>/dev/null | sort || true
}
units_enabled() { # enablement links and masks (deb-systemd-helper's *.dsh-also files only list
    # what a purge must clean up)
    units_state | grep -v '\.dsh-also$' || true
}
host_before=$(host_state)
units_before=$(units_state)
var_lib_before=$([ -e /var/lib/cf-allowlist ] && echo present || echo absent)
crons=$(ps -eo comm= | grep -Ex 'cron|crond|anacron|busybox' || true)
echo "# cron daemons running: ${crons:-none} (the cron.d file is diverted out of /etc/cron.d anyway)"

# Keep the cron.d file out of the live /etc/cron.d for the whole install.
mkdir -p "$work/cfa-pkgtest-divert"
dpkg-divert --quiet --local --no-rename --divert "$work/cfa-pkgtest-divert/cf-allowlist" --add "$cron_file"
touch "$marker"
# --path-include: a minimal image's dpkg.cfg.d may exclude man pages and docs.
if ! out=$(dpkg --path-include='/usr/share/man/man8/cf-allowlist*' \
    --path-include='/usr/share/doc/cf-allowlist/*' -i "$deb" 2>&1); then die "dpkg -i $(basename "$deb")" "$out"; fi
ok "dpkg -i $(basename "$deb")"
installed=$(dpkg -L cf-allowlist | grep '^/' | sort)
missing=$(while read -r f; do [ -e "$f" ] || [ "$f" = "$cron_file" ] || echo "$f"; done <<<"$installed")
[ -z "$missing" ] && ok "every file dpkg -L lists is installed" || not_ok "every file dpkg -L lists is installed" "$missing"
if [ ! -e "$cron_file" ] && [ -f "$work/cfa-pkgtest-divert/cf-allowlist" ]; then
    ok "the cron.d file went to the diverted path, never into /etc/cron.d"
else not_ok "the cron.d file went to the diverted path, never into /etc/cron.d"; fi
[ "$(units_enabled)" = "$(grep -v '\.dsh-also$' <<<"$units_before" || true)" ] &&
    ok "no unit enabled or masked by the install (and systemd is not PID 1 here: none started)" ||
    not_ok "no unit enabled or masked by the install" "$(units_enabled)"
if [ "$var_lib_before" = absent ] && [ -e /var/lib/cf-allowlist ]; then
    not_ok "the install does not create /var/lib/cf-allowlist"
else ok "the install does not create /var/lib/cf-allowlist (StateDirectory= does)"; fi
check "the installed config passes check-config" /usr/sbin/cf-allowlist check-config -q

for unit in cf-allowlist.service cf-allowlist.timer cf-allowlist-boot.service; do
    check "systemd-analyze verify $unit (installed)" \
        sh -c "out=\$(systemd-analyze verify /usr/lib/systemd/system/$unit 2>&1); printf '%s' \"\$out\"; [ -z \"\$out\" ]"
done

for page in /usr/share/man/man8/cf-allowlist*.8.gz; do
    name=$(basename "$page" .8.gz)
    out=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >"$work/man.txt") || true
    if [ -z "$out" ] && grep -q '^SYNOPSIS' "$work/man.txt" && grep -q "$name" "$work/man.txt"; then
        ok "man -l $name(8) renders without warnings"
    else not_ok "man -l $name(8) renders without warnings" "$out"; fi
done
if MANWIDTH=80 man 8 cf-allowlist 2>/dev/null | grep -q 'EXIT STATUS'; then
    ok "man 8 cf-allowlist finds the installed page"
else not_ok "man 8 cf-allowlist finds the installed page"; fi

# Completions, from the installed paths, each in its own shell; HOME is a temp dir so that no
# shell writes into root's.
shell_env=(env -i PATH="/usr/sbin:/usr/bin:/sbin:/bin" HOME="$work/home" TERM=xterm
    XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share")
mkdir -p "$work/home"
bash_complete() { # the registered function, called as readline calls it
    "${shell_env[@]}" bash --norc --noprofile -c '
        source /usr/share/bash-completion/completions/cf-allowlist || exit 3
        fn=$(complete -p cf-allowlist | sed -n "s/.* -F \([^ ]*\) .*/\1/p")
        read -ra COMP_WORDS <<<"$1"; [ "${1: -1}" = " " ] && COMP_WORDS+=("")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE=$1; COMP_POINT=${#1}
        "$fn" cf-allowlist "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf "%s\n" "${COMPREPLY[@]}"' bash "$1"
}
r=$(bash_complete "cf-allowlist sy")
[ "$r" = sync ] && ok "bash: cf-allowlist sy<TAB> completes to sync" ||
    not_ok "bash: cf-allowlist sy<TAB> completes to sync" "$r"
r=$(bash_complete "cf-allowlist sync --off")
[ "$r" = --offline ] && ok "bash: cf-allowlist sync --off<TAB> completes to --offline" ||
    not_ok "bash: cf-allowlist sync --off<TAB> completes to --offline" "$r"
# zsh: an interactive zsh in a pseudo-terminal (zpty), compinit from the default $fpath (where
# the package put _cf-allowlist), a key bound to complete-word that writes the buffer back.
zsh_complete() {
    rm -f "$work/zsh.out"
    "${shell_env[@]}" zsh -f -c '
        zmodload zsh/zpty || exit 3
        zpty z zsh -f -i
        zpty -w z "autoload -Uz compinit; compinit -u -D; cfa_t() { zle complete-word; print -r -- \"<\$BUFFER>\" > $1; }; zle -N cfa_t; bindkey \"^T\" cfa_t"
        zpty -w -n z "$2"$'"'"'\x14'"'"'
        for i in {1..100}; do [[ -s $1 ]] && break; sleep 0.05; done
        zpty -d z' zsh "$work/zsh.out" "$1"
    cat "$work/zsh.out" 2>/dev/null || true
}
r=$(zsh_complete "cf-allowlist sy")
[ "$r" = "<cf-allowlist sync >" ] && ok "zsh: cf-allowlist sy<TAB> completes to sync" ||
    not_ok "zsh: cf-allowlist sy<TAB> completes to sync" "$r"
r=$("${shell_env[@]}" fish -c 'complete -C "cf-allowlist sy"' 2>&1 | cut -f1)
[ "$r" = sync ] && ok "fish: cf-allowlist sy<TAB> completes to sync" ||
    not_ok "fish: cf-allowlist sy<TAB> completes to sync" "$r"

# The installed binary in network namespaces of its own.
new_ns() { # sets $ns: a new namespace with lo up, deleted by cleanup
    ns="cfa-pkg-$$-$1"
    namespaces+=("$ns")
    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
}
conf() { # name, extra YAML
    printf 'state_dir: %s/state-%s\nlock_file: %s/lock\n%s\n' "$rt" "$1" "$rt" "${2:-}" >"$rt/$1.yaml"
    echo "$rt/$1.yaml"
}
new_ns plain
c=$(conf plain "backend: nftables")
if out=$(ip netns exec "$ns" /usr/sbin/cf-allowlist -c "$c" sync --offline 2>&1) &&
    v4=$(ip netns exec "$ns" nft -j list set inet cf_allowlist allow_v4 | grep -o '"prefix"' | wc -l) &&
    v6=$(ip netns exec "$ns" nft -j list set inet cf_allowlist allow_v6 | grep -o '"prefix"' | wc -l) &&
    [ "$v4" -ge 10 ] && [ "$v6" -ge 5 ]; then
    ok "sync --offline in namespace $ns: table inet cf_allowlist with $v4 IPv4 and $v6 IPv6 ranges"
else not_ok "sync --offline in a namespace fills table inet cf_allowlist" "$out"; fi
check "a second sync --offline changes nothing (--detailed-exitcode 0)" \
    ip netns exec "$ns" /usr/sbin/cf-allowlist -c "$c" -q sync --offline --detailed-exitcode

# The same under the units' sandbox (ExecStartPre, then ExecStart), backend by backend.
sandbox() { # ns unit args...
    local ns=$1 unit=$2
    shift 2
    ip netns exec "$ns" /usr/bin/python3 "$root/packaging/tests/unit-sandbox.py" \
        "/usr/lib/systemd/system/$unit" -- /usr/sbin/cf-allowlist "$@"
}
sandboxed() { # label unit ns config backend-check-command...
    local label=$1 unit=$2 ns=$3 c=$4 out
    shift 4
    if out=$(sandbox "$ns" "$unit" -c "$c" check-config -q 2>&1 &&
        sandbox "$ns" "$unit" -c "$c" sync --offline -q 2>&1) && out+=$("$@" 2>&1); then
        ok "$unit sandbox: check-config, sync --offline with $label"
        [ -n "${emulation_noted:-}" ] || { emulation_noted=1; echo "# $(grep -m1 'not emulated' <<<"$out")"; }
    else not_ok "$unit sandbox: check-config, sync --offline with $label" "$out"; fi
}
for unit in cf-allowlist.service cf-allowlist-boot.service; do
    tag=${unit%.service}; tag=${tag#cf-allowlist}; tag=${tag:--main}
    new_ns "nft$tag"
    sandboxed "nftables" "$unit" "$ns" "$(conf "nft$tag" 'backend: nftables')" \
        sh -c "ip netns exec $ns nft list set inet cf_allowlist allow_v6 | grep -q 2400:cb00::/32"
    new_ns "ipl$tag"
    sandboxed "iptables-legacy + ipset (IPv4 and IPv6)" "$unit" "$ns" \
        "$(conf "ipl$tag" $'backend: iptables\niptables: { variant: legacy, ipset: always }')" \
        sh -c "ip netns exec $ns ipset list -n | grep -qx cf-allowlist-v6 && ip netns exec $ns ip6tables-legacy-save | grep -q CF-ALLOWLIST"
    new_ns "ipn$tag"
    sandboxed "iptables-nft without ipset (IPv4 and IPv6)" "$unit" "$ns" \
        "$(conf "ipn$tag" $'backend: iptables\niptables: { variant: nft, ipset: never }')" \
        sh -c "ip netns exec $ns ip6tables-nft-save | grep -q 'CF-ALLOWLIST.*2400:cb00::/32'"
done
# ufw, active in its namespace with a private copy of /etc/ufw and /etc/default/ufw.
new_ns ufw
mkdir -p "/etc/netns/$ns/default"
cp -a /etc/ufw "/etc/netns/$ns/ufw"
cp -a /etc/default/ufw "/etc/netns/$ns/default/ufw"
ip netns exec "$ns" ufw --force enable >/dev/null
sandboxed "ufw (active, backend: auto)" cf-allowlist.service "$ns" "$(conf ufw)" \
    sh -c "[ \$(ip netns exec $ns ufw status | grep -c '# cf-allowlist') -ge 10 ] && ip netns exec $ns ufw status | grep -q '2400:cb00::/32.*# cf-allowlist'"
# The emulation has teeth: without CAP_NET_RAW iptables-legacy cannot work (its raw socket),
# which is why the bounding set holds it.
sed 's/^CapabilityBoundingSet=.*/CapabilityBoundingSet=CAP_NET_ADMIN/' \
    /usr/lib/systemd/system/cf-allowlist.service >"$rt/no-net-raw.service"
new_ns noraw
c=$(conf noraw $'backend: iptables\niptables: { variant: legacy, ipset: always }')
if ! ip netns exec "$ns" /usr/bin/python3 packaging/tests/unit-sandbox.py "$rt/no-net-raw.service" \
    -- /usr/sbin/cf-allowlist -c "$c" sync --offline -q >/dev/null 2>&1; then
    ok "control: the same sandbox without CAP_NET_RAW makes iptables-legacy fail"
else not_ok "control: the same sandbox without CAP_NET_RAW makes iptables-legacy fail"; fi

[ "$(host_state)" = "$host_before" ] &&
    ok "the host's ruleset (nft, iptables-legacy) and /etc/ufw are unchanged" ||
    not_ok "the host's ruleset (nft, iptables-legacy) and /etc/ufw are unchanged"

# Purge.
if out=$(dpkg --purge cf-allowlist 2>&1); then ok "dpkg --purge cf-allowlist"
else not_ok "dpkg --purge cf-allowlist" "$out"; fi
rm -f "$marker"
grep -q 'cf-allowlist purge' <<<"$out" &&
    ok "removing the package says how to remove the allowlist first (cf-allowlist purge)" ||
    not_ok "removing the package says how to remove the allowlist first" "$out"
# (dpkg leaves a diverted conffile where the diversion put it: that copy is the test's, removed
# with the diversion; the real path must be gone.)
left=$(while read -r f; do
    if [ -d "$f" ]; then [[ "$f" != *cf-allowlist* ]] || echo "$f"; else [ ! -e "$f" ] || echo "$f"; fi
done <<<"$installed")
[ -z "$left" ] && ok "dpkg --purge removes every file the package installed" ||
    not_ok "dpkg --purge removes every file the package installed" "$left"
[ "$(units_state)" = "$units_before" ] && [ ! -e /usr/lib/systemd/system/cf-allowlist.service ] &&
    ok "no unit, enablement or mask of cf-allowlist is left behind" ||
    not_ok "no unit, enablement or mask of cf-allowlist is left behind" "$(units_state)"
if [ "$var_lib_before" = absent ] && [ -e /var/lib/cf-allowlist ]; then
    not_ok "purge leaves no /var/lib/cf-allowlist"
else ok "purge leaves no /var/lib/cf-allowlist"; fi
purge_ours
[ ! -e "$cron_file" ] && [ -z "$(dpkg-divert --list "$cron_file")" ] &&
    ok "the test's diversion is removed and /etc/cron.d/cf-allowlist does not exist" ||
    not_ok "the test's diversion is removed and /etc/cron.d/cf-allowlist does not exist"
[ "$(host_state)" = "$host_before" ] && ok "the host's firewall is as it was after the purge" ||
    not_ok "the host's firewall is as it was after the purge"

echo "# packaging checks took $((SECONDS - started)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
