"""JupyterLab demos of CAFE: eq. 4's lambda / reference blending, and a chat, as ipywidgets.

What the demos hold and do lives in plain classes, tested without a browser:
:class:`BlendingDemo` (a subject photo, one or two references, the knobs; the assistant's answer is
kept per photo and message, so moving a slider only draws again) and :class:`ChatSession` (a
multi-turn chat about a photo, an optional reference and lambda). :func:`blending_widget` and
:func:`chat_widget` lay them out; their callbacks are the functions they return, so tests drive
them as a user's clicks would. Both run on whatever :class:`~cafe_core.pipeline.CafePipeline` they
are given: the ``mini`` world's models out of the box, the ``sd2`` ones where their weights are.
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..utils.digest import photo_digest

__all__ = [
    "BlendingDemo",
    "BlendingWidget",
    "ChatSession",
    "ChatWidget",
    "Drawing",
    "Knobs",
    "blending_widget",
    "chat_widget",
    "Example",
    "decode_upload",
    "examples",
    "pickers",
    "tile_png",
]


# --- pictures -------------------------------------------------------------------------------------


def tile_png(images: np.ndarray | list[np.ndarray], *, columns: int | None = None, size: int = 128) -> bytes:
    """uint8 (N, H, W, 3) images side by side (``columns`` per row) as PNG bytes, each enlarged
    nearest-neighbour to ``size`` px so 16-pixel mini drawings are seen as drawn (PIL, no figure)."""
    from PIL import Image

    images = [np.asarray(i, dtype=np.uint8) for i in images]
    if not images:
        raise ValueError("no images to tile")
    columns = columns or len(images)
    rows = -(-len(images) // columns)
    gap = 4
    sheet = Image.new("RGB", (columns * (size + gap) - gap, rows * (size + gap) - gap), (255, 255, 255))
    for k, image in enumerate(images):
        tile = Image.fromarray(image).resize((size, size), Image.NEAREST)
        sheet.paste(tile, ((k % columns) * (size + gap), (k // columns) * (size + gap)))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_upload(upload: Any) -> np.ndarray:
    """uint8 (H, W, 3) of an image the user uploaded: a ``FileUpload`` value entry (ipywidgets 8: a
    dict with ``content``), or the file's bytes. Refuses what is not an image, naming it."""
    from PIL import Image, UnidentifiedImageError

    name = upload.get("name", "the upload") if isinstance(upload, dict) else "the upload"
    data = bytes(upload["content"]) if isinstance(upload, dict) else bytes(upload)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{name} is not an image this machine can read ({err})") from None


@dataclass(frozen=True)
class Example:
    """A held-out subject to try the demos on (the evaluation's own, as ``cafe photo`` writes them)."""

    label: str
    photo: np.ndarray  # uint8 (H, W, 3): the subject's photo
    request: str  # its first evaluation request, phrased as a user asks CAFE
    target: np.ndarray | None  # the true image of that request (sources with ground truth: mini), or None


def examples(params, root, *, domain: str = "object", n: int = 6) -> list[Example]:
    """Up to ``n`` held-out subjects of ``domain`` with a photo, a request and (where the source has
    ground truth) the request's true image: the demos' pickers and references. Empty when the
    evaluation source has none (its data not built yet)."""
    from ..data.sources import DataUnavailable
    from .evaluation_sources import evaluation_source

    e = params.evaluation
    try:
        source = evaluation_source(params, root)
        # `cafe photo --index`'s order
        cases = source.eval_cases(domain, e.subjects_of(domain), e.prompts_of(domain), params.seed, 1)[:n]
    except (DataUnavailable, ValueError, KeyError, FileNotFoundError):
        return []
    out = []
    for case in cases:
        photo = case.input_image
        photo = np.asarray(photo.convert("RGB") if hasattr(photo, "convert") else photo, dtype=np.uint8)
        try:
            target = np.asarray(source.target_images(case, [0] * len(case.prompts))[0], dtype=np.uint8)
        except DataUnavailable:
            target = None
        out.append(Example(case.subject, photo, case.prompts[0].cafe_prompt, target))
    return out


