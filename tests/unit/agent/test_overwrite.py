"""The overwrite's ChaCha20 stream, its full and sampled read-back, and `--verify full` from the
CLI to the certificate, on plain files (O_DIRECT where the filesystem allows it; no root)."""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.agent import overwrite
from provisioner.agent.blockdev import DiskIdentity
from provisioner.agent.certificate import Certificate
from provisioner.agent.wipe import check_verify
from provisioner.errors import DeelitError

BLOCK = overwrite.BLOCK
CHUNK = overwrite.CHUNK
SIZE = 2 * CHUNK + 5 * BLOCK + 3 * 512  # two chunks, a partial one, and a short last block


def _rotl(v: int, n: int) -> int:
    return ((v << n) | (v >> (32 - n))) & 0xFFFFFFFF


def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    """RFC 8439 section 2.3, written out here to pin the stream independently of `cryptography`."""
    consts = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    state = consts + list(struct.unpack("<8I", key)) + [counter] + list(struct.unpack("<3I", nonce))
    x = list(state)

    def qr(a: int, b: int, c: int, d: int) -> None:
        x[a] = (x[a] + x[b]) & 0xFFFFFFFF
        x[d] = _rotl(x[d] ^ x[a], 16)
        x[c] = (x[c] + x[d]) & 0xFFFFFFFF
        x[b] = _rotl(x[b] ^ x[c], 12)
        x[a] = (x[a] + x[b]) & 0xFFFFFFFF
        x[d] = _rotl(x[d] ^ x[a], 8)
        x[c] = (x[c] + x[d]) & 0xFFFFFFFF
        x[b] = _rotl(x[b] ^ x[c], 7)

    for _ in range(10):
        qr(0, 4, 8, 12), qr(1, 5, 9, 13), qr(2, 6, 10, 14), qr(3, 7, 11, 15)
        qr(0, 5, 10, 15), qr(1, 6, 11, 12), qr(2, 7, 8, 13), qr(3, 4, 9, 14)
    return struct.pack("<16I", *((a + b) & 0xFFFFFFFF for a, b in zip(x, state, strict=True)))


def test_rfc8439_block_function():
    """The reference above against RFC 8439's own test vector (section 2.3.2)."""
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a00000000")
    assert chacha20_block(key, 1, nonce)[:16].hex() == "10f1e7e4d13b5915500fdd1fa32071c4"


@pytest.mark.parametrize("position", [0, 1, 4095, 2**32 - 1, 2**32, 2**40 + 3])
def test_stream_is_chacha20_at_offset_over_64(position):
    """Stream byte 64*p starts ChaCha20 block p: low 32 bits the counter, high ones nonce word 0."""
    seed = 20
    want = chacha20_block(
        overwrite.stream_key(seed), position & 0xFFFFFFFF, struct.pack("<3I", position >> 32, 0, 0)
    )
    assert overwrite.stream(seed, position * 64, 64) == want


