"""`cafe`: chat with the assistant about a photo, or draw from a reference image (the fast path).

    cafe photo --out photo.png       # a held-out subject (mini: a red ball with a gold checker pattern)
    cafe chat --image photo.png "Can you generate an image for this ball on the beach?"
    cafe chat --image photo.png --session chat.json "Show me this ball in the snow."
    cafe photo --index 5 --target --out scene.png    # another subject in a scene (mini has true images)
    cafe generate --image photo.png --reference scene.png
    cafe chat --image photo.png --reference scene.png --blend 0.5 "Show me this ball on the beach."
    cafe chat --image photo.png --clip-scale 5 --dino-scale 1.5 --steps 25 "Draw this ball in the snow."
    cafe export cafe-mini/     # the whole trained system as one diffusers folder: CafePipeline.from_pretrained
    cafe score samples/ip_adapter/   # any method's images in DreamBench++'s layout: DINO, CLIP-I, CLIP-T

Sampling knobs (both commands): --clip-scale (s_c: how strongly to draw what is asked), --dino-scale
(s_d: how faithfully to keep the photo's subject), --steps, --scheduler, --guidance; defaults are the
scales chosen on validation (results/guidance/grid.json) and params.yaml's sampler. --image may be
repeated for several photos of one subject. --reference images blend into what the assistant
predicts by eq. 4, c = (1 - sum w) c_hat + sum w E_c(reference), one --blend weight each (or one
weight shared; default 0.5 in all); for `generate` (no assistant) the weights are relative.

Every command reads `params.yaml` of the project (the folder above, or `--root`), whose `profile`
picks the checkpoints: `mini` uses the world models built by `dvc repro` and knows only its world's
words and subjects (a ball, a star, a cup ... not a dog), `sd2` the real ones from the Hugging Face
cache or `CAFE_MODEL_ROOT`. `cafe photo` takes a held-out evaluation subject's photo (mini renders
one, sd2 takes DreamBench's) and prints a request to try. Exit status: 0 on success, 2 for bad
input (a path, an image, a parameter, a message), 3 when a model is missing or unreadable.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

EXIT_INPUT, EXIT_MODEL = 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cafe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="project folder holding params.yaml (default: found from the cwd)"
    )
    parser.add_argument("--profile", default=None, help="override params.yaml's profile (mini or sd2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log model loading")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--image",
            required=True,
            type=Path,
            action="append",
            help="photo of the subject (repeat for several photos of one subject)",
        )
        p.add_argument("--out", type=Path, default=None, help="where to write the image (default: cafe_<command>.png)")
        p.add_argument("--num-images", type=int, default=1, help="images to draw (written as OUT-0.png, OUT-1.png ...)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--generator", default=None, help="trained generator (key of params.yaml `generators`)")
        p.add_argument(
            "--training-seed",
            type=int,
            default=None,
            help="which training seed's G and M to load (one of params.yaml `seeds`; default: the first)",
        )
        p.add_argument(
            "--native-size",
            action="store_true",
            help="write images at the model's size (tiny in mini), not enlarged to >= 256 px",
        )
        p.add_argument("--clip-scale", type=float, default=None, help="s_c: how strongly to draw what is asked")
        p.add_argument("--dino-scale", type=float, default=None, help="s_d: how faithfully to keep the photo's subject")
        p.add_argument("--steps", type=int, default=None, help="denoising steps (default: params.yaml generator)")
        p.add_argument("--scheduler", default=None, help="ddim, dpmsolver++ or ddpm (default: params.yaml generator)")
        p.add_argument("--guidance", default=None, help="both (default), clip_only or dino_only")
        p.add_argument(
            "--blend",
            type=float,
            action="append",
            default=None,
            help="weight of each --reference in c (one per reference, or one shared)",
        )

    chat = sub.add_parser("chat", help="one chat turn: prints the response, writes the image")
    common(chat)
    chat.add_argument("message", help='what you ask, e.g. "Can you generate an image for this ball on the beach?"')
    chat.add_argument("--session", type=Path, default=None, help="JSON file keeping the chat across calls (multi-turn)")
    chat.add_argument("--assistant", default="mse", help="trained assistant (key of params.yaml `assistants`)")
    chat.add_argument(
        "--reference", type=Path, action="append", default=None, help="image blended into c_hat (eq. 4; repeatable)"
    )

    gen = sub.add_parser("generate", help="the fast path: c from reference images, no language model")
    common(gen)
    gen.add_argument(
        "--reference",
        required=True,
        type=Path,
        action="append",
        help="image whose CLIP embedding says what to draw (repeat to mix several)",
    )

    grid = sub.add_parser("grid", help="the two knobs on your photo: an s_c x s_d grid of drawings from one noise")
    common(grid)
    grid.add_argument("message", nargs="?", default=None, help="what you ask (default: --reference images alone)")
    grid.add_argument("--assistant", default="mse", help="trained assistant (key of params.yaml `assistants`)")
    grid.add_argument("--reference", type=Path, action="append", default=None, help="image blended into c (eq. 4)")
    grid.add_argument("--clip-scales", type=_scales, default=(0.0, 1.5, 3.0, 5.0, 7.0), help="rows, e.g. 0,1.5,3,5,7")
    grid.add_argument("--dino-scales", type=_scales, default=(0.0, 1.5, 3.0, 5.0), help="columns, e.g. 0,1.5,3,5")

    export = sub.add_parser(
        "export", help="write the whole trained system as one diffusers folder (CafePipeline.from_pretrained reads it)"
    )
    export.add_argument("out", type=Path, help="the folder to write (must not exist, or be empty)")
    export.add_argument("--assistant", default="mse", help="trained assistant (key of params.yaml `assistants`)")
    export.add_argument("--no-assistant", action="store_true", help="leave the language model out: the fast path")
    export.add_argument("--generator", default=None, help="trained generator (default: the assistant's)")
    export.add_argument("--training-seed", type=int, default=None, help="which training seed (default: the first)")

    score = sub.add_parser(
        "score",
        help="score a samples folder in DreamBench++'s layout (any method's): DINO, CLIP-I, CLIP-T; ID for faces",
    )
    score.add_argument("samples", type=Path, help="a folder with src_image/, tgt_image/ and text/ (same names)")
    score.add_argument(
        "--faces",
        action="store_true",
        help="every subject is a person (a peer's faces outputs): ID for every image; "
        "without it, only subjects named face-... (CAFE's evaluation folders)",
    )

    photo = sub.add_parser("photo", help="write a held-out subject's photo to chat about, and a request to try")
    photo.add_argument("--domain", default="object", help="object or face (the evaluation data's domains)")
    photo.add_argument("--index", type=int, default=0, help="which held-out subject (0, 1, ...)")
    photo.add_argument("--out", type=Path, default=Path("photo.png"), help="where to write it (.png)")
    photo.add_argument("--native-size", action="store_true", help="write it at the model's size, not enlarged")
    photo.add_argument(
        "--target",
        action="store_true",
        help="write the true image of the printed request instead (data with ground truth: mini), "
        "e.g. a reference for `cafe generate`",
    )
    return parser


def _scales(text: str) -> tuple[float, ...]:
    """``0,1.5,3`` -> (0.0, 1.5, 3.0), each >= 0."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more scales, each >= 0")
    return values


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return _run(args)
    except CliError as err:
        if args.verbose and err.__cause__ is not None:
            import traceback

            traceback.print_exception(err.__cause__, file=sys.stderr)
        print(f"cafe: error: {err}", file=sys.stderr)
        return err.code


