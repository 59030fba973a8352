"""SHA256SUMS.sig: a build folder signed by the IT partner who publishes it, checked where used.

A build folder (`out/NAME/`) lists each of its files with its SHA-256 in `SHA256SUMS`. Signing
that one list signs the folder: `sign` makes `SHA256SUMS.sig` with OpenSSH's `ssh-keygen -Y
sign` (namespace `deelit-release`), `check` verifies it against the keys a point trusts and
then every listed file against its digest. Partners and points need nothing but OpenSSH, and
can check a folder by hand too:

    ssh-keygen -Y verify -f allowed_signers -I PRINCIPAL -n deelit-release \\
        -s SHA256SUMS.sig < SHA256SUMS && sha256sum --check SHA256SUMS

The signers are a public key file (`ssh-ed25519 AAAA… comment`, one key a line) or an OpenSSH
allowed_signers file (`partner@example principals, then the key`; see ssh-keygen(1), ALLOWED
SIGNERS). Every refusal of `check` exits 2 and names the file and what to do.

Secrets: ssh-keygen reads the private key; deelit never copies it, never names its path in
anything it writes, and never waits on a passphrase prompt (a protected key is refused with
the way round it: ssh-agent). The signature holds the public key and the signature only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import DeelitError

SUMS = "SHA256SUMS"
SIG = SUMS + ".sig"
NAMESPACE = "deelit-release"
SIGNERS_ENV = "DEELIT_SIGNERS"  # a point's setting: the signers `serve` and `flash` accept
_PRINCIPAL = "deelit-release-signer"  # the identity a bare public key gets in our temporary list
_TIMEOUT = 120  # seconds for one ssh-keygen run (it never waits on a person here)
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")  # a build folder's flat file names
_KEY_TYPE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)$")
_SHOWN = 5  # bad files named in one message


# -- signing ----------------------------------------------------------------------------

def sign(out_dir: Path, key: Path) -> Path:
    """Signs out_dir/SHA256SUMS with an OpenSSH private key file (or a public key file whose
    private half is in ssh-agent); writes SHA256SUMS.sig atomically and returns its path.

    The listed files are checked first: a folder that no longer matches its list is never
    signed. A passphrase-protected key fails at once with what to do (no prompt)."""
    sums = _sums_path(out_dir, for_signing=True)
    usable_key(key)  # before hashing gigabytes
    data = sums.read_bytes()  # read once: the bytes checked are the bytes signed
    check_sums(out_dir, parse_sums(data, sums))
    with tempfile.TemporaryDirectory(prefix="deelit-sign-") as tmp:
        copy = Path(tmp) / SUMS
        copy.write_bytes(data)  # ssh-keygen writes COPY.sig beside its input
        proc = _ssh_keygen(["-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(copy)])
        if proc.returncode != 0:
            raise DeelitError(f"could not sign {sums} with the key given: "
                              f"{_reason(proc, key)}")
        signature = (Path(tmp) / SIG).read_bytes()
    dest = out_dir / SIG
    partial = dest.with_name(SIG + ".partial")
    partial.write_bytes(signature)
    os.chmod(partial, 0o644)  # public: the signature and the public key, nothing else
    os.replace(partial, dest)
    return dest


def usable_key(key: Path) -> None:
    """Refuses, without any prompt, a key ssh-keygen could only use after asking a person."""
    try:
        text = key.read_text(errors="replace")
    except OSError as exc:
        raise DeelitError(f"the signing key given (--key) cannot be read: {exc.strerror}; give "
                          "an OpenSSH private key file (ssh-keygen -t ed25519)") from None
    public = _public_key_lines(text)
    if public:  # ssh-keygen signs through the agent
        if not os.environ.get("SSH_AUTH_SOCK"):
            raise DeelitError("the signing key given is a public key: its private half must be "
                              "in a running ssh-agent (ssh-add KEY), and SSH_AUTH_SOCK is not set")
        held = _ssh_keygen(["-L"], tool="ssh-add")
        if held.returncode != 0 and "no identities" not in held.stdout + held.stderr:
            raise DeelitError(f"no ssh-agent answers at SSH_AUTH_SOCK ({_last_line(held.stderr)}): "
                              "start one (eval $(ssh-agent)) and ssh-add the private key")
        if not any(f" {public[0][1]}" in line for line in held.stdout.splitlines()):
            raise DeelitError("ssh-agent does not hold the private half of the public key given: "
                              "ssh-add the private key first")
        return
    proc = _ssh_keygen(["-y", "-P", "", "-f", str(key)])  # loads it; -P "": never prompts
    if proc.returncode == 0:
        return
    if "passphrase" in proc.stderr:
        raise DeelitError(
            "the signing key given is protected by a passphrase, and deelit never waits on a "
            "prompt: load it into ssh-agent (eval $(ssh-agent); ssh-add KEY) and give its public "
            "key instead: --key KEY.pub")
    if "bad permissions" in proc.stderr:
        raise DeelitError("the signing key given is readable by others, so ssh-keygen ignores "
                          "it: chmod 600 KEY")
    raise DeelitError(f"the signing key given is not a usable OpenSSH private key: "
                      f"{_reason(proc, key)}")


# -- checking ---------------------------------------------------------------------------

def check(out_dir: Path, signers: Path, *, require: Iterable[str] = ()) -> str:
    """Verifies out_dir/SHA256SUMS.sig against `signers` (a public key file or an OpenSSH
    allowed_signers file), then every listed file against its SHA-256, and that each name in
    `require` is listed (so the signature covers it). Returns who signed, in one line.

    DeelitError(exit_code=2) naming the file and what to do when anything does not hold."""
    sums = _sums_path(out_dir, for_signing=False)
    sig = out_dir / SIG
    if not sig.is_file():
        raise _refused(f"{sig}: missing, so this build is not signed, and this point accepts "
                       f"only builds signed by a key in {signers}; get the signed build from "
                       "your IT partner (they sign with `deelit sign`)")
    # each read once: the list verified is the list checked, the signature shown the one used
    data, signature = sums.read_bytes(), sig.read_bytes()
    who = _verify(data, signature, sums, sig, signers)
    listed = parse_sums(data, sums)
    missing = [n for n in require if n not in listed]
    if missing:
        raise _refused(f"{', '.join(str(out_dir / n) for n in missing)}: not listed in {sums}, so "
                       "the signature does not cover it; use only the files of the signed build "
                       "folder as your IT partner published it")
    check_sums(out_dir, listed, refused=True)
    return f"{out_dir}: signed by {who}; its {len(listed)} listed files are intact"


def signature_key(sig: Path, signature: bytes | None = None) -> tuple[str, str]:
    """The key type and SHA256 fingerprint (as `ssh-keygen -l` shows it) of the key that made
    an SSHSIG signature file (`signature`: its bytes, already read), read from the file itself."""
    try:
        text = (sig.read_bytes() if signature is None else signature).decode("ascii")
        armored = text.split("-----BEGIN SSH SIGNATURE-----", 1)[1]
        armored = armored.split("-----END SSH SIGNATURE-----", 1)[0]
        blob = base64.b64decode("".join(armored.split()), validate=True)
        if blob[:6] != b"SSHSIG":
            raise ValueError("no SSHSIG magic")
        public, _ = _ssh_string(blob, 10)  # after the magic and the version
        key_type = _ssh_string(public, 0)[0].decode("ascii")
    except (OSError, IndexError, ValueError, UnicodeDecodeError):
        raise _refused(f"{sig}: damaged, not an OpenSSH signature (ssh-keygen -Y sign); copy the "
                       "signed build folder again from your IT partner") from None
    digest = base64.b64encode(hashlib.sha256(public).digest()).decode().rstrip("=")
    return key_type, f"SHA256:{digest}"


def parse_sums(data: bytes, sums: Path) -> dict[str, str]:
    """The names and SHA-256 digests a SHA256SUMS file (sha256sum's format) lists."""
    listed: dict[str, str] = {}
    for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
        m = _SUM_LINE.match(line)
        if not m or not _NAME.match(m.group(2)) or m.group(2) in listed:
            raise _refused(f"{sums}: line {number} is not `SHA256  NAME` for a file of the "
                           "folder (once each); copy the build folder again, or rebuild")
        listed[m.group(2)] = m.group(1)
    if not listed:
        raise _refused(f"{sums}: lists no file; copy the build folder again, or rebuild")
    return listed


def check_sums(out_dir: Path, listed: dict[str, str] | None = None, *,
               refused: bool = False) -> dict[str, str]:
    """Every file SHA256SUMS lists (or `listed`, parsed from it) is there with that SHA-256,
    as `sha256sum --check` does; returns the list. The error names each missing or changed
    file (exit 2 when `refused`: a build a point turns down)."""
    from provisioner.formats import manifest as fm  # pydantic: loaded only when hashing

    if listed is None:
        sums = _sums_path(out_dir, for_signing=not refused)
        listed = parse_sums(sums.read_bytes(), sums)
    bad = []
    for name, digest in listed.items():
        path = out_dir / name
        if not path.is_file():
            bad.append(f"{path} is missing")
        elif fm.sha256_file(path) != digest:
            bad.append(f"{path} was changed or damaged (its SHA-256 is not the listed one)")
    if bad:
        shown = "; ".join(bad[:_SHOWN]) + (f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN
                                           else "")
        message = (f"{shown}: the folder does not match its {out_dir / SUMS}; copy the whole "
                   "build folder again, or rebuild")
        raise DeelitError(message, exit_code=2 if refused else 1)
    return listed


# -- inside ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Signers:
    allowed: Path  # an allowed_signers file for ssh-keygen
    comments: dict[str, str]  # fingerprint -> the public key line's comment (bare key form)


def _verify(data: bytes, signature: bytes, sums: Path, sig: Path, signers: Path) -> str:
    """Who signed `data` (SHA256SUMS' bytes) with `signature` (SHA256SUMS.sig's), per ssh-keygen
    and the trusted signers; the paths only name the files in messages."""
    key_type, fingerprint = signature_key(sig, signature)
    with tempfile.TemporaryDirectory(prefix="deelit-signers-") as tmp:
        trusted = _signers(signers, Path(tmp))
        used = Path(tmp) / SIG
        used.write_bytes(signature)
        found = _ssh_keygen(["-Y", "find-principals", "-s", str(used), "-f", str(trusted.allowed)])
        principals = found.stdout.split() if found.returncode == 0 else []
        if not principals:
            raise _refused(f"{sig}: signed by {key_type} key {fingerprint}, which is not among "
                           f"the signers in {signers}: this point does not trust that build; get "
                           "the build signed by your IT partner, or ask them whether their key "
                           "changed")
        failures = []
        for principal in principals:
            proc = _ssh_keygen(["-Y", "verify", "-f", str(trusted.allowed), "-I", principal,
                                "-n", NAMESPACE, "-s", str(used)], message=data)
            if proc.returncode == 0:
                named = trusted.comments.get(fingerprint) if principal == _PRINCIPAL else principal
                return f"{named or signers.name} ({key_type} key {fingerprint})"
            failures.append(_last_line(proc.stderr))
    reason = "; ".join(dict.fromkeys(f for f in failures if f)) or "no reason given"
    raise _refused(f"{sums}: does not match its signature {sig} ({reason}): the list was changed "
                   f"after signing, or the signature is for something else (namespace "
                   f"{NAMESPACE}); copy the signed build folder again from your IT partner")


def _signers(signers: Path, tmp: Path) -> _Signers:
    try:
        text = signers.read_text(errors="replace")
    except OSError as exc:
        raise _refused(f"{signers}: cannot read the trusted signers ({exc.strerror}); set "
                       f"--signers or {SIGNERS_ENV} to your IT partner's public key file or an "
                       "OpenSSH allowed_signers file") from None
    keys = _public_key_lines(text)
    if keys:
        allowed = tmp / "allowed_signers"
        allowed.write_text("".join(f'{_PRINCIPAL} namespaces="{NAMESPACE}" {t} {b}\n'
                                   for t, b, _ in keys))
        comments = {_fingerprint(b): c for _, b, c in keys if c}
        return _Signers(allowed, comments)
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
        raise _refused(f"{signers}: holds no key; it should hold your IT partner's public key "
                       "(ssh-ed25519 AAAA…) or allowed_signers lines (principal ssh-ed25519 AAAA…)")
    return _Signers(signers, {})


def _public_key_lines(text: str) -> list[tuple[str, str, str]]:
    """(type, base64, comment) of each line when every line that is not blank or a comment is
    a public key as `ssh-keygen` writes it in KEY.pub; [] otherwise (an allowed_signers file)."""
    keys = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(maxsplit=2)
        if len(fields) < 2 or not _KEY_TYPE.match(fields[0]):
            return []
        try:
            base64.b64decode(fields[1], validate=True)
        except ValueError:
            return []
        keys.append((fields[0], fields[1], fields[2].strip() if len(fields) > 2 else ""))
    return keys


def _fingerprint(b64: str) -> str:
    digest = hashlib.sha256(base64.b64decode(b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _ssh_string(data: bytes, offset: int) -> tuple[bytes, int]:
    size = int.from_bytes(data[offset:offset + 4], "big")
    end = offset + 4 + size
    if len(data) < end:
        raise ValueError("truncated")
    return data[offset + 4:end], end


def _sums_path(out_dir: Path, *, for_signing: bool) -> Path:
    sums = out_dir / SUMS
    if sums.is_file():
        return sums
    if not out_dir.is_dir():
        what = f"{out_dir}: no such build folder"
    else:
        what = f"{out_dir}: no {SUMS} in it, so it is not a deelit build folder (or not all of one)"
    if for_signing:
        raise DeelitError(f"{what}; give the folder `deelit build PROFILE --out DIR` wrote "
                          f"(it holds manifest.json and {SUMS}), or rebuild")
    raise _refused(f"{what}; this point accepts only signed build folders: copy the whole "
                   "folder your IT partner published (with SHA256SUMS and SHA256SUMS.sig)")


def _ssh_keygen(args: list[str], *, message: bytes = b"",
                tool: str = "ssh-keygen") -> subprocess.CompletedProcess[str]:
    """ssh-keygen (or another OpenSSH tool) without a terminal: no tty to prompt on (its own
    session), no askpass helper, stdin the message or nothing. A run that hangs is stopped."""
    exe = shutil.which(tool)
    if exe is None:
        raise DeelitError(f"{tool}: not found; install OpenSSH's client (apt install "
                          "openssh-client)", exit_code=2)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE")}
    try:
        proc = subprocess.run([exe, *args], input=message, capture_output=True, env=env,
                              start_new_session=True, timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise DeelitError(f"{tool} {' '.join(args[:2])}: no answer after {_TIMEOUT} s; "
                          "stopped", exit_code=2) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))


def _reason(proc: subprocess.CompletedProcess[str], key: Path) -> str:
    """ssh-keygen's own reason, without the key's path (it stays out of every output); with
    KEY.pub, ssh-keygen may name the private key beside it."""
    text = proc.stderr.replace(str(key), "KEY")
    if key.name.endswith(".pub"):
        text = text.replace(str(key)[:-4], "KEY")
    return _last_line(text) or f"exit status {proc.returncode}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith("Signing ")]
    return lines[-1] if lines else ""


def _refused(message: str) -> DeelitError:
    return DeelitError(message, exit_code=2)
