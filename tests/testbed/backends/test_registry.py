"""The backend seam: one kebab registry, lazily imported, and the netns backend implements the
protocol (the libvirt and remote backends have their own tests)."""

from __future__ import annotations

import pytest

from testbed.backends.base import NodeBackend, backend_class, backend_kinds, register_backend
from testbed.backends.netns import NetnsBackend
from testbed.errors import InputError


def test_kinds_and_lookup() -> None:
    assert {"netns", "libvirt", "remote"} <= set(backend_kinds())
    assert backend_class("netns") is NetnsBackend
    assert NetnsBackend.kind == "netns" and NetnsBackend.data_port == "internal"


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(InputError, match=r"unknown backend 'nets'; choose: .*netns"):
        backend_class("nets")


def test_registration_needs_kebab_case() -> None:
    with pytest.raises(InputError, match="kebab-case"):
        register_backend("My_Board", "x:Y")


def test_netns_backend_satisfies_the_protocol() -> None:
    for method in ("create_management", "create_nodes", "python", "node_path", "exec",
                   "spawn", "kill", "revive", "remove_node", "close"):
        assert callable(getattr(NetnsBackend, method)), method
    backend = NetnsBackend.__new__(NetnsBackend)  # an instance without creating anything
    assert isinstance(backend, NodeBackend)