def _run(args: argparse.Namespace) -> int:
    from .models.assistant import PromptTooLong
    from .utils.images import ImageLoadError, load_image
    from .workbench.config import ParamsError

    if args.command == "export":
        return _export(args)
    if args.command == "score":
        return _score(args)
    if args.command != "photo":
        for flag, value in (("--num-images", args.num_images), ("--steps", args.steps)):
            if value is not None and value < 1:
                raise CliError(f"{flag} must be >= 1, got {value}")
    if args.out is not None and args.out.suffix.lower() != ".png":
        raise CliError(f"--out must be a .png path, got {args.out}")
    if args.command in ("chat", "grid") and args.message is not None and not args.message.strip():
        raise CliError(
            'the message is empty: say what to draw, e.g. "Can you generate an image for this ball on the beach?"'
        )
    if args.command == "grid" and args.message is None and not args.reference:
        raise CliError("say what to draw: a message, or --reference images")
    root, params = _project(args)
    try:
        if args.command == "photo":
            return _photo(params, root, args)
        photos = [np.asarray(load_image(path)) for path in args.image]
        references = [np.asarray(load_image(path)) for path in args.reference or []]
    except (ParamsError, ImageLoadError) as err:
        raise CliError(str(err)) from None
    blend = _blend(args.blend, len(references))
    _check_knobs(args, blend)
    photo = photos[0]
    session = _read_session(args.session, photo) if args.command == "chat" else None
    message = getattr(args, "message", None)
    pipe = _load(params, root, args, assistant=args.assistant if message is not None else None)
    pipe.set_progress_bar_config(disable=True)
    if message is not None:
        _warn_unknown_words(pipe, params, root, message)
    if args.command == "grid":
        return _grid(pipe, photos, message, references, blend, args)
    try:
        result = pipe(
            photos if len(photos) > 1 else photo,
            message,
            history=session["history"] if session else None,
            reference_images=references or None,
            reference_weights=blend,
            clip_scale=args.clip_scale,
            dino_scale=args.dino_scale,
            guidance=args.guidance,
            num_inference_steps=args.steps,
            scheduler=args.scheduler,
            seed=args.seed,
            num_images_per_prompt=args.num_images,
        )
    except PromptTooLong as err:
        raise CliError(str(err).replace("chat 0 is", "the chat is", 1)) from err
    except ValueError as err:
        raise CliError(_as_flag(err)) from err
    images = np.stack([np.asarray(image) for image in result.images])
    if args.command == "chat":
        print(result.response)
        if args.session:
            _write_session(args.session, photo, result.history)
    for path in _write_images(images, args.out or Path(f"cafe_{args.command}.png"), enlarge=not args.native_size):
        print(f"wrote {path}", file=sys.stderr)
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()), file=sys.stderr)
    return 0


