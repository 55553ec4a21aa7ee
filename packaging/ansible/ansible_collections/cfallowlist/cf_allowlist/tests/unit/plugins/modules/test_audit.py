# -*- coding: utf-8 -*-
# Copyright (c) cf-allowlist contributors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The audit module end to end in the test process."""

from __future__ import annotations

from ansible_collections.cfallowlist.cf_allowlist.plugins.modules import audit


def report(*findings):
    """An audit answer, as `cf-allowlist --output json audit` prints it."""
    return dict(schema=1, command='audit', backend='nftables',
                source=[dict(id='cloudflare', entries=22, **{'from': 'network'})], ranges=22,
                findings=list(findings))


NOT_LISTENING = dict(kind='not_listening', severity='critical', evidence=[],
                     message='nothing listens on tcp/443: the web server is down or on another '
                             'port (Error 521)')
STALE = dict(kind='stale', severity='warning', evidence=[],
             message='no state file: no sync has completed on this host yet')


def test_a_clean_audit_succeeds_unchanged(harness):
    harness.answer(0, report())
    done = harness.run(audit.main)
    assert not done.failed
    assert harness.calls == [[harness.binary, '--output', 'json', 'audit']]
    assert done.result['changed'] is False
    assert done.result['findings'] == []
    assert done.result['worst'] is None
    assert 'rc' not in done.result


def test_critical_findings_fail_by_default(harness):
    harness.answer(2, report(NOT_LISTENING, STALE))
    done = harness.run(audit.main)
    assert done.failed
    assert done.result['msg'] == ('cf-allowlist audit: 1 finding at or above critical: '
                                  'not_listening (critical): ' + NOT_LISTENING['message'])
    assert done.result['findings'] == [NOT_LISTENING, STALE]
    assert done.result['counts'] == dict(info=0, warning=1, critical=1)
    assert 'error_kind' not in done.result
    assert 'rc' not in done.result


def test_fail_on_none_returns_the_findings(harness):
    harness.answer(2, report(NOT_LISTENING, STALE))
    done = harness.run(audit.main, fail_on='none')
    assert not done.failed
    assert done.result['worst'] == 'critical'
    assert [f['kind'] for f in done.result['findings']] == ['not_listening', 'stale']


def test_warnings_pass_by_default_and_fail_on_warning(harness):
    harness.answer(2, report(STALE))
    assert not harness.run(audit.main).failed
    harness.answer(2, report(STALE))
    done = harness.run(audit.main, fail_on='warning')
    assert done.failed
    assert done.result['msg'].startswith('cf-allowlist audit: 1 finding at or above warning: stale')


def test_check_mode_runs_the_same_read_only_audit(harness):
    harness.answer(0, report())
    done = harness.run(audit.main, _ansible_check_mode=True, offline=True, config='/c.yaml')
    assert harness.calls == [[harness.binary, '--output', 'json', '--config', '/c.yaml', 'audit',
                              '--offline']]
    assert not done.failed


def test_an_audit_that_cannot_run_fails_with_the_kind_and_exit_code(harness):
    harness.answer(78, dict(schema=1, error=dict(kind='config', message='cannot read '
                                                                        'configuration /c.yaml')))
    done = harness.run(audit.main, config='/c.yaml')
    assert done.failed
    assert (done.result['error_kind'], done.result['rc']) == ('config', 78)
    assert done.result['msg'] == ('cf-allowlist audit failed (exit 78, config error): cannot read '
                                  'configuration /c.yaml')


def test_an_unknown_fail_on_is_refused(harness):
    done = harness.run(audit.main, fail_on='sometimes')
    assert done.failed
    assert 'fail_on' in done.result['msg']
    assert harness.calls == []
