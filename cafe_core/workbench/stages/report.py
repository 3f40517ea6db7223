"""Stage ``report``: the whole paper in one file, ``results/report.md``.

Every ablation table with its intervals and verdicts and one sample grid, the full system's
fidelity figures beside the true renders, and the time each stage took. It reads only what the
other stages wrote (tables, metrics files, sample grids) and, for the times, the MLflow store:
each stage run logs its wall time (``stage_seconds``, one value per attempt).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ...benchmarks.statistics import METHOD
from ...utils.files import atomic_write_text
from .. import tracking
from ..config import Params
from ..paths import ProjectPaths
from .common import REAL_IMAGES

__all__ = ["pipeline_stages", "stage_times", "stopped_attempts", "write_report"]

logger = logging.getLogger(__name__)

TITLES = {
    "ablation_selfdistill": "Table 3: self-distillation against human filtering",
    "ablation_loss": "Table 4: the distance in eq. 2",
    "ablation_encoders": "Table 5: smaller image encoders",
    "ablation_embeddings": "Table 6: CLIP and DINO embeddings",
}


def write_report(params: Params, root: Path) -> Path:
    """Write ``results/report.md`` (and one sample-grid image per table under ``results/report/``)."""
    paths = ProjectPaths(root)
    state = tracking.code_state(root)
    lines = [
        f"# CAFE workbench report ({params.profile.name})",
        "",
        f"Code at commit `{state['commit'][:12]}`{' with uncommitted changes' if state['dirty'] == 'true' else ''}.",
        "Each table: the mean over the held-out subjects of every training seed, ± the half-width of a 95% "
        f"{METHOD}, then the paper's claims about its rows with their verdicts.",
    ]
    for target, rows in params.ablations.items():
        folder = paths.ablation(target)
        table = folder / "table.md"
        if not table.is_file():
            raise FileNotFoundError(f"{table} is missing: run `dvc repro {target}` first")
        lines += ["", f"## {TITLES.get(target, target)} (`{target}`)", "", table.read_text().rstrip()]
        grid = _sample_grid(paths, target, [r for r in rows if r != REAL_IMAGES] + [REAL_IMAGES])
        if grid is not None:
            lines += ["", f"![{target} samples]({grid.relative_to(paths.results).as_posix()})"]
    lines += ["", *_fidelity_section(paths)]
    lines += ["", *_times_section(params, root)]
    return atomic_write_text(paths.results / "report.md", "\n".join(lines) + "\n")


def _sample_grid(paths: ProjectPaths, target: str, variants: list[str]) -> Path | None:
    """One image of the table's rows: each row's saved sample grid per domain, side by side."""
    import numpy as np
    from matplotlib.figure import Figure
    from PIL import Image

    cells = []
    for variant in variants:
        samples = paths.variant_samples(variant)
        pngs = sorted(samples.glob("*.png"))
        row = [(f"{variant}: {p.stem}", np.asarray(Image.open(p).convert("RGB"))) for p in pngs]
        if row:
            cells.append(row)
    if not cells:
        return None
    n_cols = max(len(r) for r in cells)
    fig = Figure(figsize=(8 * n_cols, 5 * len(cells)))
    axes = fig.subplots(len(cells), n_cols, squeeze=False)
    for i, row in enumerate(cells):
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(row):
                ax.imshow(row[j][1])
                ax.set_title(row[j][0], fontsize=14)
    fig.tight_layout()
    out = paths.results / "report" / f"{target}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=60)
    return out


def _fidelity_section(paths: ProjectPaths) -> list[str]:
    path = paths.fidelity_results / "metrics.json"
    if not path.is_file():
        return ["## Fidelity of the full system", "", "Not measured (the `fidelity` stage needs CAFE-mini's probe)."]
    report = json.loads(path.read_text())
    system = report.get("system", {})
    lines = [
        "## Fidelity of the full system",
        "",
        f"Variant `{system.get('variant')}`: c = c_hat of assistant `{system.get('assistant')}`, G "
        f"`{system.get('generator')}`; held-out subjects {system.get('subjects')}, training seeds "
        f"{system.get('training_seeds')}; ceiling: true renders of the same prompts.",
        "",
        "| domain | figure | system | 95% interval | ceiling |",
        "| --- | --- | --- | --- | --- |",
    ]
    for domain, figures in report.items():
        if domain == "system":
            continue
        for name, f in figures.items():
            if name == "per_attribute":
                continue
            ci = f"[{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}]" if f.get("ci95") else ""
            ceiling = f"{f['ceiling']:.3f}" if f.get("ceiling") is not None else ""
            lines.append(f"| {domain} | {name} | {f['value']:.3f} | {ci} | {ceiling} |")
    return lines


def pipeline_stages(root: Path) -> list[str]:
    """The stages of the DVC project at ``root`` as DVC names them (``train_generator@main``,
    ...), ``foreach`` and ``matrix`` expanded over ``params.yaml``, in ``dvc.yaml``'s order."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [stage.name for stage in repo.index.stages]