_FLAGS = {
    "reference_weights": "--blend",
    "clip_scale": "--clip-scale",
    "dino_scale": "--dino-scale",
    "num_inference_steps": "--steps",
    "num_images_per_prompt": "--num-images",
    "guidance": "--guidance",
    "scheduler": "--scheduler",
}


def _as_flag(err: ValueError) -> str:
    """An error of the call in the CLI's words: a bad argument named by the flag the user typed."""
    from .utils.errors import ArgumentError

    if isinstance(err, ArgumentError):
        return f"{_FLAGS.get(err.name, err.name)} {err.problem}"
    return str(err)


def _grid(pipe, photos: list, message: str | None, references: list, blend, args: argparse.Namespace) -> int:
    """Write the s_c x s_d grid (rows s_c, columns s_d) as one labelled PNG."""
    from .workbench.plots import image_grid

    start = time.perf_counter()
    try:
        grid = pipe.scale_grid(
            photos if len(photos) > 1 else photos[0],
            message,
            clip_scales=args.clip_scales,
            dino_scales=args.dino_scales,
            seed=args.seed,
            reference_images=references or None,
            reference_weights=blend,
            guidance=args.guidance,
            num_inference_steps=args.steps,
            scheduler=args.scheduler,
        )
    except ValueError as err:
        raise CliError(_as_flag(err)) from err
    out = args.out or Path("cafe_grid.png")
    fig = image_grid(
        [list(row) for row in grid],
        row_titles=[f"s_c {s:g}" for s in args.clip_scales],
        col_titles=[f"s_d {s:g}" for s in args.dino_scales],
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}: rows s_c (what to draw), columns s_d (faithful to the photo)", file=sys.stderr)
    print(f"seconds: total {time.perf_counter() - start:.2f}", file=sys.stderr)
    return 0


def _check_knobs(args: argparse.Namespace, blend: list[float] | None) -> None:
    """Refuse a bad sampling flag or --blend by name before any model loads."""
    from .models.guidance import check_reference_weights
    from .pipeline import check_sampling

    try:
        check_sampling(
            clip_scale=args.clip_scale,
            dino_scale=args.dino_scale,
            num_inference_steps=args.steps,
            scheduler=args.scheduler,
            guidance=args.guidance,
        )
        if blend is not None:
            check_reference_weights(blend, len(blend), with_c_hat=getattr(args, "message", None) is not None)
    except ValueError as err:
        raise CliError(_as_flag(err)) from None


def _blend(weights: list[float] | None, references: int) -> list[float] | None:
    """One --blend per reference, or one shared equally; None: the call's default."""
    if weights is None:
        return None
    if not references:
        raise CliError("--blend weighs --reference images: give at least one --reference")
    if len(weights) == 1 and references > 1:
        return [weights[0] / references] * references
    if len(weights) != references:
        raise CliError(f"--blend: {len(weights)} weights for {references} --reference images (give one, or one each)")
    return weights


