"""A build's mirror is the build's: a `ci` build that fetches through a café-style apt cache
(here a forwarding proxy on 127.0.0.1 in front of the host's own mirror) leaves no trace of
it in the image: not in the apt sources the laptop keeps, nor anywhere in the tree, the disk
and netboot artifacts, the SBOM or the checksums (only the manifest records the profile as
written). The laptop keeps the build host's sources (the default).

Real mmdebstrap and ansible-core; the proxy forwards to the host's configured Debian mirror,
as the build itself would go there.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from provisioner.build import pipeline
from provisioner.build.cache import Cache
from provisioner.build.mirrors import resolve_mirrors
from provisioner.formats import manifest as fm
from provisioner.profile import load_profile

pytestmark = [pytest.mark.slow, pytest.mark.root]


class AptCache(ThreadingHTTPServer):
    """Forwards GET /debian/… and /debian-security/… to the host's mirrors, counting them."""

    daemon_threads = True

    def __init__(self, upstream: dict[str, str]) -> None:
        self.upstream, self.requests = upstream, 0
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: AptCache

    def do_GET(self) -> None:
        prefix, _, rest = self.path.lstrip("/").partition("/")
        if prefix not in self.server.upstream:
            self.send_error(404)
            return
        self.server.requests += 1
        try:
            with urllib.request.urlopen(f"{self.server.upstream[prefix]}/{rest}", timeout=120) as up:
                self.send_response(up.status)
                for name in ("Content-Type", "Content-Length", "Last-Modified"):
                    if up.headers.get(name):
                        self.send_header(name, up.headers[name])
                self.end_headers()
                shutil.copyfileobj(up, self.wfile, 1 << 20)
        except urllib.error.HTTPError as exc:
            self.send_error(exc.code)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def apt_cache() -> Iterator[AptCache]:
    host = resolve_mirrors(None, None)
    upstream = {"debian": host.debian, **({"debian-security": host.security} if host.security else {})}
    server = AptCache(upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_build_mirror_never_reaches_the_image(apt_cache: AptCache, tmp_path: Path) -> None:
    host = resolve_mirrors(None, None)
    profile_file = tmp_path / "ci-cafe.yaml"
    security = f"security_mirror: {apt_cache.base}/debian-security\n" if host.security else ""
    profile_file.write_text(
        "name: ci-cafe\nextends: ci\n"
        f"mirror: {apt_cache.base}/debian\n{security}"
        "outputs:\n  netboot:\n    compression_level: 1\n")
    out = tmp_path / "out"
    # a cache of its own: the port, and so every cache key, is new on each run
    ctx = pipeline.build(load_profile(str(profile_file)), out, Cache(tmp_path / "cache"))
    assert apt_cache.requests > 0, "the build did not fetch through the build mirror"
    assert ctx.tree is not None

    marker = apt_cache.base.removeprefix("http://")  # 127.0.0.1:PORT
    found = subprocess.run(["grep", "-rlF", "--binary-files=text", marker, str(ctx.tree), str(out)],
                           capture_output=True, text=True, check=False)
    # The manifest records the profile as written (provenance for whoever checks the build);
    # nothing that reaches a laptop, nor any other output, may name the build's mirror.
    assert found.stdout.split() == [str(out / "manifest.json")], f"the build mirror {marker} is in: {found.stdout}"
    manifest = fm.read(out / fm.FILENAME)
    assert manifest.profile.resolved["mirror"] == f"{apt_cache.base}/debian"
    assert marker not in manifest.model_dump_json(exclude={"profile"})

    sources = (ctx.tree / "etc/apt/sources.list.d/debian.sources").read_text()
    assert f"URIs: {host.debian}" in sources  # what the laptop keeps: the host's own sources
    assert not (ctx.tree / "etc/apt/sources.list").exists()
    assert not (ctx.tree / "etc/apt/deelit-build").exists()
    assert not (ctx.tree / "etc/apt/apt.conf.d/00deelit-build-sources").exists()
