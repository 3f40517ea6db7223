"""The assistant's quality figures on CAFE-mini's held-out subjects: are its words and drawings right?

The world knows every image's truth and speaks a closed language, so it can judge an answer
(does it name the class and the requested context?), a drawing (does evaluation CLIP find the
context the answer names?) and a vague wish's reply, which no benchmark of real photos can.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from ..benchmarks.metrics import dino_similarity, identity_similarity
from .world import words

__all__ = ["assistant_quality"]


def assistant_quality(
    pipe, world, turns, cases, eval_clip, eval_dino, face, *, seed: int, target_seeds: int, probe=None
) -> dict:
    """The assistant's quality figures on held-out subjects, per domain.

    ``turns`` are ``(case, responses, c_hat, images, true targets)`` of the evaluation's chats;
    true targets of a request are rendered with seeds offset by ``target_seeds``.

    - cosine: c_hat against E_c(y), y a true render of the requested context;
    - names_class_and_context: the response names the subject's class and the requested context;
    - image_matches_response: eval-CLIP's top context for the drawn image (among the domain's
      contexts, prompts naming the class) is the one the response names; `_ceiling` is the same
      test on true renders, what a perfect drawing scores;
    - ambiguous_valid_with_reason: a vague wish answered with a context that fulfils it and a "because";
      ambiguous_names_class: that answer names the subject's class, which most wishes leave to the photo;
      ambiguous_reason_fits_context: the reason given is one the world gives for the context named
      (a wish whose contexts include it), not a reason borrowed from another wish;
    - drawn_context_is_named, ambiguous_drawn_context_is_named (with ``probe``, the fidelity
      probe): the context the probe sees in the drawing is the one the response names, for the
      evaluation's requests and for vague wishes;
    - second_turn_*: a request asked as the second turn of a chat: is its context named, and are
      c_hat's cosine to the true target and the drawings' identity (DINO for objects, ID for
      faces, 4 images) as good as when the same request is asked alone (`same_request_alone_*`)?
    """
    out: dict[str, dict] = {}
    rng = np.random.default_rng([seed, 41])
    for domain in ("object", "face"):
        mine = [t for t in turns if t[0].domain == domain]
        if not mine:
            continue
        contexts = world.contexts(domain)
        cos, named, matches, ceiling, drawn = [], [], [], [], []
        for case, texts, c_hat, images, targets in mine:
            cos += F.cosine_similarity(c_hat, pipe.clip.image_embeds(targets).float().cpu()).tolist()
            top = _top_contexts(world, eval_clip, case.key, contexts, images)
            top_true = _top_contexts(world, eval_clip, case.key, contexts, targets)
            for text, prompt, t, tt in zip(texts, case.prompts, top, top_true):
                found = world.find_context(domain, text)
                named.append(case.key.cls in words(text) and found is not None and found.id == prompt.key.id)
                matches.append(found is not None and t == found.id)
                ceiling.append(tt == prompt.key.id)
            if probe is not None:
                drawn += _drawn_is_named(probe, world, case.key, texts, images)
        ambiguous, ambiguous_class, reason_fits, ambiguous_drawn, second_named = [], [], [], [], []
        later, alone = {"identity": [], "cosine": []}, {"identity": [], "cosine": []}
        for case in [c for c in cases if c.domain == domain]:
            asks = [world.turn(case.key, "ambiguous", rng) for _ in range(4)]
            texts, _, images, _ = pipe.respond(
                [case.input_image] * len(asks), [[{"role": "user", "content": t.user}] for t in asks], seed=seed
            )
            for text, ask in zip(texts, asks):
                found = world.find_context(domain, text)
                ambiguous.append(found is not None and found.name in ask.valid and "because" in words(text))
                ambiguous_class.append(case.key.cls in words(text))  # "Make it festive!" names no class: the photo must
                reason_fits.append(_reason_fits(world, domain, text, found))
            if probe is not None:
                ambiguous_drawn += _drawn_is_named(probe, world, case.key, texts, images)
            # The last prompt's request as the second turn of a chat, and the same request alone.
            first, second = case.prompts[0], case.prompts[-1]
            r1 = pipe.chat(case.input_image, first.cafe_prompt, seed=seed)
            r2 = pipe.chat(case.input_image, second.cafe_prompt, r1.history, seed=seed, num_images=4)
            r0 = pipe.chat(case.input_image, second.cafe_prompt, seed=seed, num_images=4)
            found = world.find_context(domain, r2.response)
            second_named.append(found is not None and found.id == second.key.id)
            target = (
                pipe.clip.image_embeds(world.render(case.key, second.key, seed=seed + target_seeds).image[None])
                .float()
                .cpu()[0]
            )
            for result, scores in ((r2, later), (r0, alone)):
                scores["cosine"].append(float(F.cosine_similarity(result.embedding, target, dim=0)))
                if domain == "face":
                    scores["identity"].append(identity_similarity(face, result.images, case.reference_images))
                else:
                    scores["identity"].append(dino_similarity(eval_dino, result.images, case.reference_images))
        out[domain] = {
            "turns": len(named),
            "cosine": float(np.mean(cos)),
            "names_class_and_context": float(np.mean(named)),
            "image_matches_response": float(np.mean(matches)),
            "image_matches_response_ceiling": float(np.mean(ceiling)),
            "ambiguous_requests": len(ambiguous),
            "ambiguous_valid_with_reason": float(np.mean(ambiguous)),
            "ambiguous_names_class": float(np.mean(ambiguous_class)),
            "ambiguous_reason_fits_context": float(np.mean(reason_fits)),
            "second_turn_names_context": float(np.mean(second_named)),
            "second_turn_cosine": float(np.mean(later["cosine"])),
            "same_request_alone_cosine": float(np.mean(alone["cosine"])),
            "second_turn_identity": float(np.mean(later["identity"])),
            "same_request_alone_identity": float(np.mean(alone["identity"])),
            "identity_metric": "ID" if domain == "face" else "DINO",
        }
        if probe is not None:
            out[domain]["drawn_context_is_named"] = float(np.mean(drawn))
            out[domain]["ambiguous_drawn_context_is_named"] = float(np.mean(ambiguous_drawn))
    return out


def _reason_fits(world, domain: str, text: str, found) -> bool:
    """The response's "because ..." is a reason the world gives for the context it names."""
    said = f" {' '.join(words(text))} "
    reasons = [w for w in world.ambiguous_requests(domain) if f" {' '.join(words(w.reason))} " in said]
    return found is not None and any(found.name in w.contexts for w in reasons)


def _drawn_is_named(probe, world, subject, texts, images) -> list[bool]:
    """Per response: the fidelity probe sees, in its drawing, the context the response names."""
    seen = probe.predict(images, subject.domain)["context"]
    named = [world.find_context(subject.domain, text) for text in texts]
    return [c is not None and c.name == s for c, s in zip(named, seen)]


def _top_contexts(world, eval_clip, subject, contexts, images) -> list[int]:
    """For each image, the id of the context whose prompt eval-CLIP finds closest."""
    text = eval_clip.text_embeds([world.prompt(subject, c) for c in contexts], normalize=True)
    sims = eval_clip.image_embeds(images, normalize=True) @ text.T
    return [contexts[int(i)].id for i in sims.argmax(-1)]