def _project(args) -> tuple[Path, Any]:
    """The project's root and params (``--root``, ``--profile``), after refusing a device this machine lacks."""
    from .workbench.config import ParamsError, load_params, project_root

    _check_device(args.device)
    root = (args.root or project_root()).resolve()
    if not (root / "params.yaml").is_file():
        raise CliError(f"no params.yaml in {root}: run cafe inside the project, or pass --root")
    try:
        return root, load_params(root / "params.yaml", profile=args.profile)
    except ParamsError as err:
        raise CliError(str(err)) from None


def _export(args) -> int:
    """``cafe export OUT``: the trained system as one folder in diffusers' layout (``save_pretrained``)."""
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise CliError(f"{args.out} exists and is not an empty folder: name a new one")
    root, params = _project(args)
    pipe = _load(params, root, args, assistant=None if args.no_assistant else args.assistant)
    pipe.save_pretrained(args.out)
    print(f"wrote {args.out}: load it with cafe_core.pipeline.CafePipeline.from_pretrained({str(args.out)!r})")
    return 0


def _score(args) -> int:
    """``cafe score SAMPLES``: the profile's evaluation encoders on a samples folder; prints the summary."""
    import torch

    from .benchmarks.samples import SCORES, SUMMARY, score_samples
    from .models.encoders import ClipEncoder, DinoEncoder, load_face_embedder
    from .workbench.paths import ProjectPaths

    root, params = _project(args)
    model_root = ProjectPaths(root).model_root(params.profile)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    clip = ClipEncoder.from_pretrained(params.profile.eval_clip, model_root=model_root, device=device)
    dino = DinoEncoder.from_pretrained(params.profile.eval_dino, model_root=model_root, device=device)
    face = load_face_embedder(params.profile.face_id, model_root=model_root)
    try:
        summary = score_samples(args.samples, clip, dino, face=face, faces=True if args.faces else None)
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from None
    print(
        f"{args.samples}: {summary['images']} images of {summary['subjects']} subjects; "
        + ", ".join(f"{m} {summary[m]:.4f}" for m in ("DINO", "CLIP-I", "CLIP-T", "ID") if m in summary)
    )
    print(f"per image: {args.samples / SCORES}; summary: {args.samples / SUMMARY}")
    return 0


def _load(params, root: Path, args, *, assistant: str | None):
    """The trained pipeline, with the assistant ``assistant`` (None: the fast path alone)."""
    from .pipeline import CafePipeline
    from .utils.hub import ModelNotFoundError

    hint = ""
    if params.profile.model_root is not None:  # a profile whose models this project builds
        stage = (
            f"train_assistant@{assistant}"
            if assistant is not None
            else params.generator_stage(args.generator or params.variants[params.fidelity.variant].generator)
        )
        hint = (
            f"\nThe {params.profile.name} profile's models are built, not downloaded: "
            f"run `bin/with-env dvc repro {stage}` in {root}."
        )
    try:
        return CafePipeline.from_params(
            params,
            root,
            assistant=assistant,
            generator=args.generator,
            seed=args.training_seed,
            device=args.device,
        )
    except (ModelNotFoundError, FileNotFoundError) as err:
        raise CliError(f"a model is missing: {err}{hint}", EXIT_MODEL) from err
    except KeyError as err:
        raise CliError(str(err.args[0]) if err.args else str(err)) from err
    except Exception as err:  # a weights file cut short or corrupt: each library raises its own kind
        broken = _unreadable_file(root / "models")
        if broken is None:
            raise
        stage, out = _writer_of(root, broken)
        raise CliError(
            f"a model file cannot be read ({type(err).__name__}): {broken} is cut short or corrupt. "
            f"`bin/with-env dvc checkout {out}` restores it from DVC's cache; or delete that folder and run "
            f"`bin/with-env dvc repro {stage}`",
            EXIT_MODEL,
        ) from err


