"""Which erase a disk gets and the exact command lines, from capability data (no hardware)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.agent import overwrite
from provisioner.agent.blockdev import DiskIdentity, confirmation_token
from provisioner.agent.wipe_plan import ATA_PASSWORD, SUSPEND_HINT, choose_plan, sanitize_status
from provisioner.agent.wipe_probe import (
    AtaSecurity,
    ata_security_from_hdparm,
    ata_security_from_smartctl,
    hidden_area_notes,
    nvme_caps,
    parse_dco,
    parse_hpa,
)
from provisioner.errors import DeelitError


def nvme_disk() -> DiskIdentity:
    return DiskIdentity(
        path="/dev/nvme0n1",
        name="nvme0n1",
        size_bytes=512110190592,
        logical_block_size=512,
        rotational=False,
        kind="nvme",
        model="WDC PC SN730",
        serial="2115",
    )


def ata_disk() -> DiskIdentity:
    return DiskIdentity(
        path="/dev/sda",
        name="sda",
        size_bytes=500107862016,
        logical_block_size=512,
        rotational=False,
        kind="ata",
        model="Samsung SSD 860 EVO 500GB",
        serial="S3Z1",
    )


# nvme id-ctrl / id-ns JSON fields (assumed nvme-cli 2.x key names; see wipe_probe.py docstring)
SANITIZE_ALL = {"oacs": 0x17, "fna": 0x4, "sanicap": 0x7}
FORMAT_CRYPTO = {"oacs": 0x17, "fna": 0x4, "sanicap": 0}
FORMAT_ONLY = {"oacs": 0x2, "fna": 0x0, "sanicap": 0}  # like QEMU's emulated controller
NOTHING = {"oacs": 0x0, "fna": 0, "sanicap": 0}


def test_nvme_prefers_sanitize_crypto():
    plan = choose_plan(nvme_disk(), "auto", nvme=nvme_caps(SANITIZE_ALL, {"flbas": 0}))
    assert plan.method == "nvme-sanitize-crypto" and plan.nist_category == "Purge"
    assert plan.commands == [["nvme", "sanitize", "/dev/nvme0", "--sanact=4"]]
    assert plan.poll == ["nvme", "sanitize-log", "/dev/nvme0", "--output-format=json"]


def test_nvme_block_erase_when_no_crypto():
    plan = choose_plan(nvme_disk(), "auto", nvme=nvme_caps({"oacs": 2, "sanicap": 0b10}))
    assert plan.method == "nvme-sanitize-block"
    assert plan.commands == [["nvme", "sanitize", "/dev/nvme0", "--sanact=2"]]


def test_nvme_format_with_crypto_erase_keeps_the_current_lba_format():
    plan = choose_plan(nvme_disk(), "auto", nvme=nvme_caps(FORMAT_CRYPTO, {"flbas": 0x11}))
    assert plan.method == "nvme-format" and plan.nist_category == "Purge"
    assert plan.commands == [["nvme", "format", "/dev/nvme0n1", "--lbaf=1", "--ses=2", "--force"]]


def test_nvme_format_user_data_erase_without_crypto():
    plan = choose_plan(nvme_disk(), "auto", nvme=nvme_caps(FORMAT_ONLY, {"flbas": 0}))
    assert plan.commands == [["nvme", "format", "/dev/nvme0n1", "--lbaf=0", "--ses=1", "--force"]]


def test_nvme_without_firmware_erase_falls_back_to_overwrite():
    plan = choose_plan(nvme_disk(), "auto", nvme=nvme_caps(NOTHING))
    assert plan.method == "overwrite" and plan.nist_category == "Clear" and plan.commands == []


def test_explicit_nvme_method_that_the_drive_lacks_is_refused():
    with pytest.raises(DeelitError, match="Sanitize"):
        choose_plan(nvme_disk(), "nvme-sanitize", nvme=nvme_caps(FORMAT_ONLY))
    with pytest.raises(DeelitError, match="Format NVM"):
        choose_plan(nvme_disk(), "nvme-format", nvme=nvme_caps(NOTHING))
    # the user may still ask for a format where sanitize would be preferred
    plan = choose_plan(nvme_disk(), "nvme-format", nvme=nvme_caps(SANITIZE_ALL))
    assert plan.method == "nvme-format"


def test_ata_security_word_from_the_real_860evo_report(hardware_fixtures):
    data = json.loads(
        (hardware_fixtures / "smart-json" / "ssd-samsung-860evo-wear-leveling-81.json").read_text()
    )
    sec = ata_security_from_smartctl(data)
    assert sec is not None
    # state 33 = supported (bit 0) + enhanced erase (bit 5); not enabled, not frozen
    assert (sec.supported, sec.enhanced_supported, sec.frozen, sec.enabled) == (
        True,
        True,
        False,
        False,
    )
    plan = choose_plan(ata_disk(), "auto", ata=sec)
    assert plan.method == "ata-erase-enhanced"
    assert plan.commands == [
        ["hdparm", "--user-master", "u", "--security-set-pass", ATA_PASSWORD, "/dev/sda"],
        ["hdparm", "--user-master", "u", "--security-erase-enhanced", ATA_PASSWORD, "/dev/sda"],
    ]


def test_reports_without_security_data_give_none(hardware_fixtures):
    data = json.loads(
        (hardware_fixtures / "smart-json" / "hdd-wd-red-wd20efrx-healthy.json").read_text()
    )
    assert ata_security_from_smartctl(data) is None
    assert choose_plan(ata_disk(), "auto", ata=None).method == "overwrite"


def test_frozen_drive_stops_with_the_suspend_hint():
    frozen = AtaSecurity(supported=True, frozen=True, enhanced_supported=True)
    with pytest.raises(DeelitError) as err:
        choose_plan(ata_disk(), "auto", ata=frozen)
    assert SUSPEND_HINT in str(err.value) and err.value.exit_code == 3
    # overwrite stays possible on a frozen drive, on request
    assert choose_plan(ata_disk(), "overwrite", ata=frozen).method == "overwrite"


def test_plain_erase_when_enhanced_is_not_supported():
    plan = choose_plan(ata_disk(), "ata-erase", ata=AtaSecurity(supported=True))
    assert plan.method == "ata-erase" and plan.commands[1][3] == "--security-erase"


def test_locked_drive_is_refused_with_the_unlock_command():
    with pytest.raises(DeelitError, match="security-disable deelit /dev/sda"):
        choose_plan(ata_disk(), "auto", ata=AtaSecurity(supported=True, enabled=True, locked=True))


HDPARM_I = """
Security:
	Master password revision code = 65534
		supported
	not	enabled
	not	locked
		frozen
	not	expired: security count
		supported: enhanced erase
	2min for SECURITY ERASE UNIT. 8min for ENHANCED SECURITY ERASE UNIT.
