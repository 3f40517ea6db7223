"""Dialogues written by a chat LLM (paper 3.2, for real data): a user turn and an explaining answer.

The paper prompts Llama-2-70B-chat to write, for each kept quadruplet ``(x, instruction, y)``, what
a user might say (``t``) and what the assistant answers (``r``); its prompt (figure 8) is not in
the text, so :data:`SYSTEM_PROMPT` and :func:`request_messages` are our own. The LLM runs through
transformers: its tokenizer's chat template formats the request with the answer's first characters
already written (:data:`PREFILL`), ``generate`` writes the rest, and
:func:`parse_dialogue` keeps only an answer that is exactly one JSON object with the two fields, of
the asked kind; everything else is dropped and counted by reason, never kept. CAFE-mini's world
writes its dialogues from its own grammar instead.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KINDS",
    "SYSTEM_PROMPT",
    "DialogueRequest",
    "DialogueWriter",
    "MalformedDialogue",
    "WrittenDialogue",
    "parse_dialogue",
    "request_messages",
]

logger = logging.getLogger(__name__)

KINDS = {
    "declarative": 'a plain request that names the picture, e.g. "Put my dog on the beach."',
    "interrogative": 'a question that names the picture, e.g. "Could you show my dog on the beach?"',
    "ambiguous": (
        'a vague wish that does not name the picture, e.g. "My dog deserves a holiday.", '
        "to which the picture is one good answer"
    ),
}
"""The user turns the paper's dialogues mix, and how the prompt asks for each."""

SYSTEM_PROMPT = (
    "You write training conversations for an assistant that draws new pictures of a user's own "
    "subject from one photo of it. Given the picture the assistant will draw, you write the user's "
    "message and the assistant's answer. Reply with one JSON object and nothing else, of the form "
    '{"user": "<the user\'s message>", "response": "<the assistant\'s answer>"}.'
)

PREFILL = '{"user": "'
"""The start of the answer, written for the LLM (transformers' ``continue_final_message``): a chat
model then continues the JSON object instead of opening with prose ("Sure! Here is ...")."""

MAX_CHARS = 500
"""A field longer than this is a runaway generation, not a chat turn."""

