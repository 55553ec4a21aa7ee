# -*- coding: utf-8 -*-
# Copyright (c) cf-allowlist contributors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The pure translations: options to command lines, the binary's JSON to Ansible results."""

from __future__ import annotations

import json

import pytest

from ansible_collections.cfallowlist.cf_allowlist.plugins.module_utils import cf_allowlist as cfa

BIN = '/usr/sbin/cf-allowlist'


def sync_params(**given):
    params = dict(state='present', config=None, backend=None, force=False, offline=False,
                  binary=None)
    params.update(given)
    return params


class TestSyncArgv:
    def test_defaults_run_sync_with_json_output(self):
        assert cfa.sync_argv(BIN, sync_params(), False) == [BIN, '--output', 'json', 'sync']

    def test_global_options_come_before_the_command(self):
        argv = cfa.sync_argv(BIN, sync_params(config='/etc/cfa.yaml', backend='ufw'), False)
        assert argv == [BIN, '--output', 'json', '--config', '/etc/cfa.yaml', '--backend', 'ufw',
                        'sync']

    def test_check_mode_is_the_dry_run(self):
        assert cfa.sync_argv(BIN, sync_params(), True)[-1] == '--dry-run'

    def test_force_and_offline(self):
        argv = cfa.sync_argv(BIN, sync_params(force=True, offline=True), True)
        assert argv[3:] == ['sync', '--dry-run', '--force', '--offline']

    def test_absent_is_purge(self):
        assert cfa.sync_argv(BIN, sync_params(state='absent'), False)[3:] == ['purge']
        assert cfa.sync_argv(BIN, sync_params(state='absent'), True)[3:] == ['purge', '--dry-run']

    @pytest.mark.parametrize('option', ['force', 'offline'])
    def test_absent_refuses_the_sync_only_options(self, option):
        why = cfa.sync_conflicts(sync_params(state='absent', **{option: True}))
        assert why.startswith('%s: only with state=present' % option)

    def test_absent_refuses_both_by_name(self):
        why = cfa.sync_conflicts(sync_params(state='absent', force=True, offline=True))
        assert why.startswith('force and offline:')

    def test_present_takes_every_option(self):
        assert cfa.sync_conflicts(sync_params(force=True, offline=True)) is None


class TestAuditArgv:
    def test_defaults(self):
        assert cfa.audit_argv(BIN, dict(config=None, backend=None, offline=False)) == [
            BIN, '--output', 'json', 'audit']

    def test_offline_and_config(self):
        argv = cfa.audit_argv(BIN, dict(config='/c.yaml', backend=None, offline=True))
        assert argv == [BIN, '--output', 'json', '--config', '/c.yaml', 'audit', '--offline']


def answer(**data):
    data.setdefault('schema', 1)
    return json.dumps(data) + '\n'


class TestInterpret:
    argv = [BIN, '--output', 'json', 'sync']

    def test_success_returns_the_object(self):
        data = cfa.interpret(0, answer(command='sync', changed=False), '', self.argv, 'sync')
        assert data == dict(schema=1, command='sync', changed=False)

    def test_error_object_fails_with_kind_message_and_exit_code(self):
        stdout = answer(error=dict(kind='source', message='source cloudflare: answered with an '
                                                          'HTML page, not a list'))
        with pytest.raises(cfa.Failure) as caught:
            cfa.interpret(1, stdout, 'ERROR source cloudflare: ...\n', self.argv, 'sync')
        result = caught.value.result
        assert result['error_kind'] == 'source'
        assert result['rc'] == 1
        assert result['msg'] == ('cf-allowlist sync failed (exit 1, source error): source '
                                 'cloudflare: answered with an HTML page, not a list')
        assert result['cmd'] == self.argv
        assert result['stderr'] == 'ERROR source cloudflare: ...\n'

    @pytest.mark.parametrize('rc,kind', [(64, 'usage'), (78, 'config'), (1, 'lock')])
    def test_every_exit_code_of_an_error_is_returned(self, rc, kind):
        with pytest.raises(cfa.Failure) as caught:
            cfa.interpret(rc, answer(error=dict(kind=kind, message='m')), '', self.argv, 'sync')
        assert (caught.value.result['rc'], caught.value.result['error_kind']) == (rc, kind)

    def test_an_error_object_fails_even_with_exit_0(self):
        with pytest.raises(cfa.Failure) as caught:
            cfa.interpret(0, answer(error=dict(kind='state', message='m')), '', self.argv, 'sync')
        assert caught.value.result['error_kind'] == 'state'

    @pytest.mark.parametrize('stdout', ['', 'sync: up to date\n', '[1, 2]', '{"schema": 1', 'null'])
    def test_no_json_object_fails_naming_the_last_stderr_line(self, stdout):
        with pytest.raises(cfa.Failure) as caught:
            cfa.interpret(101, stdout, "thread 'main' panicked\nnote: run with RUST_BACKTRACE\n",
                          self.argv, 'sync')
        result = caught.value.result
        assert result['error_kind'] == 'output'
        assert result['rc'] == 101
        assert result['msg'] == ('/usr/sbin/cf-allowlist exited 101 without a JSON answer: '
                                 'note: run with RUST_BACKTRACE')

    def test_another_schema_fails(self):
        with pytest.raises(cfa.Failure) as caught:
            cfa.interpret(0, answer(schema=2, command='sync'), '', self.argv, 'sync')
        assert caught.value.result['error_kind'] == 'output'
        assert 'schema 2' in caught.value.result['msg']

    def test_an_unexpected_exit_code_fails(self):
        with pytest.raises(cfa.Failure) as caught:
            cfa.interpret(2, answer(command='sync', changed=True), '', self.argv, 'sync')
        assert caught.value.result['rc'] == 2
        assert 'expected \'sync\' with exit 0' in caught.value.result['msg']

    def test_an_answer_for_another_command_fails(self):
        with pytest.raises(cfa.Failure):
            cfa.interpret(0, answer(command='purge', changed=False), '', self.argv, 'sync')

    def test_audit_accepts_exit_2(self):
        data = cfa.interpret(2, answer(command='audit', findings=[]), '', self.argv, 'audit',
                             ok_codes=(0, 2))
        assert data['command'] == 'audit'