def stage_times(params: Params, root: Path) -> dict[str, dict]:
    """``dvc.yaml``'s stage -> ``{"seconds", "runs", "attempts", "commit", "machine"}``: the wall time
    of the finished MLflow runs that built what the stage's outputs hold (:func:`tracking.work_runs`)
    and of the stopped runs whose work they resumed (:func:`stopped_attempts`), and the
    CPUs they ran on (:func:`tracking.machine`; several when a stage was resumed elsewhere).

    ``seconds`` sums every attempt of those runs (a killed run resumed counts both, also when
    the resumed one ran on later code); a run that found every model and score up to date is
    left out. A stage DVC restored from its cache, or run before this store existed, has no entry.
    ``commit`` is the newest finished run's.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri(root))
    exp = client.get_experiment_by_name(tracking.experiment_name(params))
    if exp is None:
        return {}
    query = "tags.`cafe.role` = 'stage' and attributes.status != 'RUNNING'"
    finished: dict[str, list] = {}
    stopped: dict[str, list] = {}
    newest_first = ["attributes.start_time DESC"]
    for run in client.search_runs([exp.experiment_id], query, order_by=newest_first, max_results=5000):
        if "stage_seconds" in run.data.metrics:
            by_status = finished if run.info.status == "FINISHED" else stopped
            by_status.setdefault(run.data.tags.get("cafe.stage") or run.info.run_name, []).append(run)
    out: dict[str, dict] = {}
    for stage in pipeline_stages(root):
        done = finished.get(stage, [])
        chosen = tracking.work_runs(done)
        if not chosen:
            continue
        counted = chosen + stopped_attempts(done, stopped.get(stage, []), chosen)
        seconds = [m.value for r in counted for m in client.get_metric_history(r.info.run_id, "stage_seconds")]
        out[stage] = {
            "seconds": float(sum(seconds)),
            "runs": len(counted),
            "attempts": len(seconds),
            "commit": chosen[0].data.tags.get("mlflow.source.git.commit", "")[:7],
            "machine": "; ".join(sorted({r.data.tags.get("cafe.machine", "") for r in counted} - {""})),
        }
    return out


def stopped_attempts(finished: list, stopped: list, chosen: list) -> list:
    """Of one stage's stopped runs (KILLED or FAILED, newest first), those whose work the
    ``chosen`` runs (:func:`tracking.work_runs` of the ``finished`` ones, newest first) resumed.

    A stopped attempt on the same code state is continued in its own run (its attempts count
    there); one stopped before a code change leaves a run of its own, whose checkpoints, shards and
    finished seeds the next run resumes when they are still valid (they are keyed by content).
    Counted: the stopped runs that started after the stage's previous finished run and before
    the oldest chosen one, unless that one counted its work and reused none of it (it rebuilt
    everything they made). A stopped run after the newest chosen one built nothing the outputs hold.
    """
    if not chosen:
        return []
    oldest = chosen[-1]
    if "cafe.built" in oldest.data.tags and int(oldest.data.tags.get("cafe.reused", "0")) == 0:
        return []
    start = oldest.info.start_time
    before = [r.info.start_time for r in finished if r.info.start_time < start]
    after = max(before, default=-1)
    return [r for r in stopped if after < r.info.start_time < start]


def _times_section(params: Params, root: Path) -> list[str]:
    times = stage_times(params, root)
    lines = ["## Time per stage", ""]
    if not times:
        return lines + ["No stage run with a recorded time in this project's MLflow store."]
    lines += [
        "Wall time of each `dvc.yaml` stage: the MLflow runs that built what its outputs hold (`stage_seconds`, "
        "every attempt, with a stopped run whose work a later one resumed; a run that found its models and "
        "scores up to date is left out, so a preset resumed with more seeds counts both the run that trained "
        "the first seed and the one that trained the rest).",
        "",
        "| stage | minutes | runs | attempts | newest commit | machine |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {s} | {t['seconds'] / 60:.1f} | {t['runs']} | {t['attempts']} | {t['commit']} | {t['machine']} |"
        for s, t in times.items()
    ]
    lines.append(f"| total | {sum(t['seconds'] for t in times.values()) / 60:.1f} | | | | |")
    return lines
