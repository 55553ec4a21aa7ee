#!/usr/bin/python3
"""Runs a command inside the sandbox that a systemd service unit's [Service] section describes,
for hosts where systemd is not PID 1 (CI sandboxes, containers), so that the hardening of
cf-allowlist.service is tested with the real firewall tools instead of guessed.

    unit-sandbox.py UNIT_FILE -- COMMAND [ARGS...]

Run as root, normally under `ip netns exec NS` (the firewall it changes is the namespace's).
It reads the settings from UNIT_FILE itself, so the test follows the unit, and emulates them as
systemd does (src/core/namespace.c, src/shared/seccomp-util.c):

- mounts, in a private mount namespace: ProtectSystem=strict (everything read-only but
  ReadWritePaths=, /dev, /proc, /sys), ReadWritePaths= ('-' = ignore a missing path),
  PrivateTmp=, ProtectHome=yes, ProtectKernelTunables=, ProtectControlGroups=,
  ProtectKernelModules=, PrivateDevices= (a /dev with null, zero, full, random, urandom, tty),
  ProtectProc= and ProcSubset= (a new procfs with hidepid= and subset=);
- PrivateIPC= and ProtectHostname= (new IPC and UTS namespaces);
- CapabilityBoundingSet= (the bounding set; root then gets exactly it at exec), NoNewPrivileges=,
  UMask=;
- seccomp: SystemCallFilter= (allow list, ~deny lists, @default always allowed as systemd does),
  SystemCallErrorNumber=, SystemCallArchitectures=native, RestrictAddressFamilies=,
  MemoryDenyWriteExecute=, RestrictNamespaces=yes.

Not emulated (printed on stderr): IPAddressDeny= (cgroup BPF), RestrictRealtime=,
RestrictSUIDSGID=, LockPersonality=, ProtectClock='s device rule, ProtectKernelLogs='s
/proc/kmsg, KeyringMode=, RemoveIPC=, StateDirectory= (the test's state_dir lives under /run,
which ReadWritePaths= opens). Nothing here changes the host: every mount is made in the new
mount namespace, on mount points that already exist.
"""

import ctypes
import ctypes.util
import errno
import os
import re
import shlex
import socket
import stat
import subprocess
import sys

import seccomp

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEW_ALL = (0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
                 | 0x40000000 | 0x02000000 | 0x00000080)  # NS UTS IPC USER PID NET CGROUP TIME
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
PROT_WRITE, PROT_EXEC = 2, 4

CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
        "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
        "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
        "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
        "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]

EMULATED = {
    "ProtectSystem", "ReadWritePaths", "PrivateTmp", "ProtectHome", "ProtectKernelTunables",
    "ProtectControlGroups", "ProtectKernelModules", "PrivateDevices", "ProtectProc",
    "ProcSubset", "PrivateIPC", "ProtectHostname", "CapabilityBoundingSet", "NoNewPrivileges",
    "UMask", "SystemCallFilter", "SystemCallErrorNumber", "SystemCallArchitectures",
    "RestrictAddressFamilies", "MemoryDenyWriteExecute", "RestrictNamespaces", "PrivateMounts",
    "DevicePolicy",
}
# What the service does rather than how it is confined: nothing to emulate.
NOT_SANDBOXING = {"Type", "ExecStart", "ExecStartPre", "TimeoutStartSec", "StateDirectoryMode"}

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def die(message):
    print(f"unit-sandbox: {message}", file=sys.stderr)
    sys.exit(125)


def check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        die(f"{what}: {os.strerror(e)}")


def parse_unit(path):
    """The [Service] settings as name -> list of values (an empty assignment resets the list)."""
    settings, section = {}, None
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        die(f"cannot read unit {path}: {e}")
    for line in lines:
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section != "[Service]" or "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        if value == "":
            settings[key] = []
        else:
            settings.setdefault(key, []).append(value)
    return settings


def yes(settings, key):
    values = settings.get(key, [])
    return bool(values) and values[-1].lower() in ("yes", "true", "on", "1")


def mount(source, target, fstype, flags, data=None):
    ret = libc.mount(source.encode() if source else None, target.encode(),
                     fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                     data.encode() if data else None)
    check(ret, f"mount {source or fstype} on {target} (flags {flags:#x}, {data})")


