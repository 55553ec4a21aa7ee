# cf-allowlist's ufw driver: runs a list of ufw command lines in ONE Python process, each exactly
# as `/usr/sbin/ufw ARGS...` runs it (the body of that script's `__main__`, ufw 0.36), so that a
# plan of 22 rules costs one interpreter start instead of 22.
#
# Input (stdin, JSON): {"ufw": "/usr/sbin/ufw", "commands": [{"args": [...], "expect": [...]}],
# "script": this file}; the `python3 -c` bootstrap (driver.rs: BOOTSTRAP) reads it and runs this
# file with the request as REQUEST.
# Output (stdout, one JSON object per line):
#   {"start_error": "..."}        ufw's modules could not be loaded; no command ran (exit 3)
#   {"code": N, "stdout": "...", "stderr": "..."}   one per command, in order: ufw's exit code
#                                 and what it printed. The driver stops after the first command
#                                 that exits non-zero or whose output has none of `expect`.
#
# What differs from one `ufw` process per command, on purpose:
# - ufw's lock (/run/ufw.lock) is taken once around the whole batch, not per command: no other
#   ufw command interleaves with ours.
# - What describes things our commands never change is read once per batch, not once per
#   command: the netfilter capability probe (`initcaps`: a test chain created and deleted, ~10
#   iptables calls), `iptables -V`, and the application profiles in applications.d (~100 files
#   parsed; the warnings that parsing printed are printed again for every command, as each CLI
#   run would).
# - ufw's check that its user chains are loaded (`_need_reload`: one `iptables -L CHAIN` per
#   chain, 5 per family) is answered from one `iptables -S` listing per command instead: the same
#   question, the same answer, 1 process instead of 5. Only when ufw's own `_need_reload` is the
#   code this was written against (its source's SHA-256 below); any other ufw keeps its own.
# Everything else is fresh per command: a new UFWFrontend reads ufw.conf, the defaults and the
# rules files again, so each command sees what the previous one wrote.
import sys

# `python3 -c` puts the working directory first on sys.path; the ufw script never has it there.
sys.path[:] = [p for p in sys.path if p not in ("", ".")]

import copy  # noqa: E402
import hashlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

# The SHA-256 of `inspect.getsource(UFWBackendIptables._need_reload)` in ufw 0.36.
NEED_RELOAD_SHA256 = "b558602dcc504c810d9d5cf8f66b5226581875e7bf4800822b020931670b38e4"
USER_CHAINS = ("input", "output", "forward", "limit", "limit-accept")