_TEMPLATE_TOKENS = re.compile(r"<\|[^|>]*\|>|\[/?INST\]|<</?SYS>>|</?s>|<(?:start|end)_of_turn>")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class DialogueRequest:
    """One kept quadruplet to write a dialogue for."""

    instruction: str
    """The picture to draw, as the teacher was asked: "a dog on the beach"."""
    subject_class: str
    """The subject's class word: "dog"."""
    kind: str
    """One of :data:`KINDS`."""
    context: str | None = None
    """The instruction's context phrase ("on the beach"), which an ambiguous wish must not name."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class WrittenDialogue:
    user: str
    response: str
    kind: str


class MalformedDialogue(ValueError):
    """An LLM answer that is not a usable dialogue; ``reason`` names the test it failed."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def request_messages(request: DialogueRequest) -> list[dict[str, str]]:
    """The chat that asks the LLM for one dialogue (system and user turns, for its chat template)."""
    user = (
        f'The picture: "{request.instruction}" (the subject is the user\'s own {request.subject_class}).\n'
        f"Write the user's message as {KINDS[request.kind]}.\n"
        "Write the assistant's answer in one or two sentences: what it draws, why that fits the "
        f"message, and that it keeps the look of the user's {request.subject_class}.\n"
        "Reply with the JSON object only."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_dialogue(text: str, request: DialogueRequest) -> WrittenDialogue:
    """The dialogue in an LLM answer, or :class:`MalformedDialogue` saying why there is none.

    Accepted: exactly one JSON object, optionally in a ```json fence, with string fields ``user``
    and ``response`` and no others, each non-empty, at most :data:`MAX_CHARS` long and free of
    chat-template tokens; the user turn of the asked kind (a question for "interrogative", not one
    for "declarative", and for "ambiguous" a wish that does not name the context).
    """
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    if not body.startswith("{"):
        raise MalformedDialogue("not_json", "the answer does not start with a JSON object")
    try:
        value, end = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as error:
        raise MalformedDialogue("bad_json", str(error)) from None
    if body[end:].strip():
        raise MalformedDialogue("trailing_text", "text after the JSON object")
    if not isinstance(value, dict):
        raise MalformedDialogue("not_object")
    if set(value) != {"user", "response"}:
        missing, extra = {"user", "response"} - set(value), set(value) - {"user", "response"}
        raise MalformedDialogue("missing_field" if missing else "extra_field", f"{sorted(missing or extra)}")
    fields: dict[str, str] = {}
    for name in ("user", "response"):
        field = value[name]
        if not isinstance(field, str):
            raise MalformedDialogue("not_string", name)
        field = " ".join(field.split())
        if not field:
            raise MalformedDialogue("empty", name)
        if len(field) > MAX_CHARS:
            raise MalformedDialogue("too_long", f"{name}: {len(field)} characters")
        if _TEMPLATE_TOKENS.search(field):
            raise MalformedDialogue("template_tokens", name)
        fields[name] = field
    user = fields["user"]
    if request.kind == "interrogative" and "?" not in user:
        raise MalformedDialogue("wrong_kind", "an interrogative turn without a question")
    if request.kind == "declarative" and user.endswith("?"):
        raise MalformedDialogue("wrong_kind", "a declarative turn that is a question")
    if request.kind == "ambiguous" and request.context and request.context.lower() in user.lower():
        raise MalformedDialogue("names_target", "an ambiguous wish that names the context")
    return WrittenDialogue(user=user, response=fields["response"], kind=request.kind)


class DialogueWriter:
    """A chat LLM writing dialogues in batches; each answer parsed, the malformed counted by reason."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 160,
        temperature: float = 0.7,
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template: use the chat model's own tokenizer")
        if max_new_tokens < 1 or batch_size < 1 or temperature < 0:
            raise ValueError("max_new_tokens and batch_size must be >= 1 and temperature >= 0")
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.batch_size, self.seed = batch_size, seed

    def generate(self, requests: Sequence[DialogueRequest], batch_index: int = 0) -> list[str]:
        """The LLM's raw answers to one batch of requests (sampling seeded by ``seed`` and the batch)."""
        import torch

        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"  # decoder-only: pad on the left to generate
        try:
            inputs = tok.apply_chat_template(
                [request_messages(r) + [{"role": "assistant", "content": PREFILL}] for r in requests],
                continue_final_message=True,
                padding=True,
                return_tensors="pt",
                return_dict=True,
            )
        finally:
            tok.padding_side = side
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        torch.manual_seed(self.seed * 1_000_003 + batch_index)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=self.temperature > 0,
                temperature=self.temperature if self.temperature > 0 else None,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        return [PREFILL + text for text in tok.batch_decode(new, skip_special_tokens=True)]

    def write(self, requests: Sequence[DialogueRequest]) -> tuple[list[WrittenDialogue | None], Counter]:
        """One dialogue per request, None where the answer was malformed; and the count per outcome
        (``"kept"`` and each :class:`MalformedDialogue` reason), which add up to ``len(requests)``."""
        from tqdm.auto import tqdm

        out: list[WrittenDialogue | None] = []
        counts: Counter = Counter()
        starts = range(0, len(requests), self.batch_size)
        for index, start in enumerate(tqdm(starts, desc="dialogues", unit="batch")):
            batch = requests[start : start + self.batch_size]
            for request, text in zip(batch, self.generate(batch, index), strict=True):
                try:
                    out.append(parse_dialogue(text, request))
                    counts["kept"] += 1
                except MalformedDialogue as error:
                    out.append(None)
                    counts[error.reason] += 1
        dropped = len(requests) - counts["kept"]
        if dropped:
            logger.info("dropped %d of %d LLM answers: %s", dropped, len(requests), dict(counts))
        return out, counts
