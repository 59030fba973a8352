"""Role `technician_ssh`: key-only SSH when a key is given, no SSH service otherwise."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def ssh_vars(role_vars: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if "technician_ssh" not in role_vars:
        pytest.skip("profile has no technician_ssh role")
    return role_vars["technician_ssh"]


def enabled(ssh_vars: dict[str, Any]) -> bool:
    return bool(ssh_vars.get("technician_ssh_keys")) or bool(
        ssh_vars.get("technician_ssh_accept_credential")
    )


def test_ssh_runs_only_with_a_key(host: Any, ssh_vars: dict[str, Any], booted: bool) -> None:
    """Without this role's configuration the SSH service does not start (roles/base's drop-in:
    the package is in every image for deelit verify's VM-only access)."""
    configured = host.file("/etc/ssh/sshd_config.d/50-deelit.conf").exists
    assert configured == enabled(ssh_vars)
    if booted:
        assert host.service("ssh").is_running == enabled(ssh_vars)


def test_key_only_login(host: Any, ssh_vars: dict[str, Any], booted: bool) -> None:
    if not enabled(ssh_vars):
        return
    assert host.service("ssh").is_enabled
    if booted:  # the effective configuration, as sshd itself reads it
        effective = host.check_output("sshd -T")
        assert "passwordauthentication no" in effective
        assert "kbdinteractiveauthentication no" in effective
        assert "permitrootlogin without-password" in effective
        assert "hostkey /etc/ssh/ssh_host_ed25519_key" in effective.splitlines()
        assert host.service("ssh").is_running
    else:
        conf = host.file("/etc/ssh/sshd_config.d/50-deelit.conf").content_string
        assert "PasswordAuthentication no" in conf


def test_credential_keys_only_when_asked(host: Any, ssh_vars: dict[str, Any]) -> None:
    accepts = bool(ssh_vars.get("technician_ssh_accept_credential"))
    assert host.file("/etc/tmpfiles.d/deelit-ssh-credential.conf").exists == accepts


def test_listens_only_where_the_point_says(host: Any, ssh_vars: dict[str, Any], booted: bool) -> None:
    if not enabled(ssh_vars):
        return
    wanted = ssh_vars.get("technician_ssh_listen", [])
    conf = host.file("/etc/ssh/sshd_config.d/50-deelit.conf").content_string
    assert [ln.split()[1] for ln in conf.splitlines() if ln.startswith("ListenAddress ")] == wanted
    if booted and not wanted:  # sshd's own default: every address
        effective = host.check_output("sshd -T").splitlines()
        assert "listenaddress 0.0.0.0:22" in effective and "listenaddress [::]:22" in effective
