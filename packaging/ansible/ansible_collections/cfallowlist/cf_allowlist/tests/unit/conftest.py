# -*- coding: utf-8 -*-
# Copyright (c) cf-allowlist contributors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Runs a module's main() in the test process with given arguments and a stand-in binary."""

from __future__ import annotations

import contextlib
import json
import os
import stat

import pytest

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core before 2.19
    patch_module_args = None


class ModuleExit(Exception):
    """exit_json or fail_json was called; ``result`` is what the module returned."""

    def __init__(self, failed, result):
        super().__init__(result.get('msg'))
        self.failed = failed
        self.result = result


@contextlib.contextmanager
def module_args(args):
    """Makes AnsibleModule read ``args`` as its arguments."""
    if patch_module_args is not None:
        with patch_module_args(args):
            yield
        return
    saved = basic._ANSIBLE_ARGS
    basic._ANSIBLE_ARGS = json.dumps({'ANSIBLE_MODULE_ARGS': args}).encode()
    try:
        yield
    finally:
        basic._ANSIBLE_ARGS = saved


class Harness:
    """One module run: the answers the stand-in binary gives and the command lines it got."""

    def __init__(self, monkeypatch, binary):
        self.binary = binary
        self.calls = []
        self.answers = []
        self.warnings = []
        harness = self

        # Plain functions, so that the class binds them to the module instance.
        def exit_json(module, **result):
            raise ModuleExit(False, result)

        def fail_json(module, msg, **result):
            result['msg'] = msg
            raise ModuleExit(True, result)

        def run_command(module, args, **kwargs):
            return harness.next_answer(args)

        def warn(module, warning, **kwargs):
            harness.warnings.append(warning)

        monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
        monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)
        monkeypatch.setattr(basic.AnsibleModule, 'run_command', run_command)
        monkeypatch.setattr(basic.AnsibleModule, 'warn', warn)

    def next_answer(self, args):
        """Records a command line and returns the next queued answer for it."""
        self.calls.append(list(args))
        if not self.answers:
            raise AssertionError('the module ran %r more often than the test expected' % (args,))
        rc, stdout, stderr = self.answers.pop(0)
        if not isinstance(stdout, str):
            stdout = json.dumps(stdout)
        return rc, stdout, stderr

    def answer(self, rc, stdout, stderr=''):
        """Queues what the next run of the binary prints (a dict is printed as JSON)."""
        self.answers.append((rc, stdout, stderr))

    def run(self, main, **args):
        """Runs ``main`` with ``args`` (the binary option set unless given) and returns the exit."""
        args.setdefault('binary', self.binary)
        with module_args(args):
            with pytest.raises(ModuleExit) as caught:
                main()
        return caught.value


@pytest.fixture
def harness(monkeypatch, tmp_path):
    """A Harness whose ``binary`` is an executable file that is never really run."""
    binary = tmp_path / 'cf-allowlist'
    binary.write_text('#!/bin/sh\nexit 99\n')
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv('PATH', os.defpath)
    return Harness(monkeypatch, str(binary))
