# %postun: make systemd forget the removed units. On erase ($1 = 0), remove the directories the
# files lived in when empty (cargo-generate-rpm cannot list a directory as owned). The cache in
# /var/lib/cf-allowlist is kept, as RPM packages keep their state (remove it by hand if wanted).
if [ "$1" -eq 0 ]; then
    rmdir /etc/cf-allowlist /usr/share/doc/cf-allowlist 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
