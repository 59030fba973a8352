"""Role `parental_filter`: checked on the built tree and, as a child account, on the booted image.

Booted checks never send a packet off the machine: every "outside" address they use
(192.0.2.0/24, 2001:db8::/32, documentation ranges) is put on a dummy interface of the guest
first, with listeners behind it. So a missing firewall rule makes a check fail (the connection
or the query to that address succeeds or is refused by nobody), rather than reach the network.
A fake upstream resolver on such an address stands in for the family resolver, so SafeSearch
answers can be followed to their end without the internet.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

CHILD = "child"
FAKE_UPSTREAM = "192.0.2.254"
OUTSIDE_DNS_V4 = "192.0.2.53"
OUTSIDE_DNS_V6 = "2001:db8::53"
OUTSIDE_DOT = "192.0.2.1"
TEST_DOH_V4 = "192.0.2.43"  # added to the DoH set by images/filter-test.yaml
TEST_DOH_V6 = "2001:db8::43"
LIST_PORT = 8054  # not the timer's URL, so a timer run cannot interfere

SAFESEARCH = {
    "www.google.com": "forcesafesearch.google.com",
    "www.google.be": "forcesafesearch.google.com",
    "www.youtube.com": "restrict.youtube.com",
    "www.bing.com": "strict.bing.com",
    "duckduckgo.com": "safe.duckduckgo.com",
}
FAKE_ANSWERS = {
    "forcesafesearch.google.com": "216.239.38.120",
    "restrict.youtube.com": "216.239.38.119",
    "restrictmoderate.youtube.com": "216.239.38.119",
    "strict.bing.com": "204.79.197.220",
    "safe.duckduckgo.com": "52.142.124.215",
    "open.example.org": "192.0.2.20",
    "blocked.example.org": "192.0.2.21",  # upstream would answer; the filter must not ask
    "dns.google": "192.0.2.22",
    "allowed.dns.google": "192.0.2.23",
}

ROOT_FILES = [
    "/etc/resolv.conf",
    "/etc/unbound/unbound.conf.d/deelit-filter.conf",
    "/etc/nftables.conf",
    "/etc/nftables.d/50-deelit-filter.nft",
    "/etc/deelit-filter/blocklist.shipped",
    "/etc/deelit-filter/blocklist.local",
    "/etc/deelit-filter/allowlist",
    "/etc/deelit-filter/filter.json",
    "/var/lib/deelit-filter/blocklist.conf",
    "/usr/local/sbin/deelit-filter-update",
    "/etc/polkit-1/rules.d/50-deelit-filter.rules",
    "/etc/firefox/policies/policies.json",
    "/etc/firefox-esr/policies/policies.json",
    "/etc/chromium/policies/managed/deelit-filter.json",
    "/etc/NetworkManager/conf.d/90-deelit-filter.conf",
    "/etc/systemd/system/deelit-filter-update.service",
    "/etc/systemd/system/deelit-filter-update.timer",
]


@pytest.fixture(scope="module")
def fvars(role_vars: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if "parental_filter" not in role_vars:
        pytest.skip("profile has no parental_filter role")
    return role_vars["parental_filter"]


def run(host: Any, command: str, timeout: int = 30) -> Any:
    return host.run(f"timeout -k 5 {timeout} {command}")


def as_child(host: Any, command: str, timeout: int = 30) -> Any:
    return run(host, f"runuser -u {CHILD} -- sh -c {shlex.quote(command)}", timeout)


def dig(host: Any, name: str, server: str = "", extra: str = "") -> Any:
    at = f"@{server}" if server else ""
    return as_child(host, f"dig {at} {extra} +time=4 +tries=1 +noall +comments +answer {name}")


# --- the built tree and the booted image alike ------------------------------------------------


def test_packages(host: Any, fvars: dict[str, Any]) -> None:
    for name in ("unbound", "nftables", "polkitd"):
        assert host.package(name).is_installed, name


def test_polkit_rules_folder_as_polkits_tmpfiles_has_it(host: Any, fvars: dict[str, Any]) -> None:
    """What systemd-tmpfiles sets at every boot; otherwise each fleet run after a boot changes it."""
    wanted = host.file("/usr/lib/tmpfiles.d/polkit-tmpfiles.conf").content_string.split()
    assert wanted[:5] == ["d", "/etc/polkit-1/rules.d", "0750", "root", "polkitd"], wanted
    folder = host.file("/etc/polkit-1/rules.d")
    assert (folder.user, folder.group, folder.mode) == ("root", "polkitd", 0o750)


@pytest.mark.parametrize("path", ROOT_FILES)
def test_files_root_owned_and_not_writable_by_others(host: Any, fvars: dict[str, Any], path: str) -> None:
    f = host.file(path)
    assert f.exists, path
    assert not f.is_symlink, f"{path} is a symlink"
    assert (f.user, f.group) == ("root", "root"), path
    assert f.mode & 0o022 == 0, f"{path}: mode {f.mode:o}"
    parent = host.file(path.rsplit("/", 1)[0])
    assert parent.user == "root" and parent.mode & 0o022 == 0, f"{path}: its folder"


def test_resolv_conf_is_the_local_resolver(host: Any, fvars: dict[str, Any]) -> None:
    servers = [ln.split()[1] for ln in host.file("/etc/resolv.conf").content_string.splitlines()
               if ln.startswith("nameserver")]
    assert servers == ["127.0.0.1", "::1"]


def test_resolver_configuration_is_valid_and_complete(host: Any, fvars: dict[str, Any]) -> None:
    assert host.run("unbound-checkconf").rc == 0, host.run("unbound-checkconf").stderr
    conf = host.file("/etc/unbound/unbound.conf.d/deelit-filter.conf").content_string
    assert 'local-zone: "use-application-dns.net." always_nxdomain' in conf
    for name, target in SAFESEARCH.items():
        assert f'local-zone: "{name}." redirect' in conf
        assert f'local-data: "{name}. CNAME {target}."' in conf
    if fvars.get("parental_filter_resolver", "cleanbrowsing-family") == "cleanbrowsing-family":
        assert "forward-tls-upstream: yes" in conf  # the default: a family resolver over TLS
        assert "forward-addr: 185.228.168.168@853#family-filter-dns.cleanbrowsing.org" in conf
    # DNSSEC is validated unless the profile turned it off (only behind a signature-stripping
    # resolver); "iterator" alone is the module list without the validator
    assert ('module-config: "iterator"' in conf) == (not fvars.get("parental_filter_dnssec", True))
    blocklist = host.file("/var/lib/deelit-filter/blocklist.conf").content_string
    for name in [*fvars.get("parental_filter_blocklist_extra", []), "dns.google"]:
        assert f'local-zone: "{name}." always_nxdomain' in blocklist
    for name in fvars.get("parental_filter_allowlist", []):
        assert f'local-zone: "{name}." always_transparent' in blocklist


def test_firewall_rules_parse(host: Any, fvars: dict[str, Any]) -> None:
    check = host.run("nft -c -f /etc/nftables.conf")
    assert check.rc == 0, check.stderr
    rules = host.file("/etc/nftables.d/50-deelit-filter.nft").content_string
    assert "meta skuid unbound return" in rules
    for addr in ("1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", *fvars.get("parental_filter_doh_extra", [])):
        assert addr in rules


def test_browser_policies(host: Any, fvars: dict[str, Any]) -> None:
    for path in ("/etc/firefox/policies/policies.json", "/etc/firefox-esr/policies/policies.json"):
        policies = json.loads(host.file(path).content_string)["policies"]
        assert policies["DNSOverHTTPS"] == {"Enabled": False, "Locked": True}
        assert policies["DisablePrivateBrowsing"] is True
    chromium = json.loads(host.file("/etc/chromium/policies/managed/deelit-filter.json").content_string)
    assert chromium["DnsOverHttpsMode"] == "off"
    assert chromium["IncognitoModeAvailability"] == 1
    assert chromium["ForceGoogleSafeSearch"] is True
    assert chromium["ForceYouTubeRestrict"] in (1, 2)


def test_browsers_lock_the_proxy_extensions_and_their_settings(host: Any, fvars: dict[str, Any]) -> None:
    """A proxy or VPN add-on, a SOCKS proxy with remote DNS, about:config or a temporary add-on
    from about:debugging would each go around every DNS rule."""
    proxy = fvars.get("parental_filter_browser_proxy", "none")
    allowed = fvars.get("parental_filter_browser_extensions", {})
    devtools = fvars.get("parental_filter_developer_tools", False)
    for path in ("/etc/firefox/policies/policies.json", "/etc/firefox-esr/policies/policies.json"):
        policies = json.loads(host.file(path).content_string)["policies"]
        assert policies["Proxy"] == {"Mode": proxy, "Locked": True}
        extensions = policies["ExtensionSettings"]
        assert extensions["*"]["installation_mode"] == "blocked"
        assert {k for k, v in extensions.items() if v["installation_mode"] != "blocked"} == set(
            allowed.get("firefox", []))
        assert policies["BlockAboutConfig"] is True
        assert policies["DisableDeveloperTools"] is (not devtools)
    chromium = json.loads(host.file("/etc/chromium/policies/managed/deelit-filter.json").content_string)
    assert chromium["ProxyMode"] == ("direct" if proxy == "none" else "system")
    assert chromium["ExtensionInstallBlocklist"] == ["*"]
    assert chromium["ExtensionInstallAllowlist"] == allowed.get("chromium", [])
    assert chromium["DeveloperToolsAvailability"] == (1 if devtools else 2)


def test_units_enabled(host: Any, fvars: dict[str, Any]) -> None:
    assert host.service("unbound").is_enabled
    assert host.service("nftables").is_enabled
    wants_timer = bool(fvars.get("parental_filter_blocklist_url"))
    assert host.service("deelit-filter-update.timer").is_enabled == wants_timer


def test_screen_time(host: Any, fvars: dict[str, Any]) -> None:
    user, limits = fvars.get("parental_filter_child_user", ""), fvars.get("parental_filter_screen_time", {})
    if not limits:
        assert not host.package("timekpr-next").is_installed
        return
    assert host.package("timekpr-next").is_installed
    assert host.service("timekpr").is_enabled
    if user:
        conf = host.file(f"/var/lib/timekpr/config/timekpr.{user}.conf")
    else:  # the child is created at first boot: a template and the hook that fills it in
        conf = host.file("/etc/deelit/screen-time.conf.in")
        assert "[@CHILD@]" in conf.content_string
        hook = host.file("/etc/deelit/firstboot.d/50-screen-time")
        assert (hook.user, hook.mode) == ("root", 0o755)
    assert (conf.user, conf.mode) == ("root", 0o600)
    days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    allowed = [str(i) for i, d in enumerate(days, 1) if limits.get(d, {}).get("minutes", 1440) > 0]
    seconds = [str(60 * limits.get(d, {}).get("minutes", 1440)) for d in days
               if limits.get(d, {}).get("minutes", 1440) > 0]
    text = conf.content_string
    assert f"ALLOWED_WEEKDAYS = {';'.join(allowed)}" in text
    assert f"LIMITS_PER_WEEKDAYS = {';'.join(seconds)}" in text
    if host.backend.NAME != "chroot":
        assert host.service("timekpr").is_running


# --- booted: the running system, as the child ---------------------------------------------------


@pytest.fixture(scope="module")
def live(host: Any, fvars: dict[str, Any]) -> Any:
    if host.backend.NAME == "chroot":  # (conftest's session-scoped `booted` cannot serve here)
        pytest.skip("needs the booted image")
    # TCG on a busy machine: SSH answers minutes before every service has started
    host.run("timeout 900 systemctl is-system-running --wait")
    for unit in ("unbound", "nftables"):
        assert host.run(f"systemctl is-active {unit}").stdout.strip() == "active", unit
    return host


@pytest.fixture(scope="module")
def child(live: Any) -> str:
    """An ordinary account, made now over root SSH: no password, no sudo, never in an image."""
    if live.run(f"id -u {CHILD}").rc != 0:
        live.run_expect([0], f"useradd --create-home --shell /bin/bash {CHILD}")
    assert "sudo" not in live.run(f"id -nG {CHILD}").stdout.split()
    return CHILD


LISTENERS = r"""
import socket, threading
def serve(family, addr, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.close()
for fam, addr, port in [(socket.AF_INET, "%(dot)s", 853), (socket.AF_INET, "%(doh4)s", 443),
                        (socket.AF_INET6, "%(doh6)s", 443)]:
    threading.Thread(target=serve, args=(fam, addr, port), daemon=True).start()
threading.Event().wait()
"""

FAKE_UPSTREAM_CONF = """server:
  interface: {addr}
  username: ""
  chroot: ""
  directory: "/run/deelit-test"
  pidfile: ""
  do-daemonize: no
  use-syslog: no
  access-control: 0.0.0.0/0 allow
  local-zone: "." static
{data}
"""


@pytest.fixture(scope="module")
def testnet(live: Any, child: str) -> Iterator[Any]:
    """'Outside' addresses on a dummy interface with listeners, and a fake upstream resolver.

    Whatever happens during setup, the laptop gets its own resolver back: a fixture that
    failed half-way once left unbound forwarding to the fake, and later tests lost DNS."""
    host = live
    missing = [tool for tool in ("dig", "ip") if host.run(f"command -v {tool}").rc != 0]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (bind9-dnsutils, iproute2): the filter's test image "
                    "filter-test carries them, this image does not")
    try:
        cmds = [
            "ip link add deelit-t0 type dummy", "ip link set deelit-t0 up",
            *(f"ip addr add {a}/32 dev deelit-t0" for a in (FAKE_UPSTREAM, OUTSIDE_DNS_V4, OUTSIDE_DOT, TEST_DOH_V4)),
            *(f"ip -6 addr add {a}/128 dev deelit-t0 nodad" for a in (OUTSIDE_DNS_V6, TEST_DOH_V6)),
            "mkdir -p /run/deelit-test",
        ]
        for cmd in cmds:
            host.run_expect([0], cmd)
        data = "\n".join(f'  local-data: "{n}. 60 A {a}"' for n, a in FAKE_ANSWERS.items())
        conf = FAKE_UPSTREAM_CONF.format(addr=FAKE_UPSTREAM, data=data)
        host.run_expect([0], f"printf %s {shlex.quote(conf)} > /run/deelit-test/upstream.conf")
        listeners = LISTENERS % {"dot": OUTSIDE_DOT, "doh4": TEST_DOH_V4, "doh6": TEST_DOH_V6}
        host.run_expect([0], f"printf %s {shlex.quote(listeners)} > /run/deelit-test/listeners.py")
        host.run_expect([0], "systemd-run --unit=deelit-test-upstream unbound -c /run/deelit-test/upstream.conf")
        host.run_expect([0], "systemd-run --unit=deelit-test-listeners python3 /run/deelit-test/listeners.py")
        # The family resolver cannot be reached from here: the local resolver forwards to the
        # fake one instead until it reloads its files. The fake signs nothing, and
        # domain-insecure does not override the root's own trust anchor (priming its DNSKEY
        # fails, every answer would be SERVFAIL): validation failures are let through until
        # the reload.
        for cmd in ("unbound-control forward_remove .", f"unbound-control forward_add +i . {FAKE_UPSTREAM}",
                    "unbound-control set_option val-permissive-mode: yes",
                    "unbound-control flush_zone .", "unbound-control flush_bogus"):
            host.run_expect([0], cmd)
        last: list[str] = []

        def upstream_answers() -> bool:
            last[:] = [_status(dig(host, "open.example.org"))]
            return last[0] == "NOERROR"

        try:  # TCG on a busy machine: the extra unbound can take a while to come up
            _wait_for(upstream_answers, "the fake upstream", timeout=240)
        except AssertionError as exc:
            units = host.run("systemctl status --no-pager deelit-test-upstream unbound; "
                             "journalctl --no-pager -n 40 -u deelit-test-upstream -u unbound").stdout
            raise AssertionError(f"{exc}; last dig: {last}\n{units[-3000:]}") from None
        yield host
    finally:
        host.run("systemctl stop deelit-test-upstream deelit-test-listeners")
        host.run("ip link del deelit-t0")
        host.run("systemctl reload unbound")


def _wait_for(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what}: not ready after {timeout:.0f} s")


def _status(result: Any) -> str:
    for line in result.stdout.splitlines():
        if "status:" in line:
            return str(line.split("status:")[1].split(",")[0].strip())
    return f"no answer (rc {result.rc}): {result.stdout.strip()[-200:]} {result.stderr.strip()[-200:]}"


def _records(result: Any) -> list[tuple[str, str, str]]:
    out = []
    for line in result.stdout.splitlines():
        fields = line.split()
        if line and not line.startswith(";") and len(fields) >= 5:
            out.append((fields[0].rstrip("."), fields[3], fields[4].rstrip(".")))
    return out


def test_control_name_resolves(testnet: Any) -> None:
    """Without this, an NXDOMAIN below could come from a resolver that answers nothing."""
    result = dig(testnet, "open.example.org")
    assert _status(result) == "NOERROR"
    assert ("open.example.org", "A", "192.0.2.20") in _records(result)


@pytest.mark.parametrize("name", ["blocked.example.org", "deeper.blocked.example.org", "dns.google"])
def test_blocked_names_are_nxdomain(testnet: Any, name: str) -> None:
    assert _status(dig(testnet, name)) == "NXDOMAIN"
    assert testnet.run(f"runuser -u {CHILD} -- getent ahosts {name}").rc != 0


def test_allow_list_beats_the_blocklist(testnet: Any) -> None:
    result = dig(testnet, "allowed.dns.google")
    assert ("allowed.dns.google", "A", "192.0.2.23") in _records(result)


@pytest.mark.parametrize("server,extra", [(OUTSIDE_DNS_V4, ""), (OUTSIDE_DNS_V4, "+tcp"),
                                          (OUTSIDE_DNS_V6, ""), (OUTSIDE_DNS_V6, "+tcp")])
def test_asking_another_server_gets_the_local_answer(testnet: Any, server: str, extra: str) -> None:
    """Nothing listens on port 53 of these addresses: only the redirect can answer."""
    blocked = dig(testnet, "blocked.example.org", server, extra)
    assert _status(blocked) == "NXDOMAIN", blocked.stdout
    google = dig(testnet, "www.google.com", server, extra)
    assert ("www.google.com", "CNAME", "forcesafesearch.google.com") in _records(google)


@pytest.mark.parametrize("name,target", sorted(SAFESEARCH.items()))
def test_safesearch_names(testnet: Any, name: str, target: str) -> None:
    result = dig(testnet, name)
    assert _status(result) == "NOERROR"
    records = _records(result)
    assert (name, "CNAME", target) in records
    assert (target, "A", FAKE_ANSWERS[target]) in records


def test_doh_canary_is_nxdomain(testnet: Any) -> None:
    assert _status(dig(testnet, "use-application-dns.net")) == "NXDOMAIN"


CONNECT = ("python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), "
           "timeout=5); print(\"connected\")' {addr} {port}")


def connect(host: Any, user: str, addr: str, port: int) -> str:
    result = run(host, f"runuser -u {user} -- " + CONNECT.format(addr=addr, port=port))
    return "connected" if "connected" in result.stdout else result.stderr.strip().splitlines()[-1]


def test_dns_over_tls_refused_except_for_the_resolver(testnet: Any) -> None:
    """A listener waits on OUTSIDE_DOT:853: only the firewall can refuse the child."""
    assert "ConnectionRefusedError" in connect(testnet, CHILD, OUTSIDE_DOT, 853)
    assert "ConnectionRefusedError" in connect(testnet, "root", OUTSIDE_DOT, 853)
    assert connect(testnet, "unbound", OUTSIDE_DOT, 853) == "connected"


@pytest.mark.parametrize("addr", [TEST_DOH_V4, TEST_DOH_V6])
def test_doh_endpoints_refused_on_443(testnet: Any, addr: str) -> None:
    assert "ConnectionRefusedError" in connect(testnet, CHILD, addr, 443)


def test_known_doh_endpoints_in_the_running_sets(live: Any) -> None:
    for set_name, addr in [("doh_v4", "1.1.1.1"), ("doh_v4", "8.8.8.8"), ("doh_v4", "9.9.9.9"),
                           ("doh_v6", "2606:4700:4700::1111"), ("doh_v6", "2001:4860:4860::8888")]:
        live.run_expect([0], f"nft get element inet deelit_filter {set_name} '{{ {addr} }}'")


def test_child_cannot_sudo(live: Any, child: str) -> None:
    result = as_child(live, "LC_ALL=C sudo -n true")  # the images speak Dutch
    assert result.rc != 0
    assert "password is required" in result.stderr or "not in the sudoers" in result.stderr or \
        "may not run sudo" in result.stderr, result.stderr


@pytest.mark.parametrize("path", ROOT_FILES)
def test_child_cannot_change_the_configuration(live: Any, child: str, path: str) -> None:
    before = live.run(f"sha256sum {path}").stdout
    assert as_child(live, f"echo 'nameserver 192.0.2.53' >> {path}").rc != 0
    assert as_child(live, f"mv {path} {path}.x").rc != 0
    assert live.run(f"sha256sum {path}").stdout == before


def test_child_cannot_flush_or_stop_the_filter(live: Any, child: str) -> None:
    assert as_child(live, "/usr/sbin/nft flush ruleset").rc != 0
    assert as_child(live, "/usr/sbin/nft delete table inet deelit_filter").rc != 0
    assert as_child(live, "systemctl stop unbound.service nftables.service").rc != 0
    pid = live.check_output("systemctl show -P MainPID unbound.service")
    assert int(pid) > 0
    assert as_child(live, f"kill {pid}").rc != 0
    live.run_expect([0], "nft list chain inet deelit_filter dns_redirect")
    assert live.run("systemctl is-active unbound.service").stdout.strip() == "active"


def test_child_cannot_add_a_system_connection(live: Any, child: str) -> None:
    nm = as_child(live, "nmcli connection add type ethernet ifname '*' con-name other-dns "
                        f"ipv4.dns {OUTSIDE_DNS_V4} ipv4.ignore-auto-dns yes")
    assert nm.rc != 0, nm.stdout
    assert "other-dns" not in live.run("nmcli -t -f NAME connection show").stdout


@pytest.fixture
def seat_session(live: Any, child: str) -> Iterator[int]:
    """A process of the child in an active local session on a VT, as if at the keyboard."""
    live.run_expect([0], "systemd-run --unit=deelit-test-seat -p PAMName=login -p User=child "
                         "-p TTYPath=/dev/tty5 -p StandardInput=tty -p StandardOutput=tty sleep 600")
    live.run("chvt 5")
    # The unit's main process runs as root through PAM before it becomes the child's `sleep`
    # (seconds under TCG): asking polkit about it then would ask about root.
    _wait_for(lambda: live.run(f"pgrep -u {CHILD} -x sleep").rc == 0, "the child's process", 60)
    pid = int(live.check_output(f"pgrep -n -u {CHILD} -x sleep"))
    _wait_for(lambda: _tty_session(live, "tty5") is not None, "a session on tty5", 30)
    yield pid
    live.run("systemctl stop deelit-test-seat")
    live.run("chvt 1")


def _tty_session(host: Any, tty: str) -> str | None:
    sessions = json.loads(host.check_output("loginctl list-sessions --json=short"))
    return next((str(s["session"]) for s in sessions if s.get("tty") == tty), None)


def test_polkit_refuses_system_connections_even_at_the_keyboard(live: Any, seat_session: int) -> None:
    """System connections, global DNS and the host name need the administrator (Debian 13's
    NetworkManager policy already asks for it; the role's rule holds it whatever a later
    package says). The rule is in force: NetworkManager's own default lets the active local
    user switch networking off and on, the rule does not, shown by moving it aside."""
    session = _tty_session(live, "tty5")
    assert session is not None
    shown = live.check_output(f"loginctl show-session {session} -p Remote -p Active -p Name -p Leader")
    assert set(shown.splitlines()) == {"Remote=no", "Active=yes", f"Name={CHILD}", f"Leader={seat_session}"}

    def allowed(action: str) -> bool:
        return live.run(f"pkcheck --action-id org.freedesktop.NetworkManager.{action} "
                        f"--process {seat_session}").rc == 0

    assert allowed("settings.modify.own")  # the session counts as active and local
    assert not allowed("settings.modify.system")
    assert not allowed("settings.modify.global-dns")
    assert not allowed("settings.modify.hostname")
    assert not allowed("enable-disable-network")
    _rule_is_what_refuses(live, lambda: allowed("enable-disable-network"))


def _rule_is_what_refuses(live: Any, allowed: Callable[[], bool]) -> None:
    """Allowed with the role's polkit rule moved aside, refused again once it is back."""
    rule = "/etc/polkit-1/rules.d/50-deelit-filter.rules"
    live.run_expect([0], f"mkdir -p /run/deelit-test && mv {rule} /run/deelit-test/rule.saved")
    try:
        _wait_for(allowed, "polkit without the rule", 20)
    finally:
        live.run_expect([0], f"mv /run/deelit-test/rule.saved {rule}")
    _wait_for(lambda: not allowed(), "polkit with the rule back", 20)


def test_child_cannot_change_the_clock_or_the_time_zone(live: Any, seat_session: int) -> None:
    """Moving the clock or the time zone moves the hours screen time allows. Debian 13 asks the
    administrator already; the role's rule holds whatever a rule read after it allows (a
    desktop's or a later package's), shown with such a rule in place and the role's moved
    aside. And as the child, without polkit: refused."""
    def allowed(action: str) -> bool:
        return live.run(f"pkcheck --action-id org.freedesktop.timedate1.{action} "
                        f"--process {seat_session}").rc == 0

    permissive = "/etc/polkit-1/rules.d/90-deelit-test-permissive.rules"
    live.run_expect([0], f"printf '%s' {shlex.quote(PERMISSIVE_TIMEDATE_RULE)} > {permissive}")
    try:
        time.sleep(3)  # polkitd rereads its rules when the folder changes
        for action in ("set-time", "set-timezone", "set-ntp", "set-local-rtc"):
            assert not allowed(action), action
        _rule_is_what_refuses(live, lambda: allowed("set-timezone"))
    finally:
        live.run(f"rm -f {permissive}")
    zone, clock = live.check_output("timedatectl show -p Timezone --value"), time.time()
    assert as_child(live, "timedatectl set-timezone Pacific/Kiritimati").rc != 0
    assert as_child(live, "timedatectl set-time '2031-01-01 12:00:00'").rc != 0
    assert as_child(live, "date -s '2031-01-01 12:00:00'").rc != 0
    assert live.check_output("timedatectl show -p Timezone --value") == zone
    assert abs(float(live.check_output("date +%s")) - clock) < 600


PERMISSIVE_TIMEDATE_RULE = """polkit.addRule(function (action, subject) {
    if (action.id.indexOf("org.freedesktop.timedate1.") == 0) { return polkit.Result.YES; }
});
"""


def _child_home(live: Any) -> str:
    return live.check_output(f"getent passwd {CHILD} | cut -d: -f6")


def test_child_cannot_run_what_it_writes(live: Any, child: str, fvars: dict[str, Any]) -> None:
    """A downloaded program (a portable browser with its own DNS over HTTPS, Tor Browser): copied
    into each place the child can write, it runs neither directly nor through the loader."""
    places = [p if p != "/home" else _child_home(live)
              for p in fvars.get("parental_filter_noexec_paths", ["/home", "/tmp", "/var/tmp", "/dev/shm"])]
    assert places, "the profile turned noexec off: nothing to show"
    for place in places:
        program = f"{place}/portable-browser"
        assert as_child(live, f"cp /usr/bin/true {program} && chmod 755 {program}").rc == 0, place
        direct = as_child(live, program)
        assert direct.rc == 126 and "Permission denied" in direct.stderr, (place, direct.stderr)
        loader = as_child(live, f"/lib64/ld-linux-x86-64.so.2 {program}")
        assert loader.rc != 0, (place, loader.stderr)
        live.run(f"rm -f {program}")


def test_no_place_the_child_can_write_runs_programs(live: Any, child: str) -> None:
    """Every folder the child can write to, anywhere, sits on a noexec mount (the topmost mount
    at that path: a bind mount of a folder over itself counts, as the kernel counts it)."""
    mounts = [line.split(" ") for line in live.check_output("findmnt -rn -o TARGET,FSTYPE,OPTIONS").splitlines()]
    searched = {target for target, fstype, options in mounts
                if "noexec" not in options.split(",") and fstype not in ("proc", "sysfs", "mqueue")
                and not target.startswith(("/proc/", "/sys/"))}
    writable: set[str] = set()
    for target in sorted(searched):
        out = as_child(live, f"find {shlex.quote(target)} -xdev -type d -writable -print 2>/dev/null", 300)
        writable.update(out.stdout.split())
    runs = [path for path in sorted(writable)
            if "noexec" not in live.check_output(f"findmnt -n -o OPTIONS -T {shlex.quote(path)}").split(",")]
    assert runs == [], f"the child can write, and run programs, in {runs}"
    assert writable, "found no folder the child can write: the search itself is broken"


def test_child_cannot_run_programs_from_its_login_runtime_folder(live: Any, seat_session: int) -> None:
    uid = live.check_output(f"id -u {CHILD}")
    runtime = f"/run/user/{uid}"
    _wait_for(lambda: live.run(f"mountpoint -q {runtime}").rc == 0, "the child's runtime folder", 30)
    assert "noexec" in live.check_output(f"findmnt -rn -o OPTIONS {runtime}").split(",")
    program = f"{runtime}/portable-browser"
    assert as_child(live, f"cp /usr/bin/true {program} && chmod 755 {program}").rc == 0
    assert as_child(live, program).rc == 126


# --- blocklist refresh ---------------------------------------------------------------------------


@pytest.fixture
def list_server(testnet: Any) -> Iterator[Any]:
    testnet.run_expect([0], "mkdir -p /run/deelit-test/lists")
    testnet.run_expect([0], f"systemd-run --unit=deelit-test-lists python3 -m http.server {LIST_PORT} "
                            "--bind 127.0.0.1 --directory /run/deelit-test/lists")
    _wait_for(lambda: testnet.run(f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {LIST_PORT}))'").rc == 0,
              "the list server", 30)
    yield testnet
    testnet.run("systemctl stop deelit-test-lists")


