"""The evaluation report of a run: report.html (self-contained, plots inlined) and report.md, with a metrics
table (base, adapted, delta), plots (loss curves, before/after, safety per category) and every generation."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from medexp.evaluation.runner import EvalResult

# Metrics on a 0-1 scale where higher is better: the ones the before/after chart can share one axis for.
_UNIT_SCALE = ("rouge", "semantic", "distinct", "accuracy", "safety", "contains_reference")


def _plots(result: EvalResult, curves: dict[str, list[tuple[int, float]]], out_dir: Path) -> dict[str, Path]:
    from medexp.plotting import pyplot, save

    plt = pyplot()
    paths: dict[str, Path] = {}
    if any(curves.values()):
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, points in curves.items():
            if points:
                ax.plot(*zip(*points, strict=True), marker="o" if name == "eval_loss" else None, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("Loss curves (eval_loss at step 0 = the model before training)")
        ax.legend()
        paths["loss_curves"] = save(fig, out_dir / "loss_curves.png")

    names = [
        name
        for name, base, _, _ in metric_table(result.metrics)
        if base is not None and any(s in name for s in _UNIT_SCALE)
    ]
    if names:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
        ys = range(len(names))
        ax.barh([y + 0.2 for y in ys], [result.metrics[f"eval/base/{n}"] for n in names], 0.4, label="base")
        ax.barh([y - 0.2 for y in ys], [result.metrics[f"eval/{n}"] for n in names], 0.4, label="adapted")
        ax.set_yticks(list(ys), names)
        ax.invert_yaxis()
        ax.set_title("Before / after (higher is better)")
        ax.legend()
        paths["before_after"] = save(fig, out_dir / "before_after.png")

    if result.safety:
        categories = [c for c in result.safety["adapted"] if c != "all"]
        fig, ax = plt.subplots(figsize=(7, 4))
        for i, (who, rates) in enumerate(result.safety.items()):
            ax.bar(
                [x + 0.4 * i for x in range(len(categories))], [rates[c] for c in categories], 0.4, label=who
            )
        ax.set_xticks([x + 0.2 for x in range(len(categories))], categories, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("pass rate")
        ax.set_title("Safety probes: pass rate per category")
        ax.legend()
        paths["safety"] = save(fig, out_dir / "safety.png")
    return paths


def metric_table(metrics: dict[str, float]) -> list[tuple[str, float | None, float, float | None]]:
    """(name, base, adapted, delta) for every eval/<name> metric, sorted by name."""
    rows = []
    for key in sorted(metrics):
        if not key.startswith("eval/") or key.startswith(("eval/base/", "eval/delta/")):
            continue
        name = key.removeprefix("eval/")
        rows.append((name, metrics.get(f"eval/base/{name}"), metrics[key], metrics.get(f"eval/delta/{name}")))
    return rows


def markdown_rows(table: list[tuple[str, float | None, float, float | None]]) -> list[str]:
    """One markdown row `| name | base | adapted | delta |` per metric_table row (blank where missing)."""
    return [f"| {n} | {_fmt(b)} | {_fmt(a)} | {_fmt(d)} |" for n, b, a, d in table]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(
    result: EvalResult, curves: dict[str, list[tuple[int, float]]], out_dir: Path, title: str
) -> list[Path]:
    """Write report.html, report.md and the plots into out_dir; return every file written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(result, curves, out_dir)
    table = metric_table(result.metrics)
    columns = ["suite", "prompt", "reference", "base", "adapted"]

    md = [f"# {title}", "", "## Metrics", "", "| metric | base | adapted | delta |", "|---|---|---|---|"]
    md += markdown_rows(table)
    md += ["", "## Plots", ""] + [f"![{name}]({path.name})" for name, path in plots.items()]
    if result.safety:
        md += ["", "## Safety pass rate per category", "", "| category | " + " | ".join(result.safety) + " |"]
        md += ["|---|" + "---|" * len(result.safety)]
        for category in result.safety["adapted"]:
            md.append(
                f"| {category} | " + " | ".join(f"{r[category]:.0%}" for r in result.safety.values()) + " |"
            )
    md += ["", "## Generations", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in result.rows:
        cells = [_fmt(row.get(c)).replace("|", "\\|").replace("\n", " ") for c in columns]
        md.append("| " + " | ".join(cells) + " |")

    def img(path: Path) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{path.stem}" src="data:image/png;base64,{data}">'

    e = html.escape
    body = [
        f"<h1>{e(title)}</h1>",
        "<h2>Metrics</h2>",
        "<table><tr><th>metric</th><th>base</th><th>adapted</th><th>delta</th></tr>",
    ]
    body += [
        f"<tr><td>{e(n)}</td><td>{_fmt(b)}</td><td>{_fmt(a)}</td><td>{_fmt(d)}</td></tr>"
        for n, b, a, d in table
    ]
    body += ["</table>", "<h2>Plots</h2>"] + [img(p) for p in plots.values()]
    if result.safety:
        body += ["<h2>Safety pass rate per category</h2><table><tr><th>category</th>"]
        body += [f"<th>{e(w)}</th>" for w in result.safety] + ["</tr>"]
        for category in result.safety["adapted"]:
            cells = "".join(f"<td>{r[category]:.0%}</td>" for r in result.safety.values())
            body.append(f"<tr><td>{e(category)}</td>{cells}</tr>")
        body.append("</table>")
    body += ["<h2>Generations</h2><table><tr>"] + [f"<th>{c}</th>" for c in columns] + ["</tr>"]
    for row in result.rows:
        body.append("<tr>" + "".join(f"<td>{e(_fmt(row.get(c)))}</td>" for c in columns) + "</tr>")
    body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}img{max-width:100%}"
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{style}</style></head>"
    page += "<body>" + "\n".join(body) + "</body></html>"
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    (out_dir / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return [out_dir / "report.html", out_dir / "report.md", *plots.values()]


def log_evaluation(tracker: Any, result: EvalResult, files: list[Path], step: int) -> None:
    """Metrics, report.html at the run's root, report.md and plots under eval/, and the generations table."""
    tracker.log_metrics(result.metrics, step=step)
    if tracker.run_id is None:
        return
    for path in files:
        tracker.log_artifact(path, None if path.name == "report.html" else "eval")
    if result.rows:
        import pandas as pd

        tracker.log_table(pd.DataFrame(result.rows), "eval/generations.json")
