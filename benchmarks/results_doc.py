"""Generate ``docs/results.md`` and the README's results table from the studies' data.

    python benchmarks/results_doc.py           # rewrite both
    python benchmarks/results_doc.py --check   # exit 1 if either differs (the test runs this)

Each study is a folder ``benchmarks/results/<study>/`` with a ``summary.json``: what it asks, the
exact command, the code commit, the date, the machine (CPU, matmul dtype, device), and either
``runs`` (one per training run: its per-episode curve CSV, its evaluation as a per-episode CSV or
as the mean ± std the run printed, timings) or a ``table`` / ``totals`` of figures. Every figure in
the generated text is read or computed here (rolling means, first crossing of the target, means
over seeds), never typed into the prose: change a summary or a curve and the text follows.
``archive/`` holds earlier studies whose code is gone; it is listed, not summarised.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
BEGIN, END = "<!-- results table: begin -->", "<!-- results table: end -->"
ROLLING = 5  # episodes in the rolling mean whose first crossing of the target is reported
REQUIRED = ("title", "question", "command", "code_commit", "date", "machine")
MACHINE = ("cpu", "matmul_dtype", "device")
# The README's table, in this order (the default run first).
HEADLINES = (
    "default_run",
    "pendulum_default_budget",
    "pendulum_float32",
    "pendulum_replay_value_grad",
    "cartpole_float32_heads",
    "dmc_pipeline",
    "carracing_replay_value_grad",
    "throughput",
    "throughput_float32",
    "gpu_throughput",
    "fault_injection",
)


class StudyError(ValueError):
    """A summary that lacks a key or names a file that is not there."""


def load_studies(results: Path = RESULTS) -> dict[str, dict]:
    """Every ``<study>/summary.json`` under ``results`` (archive excluded), checked."""
    studies = {}
    for path in sorted(results.glob("*/summary.json")):
        name = path.parent.name
        summary = json.loads(path.read_text())
        missing = [k for k in REQUIRED if k not in summary]
        missing += [f"machine.{k}" for k in MACHINE if k not in summary.get("machine", {})]
        if missing:
            raise StudyError(f"{path}: missing {', '.join(missing)}")
        for run in summary.get("runs", []):
            for key in ("curve", "eval_episodes"):
                if key in run and not (path.parent / run[key]).is_file():
                    raise StudyError(f"{path}: {key} {run[key]} is not in {path.parent}")
        for key in ("figure", "log"):
            if key in summary and not (path.parent / summary[key]).is_file():
                raise StudyError(f"{path}: {key} {summary[key]} is not in {path.parent}")
        studies[name] = summary
    order = [n for n in HEADLINES if n in studies] + [n for n in studies if n not in HEADLINES]
    return {n: studies[n] for n in order}


def _column(path: Path, name: str) -> list[float]:
    with path.open(newline="") as f:
        return [float(row[name]) for row in csv.DictReader(f)]


def curve_figures(path: Path, target: float) -> dict:
    """From a per-episode CSV (``env_step``, ``return``): the env step where the rolling mean of
    ``ROLLING`` episodes first reaches ``target`` (None if never); the last 10 episodes' mean."""
    steps, returns = _column(path, "env_step"), _column(path, "return")
    first = None
    for i in range(ROLLING - 1, len(returns)):
        if statistics.fmean(returns[i - ROLLING + 1 : i + 1]) >= target:
            first = int(steps[i])
            break
    return {"first_at": first, "last10": statistics.fmean(returns[-10:]), "episodes": len(returns)}


def run_figures(folder: Path, run: dict, target: float) -> dict:
    """A run's figures: what the summary holds, plus what its CSVs give."""
    out = dict(run)
    if "curve" in run:
        out.update(curve_figures(folder / run["curve"], target))
    if "eval_episodes" in run:
        returns = _column(folder / run["eval_episodes"], "return")
        out["eval_return_mean"] = statistics.fmean(returns)
        out["eval_return_std"] = statistics.pstdev(returns)  # as the evaluate stage (numpy std)
        out["eval_n"] = len(returns)
    return out


