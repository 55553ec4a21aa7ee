#!/usr/bin/env bash
# Times the release binary end to end (process start, config, `file:` sources so no network,
# read, plan, apply, read back) with hyperfine, every case in fresh network namespaces and next to
# a reference measured in the same run (nft -f of the same table, ufw driven by hand), and prints
# one table with ratios and targets, then nftables' growth from 1,000 to 100,000 ranges.
# Root only; never touches the host's ruleset (everything runs in namespaces made here, ufw with
# its own /etc/netns/NS/{ufw,default} copies and a private /run).
# Usage: scripts/bench.sh [--quick] [--bin PATH]
#   --quick     fewer runs, for a smoke test (~2 minutes instead of ~8)
#   --bin PATH  time this cf-allowlist binary instead of building target/release (to measure an
#               older commit: build it elsewhere and pass it here)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench.sh needs root (network namespaces)" >&2; exit 1; }
QUICK=0
BIN=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --bin) BIN=$(realpath "${2:?--bin needs a path}"); shift ;;
    *) echo "usage: scripts/bench.sh [--quick] [--bin PATH]" >&2; exit 2 ;;
  esac
  shift
done
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
export PATH="$PATH:/usr/sbin:/sbin"
for tool in nft ufw python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench.sh needs $tool" >&2; exit 1; }
done

if [ -z "$BIN" ]; then
  cargo build --release --locked -q
  BIN=$PWD/target/release/cf-allowlist
fi
[ -x "$BIN" ] || { echo "bench.sh: $BIN is not an executable" >&2; exit 1; }
PREFIX=cfab$$
WORK=$(mktemp -d /tmp/cfa-bench.XXXXXX)
cleanup() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-" || true); do
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf /etc/netns/"$PREFIX"-* "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run counts: (cheap, per-second cases, ufw).
if [ "$QUICK" = 1 ]; then R_FAST=5; R_SLOW=2; R_UFW=1; else R_FAST=30; R_SLOW=5; R_UFW=3; fi

# ---- helpers -------------------------------------------------------------------------------
# fresh NS [ufw]: (re)creates namespace NS with lo up; with `ufw`, a private copy of the stock
# /etc/ufw and /etc/default and an active ufw in it.
cat > "$WORK/fresh" <<'SH'
#!/bin/sh
set -e
ns=$1
ip netns delete "$ns" 2>/dev/null || true
rm -rf "/etc/netns/$ns"
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
if [ "${2:-}" = ufw ]; then
  mkdir -p "/etc/netns/$ns"
  cp -a /etc/ufw "/etc/netns/$ns/ufw"
  cp -a /etc/default "/etc/netns/$ns/default"
  "$(dirname "$0")/inufw" "$ns" ufw --force enable >/dev/null
fi
SH
# inufw NS CMD...: CMD in NS with the NS's /etc overlay (ip netns exec) and a private tmpfs on
# /run, so ufw's /run/ufw.lock is not shared with anything else on the machine. The mount lives in
# the mount namespace `ip netns exec` makes (a slave of the host's): nothing leaks out.
cat > "$WORK/inufw" <<'SH'
#!/bin/sh
ns=$1
shift
exec ip netns exec "$ns" sh -c 'mount -t tmpfs cfa-run /run && exec "$@"' sh "$@"
SH
chmod +x "$WORK/fresh" "$WORK/inufw"
FRESH=$WORK/fresh
INUFW=$WORK/inufw

# The lists (N ranges: five in six IPv4 /24s, every other /24 from 11.0.0.0, the rest IPv6 /48s,
# every other /48 from 2a00::; none aggregate), each with a "-changed" twin (its first IPv4 range
# replaced by 15.0.0.0/24), and for each the nft script our backend writes to build its table
# from nothing (the reference: the same table, by `nft -f`).
cat tests/fixtures/cloudflare/ips-v4 <(echo) tests/fixtures/cloudflare/ips-v6 > "$WORK/list-22.txt"
python3 - "$WORK" 1000 10000 20000 60000 100000 <<'PY'
import ipaddress, sys
work, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]

