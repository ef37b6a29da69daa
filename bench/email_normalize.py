"""``python -m bench.email_normalize [--seconds N]``: mail normalized per second by one process.

What every inbound mail costs before anything is published: :func:`automatic.parse` +
:func:`automatic.classify` (is it a machine's?) and :func:`normalize.normalize` (headers,
charsets, body, quotes, sanitized HTML, attachments). The input is the test corpus
(services/intake_email/tests/corpus: CJK charsets, broken MIME, client replies, bounces,
auto-replies), run round after round in one process, one thread, for ``--seconds`` after a
warm-up round. Refused mail (``MailRejected``) counts: intake pays for it too.

Prints messages/second, p50/p99 per message and the slowest files (mean per call), and writes
bench/results/email_normalize.json. ``--hostile`` also times hostile MIME shapes (deep nesting,
huge part counts, megabyte headers) that ``normalize.check_shape`` must refuse before parsing,
and shapes just under its limits: what one such mail can cost the service's event loop. The corpus is small and mostly short mail, so the figure is
an upper bound for typical mail, not for 10 MB attachments; compare runs on one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.stats import summarize
from services.intake_email import automatic
from services.intake_email.normalize import MailRejected, normalize

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "services" / "intake_email" / "tests" / "corpus"
RESULTS = Path(__file__).resolve().parent / "results" / "email_normalize.json"
OUR_ADDRESS = "support@ticketmesh.test"
RECEIVED_AT = datetime(2026, 11, 22, tzinfo=timezone.utc)
SLOWEST_SHOWN = 5


def process_one(raw: bytes) -> None:
    """What intake does with a fetched message before it decides and publishes (one parse)."""
    parsed = automatic.parse(raw)
    if parsed is not None:
        automatic.classify(parsed, our_address=OUR_ADDRESS)
    try:
        normalize(raw, received_at=RECEIVED_AT, parsed=parsed)
    except MailRejected:
        pass


def _nested(depth: int, size: int) -> bytes:
    head = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    opening = b"".join(f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode()
                       for i in range(depth))
    line = b"a line of text in the innermost part\r\n"
    return head + opening + line * max(0, (size - len(head) - len(opening)) // len(line))


def _parts(count: int) -> bytes:
    return (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
            + b"--x\r\n\r\n" * count + b"--x--\r\n")


def _long_to(size: int) -> bytes:
    addresses = b", ".join(f"u{i}@example.com".encode() for i in range(size // 16))
    return b"From: a@example.com\r\nTo: " + addresses + b"\r\nSubject: hi\r\n\r\nbody\r\n"


HOSTILE = {
    "900 nested multiparts, 1.4 MB": lambda: _nested(900, 1_400_000),
    "200 000 parts": lambda: _parts(200_000),
    "3 MB To header": lambda: _long_to(3_000_000),
    "63 nested multiparts, 2.3 MB (at the work limit)": lambda: _nested(63, 2_300_000),
    "4 900 parts (under the limits)": lambda: _parts(4_900),
    "100 kB To header (under the limits)": lambda: _long_to(100_000),
}


def measure_hostile() -> list[dict]:
    rows = []
    for name, make in HOSTILE.items():
        raw = make()
        t0 = time.perf_counter()
        process_one(raw)
        rows.append({"shape": name, "bytes": len(raw), "seconds": round(time.perf_counter() - t0, 3)})
    return rows


def measure(corpus: dict[str, bytes], seconds: float) -> dict:
    for raw in corpus.values():  # warm-up: imports, regex compilation, codec lookups
        process_one(raw)
    per_file: dict[str, list[float]] = {name: [] for name in corpus}
    latencies: list[float] = []
    rounds = 0
    started = time.perf_counter()
    deadline = started + seconds
    while rounds == 0 or time.perf_counter() < deadline:
        for name, raw in corpus.items():
            t0 = time.perf_counter()
            process_one(raw)
            elapsed = time.perf_counter() - t0
            per_file[name].append(elapsed)
            latencies.append(elapsed)
        rounds += 1
    wall = time.perf_counter() - started
    result = summarize("classify + normalize, one process", len(latencies), wall, latencies, rounds=rounds)
    slowest = sorted(
        ({"file": name, "bytes": len(corpus[name]), "mean_ms": round(sum(t) / len(t) * 1000, 3),
          "max_ms": round(max(t) * 1000, 3)} for name, t in per_file.items()),
        key=lambda row: row["mean_ms"], reverse=True)
    return {
        "measured_at": datetime.now(timezone.utc).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "corpus": {"messages": len(corpus), "bytes": sum(map(len, corpus.values()))},
        "measurement": result.as_dict(),
        "slowest": slowest[:SLOWEST_SHOWN],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.email_normalize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to keep running rounds (default 10)")
    parser.add_argument("--hostile", action="store_true", help="also time hostile MIME shapes, one call each")
    args = parser.parse_args()
    corpus = {path.name: path.read_bytes() for path in sorted(CORPUS.glob("*.eml"))}
    if not corpus:
        raise SystemExit(f"no .eml files in {CORPUS}")
    result = measure(corpus, args.seconds)
    m = result["measurement"]
    print(f"{result['corpus']['messages']} messages ({result['corpus']['bytes']} bytes), "
          f"{m['extra']['rounds']} rounds in {m['seconds']} s")
    print(f"{m['per_second']} messages/s   p50 {m['p50_ms']} ms   p99 {m['p99_ms']} ms   (one process, one thread)")
    print("\nslowest files (mean per call):")
    for row in result["slowest"]:
        print(f"  {row['mean_ms']:>8.3f} ms  max {row['max_ms']:>8.3f} ms  {row['bytes']:>7} B  {row['file']}")
    if args.hostile:
        result["hostile"] = measure_hostile()
        print("\nhostile shapes (classify + normalize, one call):")
        for row in result["hostile"]:
            print(f"  {row['seconds']:>8.3f} s  {row['bytes']:>8} B  {row['shape']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
