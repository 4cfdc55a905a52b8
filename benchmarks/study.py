"""What every study in ``benchmarks/results/<study>/`` records about where it ran, and how a
benchmark writes its ``summary.json`` (read by ``benchmarks/results_doc.py``).

A benchmark owns the figures of its summary (``runs``, ``totals``, ``table``, the command, the
commit, the machine, the date); the words a person wrote about the study (``title``,
``question``, ``headline``, ``notes``), and keys the benchmark does not write (a comparison
table), are kept when the benchmark writes the file again.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRITTEN_BY_HAND = ("title", "question", "headline", "notes", "path")
# (vendor, family, model) -> the CPU kinds this project's machines have been seen with
KINDS = {
    ("AuthenticAMD", "25", "1"): "Zen 3",
    ("AuthenticAMD", "25", "17"): "Zen 4",
    ("GenuineIntel", "6", "143"): "Sapphire Rapids",
    ("GenuineIntel", "6", "207"): "Emerald Rapids",
}


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def machine(matmul_dtype: str, device: str = "cpu", threads: int = 2) -> dict:
    """The CPU's kind and description (model, family/model, cores, bfloat16 support)."""
    info = _cpuinfo()
    key = (info.get("vendor_id", ""), info.get("cpu family", ""), info.get("model", ""))
    flags = info.get("flags", "").split()
    bf16 = "AVX512-BF16" if "avx512_bf16" in flags else "AVX2 only" if "avx2" in flags else "AVX"
    if "amx_bf16" in flags:
        bf16 += " + AMX"
    family = f"family {key[1]} model {key[2]}"
    cpu = f"{info.get('model name', 'unknown CPU')} ({family}), {os.cpu_count()} cores, {bf16}"
    return {
        "kind": KINDS.get(key, f"{key[0]} {family}"),
        "cpu": cpu,
        "matmul_dtype": matmul_dtype,
        "device": device,
        "threads": threads,
    }


def code_commit() -> str:
    """HEAD, marked when the code or params differ from it (the figures are then not HEAD's)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    paths = ["dreamer", "pipeline", "stages", "params.yaml", "dvc.yaml"]
    dirty = subprocess.run([*git, "status", "--porcelain", *paths], capture_output=True, text=True)
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def write_summary(folder: Path, summary: dict, generated: tuple[str, ...] = ()) -> Path:
    """Write ``folder/summary.json`` atomically, keeping the hand-written keys already there
    (but those named in ``generated``: the caller writes them) and those ``summary`` lacks."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.json"
    kept = {}
    if path.exists():
        old = json.loads(path.read_text())
        hand = set(WRITTEN_BY_HAND) - set(generated)
        kept = {
            k: v for k, v in old.items() if k in hand or (k not in summary and k not in generated)
        }
    merged = {**summary, **kept, "date": summary.get("date", date.today().isoformat())}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
