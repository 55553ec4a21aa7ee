#!/usr/bin/env bash
# Times the release binary end to end (process start, config, sources, read, plan, apply, read
# back) inside a throwaway network namespace: first sync (after a purge) and no-op sync, for
# Cloudflare's 22 ranges and for 10,000 ranges, per backend. Prints hyperfine tables and peak RSS.
# Root only; never touches the host's ruleset. Usage: scripts/bench.sh [backend ...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench.sh needs root (network namespaces)" >&2; exit 1; }
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
export PATH="$PATH:/usr/sbin:/sbin"
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(nftables iptables)

cargo build --release --locked -q
BIN=$PWD/target/release/cf-allowlist
NS=cfa-bench-$$
WORK=$(mktemp -d)
cleanup() { ip netns delete "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up

cat tests/fixtures/cloudflare/ips-v4 <(echo) tests/fixtures/cloudflare/ips-v6 > "$WORK/list-22.txt"
# 10,000 IPv4 /24s that do not aggregate: every other /24 from 11.0.0.0.
python3 -c '
for i in range(10000):
    n = 11 * 2**24 + i * 2 * 256
    print(f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.0/24")' > "$WORK/list-10000.txt"

echo "# $(date -u +%FT%TZ) $(uname -r) nft $(nft --version | cut -d' ' -f2) $(nproc) cores"
echo "baseline (ip netns exec NS true):"
hyperfine -N --warmup 3 --runs 50 --style basic "ip netns exec $NS true" 2>/dev/null | grep -E "Time|Range"

for backend in "${backends[@]}"; do
  for size in 22 10000; do
    cfg="$WORK/$backend-$size.yaml"
    cat > "$cfg" <<YAML
backend: $backend
sources: [ { file: "$WORK/list-$size.txt" } ]
state_dir: $WORK/state
lock_file: $WORK/lock
YAML
    run="ip netns exec $NS $BIN -c $cfg -q"
    echo
    echo "== $backend, $size ranges"
    $run purge
    hyperfine -N --warmup 1 --runs 15 --style basic --prepare "$run purge" -n "first sync" "$run sync" 2>/dev/null | grep -E "first sync|Time|Range"
    $run sync
    hyperfine -N --warmup 2 --runs 30 --style basic -n "no-op sync" "$run sync" 2>/dev/null | grep -E "no-op sync|Time|Range"
    rss_first=$($run purge; /usr/bin/time -f %M $run sync 2>&1 >/dev/null | tail -1)
    rss_noop=$(/usr/bin/time -f %M $run sync 2>&1 >/dev/null | tail -1)
    echo "  peak RSS: first sync ${rss_first} KiB, no-op ${rss_noop} KiB"
    $run purge
  done
done