def _num(x, digits: int = 1) -> str:
    if x is None:
        return "never"
    if isinstance(x, int):
        return f"{x:,}".replace("-", "−")
    return f"{x:,.{digits}f}".replace("-", "−")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def _minutes(seconds: float) -> str:
    """Whole minutes (hours above 90), for the README's short cells."""
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes > 90 else f"{minutes} min"


def _eval(run: dict) -> str:
    if "eval_return_mean" not in run:
        return ""
    return f"{_num(run['eval_return_mean'])} ± {_num(run['eval_return_std'])}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _runs_section(folder: Path, study: dict) -> list[str]:
    target = study.get("target", 0)
    runs = [run_figures(folder, r, target) for r in study["runs"]]
    header = [
        "setting",
        "seed",
        "evaluation",
        "random policy",
        f"rolling {ROLLING} ≥ {_num(target)} first at",
        "last 10 episodes",
        "train s",
        "peak RSS MiB",
    ]
    rows = [
        [
            r["label"],
            r["seed"],
            _eval(r),
            _num(r.get("random_return_mean")) if "random_return_mean" in r else "",
            _num(r.get("first_at")) if "curve" in r else "",
            _num(r["last10"]) if "curve" in r else "",
            _num(r["train_seconds"]) if "train_seconds" in r else "",
            r.get("peak_rss_mib", ""),
        ]
        for r in runs
    ]
    lines = _table(header, rows)
    labels = list(dict.fromkeys(r["label"] for r in runs))
    if any(len([r for r in runs if r["label"] == label]) > 1 for label in labels):
        lines += ["", "Means over seeds:", ""]
        agg = []
        for label in labels:
            group = [r for r in runs if r["label"] == label]
            firsts = [r["first_at"] for r in group if r.get("first_at") is not None]
            agg.append(
                [
                    label,
                    len(group),
                    _num(statistics.fmean(r["eval_return_mean"] for r in group)),
                    _num(statistics.fmean(firsts))
                    + ("" if len(firsts) == len(group) else f" ({len(firsts)} reached it)"),
                    _num(statistics.fmean(r["last10"] for r in group)),
                ]
            )
        header = ["setting", "seeds", "evaluation", f"rolling ≥ {_num(target)} first at", "last 10"]
        lines += _table(header, agg)
    return lines


def render_doc(studies: dict[str, dict], results: Path = RESULTS) -> str:
    lines = [
        "# Results",
        "",
        "Generated by `python benchmarks/results_doc.py` from",
        "`benchmarks/results/<study>/summary.json` and the CSVs beside each; do not edit by hand",
        "(`tests/test_results_doc.py` fails when this file differs from what the script writes).",
        "Evaluation: mean ± std over the deterministic evaluation episodes; training curves: the",
        f"rolling mean of {ROLLING} training episodes.",
        "",
    ]
    lines += _table(
        ["study", "what it asks", "CPU, matmuls", "date"],
        [
            [
                f"[{name}](#{name})",
                s["title"],
                f"{s['machine']['cpu']}, {s['machine']['matmul_dtype']}",
                s["date"],
            ]
            for name, s in studies.items()
        ],
    )
    for name, s in studies.items():
        folder = results / name
        m = s["machine"]
        lines += ["", f"## {name}", "", f"**{s['title']}.** {s['question']}", ""]
        lines += [f"- command: `{s['command']}`"]
        if "path" in s:
            lines += [f"- path: {s['path']}"]
        lines += [f"- code: {s['code_commit']}; date: {s['date']}"]
        lines += [
            f"- machine: {m['cpu']}; matmuls {m['matmul_dtype']}; device {m['device']}"
            + (f"; {m['threads']} threads" if "threads" in m else "")
        ]
        for key in ("env_steps", "gradient_steps"):
            if key in s:
                lines += [f"- {key.replace('_', ' ')}: {_num(s[key])}"]
        lines += [""]
        if "runs" in s:
            lines += _runs_section(folder, s)
        if "table" in s:
            lines += _table(s["table"]["columns"], s["table"]["rows"])
        if "totals" in s:
            lines += _table(
                ["total", "value"], [[k, json.dumps(v)] for k, v in s["totals"].items()]
            )
        for note in s.get("notes", []):
            lines += ["", note]
        if "figure" in s:
            lines += ["", f"![{s['title']}](../benchmarks/results/{name}/{s['figure']})"]
        files = sorted(p.name for p in folder.iterdir() if p.name != "summary.json")
        lines += ["", "Files: " + ", ".join(f"`{f}`" for f in files) + "."]
    archived = (
        sorted(p.name for p in (results / "archive").iterdir())
        if (results / "archive").is_dir()
        else []
    )
    lines += [
        "",
        "## archive",
        "",
        f"`benchmarks/results/archive/` holds {len(archived)} files of earlier studies whose",
        "code has changed since (eager paths, earlier layouts, the in-memory learning benchmark);",
        "their write-ups are in [docs/history.md](history.md).",
    ]
    return "\n".join(lines) + "\n"