CHANGE = dict(
    schema=1, command='sync', changed=True, dry_run=True, backend='nftables',
    source=[dict(id='cloudflare', entries=3)], degraded=False,
    added=dict(ipv4=['198.41.128.0/17'], ipv6=[]),
    removed=dict(ipv4=['192.0.2.0/24'], ipv6=['2001:db8::/32']),
    unchanged=2,
    before=dict(ipv4=['173.245.48.0/20', '192.0.2.0/24'], ipv6=['2001:db8::/32', '2400:cb00::/32']),
    after=dict(ipv4=['173.245.48.0/20', '198.41.128.0/17'], ipv6=['2400:cb00::/32']),
    rebuild=None, warnings=['one', 'two'],
)


class TestSyncResult:
    def test_changed_comes_from_the_answer(self):
        result = cfa.sync_result(CHANGE, False)[0]
        assert result['changed'] is True
        result = cfa.sync_result(dict(CHANGE, changed=False), False)[0]
        assert result['changed'] is False

    def test_every_key_of_the_answer_is_returned_and_no_rc(self):
        result, warnings = cfa.sync_result(CHANGE, False)
        for key in ('command', 'dry_run', 'backend', 'source', 'degraded', 'added', 'removed',
                    'unchanged', 'before', 'after', 'rebuild'):
            assert result[key] == CHANGE[key]
        assert 'rc' not in result
        assert 'diff' not in result
        assert warnings == ['one', 'two']

    def test_diff_mode_gives_one_diff_per_family_one_cidr_a_line(self):
        result = cfa.sync_result(CHANGE, True)[0]
        assert result['diff'] == [
            dict(before_header='nftables allowlist, ipv4',
                 after_header='nftables allowlist, ipv4',
                 before='173.245.48.0/20\n192.0.2.0/24\n',
                 after='173.245.48.0/20\n198.41.128.0/17\n'),
            dict(before_header='nftables allowlist, ipv6',
                 after_header='nftables allowlist, ipv6',
                 before='2001:db8::/32\n2400:cb00::/32\n',
                 after='2400:cb00::/32\n'),
        ]

    def test_an_empty_family_is_an_empty_text(self):
        purge = dict(CHANGE, command='purge', after=dict(ipv4=[], ipv6=[]))
        diffs = cfa.family_diffs(purge)
        assert [d['after'] for d in diffs] == ['', '']

    def test_missing_lists_are_empty(self):
        diffs = cfa.family_diffs(dict(backend='ufw'))
        assert [(d['before'], d['after']) for d in diffs] == [('', ''), ('', '')]


def finding(kind, severity):
    return dict(kind=kind, severity=severity, message='%s found' % kind, evidence=[])


class TestAudit:
    def audit(self, *findings):
        return dict(schema=1, command='audit', backend='ufw', source=[], ranges=22,
                    findings=list(findings))

    def test_counts_and_worst(self):
        result = cfa.audit_result(self.audit(finding('stale', 'warning'),
                                             finding('blocked', 'critical'),
                                             finding('stale', 'warning')))
        assert result['counts'] == dict(info=0, warning=2, critical=1)
        assert result['worst'] == 'critical'
        assert result['changed'] is False
        assert (result['backend'], result['ranges']) == ('ufw', 22)

    def test_nothing_found(self):
        result = cfa.audit_result(self.audit())
        assert result['worst'] is None
        assert result['findings'] == []
        assert cfa.audit_verdict(result, 'warning') is None

    def test_info_is_the_worst_of_infos(self):
        assert cfa.audit_result(self.audit(finding('x', 'info')))['worst'] == 'info'

    @pytest.mark.parametrize('fail_on,fails', [('critical', False), ('warning', True), ('none', False)])
    def test_warnings_fail_only_fail_on_warning(self, fail_on, fails):
        result = cfa.audit_result(self.audit(finding('drift', 'warning'), finding('x', 'info')))
        verdict = cfa.audit_verdict(result, fail_on)
        assert (verdict is not None) == fails
        if fails:
            assert verdict == 'cf-allowlist audit: 1 finding at or above warning: drift (warning): drift found'

    @pytest.mark.parametrize('fail_on,fails', [('critical', True), ('warning', True), ('none', False)])
    def test_critical_fails_unless_none(self, fail_on, fails):
        result = cfa.audit_result(self.audit(finding('missing', 'critical'),
                                             finding('not_listening', 'critical')))
        verdict = cfa.audit_verdict(result, fail_on)
        assert (verdict is not None) == fails
        if fails:
            assert verdict.startswith('cf-allowlist audit: 2 findings at or above %s: missing '
                                      '(critical): missing found; not_listening' % fail_on)
