# %preun: on erase ($1 = 0), disable and stop the units so that none is left behind; the
# firewall itself is never changed by removing the package.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now cf-allowlist.timer cf-allowlist.service cf-allowlist-boot.service >/dev/null 2>&1 || :
    fi
    cat >&2 <<'NOTE'
cf-allowlist: the firewall keeps the allowlist as the last run left it (removing the package
does not change the firewall). To remove the allowlist from the firewall too, run
    cf-allowlist purge
before removing the package.
NOTE
fi
