# -*- coding: utf-8 -*-
# Copyright (c) cf-allowlist contributors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Runs cf-allowlist with ``--output json`` and maps the one object it prints to Ansible results.

The modules decide nothing the binary decides (what to fetch, what to change, what is safe):
they build its command line, read its answer and translate it. Every translation is a pure
function here, so the unit tests exercise them without a binary.
"""

from __future__ import annotations

import json
import os

# The JSON schema this collection reads (`"schema": 1` in every object the binary prints).
SCHEMA = 1
BACKENDS = ['auto', 'nftables', 'iptables', 'ufw', 'csf', 'firewalld']
FAMILIES = ('ipv4', 'ipv6')
SEVERITIES = ('info', 'warning', 'critical')
# The `error_kind` of a run whose stdout was not one JSON object of this schema (a crash, another
# version of the binary): the binary's own kinds are `usage`, `config`, `source`, `guard`,
# `backend`, `verify`, `lock` and `state`.
OUTPUT_KIND = 'output'
# Which severities fail the audit module, per `fail_on`.
FAIL_ON = {
    'critical': ('critical',),
    'warning': ('warning', 'critical'),
    'none': (),
}


class Failure(Exception):
    """A run that did not succeed; ``result`` holds the keyword arguments for ``fail_json``."""

    def __init__(self, **result):
        super().__init__(result.get('msg'))
        self.result = result


def common_argument_spec():
    """The options every module of the collection shares (the CLI's global options)."""
    return dict(
        config=dict(type='path'),
        backend=dict(type='str', choices=BACKENDS),
        binary=dict(type='path'),
    )


def find_binary(module):
    """The binary to run: the ``binary`` option, else ``cf-allowlist`` on PATH.

    get_bin_path also searches /sbin, /usr/sbin and /usr/local/sbin after PATH, where the
    package and a hand install put the binary (a non-login PATH often lacks them).
    """
    binary = module.params.get('binary')
    if binary:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            module.fail_json(msg='binary %s: no executable file there (install cf-allowlist, or '
                                 'point the binary option at it)' % binary)
        return binary
    return module.get_bin_path('cf-allowlist', required=True)


def global_argv(binary, params):
    """The binary, ``--output json`` and the global options that were given."""
    argv = [binary, '--output', 'json']
    if params.get('config'):
        argv += ['--config', params['config']]
    if params.get('backend'):
        argv += ['--backend', params['backend']]
    return argv


def sync_conflicts(params):
    """Why these ``sync`` options cannot go together, or None."""
    if params['state'] == 'absent':
        given = [name for name in ('force', 'offline') if params.get(name)]
        if given:
            return ('%s: only with state=present (state=absent runs `purge`, which fetches no '
                    'list and has no shrink guard)' % ' and '.join(given))
    return None


def sync_argv(binary, params, check_mode):
    """The command line of the ``sync`` module: ``sync``, or ``purge`` for state=absent."""
    command = 'purge' if params['state'] == 'absent' else 'sync'
    argv = global_argv(binary, params) + [command]
    # Check mode is the binary's own dry run: the same fetch, validation, plan and guards,
    # no firewall change and no cache write.
    if check_mode:
        argv.append('--dry-run')
    if command == 'sync':
        if params.get('force'):
            argv.append('--force')
        if params.get('offline'):
            argv.append('--offline')
    return argv


def audit_argv(binary, params):
    """The command line of the ``audit`` module."""
    argv = global_argv(binary, params) + ['audit']
    if params.get('offline'):
        argv.append('--offline')
    return argv


def _last_line(text):
    lines = [line.strip() for line in (text or '').splitlines() if line.strip()]
    return lines[-1] if lines else ''


def interpret(rc, stdout, stderr, argv, command, ok_codes=(0,)):
    """The binary's JSON object for a successful run of ``command``; else raises Failure.

    A success is an exit code in ``ok_codes`` with one JSON object of schema 1 naming
    ``command`` and no ``error``. Anything else fails with the binary's error kind and message
    and its exit code (``rc`` is only ever returned on a failure).
    """
    failure = dict(rc=rc, cmd=argv, stderr=stderr)
    text = (stdout or '').strip()
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        detail = _last_line(stderr) or 'nothing on stderr'
        raise Failure(msg='%s exited %s without a JSON answer: %s' % (argv[0], rc, detail),
                      error_kind=OUTPUT_KIND, **failure)
    if data.get('schema') != SCHEMA:
        raise Failure(msg='%s answered in JSON schema %r; this collection reads schema %d (use '
                          'the collection release that matches the binary)'
                          % (argv[0], data.get('schema'), SCHEMA),
                      error_kind=OUTPUT_KIND, **failure)
    error = data.get('error')
    if error is not None:
        if not isinstance(error, dict):
            error = dict(kind=OUTPUT_KIND, message=str(error))
        kind = error.get('kind') or OUTPUT_KIND
        raise Failure(msg='cf-allowlist %s failed (exit %s, %s error): %s'
                          % (command, rc, kind, error.get('message', '')),
                      error_kind=kind, **failure)
    if rc not in ok_codes or data.get('command') != command:
        raise Failure(msg='%s exited %s with an answer for %r; expected %r with exit %s'
                          % (argv[0], rc, data.get('command'), command,
                             ' or '.join(str(code) for code in ok_codes)),
                      error_kind=OUTPUT_KIND, **failure)
    return data


def _lines(entries):
    return ''.join('%s\n' % entry for entry in entries)


def family_diffs(data):
    """Ansible diffs of the allowlist, one per family, one CIDR a line.

    Ansible shows the headers as ``--- before: HEADER`` and ``+++ after: HEADER``.
    """
    backend = data.get('backend') or 'firewall'
    before = data.get('before') or {}
    after = data.get('after') or {}
    return [
        dict(
            before_header='%s allowlist, %s' % (backend, family),
            after_header='%s allowlist, %s' % (backend, family),
            before=_lines(before.get(family) or []),
            after=_lines(after.get(family) or []),
        )
        for family in FAMILIES
    ]


# The keys of a sync or purge answer that the module returns as they are.
SYNC_KEYS = ('command', 'dry_run', 'backend', 'source', 'degraded', 'added', 'removed',
             'unchanged', 'before', 'after', 'rebuild')


def sync_result(data, diff_mode):
    """The ``exit_json`` keyword arguments and the warnings of a sync or purge answer."""
    result = dict(changed=bool(data.get('changed')))
    for key in SYNC_KEYS:
        result[key] = data.get(key)
    if diff_mode:
        result['diff'] = family_diffs(data)
    return result, [str(w) for w in data.get('warnings') or []]


def audit_result(data):
    """The ``exit_json`` keyword arguments of an audit answer (an audit never changes anything)."""
    findings = data.get('findings') or []
    counts = dict((severity, 0) for severity in SEVERITIES)
    worst = None
    for finding in findings:
        severity = finding.get('severity')
        counts[severity] = counts.get(severity, 0) + 1
        if severity in SEVERITIES and (
                worst is None or SEVERITIES.index(severity) > SEVERITIES.index(worst)):
            worst = severity
    return dict(
        changed=False,
        backend=data.get('backend'),
        source=data.get('source'),
        ranges=data.get('ranges'),
        findings=findings,
        counts=counts,
        worst=worst,
    )


def audit_verdict(result, fail_on):
    """The failure message when a finding reaches ``fail_on``, else None."""
    failing = [f for f in result['findings'] if f.get('severity') in FAIL_ON[fail_on]]
    if not failing:
        return None
    described = '; '.join('%s (%s): %s' % (f.get('kind'), f.get('severity'), f.get('message'))
                          for f in failing)
    return 'cf-allowlist audit: %d finding%s at or above %s: %s' % (
        len(failing), '' if len(failing) == 1 else 's', fail_on, described)


def run(module, argv, command, ok_codes=(0,)):
    """Runs ``argv`` (never through a shell) and returns its JSON object, or fails the module."""
    rc, stdout, stderr = module.run_command(argv)
    try:
        return interpret(rc, stdout, stderr, argv, command, ok_codes)
    except Failure as failure:
        module.fail_json(**failure.result)
