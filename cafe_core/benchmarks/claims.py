"""The paper's claims for each ablation table, and the verdict a measured table gives each one.

A claim says one row scores higher than another on one metric and domain (the paper evaluates
its ablations on faces: ID and CLIP-T). Its verdict comes from the paired difference of the two
rows, cell by cell over (training seed, subject), and that difference's 95% interval:
``holds`` when the interval lies above zero, ``reversed`` when below, ``within_noise`` otherwise;
``not_measured`` when the evaluation data has no subject of the claim's domain for both rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .statistics import score_grid, seeds_and_subjects_interval

__all__ = ["CLAIMS", "CONTROLS", "NOT_MEASURED", "Claim", "judge"]

NOT_MEASURED = "not_measured"


@dataclass(frozen=True)
class Claim:
    """``higher`` scores above ``lower`` on ``metric`` in ``domain`` (rows are variant names)."""

    claim: str
    metric: str
    domain: str
    higher: str
    lower: str


CLAIMS: dict[str, tuple[Claim, ...]] = {
    "ablation_loss": (  # table 4: "mean square error leads to better performance"
        Claim("MSE in eq. 2 gives a higher ID than negative cosine", "ID", "face", "both", "neg_cosine"),
        Claim("MSE in eq. 2 gives a higher CLIP-T than negative cosine", "CLIP-T", "face", "both", "neg_cosine"),
    ),
    "ablation_encoders": (  # table 5
        Claim("a smaller CLIP gives a lower CLIP-T", "CLIP-T", "face", "both", "clip_small_dino_large"),
        Claim("a smaller DINO gives a lower ID", "ID", "face", "both", "clip_large_dino_small"),
    ),
    "ablation_selfdistill": (  # table 3: "self-distillation ... does lead to better performance"
        Claim("D_self gives a higher ID than D_human", "ID", "face", "selfdistill", "human"),
        Claim("D_self gives a higher CLIP-T than D_human", "CLIP-T", "face", "selfdistill", "human"),
        Claim("D_union gives a higher ID than D_auto", "ID", "face", "union", "both"),
        Claim("D_union gives a higher CLIP-T than D_auto", "CLIP-T", "face", "union", "both"),
        Claim("D_union gives a higher ID than D_human", "ID", "face", "union", "human"),
        Claim("D_union gives a higher CLIP-T than D_self", "CLIP-T", "face", "union", "selfdistill"),
    ),
    "ablation_embeddings": (  # table 6: semantics from CLIP, fine detail from DINO
        Claim("CLIP only has a higher CLIP-T than DINO only", "CLIP-T", "face", "clip_only", "dino_only"),
        Claim("DINO only has a higher ID than CLIP only", "ID", "face", "dino_only", "clip_only"),
        Claim("both embeddings give a higher ID than CLIP only", "ID", "face", "both", "clip_only"),
        Claim("both embeddings give a higher CLIP-T than DINO only", "CLIP-T", "face", "both", "dino_only"),
    ),
}
"""Target (``params.yaml: ablations``) -> the paper's claims about its rows (section 4's text and
tables). Table 4's MSE row and table 3's D_auto row are the full system ``both`` (G trained on the
automatically filtered data, the MSE assistant's c_hat, both branches). Table 3's claims are the
paper's ordering: D_self above D_human, and D_union best (above D_auto and D_human on both
metrics in its table; above D_self on CLIP-T, where it leads, 0.297 to 0.291)."""


CONTROLS: dict[str, tuple[Claim, ...]] = {
    "ablation_selfdistill": (  # the fine-tuned rows against `continued`: G main, the same steps on D_auto
        Claim("the extra steps on D_auto give a higher ID than G main", "ID", "face", "continued", "both"),
        Claim("the extra steps on D_auto give a higher CLIP-T than G main", "CLIP-T", "face", "continued", "both"),
        Claim("fine-tuning on D_self gives a higher ID than on D_auto", "ID", "face", "selfdistill", "continued"),
        Claim(
            "fine-tuning on D_self gives a higher CLIP-T than on D_auto", "CLIP-T", "face", "selfdistill", "continued"
        ),
        Claim("fine-tuning on D_union gives a higher ID than on D_auto", "ID", "face", "union", "continued"),
        Claim("fine-tuning on D_union gives a higher CLIP-T than on D_auto", "CLIP-T", "face", "union", "continued"),
    ),
}
"""Target -> comparisons its own design calls for, judged as claims are but not claims of the paper.
Table 3's self-distilled Gs fine-tune G ``main`` (paper 3.3), so they train for more steps than the
D_auto row; its control row ``continued`` takes the same steps on D_auto. A fine-tuned row's edge
over ``continued`` is its data's; ``continued`` against ``both`` is the extra steps' alone."""


def judge(claim: Claim, scores: Mapping[str, Mapping[int, list[dict]]]) -> dict:
    """The verdict on ``claim`` from ``{variant: {training seed: per-subject rows}}``.

    The two rows are compared on the seeds and subjects both scored (paired), so the interval
    leaves out what they share: the subjects' difficulty and each seed's world.
    """
    a, b = scores[claim.higher], scores[claim.lower]
    seeds = sorted(set(a) & set(b))
    subjects = sorted(
        {r["subject"] for s in seeds for r in a[s] if r["domain"] == claim.domain}
        & {r["subject"] for s in seeds for r in b[s] if r["domain"] == claim.domain}
    )
    record = {"claim": claim.claim, "metric": claim.metric, "domain": claim.domain}
    record.update(higher=claim.higher, lower=claim.lower)
    if not seeds or not subjects:  # e.g. DreamBench has no faces: the claim is not measured, not decided
        return {
            **record,
            "difference": None,
            "ci95": None,
            "verdict": NOT_MEASURED,
            "why": f"{claim.higher} and {claim.lower} share no scored {claim.domain} subject",
            "seeds": 0,
            "subjects": 0,
        }
    diff = score_grid({s: a[s] for s in seeds}, claim.metric, claim.domain, subjects) - score_grid(
        {s: b[s] for s in seeds}, claim.metric, claim.domain, subjects
    )
    interval = seeds_and_subjects_interval(diff)
    verdict = "holds" if interval.low > 0 else "reversed" if interval.high < 0 else "within_noise"
    return {
        **record,
        "difference": interval.mean,
        "ci95": [interval.low, interval.high],
        "verdict": verdict,
        "seeds": interval.seeds,
        "subjects": interval.subjects,
    }
