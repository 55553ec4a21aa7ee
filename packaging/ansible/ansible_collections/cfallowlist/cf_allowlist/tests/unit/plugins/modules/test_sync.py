# -*- coding: utf-8 -*-
# Copyright (c) cf-allowlist contributors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The sync module end to end in the test process: its arguments, the command line it runs and
the result it returns for what the binary prints."""

from __future__ import annotations

import os
import stat

from ansible_collections.cfallowlist.cf_allowlist.plugins.modules import sync

V4 = ['103.21.244.0/22', '173.245.48.0/20']
V6 = ['2400:cb00::/32']


def change(**given):
    """A sync answer, as `cf-allowlist --output json sync` prints it (a first run by default)."""
    data = dict(
        schema=1, command='sync', changed=True, dry_run=False, backend='nftables',
        source=[dict(id='cloudflare', **{'from': 'network'}, url='https://api.cloudflare.com/client/v4/ips', entries=3)],
        degraded=False, added=dict(ipv4=V4, ipv6=V6), removed=dict(ipv4=[], ipv6=[]), unchanged=0,
        before=dict(ipv4=[], ipv6=[]), after=dict(ipv4=V4, ipv6=V6),
        rebuild='the allowlist objects do not exist yet', warnings=[],
    )
    data.update(given)
    return data


def test_a_first_sync_reports_changed_and_no_rc(harness):
    harness.answer(0, change())
    done = harness.run(sync.main)
    assert not done.failed
    assert harness.calls == [[harness.binary, '--output', 'json', 'sync']]
    assert done.result['changed'] is True
    assert done.result['added'] == dict(ipv4=V4, ipv6=V6)
    assert done.result['backend'] == 'nftables'
    assert 'rc' not in done.result
    assert 'diff' not in done.result


def test_a_converged_host_reports_unchanged(harness):
    harness.answer(0, change(changed=False, added=dict(ipv4=[], ipv6=[]), unchanged=3,
                             before=dict(ipv4=V4, ipv6=V6), rebuild=None))
    done = harness.run(sync.main)
    assert done.result['changed'] is False
    assert done.result['unchanged'] == 3


def test_check_mode_runs_the_dry_run_and_diff_mode_returns_the_lists(harness):
    harness.answer(0, change(dry_run=True))
    done = harness.run(sync.main, _ansible_check_mode=True, _ansible_diff=True,
                       config='/srv/cfa.yaml', backend='nftables')
    assert harness.calls == [[harness.binary, '--output', 'json', '--config', '/srv/cfa.yaml',
                              '--backend', 'nftables', 'sync', '--dry-run']]
    assert done.result['changed'] is True
    assert done.result['dry_run'] is True
    assert [d['after'] for d in done.result['diff']] == [
        '103.21.244.0/22\n173.245.48.0/20\n', '2400:cb00::/32\n']
    assert [d['before'] for d in done.result['diff']] == ['', '']


def test_the_binarys_warnings_become_ansible_warnings(harness):
    harness.answer(0, change(degraded=True, warnings=['source cloudflare unreachable: serving '
                                                      'the cached list, add-only']))
    done = harness.run(sync.main)
    assert not done.failed
    assert harness.warnings == ['source cloudflare unreachable: serving the cached list, add-only']


def test_force_and_offline_are_passed(harness):
    harness.answer(0, change())
    harness.run(sync.main, force=True, offline=True)
    assert harness.calls[0][-3:] == ['sync', '--force', '--offline']


def test_absent_runs_purge(harness):
    harness.answer(0, change(command='purge', source=[], added=dict(ipv4=[], ipv6=[]),
                             removed=dict(ipv4=V4, ipv6=V6), before=dict(ipv4=V4, ipv6=V6),
                             after=dict(ipv4=[], ipv6=[]), rebuild=None))
    done = harness.run(sync.main, state='absent', _ansible_check_mode=True)
    assert harness.calls[0][-2:] == ['purge', '--dry-run']
    assert done.result['changed'] is True
    assert done.result['command'] == 'purge'


def test_absent_with_force_fails_before_running_anything(harness):
    done = harness.run(sync.main, state='absent', force=True)
    assert done.failed
    assert done.result['msg'].startswith('force: only with state=present')
    assert harness.calls == []


def test_an_error_fails_with_the_kind_message_and_exit_code(harness):
    message = 'the plan removes 14 of 15 ipv4 entries (more than guards.max_removal 0.5); use --force'
    harness.answer(1, dict(schema=1, error=dict(kind='guard', message=message)),
                   'ERROR the plan removes 14 of 15 ipv4 entries\n')
    done = harness.run(sync.main)
    assert done.failed
    assert done.result['error_kind'] == 'guard'
    assert done.result['rc'] == 1
    assert done.result['msg'].startswith('cf-allowlist sync failed (exit 1, guard error): the plan '
                                         'removes 14 of 15')
    assert done.result['stderr'] == 'ERROR the plan removes 14 of 15 ipv4 entries\n'


def test_a_config_error_keeps_exit_78(harness):
    harness.answer(78, dict(schema=1, error=dict(kind='config', message='config.yaml line 3: '
                                                                        'unknown key `portz`')))
    done = harness.run(sync.main, config='/etc/cf-allowlist/config.yaml')
    assert (done.failed, done.result['rc'], done.result['error_kind']) == (True, 78, 'config')


def test_output_that_is_not_json_fails(harness):
    harness.answer(1, 'nftables: up to date (22 entries)\n', 'error: something\n')
    done = harness.run(sync.main)
    assert done.failed
    assert done.result['error_kind'] == 'output'
    assert done.result['rc'] == 1


def test_an_unknown_option_is_refused(harness):
    done = harness.run(sync.main, prune=True)
    assert done.failed
    assert 'prune' in done.result['msg']
    assert harness.calls == []


def test_an_unknown_backend_is_refused(harness):
    done = harness.run(sync.main, backend='pf')
    assert done.failed
    assert 'backend' in done.result['msg']
    assert harness.calls == []


def test_a_binary_that_does_not_exist_fails_naming_it(harness, tmp_path):
    missing = str(tmp_path / 'nowhere' / 'cf-allowlist')
    done = harness.run(sync.main, binary=missing)
    assert done.failed
    assert done.result['msg'].startswith('binary %s: no executable file there' % missing)
    assert harness.calls == []


def test_a_binary_that_is_not_executable_fails(harness, tmp_path):
    plain = tmp_path / 'plain'
    plain.write_text('not a program')
    plain.chmod(0o644)
    done = harness.run(sync.main, binary=str(plain))
    assert done.failed
    assert 'no executable file there' in done.result['msg']


def test_without_binary_the_module_looks_on_path(harness, tmp_path, monkeypatch):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    found = bindir / 'cf-allowlist'
    found.write_text('#!/bin/sh\n')
    found.chmod(found.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv('PATH', str(bindir) + os.pathsep + os.defpath)
    harness.answer(0, change())
    harness.run(sync.main, binary=None)
    assert harness.calls[0][0] == str(found)
