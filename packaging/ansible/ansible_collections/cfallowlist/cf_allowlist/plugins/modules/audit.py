#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) cf-allowlist contributors
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import annotations

DOCUMENTATION = r'''
module: audit
short_description: Tell whether the Cloudflare allowlist is present, current and effective
version_added: 0.1.0
description:
  - Runs C(cf-allowlist audit) on the managed host, read-only, and returns its findings - the
    allowlist C(missing) or in C(drift), a C(stale) list, Cloudflare C(blocked) by another rule,
    C(not_restrictive), the web server C(not_listening) or C(loopback_only), a
    C(conflicting_firewall), and whatever the audit could not decide (C(unknown)).
  - Fails when a finding reaches O(fail_on) (by default, any critical finding - visitors routed
    through that range see Error 521).
  - Never changes anything, in check mode or not.
author:
  - cf-allowlist maintainers (!UNKNOWN)
options:
  offline:
    description:
      - Judge against the cached list (else the snapshot compiled into the binary) instead of
        asking the sources (C(audit --offline)).
    type: bool
    default: false
  fail_on:
    description:
      - The lowest severity that fails the task.
      - V(critical) fails on critical findings, V(warning) on warnings and critical findings,
        V(none) never (the findings are still returned).
    type: str
    choices: [critical, warning, none]
    default: critical
extends_documentation_fragment:
  - cfallowlist.cf_allowlist.common
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The audit is read-only; it runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: cfallowlist.cf_allowlist.sync
'''

EXAMPLES = r'''
- name: Fail the play where Cloudflare cannot reach the web server
  cfallowlist.cf_allowlist.audit:

- name: Collect every finding, fail on none
  cfallowlist.cf_allowlist.audit:
    fail_on: none
  register: audit

- name: Show the warnings
  ansible.builtin.debug:
    msg: "{{ audit.findings | selectattr('severity', 'equalto', 'warning') | map(attribute='message') | list }}"
'''

RETURN = r'''
findings:
  description: What the audit found, most severe first.
  returned: success
  type: list
  elements: dict
  contains:
    kind:
      description: V(missing), V(drift), V(stale), V(blocked), V(not_restrictive), V(not_listening),
        V(loopback_only), V(conflicting_firewall) or V(unknown).
      type: str
    severity:
      description: V(info), V(warning) or V(critical).
      type: str
    message:
      description: One line an operator can act on.
      type: str
    evidence:
      description: The facts behind it (rules, ranges, sockets), one a line.
      type: list
      elements: str
  sample:
    - kind: not_listening
      severity: critical
      message: "nothing listens on tcp/443: the web server is down or on another port (Error 521)"
      evidence: []
counts:
  description: How many findings of each severity.
  returned: success
  type: dict
  sample: {"info": 0, "warning": 1, "critical": 0}
worst:
  description: The most severe finding's severity, or null when nothing was found.
  returned: success
  type: str
  sample: warning
backend:
  description: The backend audited.
  returned: success
  type: str
  sample: nftables
source:
  description: One entry per configured source - where the list the audit judged against came from.
  returned: success
  type: list
  elements: dict
  sample: [{"id": "cloudflare", "from": "network", "entries": 22}]
ranges:
  description: How many ranges the list in use has.
  returned: success
  type: int
  sample: 22
cmd:
  description: The command line that ran.
  returned: when the binary ran
  type: list
  elements: str
  sample: ["/usr/sbin/cf-allowlist", "--output", "json", "audit"]
error_kind:
  description:
    - The binary's error kind when the audit itself could not run (for example V(config) or
      V(source)), or V(output) when it printed no JSON answer this collection can read.
    - Absent when the task failed because a finding reached O(fail_on).
  returned: failure, when the binary ran
  type: str
  sample: config
rc:
  description: The binary's exit code when the audit itself could not run (1, 64 or 78).
  returned: failure, when the binary ran
  type: int
  sample: 78
stderr:
  description: What the binary logged, when the audit itself could not run.
  returned: failure, when the binary ran
  type: str
  sample: "ERROR cannot read configuration /etc/cf-allowlist/config.yaml: permission denied"
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cfallowlist.cf_allowlist.plugins.module_utils.cf_allowlist import (
    FAIL_ON,
    audit_argv,
    audit_result,
    audit_verdict,
    common_argument_spec,
    find_binary,
    run,
)


def argument_spec():
    """The module's options."""
    spec = common_argument_spec()
    spec.update(
        offline=dict(type='bool', default=False),
        fail_on=dict(type='str', choices=list(FAIL_ON), default='critical'),
    )
    return spec


def main():
    """Runs the audit and returns its findings; fails when one reaches fail_on."""
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    argv = audit_argv(find_binary(module), module.params)
    # Exit 2 means "found something": the findings decide, not the exit code.
    data = run(module, argv, 'audit', ok_codes=(0, 2))
    result = audit_result(data)
    verdict = audit_verdict(result, module.params['fail_on'])
    if verdict:
        module.fail_json(msg=verdict, cmd=argv, **result)
    module.exit_json(cmd=argv, **result)


if __name__ == '__main__':
    main()