Logical Unit WWN Device Identifier: 5002538e40a0b5d4
"""


def test_hdparm_security_section():
    sec = ata_security_from_hdparm(HDPARM_I)
    assert sec == AtaSecurity(
        supported=True,
        enabled=False,
        locked=False,
        frozen=True,
        count_expired=False,
        enhanced_supported=True,
        erase_minutes=2,
        enhanced_erase_minutes=8,
    )
    unfrozen = ata_security_from_hdparm(HDPARM_I.replace("\t\tfrozen", "\tnot\tfrozen"))
    assert unfrozen is not None and not unfrozen.frozen
    plan = choose_plan(ata_disk(), "auto", ata=unfrozen)
    assert plan.timeout_s >= 3600  # at least an hour, twice the drive's own estimate


# A laptop HDD with the normal erase only, as hdparm -I prints it (the layout of public captures).
HDPARM_I_NO_ENHANCED = """
Commands/features:
\tEnabled\tSupported:
\t   *\tSMART feature set
\t    \tSecurity Mode feature set
\t   *\tHost Protected Area feature set
\t   *\tDevice Configuration Overlay feature set
Security:\x20
\tMaster password revision code = 65534
\t\tsupported
\tnot\tenabled
\tnot\tlocked
\tnot\tfrozen
\tnot\texpired: security count
\tnot\tsupported: enhanced erase
\t30min for SECURITY ERASE UNIT.
HW reset results:
\tCBLID- above Vih
\tDevice num = 0 determined by the jumper
Checksum: correct
"""


def test_normal_erase_only_is_still_security_supported():
    """"not supported: enhanced erase" clears the enhanced flag only: this drive was read as
    having no security feature set at all, and got an overwrite instead of its Purge."""
    sec = ata_security_from_hdparm(HDPARM_I_NO_ENHANCED)
    assert sec == AtaSecurity(supported=True, erase_minutes=30)
    plan = choose_plan(ata_disk(), "auto", ata=sec)
    assert plan.method == "ata-erase" and plan.nist_category == "Purge"
    assert plan.confirm == ["hdparm", "-I", "/dev/sda"]  # read back after the erase
    assert ata_security_from_hdparm("Commands/features:\n\tEnabled\tSupported:\n") is None


@pytest.mark.parametrize(
    "text",
    [
        "\n/dev/sdb:\n max sectors   = 0/1, HPA setting seems invalid (buggy kernel device driver?)\n",
        "\n/dev/sdd:\n max sectors   = 66055248/1(156301488?), HPA setting seems invalid\n",
        "\n/dev/sdb:\n max sectors   = 0/0, HPA is disabled\n",
        "\n/dev/sda:\n READ_NATIVE_MAX_ADDRESS_EXT failed: Input/output error\n",
    ],
)
def test_hpa_readings_hdparm_itself_distrusts_are_no_reading(text):
    assert parse_hpa(text) is None


def test_acs3_accessible_max_address_reads_like_an_hpa():
    text = (
        "\n/dev/sda:\n max sectors   = 976771055/976773168, ACCESSIBLE MAX ADDRESS enabled\n"
        "Power cycle your device after every ACCESSIBLE MAX ADDRESS\n"
    )
    assert parse_hpa(text) == (976771055, 976773168)


def test_other_disks_only_overwrite():
    virtio = DiskIdentity(
        path="/dev/vdb",
        name="vdb",
        size_bytes=1 << 30,
        logical_block_size=512,
        rotational=True,
        kind="virtio",
    )
    assert choose_plan(virtio, "auto").method == "overwrite"
    with pytest.raises(DeelitError, match="no firmware erase"):
        choose_plan(virtio, "nvme-format")
    with pytest.raises(DeelitError, match="unknown wipe method"):
        choose_plan(virtio, "shred")
    with pytest.raises(DeelitError, match="does not apply"):
        choose_plan(nvme_disk(), "ata-erase")


def test_hpa_and_dco_reporting():
    hpa = parse_hpa("\n/dev/sda:\n max sectors   = 976771055/976773168, HPA is enabled\n")
    assert hpa == (976771055, 976773168)
    dco = parse_dco(
        "/dev/sda:\nDCO Revision: 0x0002\nThe following features can be selectively "
        "disabled via DCO:\n\tTransfer modes:\n\tReal max sectors: 976773168\n"
    )
    assert dco == 976773168
    notes = hidden_area_notes(hpa, dco)
    assert notes[0].startswith("HPA present") and "2113 hidden" in notes[0]
    assert notes[1].startswith("DCO: none")
    assert hidden_area_notes((10, 10), 20)[1].startswith("DCO restricts")
    assert hidden_area_notes(None, None) == [
        "HPA: not reported by the drive",
        "DCO: not reported by the drive",
    ]


@pytest.mark.parametrize(
    ("log", "status"),
    [
        ({"nvme0": {"sprog": 65535, "sstat": 0x101, "cdw10_info": 4}}, 1),
        ({"sprog": 100, "sstat": {"global_erased": 0, "status": 2}}, 2),
        ({"sstat": 3}, 3),
        ({"nvme0": {"sstat": {"status": "(4) Most Recent Sanitize Command (No-Deallocate After "
                              "Sanitize) Completed Successfully."}}}, 4),
        ({"sprog": 0}, None),
    ],
)
def test_sanitize_log_status(log, status):
    assert sanitize_status(log) == status


def test_token_depends_on_identity():
    a = nvme_disk()
    b = nvme_disk()
    b.serial = "2116"
    c = nvme_disk()
    c.size_bytes += 512
    tokens = {confirmation_token(x) for x in (a, b, c)}
    assert len(tokens) == 3
    assert confirmation_token(a) == confirmation_token(nvme_disk())  # stable across runs
    assert confirmation_token(a).startswith("WIPE-") and len(confirmation_token(a)) == 14


def test_seeded_stream_is_reproducible_and_distinct():
    assert overwrite.block_data(7, 3) == overwrite.block_data(7, 3)
    assert overwrite.block_data(7, 3) != overwrite.block_data(7, 4)
    assert overwrite.block_data(7, 3) != overwrite.block_data(8, 3)
    assert len(overwrite.block_data(7, 3, 4096)) == 4096


@pytest.mark.parametrize("size", [3 * 2**20, 64 * 2**20, 1000 * 2**30 + 512])
def test_sample_covers_edges_and_one_percent(size):
    s = overwrite.choose_sample(size, sample_seed=1)
    total = overwrite.block_count(size)
    edge = 2**20 // overwrite.BLOCK
    assert set(range(min(edge, total))) <= set(s.indices)
    assert set(range(max(0, total - edge), total)) <= set(s.indices)
    assert len(s.indices) >= min(total, total * 0.01)
    assert s.indices == sorted(set(s.indices)) and s.indices[-1] == total - 1
    assert overwrite.choose_sample(size, sample_seed=1) == s


def test_overwrite_and_verify_on_a_file(tmp_path: Path):
    """The pass and the read-back on a plain file (O_DIRECT where the filesystem allows it)."""
    target = tmp_path / "disk.img"
    size = 5 * 2**20 + 3 * 512  # not a multiple of the block: the tail block is short
    target.write_bytes(b"\xa5" * size)
    seen: list[int] = []
    overwrite.write_pass(str(target), size, seed=42, progress=lambda done, total: seen.append(done))
    assert seen[-1] == size
    sample = overwrite.choose_sample(size, sample_seed=3)
    assert overwrite.verify_pass(str(target), size, 42, sample).passed
    assert b"\xa5" * 512 not in target.read_bytes()
    # a wrong seed, or one corrupted block in the sample, fails the verification
    assert not overwrite.verify_pass(str(target), size, 43, sample).passed
    with target.open("r+b") as f:
        f.seek(sample.indices[-1] * overwrite.BLOCK)
        f.write(b"\x00" * 512)
    bad = overwrite.verify_pass(str(target), size, 42, sample)
    assert not bad.passed and bad.mismatch_blocks == [sample.indices[-1]]
