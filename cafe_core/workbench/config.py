"""Typed parameters: `params.yaml` read into dataclasses, with errors that name the key.

DVC tracks `params.yaml`; notebooks and scripts read it through `load_params`, so a
typo fails at once with the dotted key path instead of deep inside a training run.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """`params.yaml` is malformed: the message names the file and the key."""


# --- profiles -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Which checkpoints a profile uses. Names resolve through `cafe_core.hub.resolve_model`.

    `model_root` is where local folders live (relative paths are taken from the
    project root); real checkpoint names fall back to the Hugging Face cache.
    """

    name: str
    model_root: str | None
    clip: str  # E_c: conditioning CLIP (global embedding, patch features for the assistant)
    dino: str  # E_d: DINO patch tokens for the UNet
    clip_small: str  # table 5's smaller E_c
    dino_small: str  # table 5's smaller E_d
    lm: str  # the assistant's frozen causal LM
    text_to_image: str  # the base text-to-image model (UNet, scheduler, text encoder [, VAE])
    eval_clip: str  # CLIP-I and CLIP-T (never the conditioning CLIP)
    eval_dino: str  # DINO image similarity
    face_id: str  # identity similarity for the faces protocol (a ViT folder, or model.onnx: load_face_embedder)

    def checkpoint(self, role: str) -> str:
        """The checkpoint this profile names for ``role``: a foundation model's name in the stages,
        ``dvc.yaml`` and ``params.yaml`` (:data:`ROLES`), so the same pipeline serves every profile."""
        if role not in ROLES:
            raise ParamsError(f"unknown model role {role!r}; roles: {', '.join(ROLES)}")
        return getattr(self, ROLES[role])

    def encoder(self, role: str) -> str:
        """The checkpoint of a conditioning encoder that ``params.yaml: generators`` names."""
        if role not in ENCODER_ROLES:
            raise ParamsError(f"unknown encoder {role!r}; a generator reads one of {', '.join(ENCODER_ROLES)}")
        return self.checkpoint(role)


ROLES = {
    "clip": "clip",
    "clip_eval": "eval_clip",
    "clip_small": "clip_small",
    "dino": "dino",
    "dino_eval": "eval_dino",
    "dino_small": "dino_small",
    "face_id": "face_id",
    "lm": "lm",
    "t2i": "text_to_image",
}
"""Each foundation model's role (its folder under ``models/world``) and the :class:`Profile` field
naming its checkpoint; in ``mini`` the two agree."""

ENCODER_ROLES = ("clip", "clip_small", "dino", "dino_small")
"""The conditioning encoders a generator may read."""


