"""What limits G in CAFE-mini: do its conditions carry the subject, can its base model draw it? (prints figures)

    bin/with-env python scripts/diagnose_generator.py [--rows 8000] [--subjects 24] [--t2i t2i]
        [--only probes|base|seen]

Needs the world models, the fidelity probe and the filtered teacher data (`dvc repro teacher_data
fidelity_probe`); the third measurement also needs the `guidance` stage's G and chosen scales. The
first two measurements are on subjects G never trained on:

1. What the conditions carry. Linear probes (logistic regression) trained on the features of
   filtered teacher quadruplets of 80% of the training subjects and scored on the other 20%: each
   identity attribute of the photo's subject from the raw pixels of x, from d = E_d(x) (DINO patch
   tokens, flattened), from DINO's CLS token, from E_c(x) and from c = E_c(y), and the target's
   context from c. If d names the subject as well as the pixels do, G's conditioning is not what
   loses it.
2. What the base model draws. The world's text-to-image model (G's initialisation, our SD2) is
   given, for held-out subjects in random contexts, a prompt naming every detail the context
   shows ("a purple ring with black dots on the beach") and the plain prompt ("a ring on the
   beach"); the fidelity probe judges its drawings beside true renders of the same subjects and
   contexts. G starts from this UNet: what it cannot draw from words, G must learn to draw.
3. Whether G learned its training subjects better than it copies new ones. The `guidance`
   stage's G and scorer (G alone, at the chosen scales) draw training subjects, whose rows G
   trained on, beside the stage's validation subjects: a G that draws the subjects it has seen
   far better is memorising them; one that draws both alike has not learned to draw them at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cafe_core.benchmarks.metrics import fidelity_figures  # noqa: E402
from cafe_core.data.dataset import open_dataset  # noqa: E402
from cafe_core.data.quadruplets import read_quadruplets  # noqa: E402
from cafe_core.models.encoders import ClipEncoder, DinoEncoder  # noqa: E402
from cafe_core.models.text_to_image import TextToImage  # noqa: E402
from cafe_core.workbench.config import load_params  # noqa: E402
from cafe_core.workbench.paths import ProjectPaths  # noqa: E402
from cafe_core.world.fidelity import PROBE_FOLDER, FidelityProbe  # noqa: E402
from cafe_core.world.language import _detail_fragments, _fix_articles, _noun_phrase  # noqa: E402
from cafe_core.world.world import ATTRIBUTE_VALUES, DOMAINS, make_world  # noqa: E402


def linear_probes(params, model_root: Path, rows: int) -> None:
    from sklearn.linear_model import LogisticRegression

    dataset, world = open_dataset(ROOT / "data/datasets/teacher"), make_world(params)
    kept = np.flatnonzero(dataset.kept())  # the rows G trains on
    rng = np.random.default_rng(0)
    data = read_quadruplets(dataset, np.sort(rng.choice(kept, min(rows, len(kept)), replace=False)))
    x, y = data.x, data.y
    subjects = [world.subject(int(s)) for s in data.subject_ids]
    contexts = data.context_ids
    spec = params.generators["main"]
    clip = ClipEncoder.from_pretrained(spec.clip, model_root=model_root)
    dino = DinoEncoder.from_pretrained(spec.dino, model_root=model_root)
    with torch.inference_mode():
        features = {
            "pixels of x": x.reshape(len(x), -1) / 255.0,
            "d = E_d(x)": dino.patch_tokens(x).flatten(1).numpy(),
            "DINO CLS of x": dino.cls_embeds(x).numpy(),
            "E_c(x)": clip.image_embeds(x).numpy(),
            "c = E_c(y)": clip.image_embeds(y).numpy(),
        }
    ids = np.array([s.id for s in subjects])
    unique = np.unique(ids)
    held = set(rng.choice(unique, len(unique) // 5, replace=False).tolist())
    test = np.array([i in held for i in ids])
    print(f"linear probes: {len(x)} filtered quadruplets, accuracy on {len(held)} unseen subjects' rows")
    for domain in DOMAINS:
        mine = np.array([s.domain == domain for s in subjects])
        labels = {"class": np.array([s.cls for s in subjects])}
        for name in ATTRIBUTE_VALUES[domain]:
            labels[name] = np.array([s.attr(name) if s.domain == domain else "" for s in subjects])
        print(f"  {domain} ({mine.sum()} rows): {', '.join(labels)}; context of y (from c only)")
        for feature, values in features.items():
            cells = []
            targets = {**labels, **({"context": contexts} if feature.startswith("c =") else {})}
            for label, truth in targets.items():
                fit = LogisticRegression(max_iter=300).fit(values[mine & ~test], truth[mine & ~test])
                cells.append(f"{label} {np.mean(fit.predict(values[mine & test]) == truth[mine & test]):.2f}")
            print(f"    {feature:14s} {'  '.join(cells)}")


def named(world, subject, context) -> str:
    """The subject's noun phrase with every detail ``context`` shows ("purple ring with black dots").

    The world's own caption pieces (private to its language module; captions name a random share
    of these details, prompts none)."""
    return _noun_phrase(subject.cls, _detail_fragments(subject, world.hidden_details(subject, context)))


def base_model(params, model_root: Path, t2i_name: str, n_subjects: int) -> dict[str, dict[str, dict]]:
    """Print and return ``{domain: {prompt kind: fidelity figures}}`` of the base model's drawings."""
    world = make_world(params)
    probe = FidelityProbe.from_pretrained(model_root / PROBE_FOLDER)
    t2i = TextToImage.from_pretrained(t2i_name, model_root=model_root)
    p = params.pretrain.t2i
    rng = np.random.default_rng(0)
    print(f"base model {t2i_name!r}: {n_subjects} held-out subjects per domain, 6 contexts each, judged by the probe")
    figures: dict[str, dict[str, dict]] = {}
    for domain in DOMAINS:
        subjects = world.subjects(domain, "eval")
        subjects = [subjects[i] for i in rng.choice(len(subjects), n_subjects, replace=False)]
        contexts = world.contexts(domain)
        verdicts: dict[str, list] = {"every detail named": [], "plain prompt": [], "true renders": []}
        for subject in subjects:
            shown = [contexts[i] for i in rng.choice(len(contexts), 6, replace=False)]
            detailed = [_fix_articles(c.phrase.format(named(world, subject, c))) for c in shown]
            plain = [world.prompt(subject, c) for c in shown]
            for kind, prompts in (("every detail named", detailed), ("plain prompt", plain)):
                seeds = [int(s) for s in rng.integers(0, 2**31, len(prompts))]
                images = t2i(prompts, num_inference_steps=p.sample_steps, guidance_scale=p.guidance_scale, seed=seeds)
                verdicts[kind] += probe.judge(world, subject, shown, images)
            renders = world.render_batch([subject] * len(shown), shown, [int(s) for s in rng.integers(0, 10**6, 6)])
            verdicts["true renders"] += probe.judge(world, subject, shown, renders)
        print(f"  {domain} (e.g. {detailed[0]!r})")
        for kind, found in verdicts.items():
            f = figures.setdefault(domain, {})[kind] = fidelity_figures(found)
            per = "  ".join(
                f"{k.removeprefix('attribute.')} {v:.2f}" for k, v in f.items() if k.startswith("attribute.")
            )
            print(f"    {kind:19s} attributes {f['attributes']:.3f}  context {f['context']:.3f}  |  {per}")
    return figures


