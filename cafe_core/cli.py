"""`cafe`: chat with the assistant about a photo, or draw from a reference image (the fast path).

    cafe chat --image dog.jpg "Can you put this dog on the beach?"
    cafe chat --image dog.jpg --session chat.json "Now make it snowy."
    cafe generate --image dog.jpg --reference beach_scene.jpg

Both read `params.yaml` of the project (the folder above, or `--root`), whose `profile` picks the
checkpoints: `mini` uses the world models built by `dvc repro`, `sd2` the real ones from the
Hugging Face cache or `CAFE_MODEL_ROOT`. Exit status: 0 on success, 2 for bad input (a path,
an image, a parameter), 3 when a model is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

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
        p.add_argument("--image", required=True, type=Path, help="photo of the subject")
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

    chat = sub.add_parser("chat", help="one chat turn: prints the response, writes the image")
    common(chat)
    chat.add_argument("message", help='what you ask, e.g. "Can you put this dog on the beach?"')
    chat.add_argument("--session", type=Path, default=None, help="JSON file keeping the chat across calls (multi-turn)")
    chat.add_argument("--assistant", default="mse", help="trained assistant (key of params.yaml `assistants`)")

    gen = sub.add_parser("generate", help="the fast path: c from a reference image, no language model")
    common(gen)
    gen.add_argument("--reference", required=True, type=Path, help="image whose CLIP embedding says what to draw")
    return parser


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
        print(f"cafe: error: {err}", file=sys.stderr)
        return err.code


def _run(args: argparse.Namespace) -> int:
    from .utils.images import ImageLoadError, load_image
    from .workbench.config import ParamsError, load_params, project_root

    if args.num_images < 1:
        raise CliError(f"--num-images must be >= 1, got {args.num_images}")
    if args.out is not None and args.out.suffix.lower() != ".png":
        raise CliError(f"--out must be a .png path, got {args.out}")
    root = (args.root or project_root()).resolve()
    if not (root / "params.yaml").is_file():
        raise CliError(f"no params.yaml in {root}: run cafe inside the project, or pass --root")
    try:
        params = load_params(root / "params.yaml", profile=args.profile)
        photo = np.asarray(load_image(args.image))
        reference = np.asarray(load_image(args.reference)) if args.command == "generate" else None
    except (ParamsError, ImageLoadError) as err:
        raise CliError(str(err)) from None
    session = _read_session(args.session, photo) if args.command == "chat" else None
    pipe = _load(params, root, args)
    if args.command == "chat":
        result = pipe.chat(
            photo, args.message, session["history"] if session else None, seed=args.seed, num_images=args.num_images
        )
        images, timings = result.images, result.timings
        print(result.response)
        if args.session:
            _write_session(args.session, photo, result.history)
    else:
        images, timings = pipe.generate(photo, reference, seed=args.seed, num_images=args.num_images)
    for path in _write_images(images, args.out or Path(f"cafe_{args.command}.png"), enlarge=not args.native_size):
        print(f"wrote {path}", file=sys.stderr)
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()), file=sys.stderr)
    return 0


def _load(params, root: Path, args):
    from .pipeline import CafePipeline
    from .utils.hub import ModelNotFoundError

    hint = ""
    if params.profile.name == "mini":
        stage = (
            f"train_assistant@{args.assistant}"
            if args.command == "chat"
            else f"train_generator@{args.generator or params.variants[params.fidelity.variant].generator}"
        )
        hint = f"\nThe mini profile's models are built, not downloaded: run `bin/with-env dvc repro {stage}` in {root}."
    try:
        return CafePipeline.from_params(
            params,
            root,
            assistant=args.assistant if args.command == "chat" else None,
            generator=args.generator,
            seed=args.training_seed,
            device=args.device,
        )
    except (ModelNotFoundError, FileNotFoundError) as err:
        raise CliError(f"a model is missing: {err}{hint}", EXIT_MODEL) from None
    except KeyError as err:
        raise CliError(str(err.args[0]) if err.args else str(err)) from None


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