def pickers(items: list[Example]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(photos by label, references by label) for the widgets' dropdowns: the subjects' photos, and
    the true images of their requests (or, without ground truth, the other subjects' photos)."""
    photos = {item.label: item.photo for item in items}
    references = {f"{item.label}: {item.request}": item.target for item in items if item.target is not None}
    return photos, references or dict(photos)


def _timings(seconds: dict[str, float]) -> str:
    return " · ".join(f"{part} {value:.2f} s" for part, value in seconds.items())


# --- blending -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """One setting of the blending demo's sliders."""

    lam: float = 0.5  # eq. 4's lambda: the references' total weight beside c_hat
    mix: float = 0.5  # the second reference's share of lambda (with two references)
    clip_scale: float = 3.0  # s_c: how strongly G draws what c describes
    dino_scale: float = 3.0  # s_d: how faithfully G keeps the photo's subject
    steps: int = 10
    seed: int = 0
    num_images: int = 4


@dataclass
class Drawing:
    """What one update of the demo drew, and where its time went."""

    images: np.ndarray  # uint8 (num_images, H, W, 3)
    weights: list[float]  # each reference's weight in c
    response: str | None  # the assistant's answer to the message (None: no message)
    timings: dict[str, float] = field(default_factory=dict)


class BlendingDemo:
    """A subject photo, zero to two references, an optional message; :meth:`draw` at given knobs.

    With a message (and an assistant) ``c = (1 - lam) c_hat + lam [(1 - mix) E_c(ref_1) + mix
    E_c(ref_2)]`` (eq. 4 with two references); without one, the references alone, ``mix`` their
    relative weights. The assistant's answer is computed once per photo and message.
    """

    def __init__(self, pipe, photo: np.ndarray, references: list[np.ndarray] | None = None, message: str | None = None):
        self.pipe = pipe
        self.photo = photo
        self.references = list(references or [])
        self.message = message
        self._answers: dict[tuple[str, str], tuple[str, Any]] = {}

    @classmethod
    def defaults(cls, pipe) -> Knobs:
        """The knobs the pipeline draws with by default (the guidance scales chosen on validation)."""
        s = pipe.sampling
        return Knobs(clip_scale=s.clip_scale, dino_scale=s.dino_scale, steps=s.steps)

    def weights(self, knobs: Knobs) -> list[float]:
        """Each reference's weight in c at these knobs."""
        n = len(self.references)
        if n > 2:
            raise ValueError(f"the demo blends one or two references, got {n}")
        share = [1.0] if n == 1 else [1.0 - knobs.mix, knobs.mix] if n == 2 else []
        uses_c_hat = self._uses_assistant()
        return [(knobs.lam if uses_c_hat else 1.0) * w for w in share]

    def _uses_assistant(self) -> bool:
        return bool(self.message and self.message.strip()) and self.pipe.assistant is not None

    def answer(self) -> tuple[str | None, Any, float]:
        """(response, c_hat, seconds spent) for the current photo and message; cached."""
        if not self._uses_assistant():
            return None, None, 0.0
        key = (photo_digest(np.asarray(self.photo)), self.message.strip())
        start = time.perf_counter()
        if key not in self._answers:
            texts, c_hat = self.pipe.predict([self.photo], [[{"role": "user", "content": key[1]}]])
            self._answers[key] = (texts[0], c_hat[0])
        return (*self._answers[key], time.perf_counter() - start)

    def draw(self, knobs: Knobs) -> Drawing:
        """Draw ``knobs.num_images`` images (seeds ``seed``, ``seed + 1`` ...) at these knobs."""
        response, c_hat, llm_seconds = self.answer()
        weights = self.weights(knobs)
        if c_hat is None and not self.references:
            raise ValueError("nothing says what to draw: type a message or pick a reference image")
        out = self.pipe(
            self.photo,
            c_hat=c_hat,
            reference_images=self.references or None,
            reference_weights=weights or None,
            clip_scale=knobs.clip_scale,
            dino_scale=knobs.dino_scale,
            num_inference_steps=knobs.steps,
            seed=knobs.seed,
            num_images_per_prompt=knobs.num_images,
            output_type="np",
        )
        timings = {"llm": llm_seconds, **out.timings} if response is not None else dict(out.timings)
        images = np.round(out.images * 255).astype(np.uint8)
        return Drawing(images, weights, response, timings)


@dataclass(eq=False)
class BlendingWidget:
    """What :func:`blending_widget` built; a notebook displays ``box``."""

    box: Any
    demo: BlendingDemo
    sliders: dict[str, Any]  # lam, mix, clip_scale, dino_scale, steps, seed
    pickers: dict[str, Any]  # photo, reference_1, reference_2: Dropdowns of examples
    uploads: dict[str, Any]  # the same slots: FileUploads
    message: Any
    image: Any  # the drawn images, PNG
    inputs: Any  # the photo and references, PNG
    status: Any  # "drawing..." while it draws, then the timings (or the error)
    response: Any
    redraw: Any  # the callback every control calls: redraw() draws at the controls' values

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.box._repr_mimebundle_(**kwargs)


NONE, GIVEN = "(none)", "(as given)"


def _label(image: np.ndarray | None, pool: dict[str, np.ndarray]) -> str:
    """The dropdown entry showing ``image``: its label in ``pool``, "(as given)" (passed in or
    uploaded), or "(none)"."""
    if image is None:
        return NONE
    return next((label for label, other in pool.items() if np.array_equal(other, image)), GIVEN)


def blending_widget(
    demo: BlendingDemo,
    examples: dict[str, np.ndarray] | None = None,
    references: dict[str, np.ndarray] | None = None,
    *,
    num_images: int = 4,
    size: int = 128,
) -> BlendingWidget:
    """The blending demo as ipywidgets: pick or upload the photo and up to two references, type a
    message, move the sliders; each release redraws, with "drawing..." meanwhile and the timings after."""
    import ipywidgets as w

    knobs = replace(BlendingDemo.defaults(demo.pipe), num_images=num_images)
    slider = dict(continuous_update=False, style={"description_width": "110px"}, layout=w.Layout(width="420px"))
    sliders = {
        "lam": w.FloatSlider(knobs.lam, min=0, max=1, step=0.05, description="lambda (refs)", **slider),
        "mix": w.FloatSlider(knobs.mix, min=0, max=1, step=0.05, description="ref 2 share", **slider),
        "clip_scale": w.FloatSlider(knobs.clip_scale, min=0, max=10, step=0.5, description="s_c (CLIP)", **slider),
        "dino_scale": w.FloatSlider(knobs.dino_scale, min=0, max=10, step=0.5, description="s_d (DINO)", **slider),
        "steps": w.IntSlider(knobs.steps, min=1, max=50, description="steps", **slider),
        "seed": w.IntSlider(knobs.seed, min=0, max=99, description="seed", **slider),
    }
    examples, references = dict(examples or {}), dict(references or {})
    slots: dict[str, np.ndarray | None] = {"photo": demo.photo, "reference_1": None, "reference_2": None}
    for k, ref in enumerate(demo.references[:2]):
        slots[f"reference_{k + 1}"] = ref
    pickers = {
        "photo": w.Dropdown(options=[GIVEN, *examples], value=_label(demo.photo, examples), description="photo"),
        **{
            slot: w.Dropdown(
                options=[NONE, GIVEN, *references], value=_label(slots[slot], references), description=name
            )
            for slot, name in (("reference_1", "reference 1"), ("reference_2", "reference 2"))
        },
    }
    uploads = {slot: w.FileUpload(accept="image/*", multiple=False, description="upload") for slot in pickers}
    message = w.Text(
        value=demo.message or "", description="message", continuous_update=False, layout=w.Layout(width="560px")
    )
    image, inputs = w.Image(format="png"), w.Image(format="png")
    status, response = w.HTML(), w.HTML()

    def redraw(*_: Any) -> None:
        demo.photo = slots["photo"]
        demo.references = [r for r in (slots["reference_1"], slots["reference_2"]) if r is not None]
        demo.message = message.value or None
        sliders["mix"].disabled = len(demo.references) < 2
        sliders["lam"].disabled = not demo.references
        shown = [demo.photo, *demo.references]
        inputs.value = tile_png(shown, size=size // 2)
        status.value = "<i>drawing...</i>"
        current = Knobs(**{name: s.value for name, s in sliders.items()}, num_images=knobs.num_images)
        try:
            drawing = demo.draw(current)
        except ValueError as err:
            status.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
            return
        image.value = tile_png(drawing.images, size=size)
        weights = ", ".join(f"{x:.2f}" for x in drawing.weights) or "none"
        status.value = f"reference weights: {weights} · {_timings(drawing.timings)}"
        response.value = "" if drawing.response is None else f"<b>CAFE:</b> {html.escape(drawing.response)}"

    def pick(slot: str, pool: dict[str, np.ndarray]):
        def on_change(change: dict) -> None:
            if change["new"] == GIVEN:
                return  # what was passed in or uploaded stays
            slots[slot] = None if change["new"] == NONE else pool[change["new"]]
            redraw()

        return on_change

    def upload(slot: str):
        def on_change(change: dict) -> None:
            if not change["new"]:
                return
            try:
                slots[slot] = decode_upload(change["new"][0])
            except ValueError as err:
                status.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
                return
            pickers[slot].value = GIVEN  # (its handler leaves the upload in place)
            redraw()

        return on_change

    for name, s in sliders.items():
        s.observe(redraw, names="value")
        s.add_class(f"cafe-{name.replace('_', '-')}")  # stable handles for a browser (tests/test_browser.py)
    image.add_class("cafe-drawing")
    status.add_class("cafe-status")
    for slot, picker in pickers.items():
        picker.observe(pick(slot, examples if slot == "photo" else references), names="value")
        uploads[slot].observe(upload(slot), names="value")
    message.observe(redraw, names="value")  # Enter (or leaving the box) sends it
    rows = [w.HBox([pickers[slot], uploads[slot]]) for slot in pickers]
    controls = w.VBox([*rows, message, *sliders.values()])
    box = w.VBox([w.HBox([controls, inputs], layout=w.Layout(align_items="flex-start")), image, status, response])
    redraw()
    return BlendingWidget(box, demo, sliders, pickers, uploads, message, image, inputs, status, response, redraw)


# --- chat -----------------------------------------------------------------------------------------


@dataclass
class Turn:
    message: str
    response: str
    images: np.ndarray  # uint8 (N, H, W, 3)
    timings: dict[str, float]
    reference_weight: float  # lambda of the turn's reference (0: none)


class ChatSession:
    """A multi-turn chat about one photo; each turn may blend a reference image at ``lam``."""

    def __init__(self, pipe, photo: np.ndarray | None = None):
        if pipe.assistant is None:
            raise ValueError("the chat needs a pipeline with an assistant (CafePipeline.from_params(assistant=...))")
        self.pipe = pipe
        self.photo = photo
        self.turns: list[Turn] = []
        self._history: list[dict] | None = None

    def set_photo(self, photo: np.ndarray) -> None:
        """Chat about another photo: a new chat."""
        self.photo = photo
        self.new_chat()

    def new_chat(self) -> None:
        self.turns, self._history = [], None

    def send(
        self,
        message: str,
        *,
        reference: np.ndarray | None = None,
        lam: float = 0.5,
        seed: int = 0,
        num_images: int = 2,
    ) -> Turn:
        """One turn: the assistant's answer and its images (with ``reference`` blended at ``lam``)."""
        if self.photo is None:
            raise ValueError("pick or upload a photo of the subject first")
        if not message or not message.strip():
            raise ValueError("type a message: say what to draw")
        out = self.pipe(
            self.photo,
            message,
            history=self._history,
            reference_images=reference,
            reference_weights=lam if reference is not None else None,
            seed=seed + len(self.turns),
            num_images_per_prompt=num_images,
            output_type="np",
        )
        self._history = out.history
        turn = Turn(
            message.strip(),
            out.response,
            np.round(out.images * 255).astype(np.uint8),
            out.timings,
            lam if reference is not None else 0.0,
        )
        self.turns.append(turn)
        return turn

    def transcript_html(self, size: int = 96) -> str:
        """The chat so far: each message, answer, drawings (inline PNG) and timings."""
        parts = []
        for turn in self.turns:
            png = base64.b64encode(tile_png(turn.images, size=size)).decode()
            blend = f" · reference at lambda {turn.reference_weight:.2f}" if turn.reference_weight else ""
            parts.append(
                f"<p><b>you:</b> {html.escape(turn.message)}<br><b>CAFE:</b> {html.escape(turn.response)}<br>"
                f"<img src='data:image/png;base64,{png}'/><br><small>{_timings(turn.timings)}{blend}</small></p>"
            )
        return "".join(parts) or "<i>no messages yet</i>"


@dataclass(eq=False)
class ChatWidget:
    """What :func:`chat_widget` built; a notebook displays ``box``."""

    box: Any
    session: ChatSession
    photo_picker: Any
    photo_upload: Any
    reference_picker: Any
    reference_upload: Any
    lam: Any
    message: Any
    send: Any  # the Send button
    new_chat: Any  # the New chat button
    transcript: Any
    status: Any
    submit: Any  # submit(text): what Enter in the message box and the Send button do

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.box._repr_mimebundle_(**kwargs)


def chat_widget(
    session: ChatSession,
    examples: dict[str, np.ndarray] | None = None,
    references: dict[str, np.ndarray] | None = None,
    *,
    num_images: int = 2,
    size: int = 96,
) -> ChatWidget:
    """The chat as ipywidgets: a photo (picked or uploaded), messages, the answers and drawings of
    every turn, an optional reference with its lambda, the timings, and a "New chat" button."""
    import ipywidgets as w

    examples, references = dict(examples or {}), dict(references or {})
    photo_picker = w.Dropdown(options=[NONE, *examples], value=NONE, description="photo")
    photo_upload = w.FileUpload(accept="image/*", multiple=False, description="upload photo")
    reference_picker = w.Dropdown(options=[NONE, *references], value=NONE, description="reference")
    reference_upload = w.FileUpload(accept="image/*", multiple=False, description="upload reference")
    lam = w.FloatSlider(0.5, min=0, max=1, step=0.05, description="lambda", continuous_update=False)
    message = w.Text(
        placeholder="Can you draw this ... on the beach?", continuous_update=False, layout=w.Layout(width="480px")
    )
    send, new_chat = w.Button(description="Send", button_style="primary"), w.Button(description="New chat")
    photo_view, transcript, status = w.Image(format="png", width=size), w.HTML(), w.HTML()
    state: dict[str, np.ndarray | None] = {"reference": None}

    def show() -> None:
        if session.photo is not None:
            photo_view.value = tile_png([session.photo], size=size)
        transcript.value = session.transcript_html(size)

    def fail(err: Exception) -> None:
        status.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"

    def submit(text: str) -> None:
        """Send ``text`` as the next turn (Enter in the box, or the Send button)."""
        status.value = "<i>drawing...</i>"
        try:
            turn = session.send(text, reference=state["reference"], lam=lam.value, num_images=num_images)
        except ValueError as err:
            fail(err)
            return
        message.value = ""
        status.value = _timings(turn.timings)
        show()

    def on_enter(change: dict) -> None:
        if change["new"].strip():  # clearing the box after a turn changes it too
            submit(change["new"])

    def on_send(_: Any) -> None:
        # Enter, or the box losing focus to this button, has sent a typed message already.
        if message.value.strip():
            submit(message.value)
        elif not session.turns:
            status.value = "type a message, then Enter or Send"

    def set_photo(photo: np.ndarray) -> None:
        session.set_photo(photo)
        status.value = "new chat about this photo"
        show()

    def on_photo_pick(change: dict) -> None:
        if change["new"] != NONE:
            set_photo(examples[change["new"]])

    def on_reference_pick(change: dict) -> None:
        state["reference"] = None if change["new"] == NONE else references[change["new"]]

    def on_upload(target: str):
        def on_change(change: dict) -> None:
            if not change["new"]:
                return
            try:
                image = decode_upload(change["new"][0])
            except ValueError as err:
                fail(err)
                return
            if target == "photo":
                set_photo(image)
            else:
                state["reference"] = image

        return on_change

    def on_new_chat(_: Any) -> None:
        session.new_chat()
        status.value = "new chat"
        show()

    photo_picker.observe(on_photo_pick, names="value")
    reference_picker.observe(on_reference_pick, names="value")
    photo_upload.observe(on_upload("photo"), names="value")
    reference_upload.observe(on_upload("reference"), names="value")
    send.on_click(on_send)
    message.observe(on_enter, names="value")
    new_chat.on_click(on_new_chat)
    box = w.VBox(
        [
            w.HBox(
                [
                    photo_view,
                    w.VBox([w.HBox([photo_picker, photo_upload]), w.HBox([reference_picker, reference_upload]), lam]),
                ]
            ),
            transcript,
            w.HBox([message, send, new_chat]),
            status,
        ]
    )
    show()
    return ChatWidget(
        box,
        session,
        photo_picker,
        photo_upload,
        reference_picker,
        reference_upload,
        lam,
        message,
        send,
        new_chat,
        transcript,
        status,
        submit,
    )
