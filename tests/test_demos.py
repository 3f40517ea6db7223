"""The JupyterLab demos without a browser: the blending demo's state and sliders, the chat session
and its widget, driven as a user's clicks drive them, on a pipeline of random tiny parts."""

import dataclasses
import datetime
import io

import numpy as np
import pytest
import torch
from PIL import Image

from cafe_core.models.guidance import mix_embeddings
from cafe_core.testing import tiny_pipeline
from cafe_core.workbench.demos import (
    BlendingDemo,
    ChatSession,
    Knobs,
    blending_widget,
    chat_widget,
    decode_upload,
    tile_png,
)

from helpers import random_photo


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(name: str, content: bytes) -> tuple[dict]:
    """A FileUpload value as ipywidgets 8 sets it when the user picks a file."""
    kind = "image/png" if name.endswith(".png") else "text/plain"
    return (
        {
            "name": name,
            "type": kind,
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime.datetime.now(datetime.UTC),
        },
    )


PHOTO, REF1, REF2 = random_photo(0), random_photo(1), random_photo(2)
MESSAGE = "Can you generate an image for this ball on the beach?"


def test_tile_png_lays_images_out_enlarged():
    sheet = Image.open(io.BytesIO(tile_png(np.zeros((3, 8, 8, 3), np.uint8), columns=2, size=32)))
    assert sheet.size == (2 * 32 + 4, 2 * 32 + 4)
    with pytest.raises(ValueError, match="no images"):
        tile_png([])


def test_decode_upload_reads_an_image_and_names_what_is_not_one():
    array = decode_upload({"name": "ball.png", "content": memoryview(_png(PHOTO))})
    np.testing.assert_array_equal(array, PHOTO)
    with pytest.raises(ValueError, match="notes.txt is not an image"):
        decode_upload({"name": "notes.txt", "content": b"hello"})


def test_blending_weights_follow_lambda_and_the_second_reference_share(pipe):
    demo = BlendingDemo(pipe, PHOTO, [REF1, REF2], MESSAGE)
    assert demo.weights(Knobs(lam=0.6, mix=0.25)) == pytest.approx([0.45, 0.15])
    demo.message = None  # no c_hat: the references alone, mix their relative weights
    assert demo.weights(Knobs(lam=0.6, mix=0.25)) == pytest.approx([0.75, 0.25])
    demo.references = [REF1]
    assert demo.weights(Knobs(lam=0.6)) == [1.0]
    with pytest.raises(ValueError, match="one or two references"):
        BlendingDemo(pipe, PHOTO, [REF1, REF2, REF1]).weights(Knobs())


def test_blending_draws_eq_4_and_asks_the_assistant_once_per_message(pipe, monkeypatch):
    demo = BlendingDemo(pipe, PHOTO, [REF1], MESSAGE)
    calls = []
    predict = pipe.predict
    monkeypatch.setattr(pipe, "predict", lambda *a, **k: calls.append(1) or predict(*a, **k))
    knobs = dataclasses.replace(BlendingDemo.defaults(pipe), num_images=2)  # the pipeline's own scales and steps
    none = demo.draw(dataclasses.replace(knobs, lam=0.0))
    half = demo.draw(dataclasses.replace(knobs, lam=0.5))
    assert len(calls) == 1 and half.timings["llm"] < none.timings["llm"] + 1.0
    assert none.response and none.images.shape == (2, 8, 8, 3) and none.images.dtype == np.uint8
    _, c_hat = predict([PHOTO], [[{"role": "user", "content": MESSAGE}]])
    alone = pipe(PHOTO, c_hat=c_hat[0], num_images_per_prompt=2, output_type="np").images
    np.testing.assert_allclose(none.images, np.round(alone * 255), atol=1)  # lambda 0: c_hat alone
    assert not np.array_equal(half.images, none.images)
    ref = pipe.clip.image_embeds(REF1[None]).float()
    blended = pipe(PHOTO, c_hat=c_hat[0], reference_embeds=ref, reference_weights=0.5, output_type="np")
    torch.testing.assert_close(blended.embedding, mix_embeddings(c_hat[0], ref, [0.5]))
    demo.message, demo.references = None, []
    with pytest.raises(ValueError, match="nothing says what to draw"):
        demo.draw(Knobs())