PROFILES: dict[str, Profile] = {
    "mini": Profile(
        name="mini",
        model_root="models/world",
        clip="clip",
        dino="dino",
        clip_small="clip_small",
        dino_small="dino_small",
        lm="lm",
        text_to_image="t2i",
        eval_clip="clip_eval",
        eval_dino="dino_eval",
        face_id="face_id",
    ),
    "sd2": Profile(
        name="sd2",
        model_root=None,
        clip="openai/clip-vit-large-patch14-336",
        dino="facebook/dinov2-giant",
        clip_small="openai/clip-vit-base-patch32",
        dino_small="facebook/dinov2-base",
        lm="meta-llama/Llama-2-13b-chat-hf",
        text_to_image="stabilityai/stable-diffusion-2-base",
        eval_clip="openai/clip-vit-base-patch32",
        eval_dino="facebook/dino-vits16",
        face_id="arcface_w600k_r50",  # a folder holding insightface's ArcFace R50 as model.onnx (README: Profiles)
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ParamsError(
            f"unknown profile {name!r} (key 'profile'); known profiles: {', '.join(sorted(PROFILES))}"
        ) from None


# --- parameter schema -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldParams:
    seed: int
    image_size: int
    render_scale: int
    eval_fraction: float
    caption_detail_p: float


@dataclass(frozen=True)
class ClipParams:
    seed: int
    hidden_size: int
    layers: int
    heads: int
    patch_size: int
    text_hidden_size: int
    text_layers: int
    projection_dim: int
    steps: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class VitParams:
    """A small ViT trained in the world (the face-ID model; the base of the DINO-like encoders and the probe)."""

    seed: int
    hidden_size: int
    layers: int
    heads: int
    patch_size: int
    steps: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class DinoParams(VitParams):
    """A DINO-like encoder, with DINO's multi-crop: ``local_crops`` small crops (a 0.05-0.4 share of
    the image, drawn at ``local_size`` pixels) per image, each matched to its image's global views;
    their centres lie within ``local_spread`` of the room around the image centre (1: anywhere)."""

    local_crops: int = 0
    local_size: int = 8
    local_spread: float = 1.0


@dataclass(frozen=True)
class LMParams:
    seed: int
    hidden_size: int
    layers: int
    heads: int
    steps: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class T2IParams:
    seed: int
    block_out_channels: list[int]
    layers_per_block: int
    attention_head_dim: int
    steps: int
    batch_size: int
    lr: float
    caption_dropout: float
    sample_steps: int
    guidance_scale: float


@dataclass(frozen=True)
class PretrainParams:
    dataset_size: int  # rendered (image, caption) pairs shared by the image models
    dialogues: int  # world dialogues for the LM
    multi_turn_p: float  # share of them with an earlier, answered request (chat LMs learn multi-turn chat)
    checkpoint_every: int  # optimizer steps between resumable checkpoints
    clip: ClipParams
    clip_eval: ClipParams
    clip_small: ClipParams  # table 5's smaller CLIP (the stage pretrain_world_small)
    dino: DinoParams
    dino_eval: DinoParams
    dino_small: DinoParams  # table 5's smaller DINO
    face_id: VitParams
    lm: LMParams
    t2i: T2IParams


@dataclass(frozen=True)
class WorldEvalParams:
    """Sizes of the learned-ness probes run after pretraining."""

    retrieval_images: int
    views_per_subject: int
    face_pairs: int
    lm_dialogues: int
    t2i_samples: int


@dataclass(frozen=True)
class FidelityProbeParams(VitParams):
    """The fidelity probe's classifier (:mod:`cafe_core.world.fidelity`): a small ViT trained with
    the world's labels on true renders of training subjects."""

    noise: float  # std of the pixel noise added in training (images in [0, 1])
    renders: int  # true renders of training subjects it trains on
    eval_renders: int  # true renders of held-out subjects its accuracy is stated on
    checkpoint_every: int


@dataclass(frozen=True)
class FidelityParams:
    """CAFE-mini's fidelity figures: the probe, and the system ``results/fidelity/metrics.json`` reports."""

    variant: str  # key of `variants`: the full system (c = c_hat of its assistant, both branches)
    probe: FidelityProbeParams


@dataclass(frozen=True)
class TeacherParams:
    """The teacher's quadruplets and the automatic filter (paper section 3.2)."""

    quadruplets: int
    identity_drift_p: float
    ignore_instruction_p: float
    artefact_p: float
    clip_threshold: float | None  # None: calibrate from the null distributions (mini); sd2: 0.3
    dino_threshold: float | None  # None: calibrate (mini); sd2: 0.6
    calibration_level: float  # a calibrated threshold is this quantile of its null distribution


@dataclass(frozen=True)
class GeneratorParams:
    """Training of G (eq. 3) and its sampling defaults."""

    steps: int
    batch_size: int
    lr: float
    drop_p: float
    clip_tokens: int
    attention: str  # "joint" (eq. 1) or "decoupled" (IP-Adapter style)
    checkpoint_every: int
    sample_every: int  # steps between sample grids logged to MLflow
    sample_steps: int
    scheduler: str
    clip_scale: float
    dino_scale: float
    snr_gamma: float | None = None  # Min-SNR-gamma loss weighting of eq. 3; None: the plain mean
    ema_decay: float | None = None  # G published as an exponential moving average of its weights

    TRAINING_KEYS = ("steps", "batch_size", "lr", "drop_p", "clip_tokens", "attention", "snr_gamma", "ema_decay")
    """What G's weights depend on: its stage's params and skip key read only these, so changing a
    sampling setting (``clip_scale``, ``sample_steps``) re-evaluates without retraining."""
    SAMPLING_KEYS = ("sample_steps", "scheduler", "clip_scale", "dino_scale")
    """How a trained G draws: what every stage that samples from G reads."""

    def training(self) -> dict:
        return {k: getattr(self, k) for k in self.TRAINING_KEYS}

    def sampling(self) -> dict:
        return {k: getattr(self, k) for k in self.SAMPLING_KEYS}


@dataclass(frozen=True)
class GeneratorSpec:
    """Which conditioning encoders a trained G reads (roles: ``clip`` or ``clip_small``, ``dino`` or
    ``dino_small``, each profile's checkpoints: :meth:`Profile.encoder`), and the dataset it trains
    on (``data/datasets/<data>``; a dataset made per training seed, as self-distillation's is, in
    ``<data>/seed-<s>``)."""

    clip: str
    dino: str
    data: str = "teacher"
    init: str | None = None  # the G of `generators` this one fine-tunes, seed for seed; None: the base model
    steps: int | None = None  # its training steps; None: `generator.steps`


@dataclass(frozen=True)
class FinetuneSpec:
    """A G that starts from a trained one (``init``, a key of ``generators``: the same training seed's
    weights) and trains ``steps`` more on the dataset ``data``, reading ``init``'s encoders. Paper 3.3:
    self-distillation trains on the automatically filtered data, generates more, and "fine-tunes
    the model itself" on what the filter keeps. Loaded params list these among ``generators`` too
    (as a :class:`GeneratorSpec` with ``init`` and ``steps``), so every G is found in one place."""

    init: str
    data: str
    steps: int


@dataclass(frozen=True)
class VariantSpec:
    """An evaluated variant: a trained generator, the guidance branches it samples with, and where c comes from.

    ``assistant`` names the trained M whose c_hat for the CAFE-phrased request is c (the system
    the paper evaluates); None draws G alone, c = E_c of the base model's image of the plain
    prompt (eq. 4's x_ref). ``quality``: also measure the assistant's words (quality.json).
    """

    generator: str  # key of `generators`
    guidance: str  # "both", "clip_only" or "dino_only"
    assistant: str | None = None  # key of `assistants`
    quality: bool = False


@dataclass(frozen=True)
class AssistantParams:
    """Training of the assistant M (eq. 2) on world dialogues, and its chat defaults.

    The paper's optimiser (AdamW, lr 2e-3, batch 128) is `train.AssistantTraining`'s default and
    what an sd2 run should use; mini's 2-core machines take a smaller batch.
    """

    dialogues: int  # training dialogues (x, chat, response, y) of training-split subjects
    val_dialogues: int  # dialogues of validation subjects, for choosing lambda
    multi_turn_p: float  # share of dialogues with an earlier, answered turn
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    checkpoint_every: int
    max_new_tokens: int


@dataclass(frozen=True)
class AssistantSpec:
    """A trained assistant: its distance in eq. 2, the lambda grid searched on validation (on the
    first training seed; later seeds train the lambda it chose), and the G it is validated with,
    whose CLIP space c_hat lives in."""

    distance: str  # "mse" or "neg_cosine"
    lambdas: list[float]
    generator: str  # key of `generators`


@dataclass(frozen=True)
class GuidanceGridParams:
    """The guidance scales (s_c, s_d) of eq. 3 searched on validation subjects (never the tables' subjects)."""

    generator: str  # key of `generators`: the G searched
    seed: int  # its training seed searched (one of `seeds`): adding a seed does not search again
    clip_scales: list[float]
    dino_scales: list[float]
    object_subjects: int
    face_subjects: int
    prompts: int


@dataclass(frozen=True)
class ReviewParams:
    """Human filtering of the automatically filtered teacher data (paper 3.2) into the dataset
    ``human``. ``decisions``: a decisions file reviewers wrote (the review widget's), or None:
    the simulated annotator of CAFE-mini (the truth, wrong at ``error_rate``, ``seconds_per_decision`` each)."""

    decisions: str | None
    error_rate: float
    seconds_per_decision: float
    seed: int


@dataclass(frozen=True)
class SelfDistillParams:
    """Self-distillation (paper 3.3, eq. 4): the stage-1 system (``assistant`` and its G, trained on
    the automatically filtered data) draws ``requests`` new targets per training seed with
    ``c = (1 - lam) c_hat + lam E_c(x_ref)``, x_ref the base model's image of the instruction; the
    automatic filter keeps the good ones (dataset ``selfdistill``; ``union`` adds the teacher's)."""

    assistant: str  # key of `assistants`: its G (`assistants.<a>.generator`) draws
    lam: float
    requests: int
    batch_size: int


BUILT_IN_SOURCES = ("world", "dreambench")


@dataclass(frozen=True)
class DataParams:
    """Where the stages' data comes from (:mod:`cafe_core.workbench.sources`,
    :mod:`cafe_core.workbench.evaluation_sources`).

    A source is ``world``, ``dreambench`` or a key of ``folders``, the project's own data folders
    (relative to the project). They are named once, here: ``dvc.yaml`` depends on each through
    ``${data.folders.<key>}``, so pointing a key at another folder reruns the stages that read it."""

    train: str  # "world", or a key of `folders`: quadruplets and dialogues in the project's format
    evaluation: str | dict[str, str]  # "world", "dreambench", or per domain: {object: dreambench, face: faces}
    folders: dict[str, str] = field(default_factory=dict)  # key -> folder: {training: data/training, faces: data/faces}

    def __post_init__(self) -> None:
        clash = sorted(set(self.folders) & set(BUILT_IN_SOURCES))
        if clash:
            raise ParamsError(f"data.folders: {', '.join(clash)} name built-in sources; give the folder another key")
        named = {"data.train": self.train}
        if isinstance(self.evaluation, dict):
            named |= {f"data.evaluation.{domain}": name for domain, name in self.evaluation.items()}
        else:
            named["data.evaluation"] = self.evaluation
        for where, name in named.items():
            if name not in (*BUILT_IN_SOURCES, *self.folders):
                folders = ", ".join(self.folders) or "none"
                raise ParamsError(
                    f"{where} names {name!r}: a source is `world`, `dreambench` or a key of data.folders "
                    f"({folders}); put a folder of your own under data.folders (DVC then tracks it) and name its key"
                )

    def folder(self, name: str) -> str | None:
        """The project-relative folder that source ``name`` reads, or None for a built-in source."""
        return self.folders.get(name)


EVAL_DOMAINS = ("object", "face")


@dataclass(frozen=True)
class EvalParams:
    """Sizes of the DreamBench-style protocol (the tests run a tiny slice of the same code).

    ``prompts`` and ``images_per_prompt`` are one count for both domains or one per domain, as the
    paper's two protocols differ: DreamBench's 25 prompts with 4 images each, the faces' 23 with 10
    (``{object: 25, face: 23}``)."""

    object_subjects: int
    face_subjects: int
    prompts: int | dict[str, int]
    images_per_prompt: int | dict[str, int]
    references: int

    def __post_init__(self) -> None:
        for name in ("object_subjects", "face_subjects", "prompts", "images_per_prompt", "references"):
            value = getattr(self, name)
            counts = value.items() if isinstance(value, dict) else [(None, value)]
            if isinstance(value, dict) and set(value) != set(EVAL_DOMAINS):
                raise ParamsError(
                    f"evaluation.{name} must be one count or one per domain ({', '.join(EVAL_DOMAINS)}), got {value!r}"
                )
            for domain, count in counts:
                if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                    where = f"evaluation.{name}" + (f".{domain}" if domain else "")
                    raise ParamsError(f"{where} must be a whole number of at least 1, got {count!r}")

    def subjects_of(self, domain: str) -> int:
        """How many subjects of ``domain`` the tables evaluate."""
        return _per_domain({"object": self.object_subjects, "face": self.face_subjects}, domain)

    def prompts_of(self, domain: str) -> int:
        """How many prompts each subject of ``domain`` is drawn with."""
        return _per_domain(self.prompts, domain)

    def images_of(self, domain: str) -> int:
        """How many images each (subject, prompt) of ``domain`` gets, each from its own noise."""
        return _per_domain(self.images_per_prompt, domain)


def _per_domain(count: int | dict[str, int], domain: str) -> int:
    """``count`` for ``domain``: the one count, or the domain's entry (an unknown domain is a ValueError)."""
    if domain not in EVAL_DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; the domains are {', '.join(EVAL_DOMAINS)}")
    return count[domain] if isinstance(count, dict) else count


@dataclass(frozen=True)
class StepCompute:
    """How one training step is computed, not what it computes: neither setting changes the trained
    weights beyond float rounding, so neither is in a training stage's skip key or DVC params."""

    micro_batch_size: int | None = None  # rows per forward and backward on each process; None: all at once
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, about 1.3x the time


@dataclass(frozen=True)
class ComputeParams:
    """Per trained part (``generator``, ``assistant``): how its steps fit a device's memory; and how
    many of a stage's training seeds run at once. Like :class:`StepCompute`, none of it changes a
    result beyond float rounding, so none of it is in a skip key or a stage's DVC params."""

    generator: StepCompute = field(default_factory=StepCompute)
    assistant: StepCompute = field(default_factory=StepCompute)
    seed_processes: int = 1  # training seeds side by side, a process each, the threads split; 1: in turn

    def __post_init__(self) -> None:
        if self.seed_processes < 1:
            raise ParamsError(f"compute.seed_processes must be >= 1, got {self.seed_processes}")


FEATURE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class FeatureParams:
    """How the frozen encoders' cached features are stored (README, "Datasets larger than memory")."""

    dtype: str = "float32"  # FEATURE_DTYPES; half precision halves the disk and changes what G and M read

    def __post_init__(self) -> None:
        if self.dtype not in FEATURE_DTYPES:
            raise ParamsError(f"features.dtype must be one of {', '.join(FEATURE_DTYPES)}, got {self.dtype!r}")

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class Params:
    profile: Profile
    seed: int  # the world, data and evaluation cases: one draw shared by every training seed
    seeds: list[int]  # training seeds of every trained G and M
    threads: int  # torch intra-op threads; 0 keeps torch's default
    world: WorldParams
    data: DataParams
    pretrain: PretrainParams
    world_eval: WorldEvalParams
    fidelity: FidelityParams
    teacher: TeacherParams
    generator: GeneratorParams
    generators: dict[str, GeneratorSpec]  # as loaded: those trained from the base model, then `finetuned`'s
    variants: dict[str, VariantSpec]
    assistant: AssistantParams
    assistants: dict[str, AssistantSpec]
    evaluation: EvalParams
    guidance: GuidanceGridParams
    review: ReviewParams
    selfdistill: SelfDistillParams
    ablations: dict[str, list[str]]  # target -> variants in its table
    compute: ComputeParams = field(default_factory=ComputeParams)
    features: FeatureParams = field(default_factory=FeatureParams)
    finetuned: dict[str, FinetuneSpec] = field(default_factory=dict)
    source: Path | None = field(default=None, compare=False)

    def generator_stage(self, name: str) -> str:
        """The ``dvc.yaml`` stage that trains G ``name``: ``finetune_generator@<name>`` for one that
        starts from another G, ``train_generator@<name>`` for the others."""
        spec = self.generators.get(name)
        return f"{'finetune' if spec is not None and spec.init else 'train'}_generator@{name}"


def _from_dict(cls: type, data: Any, where: str, source: str) -> Any:
    """Build dataclass `cls` from `data`, naming the dotted key of anything missing or unknown."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: key '{where}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init and f.name != "source"]
    known = {f.name for f in fields}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParamsError(
            f"{source}: unknown key '{_join(where, unknown[0])}' (expected one of: {', '.join(sorted(known))})"
        )
    values = {}
    for f in fields:
        key = _join(where, f.name)
        if f.name not in data:
            if f.default is not dataclasses.MISSING:
                continue
            raise ParamsError(f"{source}: missing key '{key}'")
        values[f.name] = _coerce(hints[f.name], data[f.name], key, source)
    return cls(**values)


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    if tp is Profile:
        if not isinstance(value, str):
            raise ParamsError(f"{source}: key '{key}' must be a profile name, got {value!r}")
        return get_profile(value)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key, source)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        mapping = [a for a in args if typing.get_origin(a) is dict]  # `str | dict[...]`: a mapping takes the dict
        return _coerce(mapping[0] if mapping and isinstance(value, dict) else args[0], value, key, source)
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{source}: key '{key}' must be a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): _coerce(item, v, f"{key}.{k}", source) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{source}: key '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, str, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    if tp is Path and isinstance(value, str):
        return Path(value)
    raise ParamsError(f"{source}: key '{key}' must be {getattr(tp, '__name__', tp)}, got {value!r}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def load_params(path: str | os.PathLike = "params.yaml", *, profile: str | None = None) -> Params:
    """Read and validate `params.yaml`; `profile` overrides the file's `profile` key.

    The chosen profile's entry of `profile_overrides` (if any) replaces the keys it names, so one
    file holds mini's settings and, say, the paper's batch size for sd2.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"parameters file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return params_from_dict(data, source=str(path), profile=profile, path=path)


def params_from_dict(
    data: Any, *, source: str = "params", profile: str | None = None, path: Path | None = None
) -> Params:
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: top level must be a mapping")
    data = dict(data)
    if profile is not None:
        data["profile"] = profile
    overrides = data.pop("profile_overrides", None) or {}
    if not isinstance(overrides, dict):
        raise ParamsError(f"{source}: key 'profile_overrides' must map profile names to settings")
    chosen = data.get("profile")
    for name, override in overrides.items():
        if isinstance(override, dict) and isinstance(override.get("data"), dict) and "folders" in override["data"]:
            raise ParamsError(
                f"{source}: key 'profile_overrides.{name}.data.folders': the data folders are the project's, "
                "shared by every profile (dvc.yaml depends on data.folders): set them at the top level"
            )
    if isinstance(chosen, str) and chosen in overrides:
        data = _merge(data, overrides[chosen], f"profile_overrides.{chosen}", source)
    params = _from_dict(Params, data, "", source)
    params = dataclasses.replace(params, generators=_with_finetuned(params, source))
    _check_references(params, source)
    return dataclasses.replace(params, source=path)


def _with_finetuned(params: Params, source: str) -> dict[str, GeneratorSpec]:
    """``generators`` and then ``finetuned``'s Gs, each a :class:`GeneratorSpec` reading its
    ``init``'s encoders. A fine-tuned G starts from a G trained from the base model (DVC's stage
    for it depends on that G's folder), so ``init`` is declared under ``finetuned`` only."""
    merged = dict(params.generators)
    for name, spec in merged.items():
        if spec.init is not None or spec.steps is not None:
            raise ParamsError(
                f"{source}: key 'generators.{name}' sets init or steps: a G that starts from another "
                "belongs under 'finetuned' (init, data, steps), whose stage depends on the G it starts from"
            )
    for name, tune in params.finetuned.items():
        if name in merged:
            raise ParamsError(f"{source}: key 'finetuned.{name}' is also a key of 'generators': name it once")
        if tune.init not in params.generators:
            raise ParamsError(
                f"{source}: key 'finetuned.{name}.init' names {tune.init!r}, not a key of 'generators' "
                f"({', '.join(params.generators)})"
            )
        if tune.steps < 1:
            raise ParamsError(f"{source}: key 'finetuned.{name}.steps' must be at least 1, got {tune.steps}")
        base = params.generators[tune.init]
        merged[name] = GeneratorSpec(clip=base.clip, dino=base.dino, data=tune.data, init=tune.init, steps=tune.steps)
    return merged


def _check_references(params: Params, source: str) -> None:
    """Keys that name other entries must name existing ones, and c_hat must live in the CLIP G reads."""

    def need(key: str, name: str | None, table: dict, where: str) -> None:
        if name is not None and name not in table:
            raise ParamsError(f"{source}: key '{key}' names {name!r}, not a key of '{where}' ({', '.join(table)})")

    if not params.seeds or len(set(params.seeds)) != len(params.seeds):
        raise ParamsError(f"{source}: key 'seeds' must be a non-empty list of distinct seeds, got {params.seeds}")
    for name, spec in params.generators.items():
        for key, role, kinds in (
            ("clip", spec.clip, ("clip", "clip_small")),
            ("dino", spec.dino, ("dino", "dino_small")),
        ):
            if role not in kinds:
                raise ParamsError(
                    f"{source}: key 'generators.{name}.{key}' must be one of {', '.join(kinds)}, got {role!r}"
                )
    for name, spec in params.assistants.items():
        need(f"assistants.{name}.generator", spec.generator, params.generators, "generators")
    for name, spec in params.variants.items():
        need(f"variants.{name}.generator", spec.generator, params.generators, "generators")
        need(f"variants.{name}.assistant", spec.assistant, params.assistants, "assistants")
        if spec.assistant is not None:
            reads = params.generators[spec.generator].clip
            lives = params.generators[params.assistants[spec.assistant].generator].clip
            if reads != lives:
                raise ParamsError(
                    f"{source}: variant {name!r}: G {spec.generator!r} reads CLIP {reads!r}, but assistant "
                    f"{spec.assistant!r} predicts embeddings of CLIP {lives!r}"
                )
    need("fidelity.variant", params.fidelity.variant, params.variants, "variants")
    need("selfdistill.assistant", params.selfdistill.assistant, params.assistants, "assistants")
    if not 0.0 <= params.selfdistill.lam <= 1.0:
        raise ParamsError(f"{source}: key 'selfdistill.lam' must lie in [0, 1], got {params.selfdistill.lam}")
    need("guidance.generator", params.guidance.generator, params.generators, "generators")
    if params.guidance.seed not in params.seeds:
        raise ParamsError(
            f"{source}: key 'guidance.seed' ({params.guidance.seed}) must be one of the training seeds {params.seeds}"
        )


def _merge(base: dict, override: Any, where: str, source: str) -> dict:
    """`base` with `override`'s keys replaced, recursively; an override key must exist in `base`."""
    if not isinstance(override, dict):
        raise ParamsError(f"{source}: key '{where}' must be a mapping, got {override!r}")
    merged = dict(base)
    for key, value in override.items():
        if key not in base:
            raise ParamsError(f"{source}: key '{where}.{key}' overrides nothing (no key '{key}' to override)")
        merged[key] = (
            _merge(base[key], value, f"{where}.{key}", source)
            if isinstance(value, dict) and isinstance(base[key], dict)
            else value
        )
    return merged


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding `params.yaml` and `pyproject.toml`, found upwards from `start` (default: cwd).

    Env `CAFE_PROJECT_ROOT` wins, so notebooks run by papermill from another folder agree.
    """
    env = os.environ.get("CAFE_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "pyproject.toml").is_file():
            return folder
    return here


def to_dict(obj: Any) -> Any:
    """Plain-data view of a params dataclass, for logging to MLflow and hashing."""
    if isinstance(obj, Profile):
        return obj.name
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "source"}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
