# -*- coding: utf-8 -*-
# Copyright (c) cf-allowlist contributors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The role's variables: every default is documented in meta/argument_specs.yml with the same
value, and the configuration template writes every configuration variable."""

from __future__ import annotations

import os
import re

import yaml

ROLE = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'roles', 'cf_allowlist')


def load(*path):
    with open(os.path.join(ROLE, *path)) as f:
        return yaml.safe_load(f)


DEFAULTS = load('defaults', 'main.yml')
SPEC = load('meta', 'argument_specs.yml')['argument_specs']['main']['options']
with open(os.path.join(ROLE, 'templates', 'config.yaml.j2')) as template:
    TEMPLATE = template.read()


def test_every_default_is_documented_and_every_documented_variable_has_a_default():
    assert sorted(DEFAULTS) == sorted(SPEC)


def test_documented_defaults_are_the_real_ones():
    for name, option in SPEC.items():
        if 'default' in option:
            assert option['default'] == DEFAULTS[name], name


def test_the_binary_path_default_is_templated_and_described():
    assert 'default' not in SPEC['cf_allowlist_binary_path']
    assert '{{' in DEFAULTS['cf_allowlist_binary_path']


def test_choices_hold_the_default():
    for name, option in SPEC.items():
        if 'choices' in option and 'default' in option:
            default = option['default']
            values = default if isinstance(default, list) else [default]
            assert set(values) <= set(option['choices']), name


def test_the_template_writes_each_key_from_its_variable_once():
    written = re.findall(r'^([a-z_]+): \{\{ (cf_allowlist_[a-z_]+) \| to_json \}\}$', TEMPLATE, re.M)
    assert written, 'no key: line in the template'
    for key, variable in written:
        assert variable == 'cf_allowlist_' + key
        assert variable in DEFAULTS
    keys = [pair[0] for pair in written]
    assert len(keys) == len(set(keys))


# The role's own variables; every other one is a key of the configuration file.
ROLE_ONLY = {'install', 'package_name', 'package_file', 'package_dest_dir', 'binary_src',
             'binary_path', 'config_path', 'timer', 'systemd_dir', 'sync', 'sync_force',
             'sync_offline', 'check_tmpdir'}


def test_every_configuration_variable_is_written():
    written = set(re.findall(r'^([a-z_]+): \{\{', TEMPLATE, re.M))
    config_vars = set(name[len('cf_allowlist_'):] for name in DEFAULTS) - ROLE_ONLY
    assert written == config_vars