def test_blending_widget_redraws_on_slider_release_and_shows_drawing_then_timings(pipe):
    demo = BlendingDemo(pipe, PHOTO, [REF1], MESSAGE)
    widget = blending_widget(demo, {"ball": PHOTO}, {"beach": REF1, "snow": REF2})
    assert (widget.pickers["photo"].value, widget.pickers["reference_1"].value) == ("ball", "beach")
    first = widget.image.value
    assert first and "diffusion" in widget.status.value and widget.response.value.startswith("<b>CAFE:</b>")
    assert widget.sliders["mix"].disabled  # one reference: nothing to share
    seen = []
    draw = demo.draw
    demo.draw = lambda knobs: seen.append((widget.status.value, knobs)) or draw(knobs)
    widget.sliders["lam"].value = 1.0
    assert seen[-1][0] == "<i>drawing...</i>" and seen[-1][1].lam == 1.0
    assert widget.image.value != first and "reference weights: 1.00" in widget.status.value
    widget.pickers["reference_2"].value = "snow"
    assert not widget.sliders["mix"].disabled and "reference weights: 0.50, 0.50" in widget.status.value
    for name, value in {"clip_scale": 0.0, "dino_scale": 6.0, "steps": 2, "seed": 7}.items():
        before = widget.image.value
        widget.sliders[name].value = value
        assert widget.image.value != before, name
    assert seen[-1][1] == Knobs(lam=1.0, mix=0.5, clip_scale=0.0, dino_scale=6.0, steps=2, seed=7)


def test_blending_widget_takes_an_uploaded_photo_and_reports_a_bad_one(pipe):
    widget = blending_widget(BlendingDemo(pipe, PHOTO, [REF1], MESSAGE))
    before = widget.image.value
    widget.uploads["photo"].value = _upload("mine.png", _png(REF2))
    np.testing.assert_array_equal(widget.demo.photo, REF2)
    assert widget.image.value != before and widget.pickers["photo"].value == "(as given)"
    widget.uploads["reference_1"].value = _upload("notes.txt", b"no")
    assert "notes.txt is not an image" in widget.status.value


def test_chat_session_keeps_turns_and_starts_over(pipe):
    session = ChatSession(pipe, PHOTO)
    first = session.send(MESSAGE, num_images=1)
    second = session.send("Now in the snow.", reference=REF1, lam=0.4, num_images=1)
    assert [t.message for t in session.turns] == [MESSAGE, "Now in the snow."]
    assert first.response and second.reference_weight == 0.4 and first.reference_weight == 0.0
    assert "llm" in second.timings and second.images.shape == (1, 8, 8, 3)
    html = session.transcript_html()
    assert html.count("<img") == 2 and "Now in the snow." in html
    session.new_chat()
    assert session.turns == [] and "no messages yet" in session.transcript_html()
    replay = session.send(MESSAGE, num_images=1)
    np.testing.assert_array_equal(replay.images, first.images)  # a new chat replays the first turn
    with pytest.raises(ValueError, match="type a message"):
        session.send("  ")
    with pytest.raises(ValueError, match="assistant"):
        ChatSession(tiny_pipeline(assistant=False))


def test_chat_widget_sends_on_enter_and_send_and_starts_a_new_chat(pipe):
    widget = chat_widget(ChatSession(pipe), {"ball": PHOTO}, {"beach": REF1}, num_images=1)
    widget.send.click()
    assert "type a message" in widget.status.value
    widget.message.value = MESSAGE  # Enter
    assert "pick or upload a photo" in widget.status.value and widget.session.turns == []
    widget.photo_picker.value = "ball"
    widget.message.value = MESSAGE + " "  # Enter again, now with a photo
    assert len(widget.session.turns) == 1 and widget.message.value == ""
    assert "diffusion" in widget.status.value and widget.transcript.value.count("<img") == 1
    widget.reference_picker.value = "beach"
    widget.lam.value = 0.7
    widget.message.value = "Make it snowy."
    assert widget.session.turns[-1].reference_weight == 0.7
    widget.new_chat.click()
    assert widget.session.turns == [] and "no messages yet" in widget.transcript.value
    widget.photo_upload.value = _upload("mine.png", _png(REF2))
    np.testing.assert_array_equal(widget.session.photo, REF2)


def test_examples_are_the_held_out_subjects_with_requests_and_true_images(project_root):
    from cafe_core.workbench.config import load_params
    from cafe_core.workbench.demos import examples, pickers

    params = load_params(project_root / "params.yaml")
    items = examples(params, project_root, domain="object", n=3)
    assert len(items) == 3 and items[0].request == "Can you generate an image for this ball on the beach?"
    assert all(i.photo.dtype == np.uint8 and i.target is not None for i in items)
    photos, references = pickers(items)
    assert list(photos) == [i.label for i in items] and len(references) == 3
    assert next(iter(references)).endswith(items[0].request)
    faces = examples(params, project_root, domain="face", n=2)
    assert len(faces) == 2 and " this " in faces[0].request
