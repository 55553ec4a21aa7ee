#!/usr/bin/env bash
# Builds cf-allowlist's Debian package and RPM.
#
#   packaging/build.sh [OUT_DIR]      (default: <cargo target dir>/packages)
#
# 1. cargo build --release of the binary and of the generator (packaging/gen);
# 2. the generator writes the man pages and the bash/zsh/fish completions from the clap
#    definition into packaging/out/ (never hand-written), plus the stripped binary for the RPM;
# 3. cargo deb --no-build and cargo generate-rpm package what step 1 built.
# Needs cargo-deb and cargo-generate-rpm (`cargo install --locked cargo-deb cargo-generate-rpm`)
# and dpkg-dev (dpkg-shlibdeps, for the .deb's libc dependency). Prints the two package paths.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo-deb cargo-generate-rpm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "packaging/build.sh: $tool is not installed: cargo install --locked cargo-deb cargo-generate-rpm" >&2
        exit 1
    fi
done

target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
if [ -z "$target_dir" ]; then
    echo "packaging/build.sh: cargo metadata did not name the target directory" >&2
    exit 1
fi
out_dir=${1:-$target_dir/packages}

# One build for both packages, so that the .deb and the .rpm hold the same binary. cargo-deb and
# cargo-generate-rpm then only package (--no-build; the RPM takes the stripped copy below).
cargo build --release --locked -p cf-allowlist -p cfa-gen

gen=packaging/out
rm -rf "$gen"
"$target_dir/release/cfa-gen" "$gen" >/dev/null
mkdir -p "$gen/rpm/man8"
for page in "$gen"/man/*.8; do
    gzip -9n -c "$page" >"$gen/rpm/man8/$(basename "$page").gz"
done
strip --strip-unneeded -o "$gen/cf-allowlist" "$target_dir/release/cf-allowlist"

mkdir -p "$out_dir"
version=$(cargo metadata --format-version 1 --no-deps --locked |
    grep -o '"name":"cf-allowlist","version":"[^"]*"' | cut -d'"' -f8)
rm -f "$out_dir"/cf-allowlist_*.deb "$out_dir"/cf-allowlist-*.rpm
cargo deb --no-build --locked -p cf-allowlist -o "$out_dir" >/dev/null
cargo generate-rpm -p . --target-dir "$target_dir" -o "$out_dir" >/dev/null
deb=$(ls "$out_dir"/cf-allowlist_"$version"-*.deb)
rpm=$(ls "$out_dir"/cf-allowlist-"$version"-*.rpm)
echo "$deb"
echo "$rpm"