def table(nets):
    v4 = sorted((n for n in nets if n.version == 4), key=lambda n: int(n.network_address))
    v6 = sorted((n for n in nets if n.version == 6), key=lambda n: int(n.network_address))
    out = ["add table inet cf_allowlist", "delete table inet cf_allowlist",
           "table inet cf_allowlist {"]
    for name, typ, els in (("allow_v4", "ipv4_addr", v4), ("allow_v6", "ipv6_addr", v6)):
        out += [f"\tset {name} {{", f"\t\ttype {typ}", "\t\tflags interval"]
        if els:
            out.append("\t\telements = { " + ", ".join(map(str, els)) + " }")
        out.append("\t}")
    out += ["\tchain input {", "\t\ttype filter hook input priority filter - 10; policy accept;",
            '\t\ttcp dport { 80, 443 } ip saddr @allow_v4 accept comment "cf-allowlist"',
            '\t\ttcp dport { 80, 443 } ip6 saddr @allow_v6 accept comment "cf-allowlist"',
            "\t}", "}"]
    return "\n".join(out) + "\n"

def write(name, nets):
    with open(f"{work}/list-{name}.txt", "w") as f:
        f.write("".join(f"{n}\n" for n in nets))
    with open(f"{work}/table-{name}.nft", "w") as f:
        f.write(table(nets))

with open(f"{work}/list-22.txt") as f:
    write("22", [ipaddress.ip_network(l.strip()) for l in f if l.strip()])
for n in sizes:
    v6 = n // 6
    nets = [ipaddress.ip_network((11 << 24) + i * 512).supernet(new_prefix=24) for i in range(n - v6)]
    nets += [ipaddress.IPv6Network(((0x2a00 << 112) + ((2 * i) << 80), 48)) for i in range(v6)]
    write(str(n), nets)
    write(f"{n}-changed", [ipaddress.ip_network("15.0.0.0/24")] + nets[1:])
PY

# cfg NAME BACKEND: a config reading list-NAME.txt (the shape of the packaged config, minimal).
cfg() {
  mkdir -p "$WORK/state-$1-$2"
  cat > "$WORK/cfg-$1-$2.yaml" <<YAML
backend: $2
sources: [ { file: "$WORK/list-$1.txt" } ]
state_dir: $WORK/state-$1-$2
lock_file: $WORK/lock-$1-$2
YAML
  echo "$WORK/cfg-$1-$2.yaml"
}

# hf NAME RUNS PREPARE COMMAND: hyperfine (no shell), results in $WORK/NAME.json. PREPARE may be
# "" (none). The command's output is discarded; a failing run fails the script.
hf() {
  local name=$1 runs=$2 prepare=$3 cmd=$4 args=(-N --style none --runs "$2" --export-json "$WORK/$1.json")
  [ -n "$prepare" ] && args+=(--prepare "$prepare")
  hyperfine "${args[@]}" -n "$name" "$cmd" >/dev/null 2>"$WORK/$name.err" || {
    echo "hyperfine $name failed:" >&2; cat "$WORK/$name.err" >&2; exit 1; }
}

# rss NAME PREPARE COMMAND: peak RSS in KiB (GNU time's %M) of one run after PREPARE.
rss() {
  [ -n "$2" ] && $2 >/dev/null
  /usr/bin/time -f %M -o "$WORK/$1.rss" $3 >/dev/null 2>&1 || {
    echo "rss $1: '$3' failed" >&2; exit 1; }
  tail -1 "$WORK/$1.rss" > "$WORK/$1.kib"
}

# The report: rows computed from the hyperfine JSON exports (medians), ratios with 2 decimals.
cat > "$WORK/report.py" <<'PY'
import json, statistics, sys
work = sys.argv[1]

def t(name):
    with open(f"{work}/{name}.json") as f:
        times = json.load(f)["results"][0]["times"]
    return statistics.median(times) * 1000, min(times) * 1000, max(times) * 1000, len(times)

def show(name):
    med, lo, hi, n = t(name)
    return f"{med:.1f} ms ({lo:.1f}–{hi:.1f}, n={n})" if med < 1000 else \
        f"{med / 1000:.2f} s ({lo / 1000:.2f}–{hi / 1000:.2f}, n={n})"

def mib(name):
    with open(f"{work}/{name}.kib") as f:
        return int(f.read().split()[0]) / 1024

def verdict(ok):
    return "met" if ok else "NOT met"

