# -*- coding: utf-8 -*-
# Copyright (c) cf-allowlist contributors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The options every module of cfallowlist.cf_allowlist shares: the binary's global options."""

from __future__ import annotations


class ModuleDocFragment:
    """Documentation of the shared options."""

    DOCUMENTATION = r'''
options:
  config:
    description:
      - The configuration file (C(cf-allowlist --config)).
      - When omitted, the binary reads C(/etc/cf-allowlist/config.yaml), or uses its built-in
        defaults when that file does not exist. A file named here must exist.
    type: path
  backend:
    description:
      - The firewall to manage, overriding the configuration's C(backend) (C(cf-allowlist --backend)).
      - When omitted, the configuration decides.
    type: str
    choices: [auto, nftables, iptables, ufw, csf, firewalld]
  binary:
    description:
      - Path of the C(cf-allowlist) binary on the managed host.
      - When omitted, C(cf-allowlist) is looked up on E(PATH), then in C(/sbin), C(/usr/sbin)
        and C(/usr/local/sbin).
    type: path
requirements:
  - cf-allowlist 0.1.0 or later on the managed host (its C(--output json) schema 1).
notes:
  - The module runs the binary with C(--output json) and reads the one object it prints; it holds
    no logic of its own that the binary has.
  - A failure returns the binary's error kind as RV(error_kind), its message in C(msg) and its
    exit code in RV(rc). A success never returns RV(rc).
'''