def mount_points():
    """Mount points, in mount order (/proc/self/mountinfo field 5, octal escapes decoded)."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            opts = fields[5].split(",")
            points.append((mp, opts))
    return points


def under(path, roots):
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def inaccessible(path):
    """An empty, mode-0000, read-only tmpfs over a directory (systemd's 'inaccessible')."""
    if os.path.isdir(path) and not os.path.islink(path):
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=000")
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def bind_ro(path):
    if os.path.exists(path):
        mount(path, path, None, MS_BIND | MS_REC)
        for mp, opts in mount_points():
            if under(mp, [path]):
                remount_ro(mp, opts)


def remount_ro(mp, opts):
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for name, bit in (("nosuid", MS_NOSUID), ("nodev", MS_NODEV), ("noexec", MS_NOEXEC)):
        if name in opts:
            flags |= bit
    ret = libc.mount(None, mp.encode(), None, ctypes.c_ulong(flags), None)
    if ret != 0 and ctypes.get_errno() not in (errno.EACCES, errno.ENOENT, errno.EINVAL):
        check(ret, f"remount {mp} read-only")


def private_devices():
    """A fresh /dev with the devices systemd keeps for PrivateDevices=yes, made on /mnt (an
    existing directory, in this namespace only) and moved over /dev."""
    stage = "/mnt"
    mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755")
    for dev in ("null", "zero", "full", "random", "urandom", "tty"):
        target = os.path.join(stage, dev)
        open(target, "w").close()
        mount(f"/dev/{dev}", target, None, MS_BIND)
    for sub in ("shm", "pts", "mqueue"):
        os.mkdir(os.path.join(stage, sub))
    mount("tmpfs", os.path.join(stage, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in (("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("fd", "/proc/self/fd")):
        os.symlink(target, os.path.join(stage, name))
    mount(stage, "/dev", None, MS_MOVE)


def syscall_groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         check=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names, groups, seen=None):
    seen = set() if seen is None else seen
    result = set()
    for name in names:
        if name.startswith("@"):
            if name in seen:
                continue
            seen.add(name)
            if name not in groups:
                die(f"unknown system call group {name}")
            result |= expand(groups[name], groups, seen)
        else:
            result.add(name)
    return result


def build_seccomp(settings):
    groups = syscall_groups()
    allow, has_allow_list = set(), False
    for value in settings.get("SystemCallFilter", []):
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        if deny:
            allow -= expand(names, groups) if has_allow_list else set()
            if not has_allow_list:
                die("a deny-only SystemCallFilter= is not emulated")
        else:
            if not has_allow_list:
                has_allow_list = True
                allow |= expand(["@default"], groups)
            allow |= expand(names, groups)
    err = settings.get("SystemCallErrorNumber", [])
    default = seccomp.ERRNO(getattr(errno, err[-1])) if err else seccomp.KILL_PROCESS
    if not has_allow_list:
        default = seccomp.ALLOW
    f = seccomp.SyscallFilter(defaction=default)

    # Calls allowed only with some arguments (everything else gets the default action), or
    # answered with another error: call -> [(action, [conditions])].
    special = {}
    families = settings.get("RestrictAddressFamilies", [])
    if families:
        names = " ".join(families).split()
        if names[0].startswith("~"):
            die("a deny-list RestrictAddressFamilies= is not emulated")
        # Other families get the default error (systemd answers EAFNOSUPPORT: either way the
        # socket is refused).
        special["socket"] = [
            (seccomp.ALLOW, [seccomp.Arg(0, seccomp.EQ, getattr(socket, n))]) for n in names]
    if yes(settings, "MemoryDenyWriteExecute"):
        wx = PROT_WRITE | PROT_EXEC
        for call in ("mmap", "mprotect", "pkey_mprotect"):
            special[call] = [(seccomp.ALLOW, [seccomp.Arg(2, seccomp.MASKED_EQ, wx, v)])
                             for v in (0, PROT_WRITE, PROT_EXEC)]
    if yes(settings, "RestrictNamespaces"):
        special["clone"] = [(seccomp.ALLOW, [seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEW_ALL, 0)])]
        # clone3's flags are in memory seccomp cannot read: systemd answers ENOSYS, and glibc
        # falls back to clone.
        special["clone3"] = [(seccomp.ERRNO(errno.ENOSYS), [])]
        special["unshare"] = [(seccomp.ERRNO(errno.EPERM), [])]
        special["setns"] = [(seccomp.ERRNO(errno.EPERM), [])]

    for call in sorted(allow - set(special)):
        try:
            f.add_rule(seccomp.ALLOW, call)
        except (RuntimeError, ValueError, OSError):
            pass  # not a system call of this architecture
    for call, rules in special.items():
        permitted = call in allow or not has_allow_list
        for action, args in rules:
            if action == seccomp.ALLOW and not permitted:
                continue
            try:
                f.add_rule(action, call, *args)
            except (RuntimeError, ValueError, OSError):
                pass  # not a call of this architecture, or the action is the default one
    return f


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        die("usage: unit-sandbox.py UNIT_FILE -- COMMAND [ARGS...]")
    unit, command = sys.argv[1], sys.argv[3:]
    if os.geteuid() != 0:
        die("needs root (mount namespace, capability bounding set)")
    s = parse_unit(unit)
    unknown = sorted(k for k in s if k not in EMULATED and k not in NOT_SANDBOXING)

    flags = CLONE_NEWNS
    if yes(s, "PrivateIPC"):
        flags |= CLONE_NEWIPC
    if yes(s, "ProtectHostname"):
        flags |= CLONE_NEWUTS
    check(libc.unshare(flags), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)

    proc_opts = []
    if s.get("ProtectProc"):
        proc_opts.append(f"hidepid={s['ProtectProc'][-1]}")
    if s.get("ProcSubset"):
        proc_opts.append(f"subset={s['ProcSubset'][-1]}")
    if proc_opts:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ",".join(proc_opts))
    if yes(s, "PrivateDevices"):
        private_devices()
    if yes(s, "ProtectKernelTunables"):
        for p in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs",
                  "/proc/acpi", "/proc/latency_stats", "/proc/timer_list", "/sys"):
            bind_ro(p)
    if yes(s, "ProtectControlGroups"):
        bind_ro("/sys/fs/cgroup")
    if yes(s, "ProtectKernelModules"):
        for p in ("/lib/modules", "/usr/lib/modules"):
            if os.path.isdir(p) and not os.path.islink(p):
                inaccessible(p)
    home = s.get("ProtectHome", ["no"])[-1]
    if home == "yes":
        for p in ("/home", "/root", "/run/user"):
            inaccessible(p)
    elif home not in ("no", "false"):
        die(f"ProtectHome={home} is not emulated")
    if yes(s, "PrivateTmp"):
        for p in ("/tmp", "/var/tmp"):
            mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")

    rw = []
    for value in s.get("ReadWritePaths", []):
        for p in value.split():
            optional = p.startswith("-")
            p = p.lstrip("-")
            if not os.path.exists(p):
                if optional:
                    continue
                die(f"ReadWritePaths={p} does not exist (systemd would fail the unit)")
            rw.append(p)
    for p in rw:
        mount(p, p, None, MS_BIND | MS_REC)
    system = s.get("ProtectSystem", ["no"])[-1]
    if system == "strict":
        keep = ["/proc", "/sys", "/dev", "/tmp", "/var/tmp"] + rw
        for mp, opts in mount_points():
            if not under(mp, keep):
                remount_ro(mp, opts)
    elif system not in ("no", "false"):
        die(f"ProtectSystem={system} is not emulated")

    if s.get("UMask"):
        os.umask(int(s["UMask"][-1], 8))
    bounding = " ".join(s.get("CapabilityBoundingSet", [])).split()
    if bounding:
        if bounding[0].startswith("~"):
            die("a deny-list CapabilityBoundingSet= is not emulated")
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
        for cap in range(last + 1):
            name = CAPS[cap] if cap < len(CAPS) else f"cap_{cap}"
            if name not in bounding:
                check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop {name}")
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if yes(s, "NoNewPrivileges") or s.get("SystemCallFilter"):
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")

    not_emulated = ", ".join(unknown) or "nothing"
    print(f"unit-sandbox: {os.path.basename(unit)}: not emulated: {not_emulated}",
          file=sys.stderr)
    sys.stderr.flush()
    filt = build_seccomp(s)
    filt.load()
    try:
        os.execvp(command[0], command)
    except OSError as e:
        print(f"unit-sandbox: cannot run {shlex.join(command)}: {e}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main()
