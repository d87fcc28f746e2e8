#!/usr/bin/env python3
"""Writes the checked-in seed inputs under corpus/<target>/seed-*, and the
regression inputs that can be spelled out (corpus/<target>/regression-*).

Seeds are valid encodings the fuzzer could not easily find on its own
(manifests behind a magic, ticket bodies in postcard). Run from anywhere;
needs `b3sum` on PATH only for the ticket texts. Ticket seeds start with a
mode byte: 0 = the rest is ticket text, 1-3 = the rest is a ticket body that
the harness wraps in checksum, base32 and prefix (see ticket_parse.rs).
"""

import base64
import hashlib
import pathlib
import shutil
import subprocess

HERE = pathlib.Path(__file__).resolve().parent
MAGIC = b"SPORECOL\x01"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def blob(b: bytes) -> bytes:
    return varint(len(b)) + b


def fake_hash(tag: str) -> bytes:
    # Any 32 bytes do; manifests and tickets do not check them.
    return hashlib.sha256(tag.encode()).digest()


def ticket_body(kind: int, hash_: bytes, providers) -> bytes:
    out = varint(kind) + hash_ + varint(len(providers))
    for peer_id, addrs in providers:
        out += blob(peer_id) + varint(len(addrs)) + b"".join(blob(a) for a in addrs)
    return out


def ticket_text(body: bytes) -> bytes:
    checksum = subprocess.run(
        ["b3sum", "--no-names", "--length", "4"],
        input=body, capture_output=True, check=True,
    ).stdout.strip()
    b32 = base64.b32encode(body + bytes.fromhex(checksum.decode()))
    return b"spore1" + b32.rstrip(b"=").lower()


def manifest(entries) -> bytes:
    entries = sorted(entries, key=lambda e: e[0].encode())
    out = MAGIC + varint(len(entries))
    for path, size, mode in entries:
        out += blob(path.encode()) + varint(size) + fake_hash(path) + varint(mode)
    return out


def write(target: str, name: str, data: bytes) -> None:
    path = HERE / "corpus" / target / f"seed-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def regression(target: str, name: str, data: bytes) -> None:
    path = HERE / "corpus" / target / f"regression-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main() -> None:
    peer = bytes([0, 36, 8, 1, 18, 32]) + bytes(range(32))
    tcp = bytes([4, 127, 0, 0, 1, 6, 0x14, 0xD3])
    bodies = {
        "bare-blob": ticket_body(0, fake_hash("a"), []),
        "collection-one-provider": ticket_body(1, fake_hash("b"), [(peer, [tcp])]),
        "two-providers": ticket_body(0, fake_hash("c"), [(peer, [tcp, tcp[:5]]), (b"p", [])]),
    }
    for name, body in bodies.items():
        write("ticket_parse", f"body-{name}", b"\x01" + body)
        if shutil.which("b3sum"):
            write("ticket_parse", f"text-{name}", b"\x00" + ticket_text(body))

    write("collection_decode", "empty", manifest([]))
    write("collection_decode", "one-file", manifest([("readme.md", 1234, 0o644)]))
    write("collection_decode", "tree", manifest([
        ("a.txt", 3, 0o644),
        ("a/b/c.bin", 70000, 0o600),
        ("a/x", 0, 0o755),
        ("naïve café/ünïcode.mkv", 1 << 40, 0o644),
        ("z", 5, 0o777),
    ]))

    # Decodes fine, then Collection::total_size overflows (2^63 + 2^63).
    regression("collection_decode", "total-size-overflow", manifest([
        ("a", 1 << 63, 0o644),
        ("b", 1 << 63, 0o644),
    ]))

    write("hash_parse", "lower", fake_hash("h").hex().encode())
    write("hash_parse", "upper", fake_hash("H").hex().upper().encode())


if __name__ == "__main__":
    main()