def _check_device(device: str | None) -> None:
    """Refuse a device this machine lacks before any model loads."""
    import torch

    if device is None:
        return
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise CliError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(
                f"--device {device}: this machine has no CUDA device (torch {torch.__version__}); use --device cpu"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise CliError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _unreadable_file(models: Path) -> Path | None:
    """The first weights file under ``models`` whose safetensors header cannot be read, if any."""
    from safetensors import safe_open

    for path in sorted(models.rglob("*.safetensors")):
        try:
            with safe_open(str(path), "np") as f:
                f.keys()
        except Exception:  # noqa: BLE001 - any failure to open is what this looks for
            return path
    return None


def _writer_of(root: Path, path: Path) -> tuple[str, str]:
    """(The DVC stage whose output holds ``path``, that output), as ``dvc.lock`` records them."""
    import yaml

    lock = root / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.is_file() else {}
    relative = path.relative_to(root)
    for stage, entry in stages.items():
        for out in entry.get("outs", []):
            if relative.is_relative_to(out["path"]):
                return stage, out["path"]
    return "<the stage that writes it (dvc.yaml)>", str(relative.parent)


def _warn_unknown_words(pipe, params, root: Path, message: str) -> None:
    """Say which words of the message the assistant has no token for (a warning: it still answers)."""
    from .workbench.sources import training_source

    unknown = pipe.assistant.unknown_words(message)
    if not unknown:
        return
    words = training_source(params, root).subject_words()
    known = f"; its subjects are: {', '.join(words)}" if words else ""
    print(
        f"cafe: warning: the assistant does not know {', '.join(repr(w) for w in unknown)}: "
        f"they reach it as its unknown token{known}",
        file=sys.stderr,
    )


def _photo(params, root: Path, args: argparse.Namespace) -> int:
    """Write the photo of held-out subject ``--index`` of ``--domain`` (the evaluation's own subjects,
    as the tables score them), and print the first of its evaluation requests to try."""
    from .data.sources import DataUnavailable
    from .workbench.evaluation_sources import evaluation_source

    if args.index < 0:
        raise CliError(f"--index must be >= 0, got {args.index}")
    e = params.evaluation
    try:
        source = evaluation_source(params, root)
        cases = source.eval_cases(args.domain, e.subjects_of(args.domain), e.prompts_of(args.domain), params.seed, 1)
    except (DataUnavailable, ValueError, KeyError) as err:
        raise CliError(str(err.args[0]) if err.args else str(err)) from err
    if args.index >= len(cases):
        raise CliError(f"--index {args.index}: the evaluation data has {len(cases)} {args.domain} subject(s)")
    case, what = cases[args.index], "held-out subject"
    image = np.asarray(case.input_image.convert("RGB") if hasattr(case.input_image, "convert") else case.input_image)
    if args.target:
        try:
            image = source.target_images(case, [0] * len(case.prompts))[0]
        except DataUnavailable as err:
            raise CliError(str(err)) from err
        what = f"the true image of {case.prompts[0].prompt!r}: held-out subject"
    for path in _write_images(image[None], args.out, enlarge=not args.native_size):
        print(f"wrote {path}: {what} {case.subject!r}", file=sys.stderr)
    print(f'cafe chat --image {args.out} "{case.prompts[0].cafe_prompt}"')
    return 0


def _read_session(path: Path | None, photo: np.ndarray) -> dict | None:
    from .utils.digest import photo_digest

    if path is None or not path.exists():
        return None
    try:
        session = json.loads(path.read_text())
        history = session["history"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CliError(f"session file {path} is not a cafe session ({err}); remove it to start a new chat") from None
    if session.get("photo") != photo_digest(photo):
        raise CliError(f"session {path} is a chat about another photo; use a new --session file for this one")
    return {"history": history}


def _write_session(path: Path, photo: np.ndarray, history: list[dict]) -> None:
    from .utils.digest import photo_digest
    from .utils.files import atomic_write_json

    atomic_write_json(path, {"photo": photo_digest(photo), "history": history})


def _write_images(images: np.ndarray, out: Path, *, enlarge: bool) -> list[Path]:
    """Write each image; nearest-neighbour enlarged to >= 256 px so 16-pixel mini drawings are visible."""
    from PIL import Image

    from .utils.images import save_image

    paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(len(images))]
    for image, path in zip(images, paths):
        pil = Image.fromarray(image)
        factor = max(1, -(-256 // min(pil.size))) if enlarge else 1
        if factor > 1:
            pil = pil.resize((pil.width * factor, pil.height * factor), Image.NEAREST)
        save_image(pil, path)
    return paths


if __name__ == "__main__":
    sys.exit(main())