def row(case, ours, ref, target):
    med = t(ours)[0]
    if ref is None:
        limit = float(target)
        print(f"| {case} | {show(ours)} | — | — | <= {limit:g} ms | {verdict(med <= limit)} |")
        return
    r = med / t(ref)[0]
    if target is None:
        print(f"| {case} | {show(ours)} | {show(ref)} | {r:.2f}x | — | — |")
        return
    pct = target.endswith("%")
    limit = float(target.rstrip("%")) / 100 if pct else float(target)
    shown = f"{r * 100:.2f}%" if pct else f"{r:.2f}x"
    print(f"| {case} | {show(ours)} | {show(ref)} | {shown} | <= {target if pct else target + 'x'} "
          f"| {verdict(r <= limit)} |")

def rssrow(case, name, limit):
    m = mib(name)
    print(f"| {case} | {m:.1f} MiB | — | — | <= {limit} MiB | {verdict(m <= limit)} |")

cmd = sys.argv[2]
if cmd == "main":
    print("| case | ours (median, min–max) | reference (median, min–max) | ratio | target | verdict |")
    print("|---|---:|---:|---:|---|---|")
    row("Cloudflare list (22 ranges), nftables, no-op sync", "noop22", None, "20")
    row("same, first sync (after purge; ref: `nft -f` of the same table)", "first22", "ref22", "3")
    row("60,000 ranges (50k v4 /24 + 10k v6 /48), first sync (ref: `nft -f` of that table)",
        "first60k", "ref60k", "1.5")
    row("same, one range replaced (ref: `nft -f` of the whole table)", "change60k", "ref60kc", "0.5")
    row("same, no-op sync: one read of the set, the bound of a change, which reads twice "
        "(ref: `nft -f` of the whole table)", "noop60k", "ref60kc", None)
    rssrow("same (one range replaced), peak RSS, children included", "change60k", 30)
    rssrow("60,000 first sync, peak RSS, children included", "first60k", 30)
    row("20,000 ranges back to Cloudflare's 22, `sync --force` (ref: `nft -f` of the 20k table)",
        "back22", "ref20k", "1")
    row("ufw, 22 ranges, first sync on a clean active ufw (ref: one `ufw allow` per range)",
        "ufwfirst", "ufwnaive", "0.15")
    row("ufw, no-op sync (ref: the same script rerun)", "ufwnoop", "ufwrerun", "1%")
