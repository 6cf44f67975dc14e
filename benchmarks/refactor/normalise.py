"""sha256 of every file golden.sh wrote, after blanking what differs between two runs of the same tree.

Blanked: JSON values whose key names a time, a date, a speed or a machine-dependent measure
(``created``, ``*_ms``, ``fps``, ``seconds``, ...), absolute paths of the output folder, and the
timing lines of stdout. The rest (models, graphs, manifests' digests, events, accuracies) must match
byte for byte between the two trees.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

VOLATILE = re.compile(r"(created|time|date|_ms$|^ms|fps|seconds|wall|cpu|latency|elapsed|rss|speed|spread|p\d+|ratio|"
                      r"median|mean_ms|throughput|host|machine|threads_used|platform|when|duration|load|pid|peak)", re.I)


def scrub(obj, root: str):
    if isinstance(obj, dict):
        return {k: ("<v>" if VOLATILE.search(k) else scrub(v, root)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v, root) for v in obj]
    if isinstance(obj, str):
        obj = re.sub(r"/tmp/edgefer-[a-z]+-[a-z0-9_]+", "<TMP>", obj.replace(root, "<OUT>"))
        return re.sub(r"^/\S*/edgefer/assets/", "<ASSETS>/", obj)
    return obj


def text(data: bytes, root: str) -> bytes:
    s = data.decode("utf-8", "replace").replace(root, "<OUT>")
    s = re.sub(r"\d+(\.\d+)?\s*(ms|fps|s\b|x\b|MiB|GiB|GB|MB|%\s*CPU)", "<n>", s)
    return s.encode()


def main(out: str) -> None:
    root = str(Path(out).resolve())
    for p in sorted(Path(out).rglob("*")):
        if not p.is_file() or p.name in ("SHA256SUMS", "bench.stdout"):  # bench.stdout: a table of timings
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            data = json.dumps(scrub(json.loads(data), root), sort_keys=True).encode()
        elif p.suffix == ".jsonl":
            data = b"\n".join(json.dumps(scrub(json.loads(l), root), sort_keys=True).encode()
                              for l in data.splitlines() if l.strip())
        elif p.suffix in (".stdout", ".stderr", ".txt", ".csv"):
            data = text(data, root)
        print(hashlib.sha256(data).hexdigest(), p.relative_to(out))


if __name__ == "__main__":
    main(sys.argv[1])