def emit(out, obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()


def expected(stdout, expect):
    """Whether ufw's answer is one of `expect` (an IPv6 twin answers with ` (v6)`)."""
    if not expect:
        return True
    for line in stdout.splitlines():
        line = line.strip()
        if line.endswith(" (v6)"):
            line = line[: -len(" (v6)")]
        if line in expect:
            return True
    return False


def main():
    request = globals().get("REQUEST")
    if request is None:
        request = json.load(sys.stdin)
    ufw_path = request["ufw"]
    commands = request["commands"]
    # Our results go to a private copy of stdout: fds 1 and 2 are pointed at capture files while
    # a command runs, so whatever ufw (or a tool it runs) prints is that command's output.
    results = os.fdopen(os.dup(1), "w")
    try:
        import gettext
        import ufw.applications
        import ufw.backend_iptables
        import ufw.common
        import ufw.frontend
        import ufw.util
        from ufw.common import UFWError

        for name in ("parse_command", "UFWFrontend", "get_command_help"):
            getattr(ufw.frontend, name)
        for name in ("create_lock", "release_lock", "_findpath", "error", "warn", "msg",
                     "get_iptables_version", "cmd", "debug"):
            getattr(ufw.util, name)
        ufw.applications.get_profiles
        ufw.backend_iptables.UFWBackendIptables._need_reload
        ufw.common.programName
        ufw.common.state_dir
        ufw.common.trans_dir
    except Exception as e:  # noqa: BLE001 - any failure here means: use the CLI
        emit(results, {"start_error": "%s: %s" % (type(e).__name__, e)})
        return 3

    # As the ufw script sets up translations (`_` is a builtin for ufw's modules).
    gettext.install(ufw.common.programName)
    gettext.bindtextdomain(
        ufw.common.programName,
        os.path.join(ufw.util._findpath(ufw.common.trans_dir, None), "messages"),
    )
    gettext.textdomain(ufw.common.programName)

    def clean_warning(message, category, filename, lineno, file=None, line=""):
        ufw.util.warn(message)

    # `iptables -V` once per batch (every UFWFrontend runs it).
    versions = {}
    get_version = ufw.util.get_iptables_version

    def cached_version(exe=None):
        if exe not in versions:
            versions[exe] = get_version(exe)
        return versions[exe]

    ufw.util.get_iptables_version = cached_version

    # The application profiles once per batch, with what reading them printed on stderr.
    profiles = {}
    read_profiles = ufw.applications.get_profiles

    def cached_profiles(profiles_dir):
        if profiles_dir not in profiles:
            sys.stderr.flush()
            start = os.lseek(2, 0, os.SEEK_CUR)
            found = read_profiles(profiles_dir)
            sys.stderr.flush()
            end = os.lseek(2, 0, os.SEEK_CUR)
            profiles[profiles_dir] = (found, os.pread(2, end - start, start))
        else:
            found, printed = profiles[profiles_dir]
            if printed:
                os.write(2, printed)
        return copy.deepcopy(profiles[profiles_dir][0])

    ufw.applications.get_profiles = cached_profiles

    # ufw's `_need_reload` with one listing instead of one `iptables -L` per chain.
    backend_class = ufw.backend_iptables.UFWBackendIptables
    try:
        source = inspect.getsource(backend_class._need_reload)
        known = hashlib.sha256(source.encode()).hexdigest() == NEED_RELOAD_SHA256
    except Exception:  # noqa: BLE001 - no source to compare: keep ufw's own
        known = False

    def need_reload(self, v6):
        """Whether any of ufw's user chains is missing (then ufw reloads its rules)."""
        if self.dryrun:
            return False
        self.initcaps()
        prefix, exe, caps = "ufw", self.iptables, self.caps["limit"]["4"]
        if v6:
            prefix, exe, caps = "ufw6", self.ip6tables, self.caps["limit"]["6"]
        wanted = [prefix + "-user-" + c for c in USER_CHAINS
                  if caps or not c.startswith("limit")]
        (rc, out) = ufw.util.cmd([exe, "-S"])
        if rc != 0:
            ufw.util.debug("_need_reload: forcing reload")
            return True
        present = set()
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "-N":
                present.add(words[1])
        if any(chain not in present for chain in wanted):
            ufw.util.debug("_need_reload: forcing reload")
            return True
        return False

    if known:
        backend_class._need_reload = need_reload
    caps = [None]

    def run_one(args):
        argv = [ufw_path] + list(args)
        # ufw's _do_checks checks the ownership of sys.argv[0], the script being run.
        sys.argv = list(argv)
        idx = 1
        if len(argv) > 1 and argv[1].lower() == "--dry-run":
            idx += 1
        app_action = len(argv) > idx and argv[idx].lower() == "app"
        try:
            pr = ufw.frontend.parse_command(argv)
        except ValueError:
            ufw.util.msg(ufw.frontend.get_command_help())
            return 1
        except UFWError as e:
            ufw.util.error(e.value)
        if pr.action in ("help", "--help", "-h"):
            ufw.util.msg(ufw.frontend.get_command_help())
            return 0
        if pr.action in ("version", "--version"):
            ufw.util.error("the cf-allowlist ufw driver does not answer `version`; run ufw")
        try:
            ui = ufw.frontend.UFWFrontend(pr.dryrun)
        except UFWError as e:
            ufw.util.error(e.value)
        if caps[0] is not None:
            ui.backend.caps = caps[0]
        res = ""
        try:
            if app_action and "type" in pr.data and pr.data["type"] == "app":
                res = ui.do_application_action(pr.action, pr.data["name"])
            else:
                bailout = False
                if pr.action == "enable" and not pr.force and not ui.continue_under_ssh():
                    res = _("Aborted")  # noqa: F821 - installed by gettext.install
                    bailout = True
                if not bailout:
                    if "rule" in pr.data:
                        res = ui.do_action(pr.action, pr.data["rule"], pr.data["iptype"],
                                           pr.force)
                    else:
                        res = ui.do_action(pr.action, "", "", pr.force)
            if res != "":
                ufw.util.msg(res)
        except UFWError as e:
            ufw.util.error(e.value)
        finally:
            if ui.backend.caps is not None:
                caps[0] = ui.backend.caps
        return 0

    out_cap = tempfile.TemporaryFile()
    err_cap = tempfile.TemporaryFile()
    saved = (os.dup(1), os.dup(2))

    def capture(f, fd):
        f.seek(0)
        f.truncate()
        os.dup2(f.fileno(), fd)

    def collect(f):
        f.seek(0)
        return f.read().decode("utf-8", "replace")

    # The lock the ufw script takes, where it takes it (datadir unset).
    lockfile = "/run/ufw.lock"
    if os.getuid() != 0 or "TESTSTATE" in os.environ:
        lockfile = os.path.join(ufw.common.state_dir, "ufw.lock")
    status = 0
    lock = ufw.util.create_lock(lockfile=lockfile, dryrun=False)
    try:
        for command in commands:
            capture(out_cap, 1)
            capture(err_cap, 2)
            try:
                with warnings.catch_warnings():
                    # A fresh warnings state, as in a new process (ufw warns once per place).
                    warnings.showwarning = clean_warning
                    code = run_one(command["args"])
            except SystemExit as e:
                if e.code is None:
                    code = 0
                elif isinstance(e.code, int):
                    code = e.code
                else:
                    sys.stderr.write("%s\n" % (e.code,))
                    code = 1
            except Exception:  # noqa: BLE001 - what Python does with an uncaught exception
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            stdout = collect(out_cap)
            stderr = collect(err_cap)
            emit(results, {"code": code, "stdout": stdout, "stderr": stderr})
            if code != 0 or not expected(stdout, command.get("expect") or []):
                status = 1
                break
    finally:
        ufw.util.release_lock(lock)
    return status


if __name__ == "__main__":
    sys.exit(main())