def seen_subjects(params, n_subjects: int) -> dict[str, dict]:
    """Print and return ``{"training subjects": row, "validation subjects": row}``: the guidance
    stage's scorer (:class:`GridScorer`) on ``n_subjects`` of each per domain, at its chosen scales."""
    import json

    from cafe_core.workbench.evaluation_sources import evaluation_source
    from cafe_core.workbench.stages.guidance import GridScorer
    from cafe_core.world.cases import _mini_case

    paths, p = ProjectPaths(ROOT), params.guidance
    chosen = json.loads(paths.guidance_grid.read_text())["chosen"]
    source = evaluation_source(params, ROOT)
    world, refs, rng = source.world, params.evaluation.references, np.random.default_rng(0)
    seen = {}
    for domain in source.domains:
        subjects, contexts = world.subjects(domain, "train"), world.contexts(domain)
        subjects = [subjects[i] for i in np.sort(rng.choice(len(subjects), n_subjects, replace=False))]
        shown = [contexts[i] for i in np.sort(rng.choice(len(contexts), p.prompts, replace=False))]
        seen[domain] = [_mini_case(world, s, shown, refs, rng) for s in subjects]
    unseen = {d: source.validation_cases(d, n_subjects, p.prompts, params.seed, refs) for d in source.domains}
    scales = chosen["clip_scale"], chosen["dino_scale"]
    print(f"G {p.generator!r} (training seed {p.seed}) at (s_c, s_d) = {scales}, {p.prompts} prompts per subject")
    rows, scorer = {}, GridScorer(params, ROOT, source, seen, p.seed)  # G, references and judges loaded once
    for name, cases in (("training subjects", seen), ("validation subjects", unseen)):
        scorer.cases = cases
        rows[name] = row = scorer(*scales)
        cells = "  ".join(
            f"{d}: attributes {row[d]['attributes']:.3f} context {row[d]['context']:.3f} "
            f"CLIP-T {row[d]['CLIP-T']:.3f} identity {row[d]['identity']:.3f}"
            for d in source.domains
        )
        print(f"  {name:19s} {cells}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8000, help="filtered quadruplets the linear probes use")
    parser.add_argument(
        "--subjects", type=int, default=None, help="subjects per domain (default: 24 for the base model, 12 for seen)"
    )
    parser.add_argument("--t2i", default=None, help="the base model: a name or a folder (default: the profile's)")
    parser.add_argument("--only", choices=("probes", "base", "seen"), help="run one of the three measurements")
    args = parser.parse_args()
    if args.only in (None, "seen") and not ProjectPaths(ROOT).guidance_grid.is_file():
        parser.error("no guidance grid in this project yet (the seen measurement needs it): run `dvc repro guidance`")
    params = load_params(ROOT / "params.yaml")
    model_root = ProjectPaths(ROOT).model_root(params.profile)
    if args.only in (None, "probes"):
        linear_probes(params, model_root, args.rows)
    if args.only in (None, "base"):
        base_model(params, model_root, args.t2i or params.profile.text_to_image, args.subjects or 24)
    if args.only in (None, "seen"):
        seen_subjects(params, args.subjects or params.guidance.object_subjects)


if __name__ == "__main__":
    main()
