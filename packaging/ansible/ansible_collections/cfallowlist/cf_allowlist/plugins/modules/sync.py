#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) cf-allowlist contributors
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import annotations

DOCUMENTATION = r'''
module: sync
short_description: Keep the firewall allowlist equal to Cloudflare's IP ranges
version_added: 0.1.0
description:
  - Runs C(cf-allowlist sync) on the managed host - fetch and validate the list, plan the
    difference against the live firewall (nftables, iptables, ufw, csf or firewalld), refuse unsafe lists
    and plans, apply atomically and read the result back - and reports what it changed.
  - With O(state=absent) runs C(cf-allowlist purge) instead, which removes every object the tool
    owns in the firewall.
  - Check mode runs the binary's own C(--dry-run) (the same fetch, validation, plan and guards; no
    firewall change, no cache write) and reports what would change.
  - Diff mode returns the allowlist before and after, one CIDR a line, one diff per address
    family.
  - RV(ignore:changed) comes from the binary's answer, never from an exit code.
author:
  - cf-allowlist maintainers (!UNKNOWN)
options:
  state:
    description:
      - V(present) keeps the allowlist equal to the configured sources (C(sync)).
      - V(absent) removes the allowlist and everything else the tool owns in the firewall
        (C(purge)).
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - Apply even a plan that removes more than C(guards.max_removal) of one family's entries
        (C(sync --force)).
      - Only with O(state=present).
    type: bool
    default: false
  offline:
    description:
      - No network (C(sync --offline)) - use the cached list, else the snapshot compiled into the
        binary. The plan is then add-only - an offline run never removes an entry.
      - Only with O(state=present).
    type: bool
    default: false
extends_documentation_fragment:
  - cfallowlist.cf_allowlist.common
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Runs C(cf-allowlist sync --dry-run) (or C(purge --dry-run)).
  diff_mode:
    support: full
    details: One diff per address family, one CIDR a line.
  platform:
    platforms: posix
seealso:
  - module: cfallowlist.cf_allowlist.audit
'''

EXAMPLES = r'''
- name: Keep the firewall allowlist equal to Cloudflare's ranges
  cfallowlist.cf_allowlist.sync:
  register: allowlist

- name: Show what changed
  ansible.builtin.debug:
    msg: "+{{ allowlist.added.ipv4 | length + allowlist.added.ipv6 | length }} -{{ allowlist.removed.ipv4 | length + allowlist.removed.ipv6 | length }}"

- name: Use another configuration file and the ufw backend, even if Cloudflare's list shrank a lot
  cfallowlist.cf_allowlist.sync:
    config: /etc/cf-allowlist/edge.yaml
    backend: ufw
    force: true

- name: Re-apply the cached list without network (add-only)
  cfallowlist.cf_allowlist.sync:
    offline: true

- name: Remove the allowlist (cf-allowlist purge)
  cfallowlist.cf_allowlist.sync:
    state: absent
'''

RETURN = r'''
command:
  description: What ran - V(sync), or V(purge) for O(state=absent).
  returned: success
  type: str
  sample: sync
dry_run:
  description: Whether this was a dry run (check mode).
  returned: success
  type: bool
  sample: false
backend:
  description: The backend that was managed.
  returned: success
  type: str
  sample: nftables
source:
  description:
    - One entry per configured source - where its list came from (C(network), C(not_modified),
      C(cache), C(embedded), C(nothing) or C(local)), its URL or age and why, and its entries.
    - Empty for O(state=absent).
  returned: success
  type: list
  elements: dict
  sample: [{"id": "cloudflare", "from": "network", "url": "https://api.cloudflare.com/client/v4/ips", "entries": 22}]
degraded:
  description: Whether a source served a fallback (the plan was add-only).
  returned: success
  type: bool
  sample: false
added:
  description: The ranges added (or that would be), canonical CIDRs per family.
  returned: success
  type: dict
  sample: {"ipv4": ["198.41.128.0/17"], "ipv6": []}
  contains:
    ipv4:
      description: IPv4 ranges.
      type: list
      elements: str
    ipv6:
      description: IPv6 ranges.
      type: list
      elements: str
removed:
  description: The ranges removed (or that would be), canonical CIDRs per family.
  returned: success
  type: dict
  sample: {"ipv4": [], "ipv6": []}
  contains:
    ipv4:
      description: IPv4 ranges.
      type: list
      elements: str
    ipv6:
      description: IPv6 ranges.
      type: list
      elements: str
unchanged:
  description: How many entries stayed as they were.
  returned: success
  type: int
  sample: 21
before:
  description: The whole allowlist in the firewall before the run, per family.
  returned: success
  type: dict
  sample: {"ipv4": ["173.245.48.0/20"], "ipv6": ["2400:cb00::/32"]}
  contains:
    ipv4:
      description: IPv4 ranges.
      type: list
      elements: str
    ipv6:
      description: IPv6 ranges.
      type: list
      elements: str
after:
  description: The whole allowlist after the run (or after the planned change, in check mode).
  returned: success
  type: dict
  sample: {"ipv4": ["173.245.48.0/20", "198.41.128.0/17"], "ipv6": ["2400:cb00::/32"]}
  contains:
    ipv4:
      description: IPv4 ranges.
      type: list
      elements: str
    ipv6:
      description: IPv6 ranges.
      type: list
      elements: str
rebuild:
  description: Why the firewall objects were (or would be) rebuilt, or null.
  returned: success
  type: str
  sample: the allowlist objects do not exist yet
cmd:
  description: The command line that ran.
  returned: when the binary ran
  type: list
  elements: str
  sample: ["/usr/sbin/cf-allowlist", "--output", "json", "sync"]
error_kind:
  description:
    - The binary's error kind - V(usage), V(config), V(source), V(guard), V(backend), V(verify),
      V(lock) or V(state) - or V(output) when it printed no JSON answer this collection can read.
  returned: failure, when the binary ran
  type: str
  sample: source
rc:
  description: The binary's exit code (1 runtime failure, 64 usage error, 78 invalid configuration).
  returned: failure, when the binary ran
  type: int
  sample: 1
stderr:
  description: What the binary logged.
  returned: failure, when the binary ran
  type: str
  sample: "ERROR source cloudflare: https://api.cloudflare.com/client/v4/ips: answered with an HTML page, not a list"
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cfallowlist.cf_allowlist.plugins.module_utils.cf_allowlist import (
    common_argument_spec,
    find_binary,
    run,
    sync_argv,
    sync_conflicts,
    sync_result,
)


def argument_spec():
    """The module's options."""
    spec = common_argument_spec()
    spec.update(
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        force=dict(type='bool', default=False),
        offline=dict(type='bool', default=False),
    )
    return spec


def main():
    """Runs sync (or purge) and returns what the binary answered."""
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    conflict = sync_conflicts(module.params)
    if conflict:
        module.fail_json(msg=conflict)
    argv = sync_argv(find_binary(module), module.params, module.check_mode)
    command = 'purge' if module.params['state'] == 'absent' else 'sync'
    data = run(module, argv, command)
    result, warnings = sync_result(data, module._diff)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(cmd=argv, **result)


if __name__ == '__main__':
    main()