def _short_dtype(dtype: str) -> str:
    return {"bfloat16": "bf16", "float32": "f32"}.get(
        dtype, dtype.split(" ")[0].replace("bfloat16", "bf16")
    )


def headline_row(name: str, study: dict, results: Path = RESULTS) -> list[str]:
    """One README row (short cells: the detail is in docs/results.md): task, CPU kind and
    matmul dtype, result, when learned, wall-clock, link; every figure from the study's data."""
    m = study["machine"]
    head = study.get("headline", {})
    row = [
        head.get("task", study["title"]),
        f"{m.get('kind', m['cpu'])}, {_short_dtype(m['matmul_dtype'])}",
    ]
    if "runs" in study:
        target = study.get("target", 0)
        runs = [run_figures(results / name, r, target) for r in study["runs"]]
        runs = [r for r in runs if r["label"] == head.get("label", r["label"])]
        if len(runs) == 1:
            row.append(_eval(runs[0]))
        else:
            row.append("/".join(_num(r["eval_return_mean"]) for r in runs))
        if head.get("learned", True):
            firsts = "/".join(_num(r.get("first_at")) for r in runs)
            row.append(f"{_num(target)}: {firsts}")
        else:
            row.append("")
        secs = [r.get("pipeline_seconds", r.get("train_seconds")) for r in runs]
        secs = [x for x in secs if x is not None]
        kind = "all" if any("pipeline_seconds" in r for r in runs) else "train"
        if secs:
            lo, hi = _minutes(min(secs)), _minutes(max(secs))
            row.append((lo if lo == hi else f"{lo.split(' ')[0]}–{hi}") + f" {kind}")
        else:
            row.append("")
    else:  # a table or totals: the headline's template filled from them
        values = study["table"]["rows"][head.get("row", 0)] if "table" in study else study["totals"]
        row += [
            head["result"].format(*values) if "table" in study else head["result"].format(**values)
        ]
        row += [
            "",
            head.get("time", "").format(**values) if "totals" in study else head.get("time", ""),
        ]
    return row


def render_readme_table(studies: dict[str, dict], results: Path = RESULTS) -> str:
    names = [n for n in HEADLINES if n in studies]
    rows = [headline_row(n, studies[n], results) for n in names]
    for i, row in enumerate(rows, 1):
        row[0] = f"[{row[0]}][{i}]"
    header = ["run (data)", "machine", "evaluation", "rolling ≥ target at (env step)", "wall-clock"]
    links = [f"[{i}]: docs/results.md#{n}" for i, n in enumerate(names, 1)]
    return "\n".join(_table(header, rows) + [""] + links)


def with_readme_table(readme: str, table: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise StudyError(f"README.md: the markers {BEGIN} … {END} are missing")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--check", action="store_true", help="exit 1 if a generated file differs")
    args = p.parse_args(argv)
    studies = load_studies()
    doc = render_doc(studies)
    readme = with_readme_table(README.read_text(), render_readme_table(studies))
    stale = [
        path
        for path, text in ((DOC, doc), (README, readme))
        if not path.exists() or path.read_text() != text
    ]
    if args.check:
        for path in stale:
            print(
                f"{path.relative_to(ROOT)} differs from its data: "
                "run python benchmarks/results_doc.py"
            )
        return 1 if stale else 0
    for path, text in ((DOC, doc), (README, readme)):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(f"wrote {DOC.relative_to(ROOT)} ({len(studies)} studies) and the table in README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