def update(host: Any, name: str) -> Any:
    return run(host, f"/usr/local/sbin/deelit-filter-update --url http://127.0.0.1:{LIST_PORT}/{name}", 120)


def publish(host: Any, name: str, text: str) -> None:
    host.run_expect([0], f"printf %s {shlex.quote(text)} > /run/deelit-test/lists/{name}")


def test_refresh_takes_a_good_list_and_keeps_it_through_bad_ones(list_server: Any) -> None:
    host = list_server
    conf = "/var/lib/deelit-filter/blocklist.conf"
    publish(host, "good.txt", "# a list\nnewly-blocked.example.org\n0.0.0.0 hosts-format.example.org\n"
                              "127.0.0.1 localhost\n")
    good = update(host, "good.txt")
    assert good.rc == 0, good.stderr
    for name in ("newly-blocked.example.org", "hosts-format.example.org", "blocked.example.org"):
        assert _status(dig(host, name)) == "NXDOMAIN", name
    kept = host.check_output(f"sha256sum {conf}")

    publish(host, "html.txt", "<html><body>Service unavailable</body></html>\n")
    publish(host, "empty.txt", "# nothing\n")
    publish(host, "half.txt", "fine.example.org\nnot a name at all\n")
    for name, why in [("html.txt", "not a host name"), ("empty.txt", "fewer than"),
                      ("half.txt", "not a host name"), ("missing.txt", "download failed")]:
        result = update(host, name)
        assert result.rc == 1, (name, result.stderr)
        assert why in result.stderr and "keeping the last good list" in result.stderr, result.stderr
        assert host.check_output(f"sha256sum {conf}") == kept, name
        assert _status(dig(host, "newly-blocked.example.org")) == "NXDOMAIN", name
    assert _status(dig(host, "fine.example.org")) != "NXDOMAIN"


def test_timer_unit_keeps_the_list_when_the_server_is_down(live: Any, fvars: dict[str, Any]) -> None:
    if not fvars.get("parental_filter_blocklist_url"):
        pytest.skip("no parental_filter_blocklist_url in this profile: no timer (filter-test sets one)")
    conf = "/var/lib/deelit-filter/blocklist.conf"
    before = live.check_output(f"sha256sum {conf}")
    live.run("systemctl start deelit-filter-update.service")  # nothing serves the configured URL
    assert live.run("systemctl is-failed deelit-filter-update.service").stdout.strip() == "failed"
    log = live.check_output("journalctl -b -u deelit-filter-update.service --no-pager -o cat")
    assert "download failed" in log and "keeping the last good list" in log
    assert live.check_output(f"sha256sum {conf}") == before
    assert live.service("deelit-filter-update.timer").is_running