elif cmd == "scale":
    print("| ranges | first sync | peak RSS | one range replaced | peak RSS | first sync per 1,000 ranges |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in sys.argv[3:]:
        n = int(n)
        print(f"| {n:,} | {show(f'sfirst{n}')} | {mib(f'sfirst{n}'):.1f} MiB | {show(f'schange{n}')} "
              f"| {mib(f'schange{n}'):.1f} MiB | {t(f'sfirst{n}')[0] / (n / 1000):.2f} ms |")
PY

# ---- measurements --------------------------------------------------------------------------
NS=$PREFIX-n   # ours
NR=$PREFIX-r   # references
echo "# $(date -u +%FT%TZ) $BIN ($("$BIN" --version 2>/dev/null || echo '?'))"
echo "# $(uname -r) nft $(nft --version | cut -d' ' -f2) ufw $(ufw version | head -1 | cut -d' ' -f2)" \
  "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(hyperfine --version)$([ "$QUICK" = 1 ] && echo ', --quick')"
"$FRESH" "$NS"; "$FRESH" "$NR"
hf baseline 20 "" "ip netns exec $NS true"
base=$(python3 -c "import json,statistics;print(f'{statistics.median(json.load(open(\"$WORK/baseline.json\"))[\"results\"][0][\"times\"])*1000:.1f}')")
echo "baseline: \`ip netns exec NS true\` takes $base ms (included in every number below)"

run() { echo "ip netns exec $NS $BIN -q -c $1 sync ${2:-}"; }
C22=$(cfg 22 nftables)
echo "measuring: nftables, 22 ranges" >&2
hf first22 "$R_SLOW" "$FRESH $NS" "$(run "$C22")"
hf ref22 "$R_SLOW" "$FRESH $NR" "ip netns exec $NR nft -f $WORK/table-22.nft"
$(run "$C22") >/dev/null
hf noop22 "$R_FAST" "" "$(run "$C22")"

echo "measuring: nftables, 60,000 ranges" >&2
C60=$(cfg 60000 nftables)
C60c=$(cfg 60000-changed nftables)
hf first60k "$R_SLOW" "$FRESH $NS" "$(run "$C60")"
rss first60k "$FRESH $NS" "$(run "$C60")"
hf ref60k "$R_SLOW" "$FRESH $NR" "ip netns exec $NR nft -f $WORK/table-60000.nft"
# Each run starts from the 60,000 list synced by us, then one range is replaced. Preparing runs
# use --force: they jump between unrelated lists, which the removal guard would refuse.
hf change60k "$R_SLOW" "$(run "$C60" --force)" "$(run "$C60c")"
rss change60k "$(run "$C60" --force)" "$(run "$C60c")"
hf ref60kc "$R_SLOW" "$FRESH $NR" "ip netns exec $NR nft -f $WORK/table-60000-changed.nft"
# What bounds a change: a no-op is one read (the kernel's dump of the set); a change reads before
# and after (the verification).
$(run "$C60c") >/dev/null
hf noop60k "$R_FAST" "" "$(run "$C60c")"

echo "measuring: nftables, 20,000 back to 22" >&2
C20=$(cfg 20000 nftables)
# Every IPv4 and IPv6 range of the 20k list goes: above guards.max_removal, so --force.
hf back22 "$R_SLOW" "$(run "$C20" --force)" "$(run "$C22" --force)"
hf ref20k "$R_SLOW" "$FRESH $NR" "ip netns exec $NR nft -f $WORK/table-20000.nft"

echo "measuring: ufw, 22 ranges (each run on a fresh namespace with an active ufw)" >&2
NU=$PREFIX-u
CU=$(cfg 22 ufw)
# The reference: one `ufw allow` per range, the rule our backend makes for it.
{
  echo "#!/bin/sh"
  echo "set -e"
  while read -r net; do
    [ -n "$net" ] && echo "ufw allow proto tcp from $net to any port 80,443 comment cf-allowlist >/dev/null"
  done < "$WORK/list-22.txt"
} > "$WORK/naive.sh"
hf ufwfirst "$R_UFW" "$FRESH $NU ufw" "$INUFW $NU $BIN -q -c $CU sync"
# The synced ufw must hold our 22 rules (a sync that did nothing would time well).
got=$("$INUFW" "$NU" ufw status | grep -c cf-allowlist || true)
[ "$got" -eq 22 ] || { echo "ufw after our sync: $got rules tagged cf-allowlist, not 22" >&2; exit 1; }
hf ufwnoop "$R_SLOW" "" "$INUFW $NU $BIN -q -c $CU sync"
hf ufwnaive "$R_UFW" "$FRESH $NU ufw" "$INUFW $NU sh $WORK/naive.sh"
got=$("$INUFW" "$NU" ufw status | grep -c cf-allowlist || true)
[ "$got" -eq 22 ] || { echo "ufw after the script: $got rules tagged cf-allowlist, not 22" >&2; exit 1; }
hf ufwrerun "$R_UFW" "" "$INUFW $NU sh $WORK/naive.sh"

echo "measuring: nftables growth" >&2
SIZES=(1000 10000 100000)
for n in "${SIZES[@]}"; do
  c=$(cfg "$n" nftables)
  cc=$(cfg "$n-changed" nftables)
  hf "sfirst$n" 3 "$FRESH $NS" "$(run "$c")"
  rss "sfirst$n" "$FRESH $NS" "$(run "$c")"
  hf "schange$n" 3 "$(run "$c" --force)" "$(run "$cc")"
  rss "schange$n" "$(run "$c" --force)" "$(run "$cc")"
done

echo
echo "Every time includes process start, config, the \`file:\` source, read, plan, apply and read back."
echo "Peak RSS: GNU time's %M, the largest peak of the process and of each child it waited for"
echo "(nft, ufw): each process's own peak, not their sum."
echo
python3 "$WORK/report.py" "$WORK" main
echo
echo "nftables growth (first sync in a fresh namespace; one range replaced from the synced list; 3 runs):"
echo
python3 "$WORK/report.py" "$WORK" scale "${SIZES[@]}"