def test_stream_runs_on_across_the_32_bit_counter_wrap():
    """At 256 GiB the 32-bit counter wraps: a range across it is still the same stream."""
    wrap = 64 << 32
    across = overwrite.stream(9, wrap - 3 * CHUNK // 2, 2 * CHUNK)
    assert across[: 3 * CHUNK // 2] == overwrite.stream(
        9, wrap - 3 * CHUNK // 2, 3 * CHUNK // 2
    )
    assert across[3 * CHUNK // 2 :] == overwrite.stream(9, wrap, CHUNK // 2)


def test_any_range_is_a_slice_of_one_stream():
    whole = overwrite.stream(5, 0, 3 * CHUNK + 999)
    for offset, length in [(0, 1), (1, 63), (63, 130), (BLOCK - 7, BLOCK + 9),
                           (CHUNK - 100, 300), (2 * CHUNK + 17, 5000)]:
        assert overwrite.stream(5, offset, length) == whole[offset : offset + length]
    with pytest.raises(ValueError, match="multiple of 64"):
        overwrite.stream_into(5, 32, memoryview(bytearray(64)))


def test_seeds_give_unrelated_streams():
    a, b = overwrite.stream(1, 0, BLOCK), overwrite.stream(2, 0, BLOCK)
    assert a != b and a.count(0) < BLOCK // 100  # random-looking, not zeros
    # pinned, so that a change of the key derivation is a decision, not an accident
    assert hashlib.sha256(overwrite.stream(1, 0, 2**20)).hexdigest()[:16] == "f6cf5f7ec6a0965c"


@pytest.fixture
def written(tmp_path: Path) -> Path:
    target = tmp_path / "disk.img"
    target.write_bytes(b"\xa5" * SIZE)
    overwrite.write_pass(str(target), SIZE, seed=42)
    return target


def test_every_block_regenerates_what_was_written(written: Path):
    data = written.read_bytes()
    assert len(data) == SIZE
    total = overwrite.block_count(SIZE)
    assert overwrite.block_len(SIZE, total - 1) == 3 * 512  # the last block is short
    for i in range(total):
        length = overwrite.block_len(SIZE, i)
        assert overwrite.block_data(42, i, length) == data[i * BLOCK : i * BLOCK + length], i
    for offset, length in [(0, SIZE), (12345, 70000), (SIZE - 1000, 1000), (2**20 - 1, 2), (CHUNK - 5, 10)]:
        assert overwrite.stream(42, offset, length) == data[offset : offset + length]


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_full_verification_passes_and_says_so(written: Path):
    v = overwrite.verify_pass(str(written), SIZE, 42, full=True)
    total = overwrite.block_count(SIZE)
    assert v.passed and v.scope == "full" and v.mismatches == 0
    assert v.blocks_sampled == v.blocks_total == total and v.percent_sampled == 100.0
    assert v.sample_seed is None and "every block" in v.method and "ChaCha20" in v.method
    assert not overwrite.verify_pass(str(written), SIZE, 43, full=True).passed


@pytest.mark.parametrize(
    "offset", [0, BLOCK - 1, 2**20 + 3 * BLOCK + 17, CHUNK, 2 * CHUNK - 1, SIZE - 3 * 512, SIZE - 1]
)
def test_full_verification_finds_one_changed_byte_anywhere(written: Path, offset: int):
    flip(written, offset)
    v = overwrite.verify_pass(str(written), SIZE, 42, full=True)
    assert not v.passed and v.mismatches == 1 and v.mismatch_blocks == [offset // BLOCK]


def test_full_verification_reports_progress_to_the_end(written: Path):
    seen: list[tuple[int, int]] = []
    overwrite.verify_pass(str(written), SIZE, 42, full=True, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (SIZE, SIZE) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_sample_verification_reads_only_the_sample(written: Path):
    sample = overwrite.choose_sample(SIZE, sample_seed=3)
    v = overwrite.verify_pass(str(written), SIZE, 42, sample)
    assert v.passed and v.scope == "sample" and v.sample_seed == 3
    assert v.blocks_sampled == len(sample.indices) < v.blocks_total
    outside = next(i for i in range(v.blocks_total) if i not in sample.indices)
    flip(written, outside * BLOCK + 5)
    assert overwrite.verify_pass(str(written), SIZE, 42, sample).passed  # not read: not seen
    assert overwrite.verify_pass(str(written), SIZE, 42, full=True).mismatch_blocks == [outside]
    inside = sample.indices[len(sample.indices) // 2]
    flip(written, inside * BLOCK + BLOCK // 2)
    assert overwrite.verify_pass(str(written), SIZE, 42, sample).mismatch_blocks == [inside]


def test_runs_group_consecutive_blocks_up_to_a_chunk():
    n = overwrite.CHUNK_BLOCKS
    last = n + 30
    size = last * BLOCK + 512
    spans = list(overwrite._runs(size, [0, 1, 2, 5, *range(10, n + 14), last]))
    assert spans == [
        (0, 3 * BLOCK),
        (5 * BLOCK, BLOCK),
        (10 * BLOCK, CHUNK),  # a run longer than a chunk is split
        ((n + 10) * BLOCK, 4 * BLOCK),
        (last * BLOCK, 512),  # the short last block
    ]


def test_pipeline_raises_the_helpers_error_and_leaves_no_thread():
    before = threading.active_count()

    def fill(span: overwrite.Span, view: memoryview) -> None:
        if span[0] == 3:
            raise OSError(5, "Input/output error")
        view[:1] = b"x"

    with pytest.raises(OSError, match="Input/output"):
        for _span, view in overwrite._pipelined([(i, 10) for i in range(10)], fill):
            assert bytes(view[:1]) == b"x"
    spans = overwrite._pipelined([(i, 10) for i in range(100)], fill)
    next(spans)
    spans.close()  # the caller stops early: the helper is stopped and joined
    assert threading.active_count() == before


def test_a_target_that_cannot_be_opened_is_an_error(tmp_path: Path):
    with pytest.raises(DeelitError, match="cannot open"):
        overwrite.write_pass(str(tmp_path / "missing" / "disk"), SIZE, seed=1)


def test_full_verification_only_for_the_overwrite():
    check_verify("sample", "nvme-format")
    check_verify("full", "overwrite")
    with pytest.raises(DeelitError, match="--method overwrite"):
        check_verify("full", "nvme-sanitize-crypto")
    with pytest.raises(DeelitError, match="sample or full"):
        check_verify("everything", "overwrite")


OLD_CERTIFICATE = {  # as written before the full read-back: no `scope`
    "schema": "deelit-wipe-certificate/1",
    "certificate_id": "0b9f3c1e-8f3a-4f0e-9a43-2f1f5d3c9a10",
    "organisation": "DEEL IT Gent",
    "technician_id": "tech-07",
    "started_at": "2025-01-01T10:00:00+00:00",
    "finished_at": "2025-01-01T10:20:00+00:00",
    "computer": {"maker": "LENOVO", "model": "E320", "serial": "LR9NKZ7"},
    "media": {"size_bytes": 33554432, "type": "loop", "rotational": False, "kernel_name": "loop0"},
    "sanitization": {"nist_category": "Clear", "method": "overwrite", "technique": "one pass",
                     "tool": "deelit", "tool_version": "deelit 0.1", "commands": ["overwrite"]},
    "hidden_areas": [],
    "verification": {"method": "read-back of sampled blocks", "block_size": 65536,
                     "blocks_total": 512, "blocks_sampled": 38, "percent_sampled": 7.422,
                     "first_and_last_mib": True, "sample_seed": 77, "mismatches": 0,
                     "mismatch_blocks": [], "passed": True},
    "result": "passed",
    "errors": [],
    "post_sanitization_destination": "reuse in the DEEL IT loan pool",
}


def test_old_certificates_still_read_as_sampled():
    cert = Certificate.model_validate(OLD_CERTIFICATE)
    assert cert.verification.scope == "sample" and cert.verification.sample_seed == 77


def test_cli_verify_full_reaches_the_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`deelit agent wipe … --verify full` on a file posing as a loop disk, through the real
    pass and read-back, to the certificate on disk."""
    import typer

    from provisioner.agent import inventory
    from provisioner.agent import wipe as wiping
    from provisioner.agent.commands import register

    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\x5a" * SIZE)
    ident = DiskIdentity(path=str(disk), name="loop9", size_bytes=SIZE, logical_block_size=512,
                         rotational=False, kind="loop", model="file", serial="F1")
    monkeypatch.setattr(wiping, "identify", lambda device, safety=None: ident)
    monkeypatch.setattr(wiping, "refuse_if_in_use", lambda ident, safety=None: None)

    def no_dmi() -> None:
        raise DeelitError("no dmidecode in the test")

    monkeypatch.setattr(inventory, "collect", no_dmi)
    app = typer.Typer()
    register(app)
    token = wiping.confirmation_token(ident)
    certs = tmp_path / "certs"
    args = ["agent", "wipe", str(disk), "--method", "overwrite", "--confirm", token,
            "--point", "DEEL IT Gent", "--technician", "t07", "--cert-dir", str(certs)]
    dry = CliRunner().invoke(app, ["agent", "wipe", str(disk), "--dry-run", "--verify", "full"])
    assert dry.exit_code == 0, dry.output
    shown = " ".join(dry.output.split())  # rich wraps long lines
    assert "read back every block" in shown and "--verify full" in shown

    result = CliRunner().invoke(app, [*args, "--verify", "full"])
    assert result.exit_code == 0, result.output
    assert "verified: full read-back" in result.output
    (cert_path,) = certs.iterdir()
    ver = json.loads(cert_path.read_text())["verification"]
    assert ver["scope"] == "full" and ver["passed"] and "every block" in ver["method"]
    assert ver["blocks_sampled"] == ver["blocks_total"] == overwrite.block_count(SIZE)
    assert b"\x5a" * 512 not in disk.read_bytes()

    cert_path.unlink()
    result = CliRunner().invoke(app, args)  # the default stays the sample
    assert result.exit_code == 0, result.output
    (cert_path,) = certs.iterdir()
    assert json.loads(cert_path.read_text())["verification"]["scope"] == "sample"

    bad = CliRunner().invoke(app, [*args, "--verify", "most"])
    assert bad.exit_code != 0 and "sample or full" in str(bad.exception)
