"""Eq. 2: the CAFE assistant ``M``, a LLaVA-style multimodal LLM with a ``[GEN]`` head (paper section 3).

CLIP patch features of the subject image go through a linear projection ``V`` and replace the
single ``<image>`` placeholder of a chat-formatted prompt; a frozen causal LM reads the result and
writes the response; a learnable ``[GEN]`` input embedding is appended after the text and its
last hidden state goes through a linear head ``H`` to give ``c_hat``, the predicted CLIP image
embedding of the image to generate. Only ``V``, ``H`` and the ``[GEN]`` embedding train (eq. 2):

    L = L_LM(response) + lambda * dist(c_hat, E_c(y)),   dist in {mse, neg_cosine}

Sequence order (our reading; the paper says [GEN] is "appended after the text"): every sample is
``[prompt, with <image> replaced by P projected patch tokens] [response] [GEN]``. The response is
therefore generated first and ``[GEN]`` reads it: at inference we decode the response greedily,
then feed ``[GEN]`` after it (right after the ``</s>`` that ended it, as in training when the
response ids end with ``</s>``) and read ``c_hat`` there.

The LM's own embedding matrix is never trained: ``<image>`` and ``[GEN]`` are added to the
tokenizer (and the embedding matrix grown if the ids would not fit) only so that they have ids;
their embedding rows are always substituted, by ``V(patches)`` and by :attr:`gen_embedding`.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.files import atomic_save_safetensors, atomic_write_json

__all__ = ["DISTANCES", "AssistantConfig", "CafeAssistant", "PromptTooLong", "embedding_distance", "read_config"]


class PromptTooLong(ValueError):
    """A chat longer than the assistant's context can hold with its answer."""


DISTANCES = ("mse", "neg_cosine")
WEIGHTS_FILE = "assistant.safetensors"
CONFIG_FILE = "assistant_config.json"

IdsLike = Sequence[int] | torch.Tensor


@dataclass(frozen=True)
class AssistantConfig:
    patch_dim: int  # width of the CLIP patch features (1024 for ViT-L/14@336)
    clip_dim: int  # width of the CLIP projected image embedding (768 for ViT-L/14@336)
    image_token: str = "<image>"
    gen_token: str = "[GEN]"
    lambda_: float = 1.0
    distance: str = "mse"

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.patch_dim <= 0 or self.clip_dim <= 0:
            raise ValueError(f"patch_dim and clip_dim must be positive, got {self.patch_dim}, {self.clip_dim}")
        if self.lambda_ < 0:
            raise ValueError(f"lambda_ must be >= 0, got {self.lambda_}")
        if not self.image_token or not self.gen_token or self.image_token == self.gen_token:
            raise ValueError("image_token and gen_token must be distinct non-empty strings")


def embedding_distance(c_hat: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    """Batch mean of ``dist(c_hat, target)``: "mse" = mean squared error over all entries,
    "neg_cosine" = mean of ``1 - cos(c_hat_i, target_i)``. Computed in float32."""
    c_hat, target = c_hat.float(), target.float()
    if c_hat.shape != target.shape:
        raise ValueError(f"c_hat {tuple(c_hat.shape)} and target {tuple(target.shape)} differ in shape")
    if distance == "mse":
        return F.mse_loss(c_hat, target)
    if distance == "neg_cosine":
        return (1.0 - F.cosine_similarity(c_hat, target, dim=-1)).mean()
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def _as_id_list(ids: IdsLike) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"expected a 1-D sequence of token ids, got shape {tuple(ids.shape)}")
        return [int(i) for i in ids.tolist()]
    return [int(i) for i in ids]


def _as_batch(ids: Sequence[IdsLike] | torch.Tensor, name: str) -> list[list[int]]:
    """A batch of id sequences: a list of 1-D sequences, or a 2-D tensor whose rows are taken whole."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 2:
            raise ValueError(f"{name}: a tensor batch must be 2-D, got shape {tuple(ids.shape)}")
        return [[int(i) for i in row] for row in ids.tolist()]
    return [_as_id_list(x) for x in ids]


def read_config(path: str | os.PathLike) -> AssistantConfig:
    """The :class:`AssistantConfig` saved beside trained V, H and [GEN]."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: {path} holds no trained assistant (save_pretrained writes it)")
    return AssistantConfig(**json.loads(file.read_text()))


class CafeAssistant(nn.Module):
    """Frozen causal LM + trainable ``visual_proj`` (V), ``gen_head`` (H) and ``gen_embedding`` ([GEN])."""

    def __init__(self, lm: nn.Module, tokenizer: Any, config: AssistantConfig, head: Any | None = None) -> None:
        """``head``: trained V, H and [GEN] (a :class:`~cafe_core.models.assistant_head.CafeAssistantHead`,
        a pipeline's component), shared, not copied; None starts new ones for ``lm``."""
        from .assistant_head import CafeAssistantHead

        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        missing = [t for t in (config.image_token, config.gen_token) if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens(
                {"extra_special_tokens": missing},
                replace_extra_special_tokens=False,
            )
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(config.image_token))
        self.gen_token_id = int(tokenizer.convert_tokens_to_ids(config.gen_token))
        embed = lm.get_input_embeddings()
        if len(tokenizer) > embed.num_embeddings:
            # Only grow (a real Llama-2 has 32000 rows, more than any small tokenizer needs).
            # Their rows are never read (always substituted), so no mean-initialisation is needed.
            lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            embed = lm.get_input_embeddings()
        positions = getattr(getattr(lm, "config", None), "max_position_embeddings", None)
        if positions and tokenizer.model_max_length < positions:
            tokenizer.model_max_length = positions  # image tokens make prompts longer than text-only ones
        lm.requires_grad_(False)
        lm.eval()
        self.lm = lm
        # transformers renamed `past_key_values` to `cache` (5.2x); an older release would swallow
        # `cache` into **kwargs and silently decode without one, so ask the signature.
        self._cache_kwarg = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"

        head = head if head is not None else CafeAssistantHead.for_lm(lm, config)
        if head.assistant_config != config:
            raise ValueError(f"the head's config {head.assistant_config} is not {config}")
        if head.config.hidden_size != embed.embedding_dim:
            raise ValueError(f"the head is {head.config.hidden_size} wide, the LM's embeddings {embed.embedding_dim}")
        self.hidden_size = embed.embedding_dim
        # V, H and [GEN] stay float32 whatever the LM's dtype (a bf16 LM on GPU): they are what
        # AdamW updates, and they are a few million parameters beside the LM's billions.
        self.visual_proj, self.gen_head, self.gen_embedding = head.visual_proj, head.gen_head, head.gen_embedding
        self._head = [head]  # registered through its parts only: their state-dict keys stay V, H, [GEN]

    @property
    def head(self):
        """V, H and [GEN] as one diffusers model (shared with this assistant)."""
        return self._head[0]

    @classmethod
    def from_pretrained(
        cls,
        lm: str | os.PathLike,
        trained: str | os.PathLike | None = None,
        *,
        config: AssistantConfig | None = None,
        model_root: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> CafeAssistant:
        """The frozen LM and its tokenizer (a folder or Hub id, resolved offline) plus V, H and [GEN].

        ``trained``: a folder written by :meth:`save_pretrained`, whose config is used; without it
        ``config`` is required and V, H, [GEN] start fresh (for training). ``dtype`` is the LM's
        (bf16 on GPU keeps Llama-2-13B at 26 GB); the trainable parts stay float32.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..utils.hub import resolve_model

        if trained is not None:
            config = read_config(trained)
        if config is None:
            raise ValueError("from_pretrained needs either `trained` (a saved assistant) or `config`")
        folder = resolve_model(lm, model_root=model_root)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"{folder}: the LM's tokenizer has no chat template; CAFE prompts are written with it")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
        model.to(device or "cpu")
        assistant = cls(model, tokenizer, config)
        if trained is not None:
            assistant.load_trainable(trained)
        return assistant

    # --- bookkeeping ------------------------------------------------------------------------------

    def trainable_module(self) -> nn.Module:
        """V, H and [GEN] (shared, not copied) as one module: what optimisers, checkpoints and
        saved assistants see, so none of them ever holds the frozen LM (26 GB for Llama-2-13B)."""
        parts = nn.Module()
        parts.visual_proj, parts.gen_head, parts.gen_embedding = self.visual_proj, self.gen_head, self.gen_embedding
        return parts

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Exactly V, H and the [GEN] embedding; everything in the LM stays frozen."""
        return list(self.trainable_module().parameters())

    def train(self, mode: bool = True) -> CafeAssistant:
        super().train(mode)
        self.lm.eval()  # the frozen LM never goes into training mode (dropout)
        if mode and getattr(self.lm, "is_activation_checkpointing", False):
            # transformers checkpoints a layer only while that layer is in training mode: set just the
            # decoder layers' own flag, which its checkpoint wrapper reads; their attention, MLP and
            # dropout submodules stay in eval mode, so what is computed does not change.
            from transformers.modeling_layers import GradientCheckpointingLayer

            for module in self.lm.modules():
                if isinstance(module, GradientCheckpointingLayer):
                    module.training = True
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the frozen LM's layer activations in backward instead of keeping them: the
        gradient reaching V and [GEN] flows back through every layer, so a batch of Llama-2-13B's
        activations would otherwise stay alive from forward to backward."""
        if not hasattr(self.lm, "activation_checkpointing_enable"):
            raise ValueError(f"{type(self.lm).__name__} does not support activation (gradient) checkpointing")
        self.lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.train(self.training)

    @property
    def device(self) -> torch.device:
        return self.gen_embedding.device

    # --- prompts ----------------------------------------------------------------------------------

    def build_prompt(self, messages: list[dict]) -> str:
        """The chat-formatted prompt, from the tokenizer's own chat template, with the image placeholder
        prefixed to the first user message (unless that message already contains it)."""
        messages = [dict(m) for m in messages]
        users = [m for m in messages if m.get("role") == "user"]
        if not users:
            raise ValueError("build_prompt needs at least one user message")
        if not any(self.config.image_token in str(m.get("content", "")) for m in messages):
            users[0]["content"] = f"{self.config.image_token} {users[0]['content']}"
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def encode_prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of :meth:`build_prompt` (the template writes its own BOS)."""
        return self.tokenizer(self.build_prompt(messages), add_special_tokens=False)["input_ids"]

    @property
    def context_length(self) -> int | None:
        """Positions the LM attends over (its ``max_position_embeddings``); None where it has no limit."""
        return getattr(getattr(self.lm, "config", None), "max_position_embeddings", None)

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` the tokenizer has no token for (they reach the LM as its unknown
        token), in order, once each. A byte-fallback tokenizer (Llama's) knows every word."""
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return []
        words = dict.fromkeys(w.strip(".,;:!?\"'()") for w in text.split())
        return [w for w in words if w and unk in self.tokenizer(w, add_special_tokens=False)["input_ids"]]

    def encode_response(self, text: str, *, eos: bool = True) -> list[int]:
        """Token ids of a response, ending with EOS by default (so the model learns to stop)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if eos and self.tokenizer.eos_token_id is not None and (not ids or ids[-1] != self.tokenizer.eos_token_id):
            ids = ids + [self.tokenizer.eos_token_id]
        return ids

    # --- inputs -----------------------------------------------------------------------------------

    def _embed_ids(self, ids: list[int]) -> torch.Tensor:
        table = self.lm.get_input_embeddings()
        return table(torch.tensor(ids, dtype=torch.long, device=table.weight.device))

    def _prompt_embeds(self, ids: list[int], patches: torch.Tensor, index: int) -> torch.Tensor:
        """Prompt embeddings with the single <image> token replaced by V(patches): (len - 1 + P, hidden)."""
        where = [k for k, t in enumerate(ids) if t == self.image_token_id]
        if len(where) != 1:
            what = "lacks" if not where else f"repeats ({len(where)} times)"
            raise ValueError(f"prompt {index} {what} the image placeholder {self.config.image_token!r}")
        k = where[0]
        visual = self.visual_proj(patches.to(self.device, self.visual_proj.weight.dtype))
        # On V's device: with model CPU offload the LM's table is still on the CPU before its first
        # forward (whose hook moves the LM and these inputs to the execution device).
        text = self._embed_ids(ids).to(visual.device)
        return torch.cat([text[:k], visual.to(text.dtype), text[k + 1 :]], dim=0)

    def _check_fits(self, lengths: list[int], image_tokens: int, max_new_tokens: int) -> None:
        """Refuse a prompt that leaves no room for the answer and [GEN]: past its context an LM
        answers with degenerate text instead of failing."""
        limit = self.context_length
        for i, length in enumerate(lengths):
            if limit is not None and length + max_new_tokens + 1 > limit:
                raise PromptTooLong(
                    f"chat {i} is {length} positions long ({image_tokens} of them the photo's), and the answer "
                    f"needs up to {max_new_tokens + 1} more; the assistant's context holds {limit} "
                    "(its LM's max_position_embeddings): shorten the message or start a new chat"
                )

    def _check_patches(self, patch_features: torch.Tensor, batch: int) -> None:
        if patch_features.dim() != 3 or patch_features.shape[0] != batch:
            raise ValueError(f"patch_features must be (B={batch}, P, patch_dim), got {tuple(patch_features.shape)}")
        if patch_features.shape[-1] != self.config.patch_dim:
            raise ValueError(f"patch_features width {patch_features.shape[-1]} != patch_dim {self.config.patch_dim}")

    def prepare_inputs(
        self,
        prompt_ids: Sequence[IdsLike] | torch.Tensor,
        patch_features: torch.Tensor,
        response_ids: Sequence[IdsLike] | torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``[prompt with V(patches) at <image>] [response] [GEN]`` per sample, right-padded.

        Returns ``inputs_embeds`` (B, T, hidden), ``attention_mask`` (B, T), ``labels`` (B, T: the
        response ids, -100 on prompt, image tokens, [GEN] and padding) and ``gen_positions`` (B,).
        A 2-D tensor of ids is taken row by row, whole (no padding is stripped): pass lists for
        ragged batches.
        """
        prompts = _as_batch(prompt_ids, "prompt_ids")
        responses = _as_batch(response_ids, "response_ids") if response_ids is not None else [[] for _ in prompts]
        if len(responses) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        self._check_patches(patch_features, len(prompts))
        gen = self.gen_embedding
        rows, labels = [], []
        for i, (ids, resp) in enumerate(zip(prompts, responses)):
            prompt = self._prompt_embeds(ids, patch_features[i], i)
            parts = [prompt]
            if resp:
                parts.append(self._embed_ids(resp).to(prompt.dtype))
            parts.append(gen.to(prompt.dtype)[None])
            rows.append(torch.cat(parts, dim=0))
            labels.append([-100] * prompt.shape[0] + resp + [-100])
        lengths = [r.shape[0] for r in rows]
        width = max(lengths)
        hidden = rows[0].shape[-1]
        device = rows[0].device
        embeds = torch.cat(
            [torch.cat([r, r.new_zeros(width - r.shape[0], hidden)], dim=0)[None] for r in rows],
            dim=0,
        )
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        label_t = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (n, lab) in enumerate(zip(lengths, labels)):
            mask[i, :n] = 1
            label_t[i, :n] = torch.tensor(lab, dtype=torch.long)
        return {
            "inputs_embeds": embeds,
            "attention_mask": mask.to(device),
            "labels": label_t.to(device),
            "gen_positions": torch.tensor([n - 1 for n in lengths], dtype=torch.long, device=device),
        }

    # --- training ---------------------------------------------------------------------------------

    def forward(
        self,
        prompt_ids: Sequence[IdsLike] | torch.Tensor,
        patch_features: torch.Tensor,
        response_ids: Sequence[IdsLike] | torch.Tensor,
        target_clip: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Eq. 2: ``loss = lm_loss + lambda * embed_loss``.

        Args:
            prompt_ids: B chat-formatted prompts (token ids), each with one ``<image>``.
            patch_features: (B, P, patch_dim) CLIP patch features of the subject photos.
            response_ids: B responses (token ids, EOS included).
            target_clip: (B, clip_dim) E_c(y) of the targets, or None.

        Returns:
            ``lm_loss`` (the LM's cross entropy on the response tokens only), ``c_hat`` (B, clip_dim)
            = H(last-layer hidden state at [GEN]), ``embed_loss`` = dist(c_hat, target_clip) and
            ``loss``; without ``target_clip``, ``loss`` is the LM loss and ``embed_loss`` is absent.
        """
        inputs = self.prepare_inputs(prompt_ids, patch_features, response_ids)
        mask, extra = inputs["attention_mask"], {"use_cache": False}
        if mask.device.type == "meta":
            # transformers inspects mask and position values, which meta tensors lack: a shapes-only pass
            # without the padding mask (and with an empty cache, which skips the packed-sequence check).
            from transformers import DynamicCache

            mask, extra = (
                None,
                {
                    "use_cache": True,
                    self._cache_kwarg: DynamicCache(config=getattr(self.lm, "config", None)),
                },
            )
        out = self.lm(
            inputs_embeds=inputs["inputs_embeds"],
            attention_mask=mask,
            labels=inputs["labels"],
            output_hidden_states=True,
            **extra,
        )
        last = out.hidden_states[-1]
        rows = torch.arange(last.shape[0], device=last.device)
        h = last[rows, inputs["gen_positions"]]
        c_hat = self.gen_head(h.to(self.gen_head.weight.dtype))
        lm_loss = out.loss.float()
        result = {"lm_loss": lm_loss, "c_hat": c_hat, "loss": lm_loss}
        if target_clip is not None:
            embed_loss = embedding_distance(c_hat, target_clip.to(c_hat.device), self.config.distance)
            result["embed_loss"] = embed_loss
            result["loss"] = lm_loss + self.config.lambda_ * embed_loss
        return result

    # --- inference --------------------------------------------------------------------------------

    def _step(self, embeds, mask, positions, cache):
        out = self.lm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            **{self._cache_kwarg: cache},  # updated in place
            use_cache=True,
            output_hidden_states=True,
        )
        return out.logits[:, -1], out.hidden_states[-1][:, -1]

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: Sequence[IdsLike] | torch.Tensor,
        patch_features: torch.Tensor,
        max_new_tokens: int = 48,
    ) -> tuple[list[str], torch.Tensor]:
        """Greedy response per sample (stops at EOS), then ``[GEN]`` after it.

        Args:
            prompt_ids: B chat-formatted prompts (token ids), each with one ``<image>``.
            patch_features: (B, P, patch_dim) CLIP patch features of the subject photos.
            max_new_tokens: the longest response.

        Returns:
            ``(texts, c_hat (B, clip_dim))``.

        A manual loop over the KV cache. Samples that stopped keep stepping with their new
        positions masked out, so the final [GEN] of each sample sees exactly its
        ``[prompt][response incl. EOS]`` at the positions that training uses.
        """
        from transformers import DynamicCache

        prompts = _as_batch(prompt_ids, "prompt_ids")
        self._check_patches(patch_features, len(prompts))
        rows = [self._prompt_embeds(ids, patch_features[i], i) for i, ids in enumerate(prompts)]
        self._check_fits([r.shape[0] for r in rows], patch_features.shape[1], max_new_tokens)
        batch, width = len(rows), max(r.shape[0] for r in rows)
        device = rows[0].device
        # Left padding, so that every sample's next token lands in the same column.
        embeds = torch.stack([F.pad(r, (0, 0, width - r.shape[0], 0)) for r in rows])
        mask = torch.zeros(batch, width, dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            mask[i, width - r.shape[0] :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_pos = mask.sum(-1)  # (B,) position of the next real token
        cache = DynamicCache(config=getattr(self.lm, "config", None))
        logits, _ = self._step(embeds, mask, positions, cache)

        eos = self.tokenizer.eos_token_id
        table = self.lm.get_input_embeddings()
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        generated: list[list[int]] = [[] for _ in range(batch)]
        for _ in range(max_new_tokens):
            token = logits.argmax(-1)
            for i in range(batch):
                if not done[i]:
                    generated[i].append(int(token[i]))
            live = (~done).long()
            mask = torch.cat([mask, live[:, None]], dim=1)
            logits, _ = self._step(table(token)[:, None], mask, next_pos[:, None], cache)
            next_pos = next_pos + live
            if eos is not None:
                done = done | (token == eos)
            if bool(done.all()):
                break
        # [GEN] after each response (its EOS included when it stopped at one).
        mask = torch.cat([mask, torch.ones(batch, 1, dtype=torch.long, device=device)], dim=1)
        gen = self.gen_embedding.to(embeds.dtype)[None, None].expand(batch, 1, -1)
        _, h = self._step(gen, mask, next_pos[:, None], cache)
        c_hat = self.gen_head(h.to(self.gen_head.weight.dtype))
        texts = [self.tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated]
        self.last_generated_ids = generated
        return texts, c_hat

    # --- persistence ------------------------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.trainable_module().state_dict()

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write V, H and [GEN] (``assistant.safetensors``) and the config (``assistant_config.json``)
        into the folder ``path``, atomically."""
        folder = Path(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.trainable_state_dict().items()}
        atomic_save_safetensors(tensors, folder / WEIGHTS_FILE)
        atomic_write_json(folder / CONFIG_FILE, asdict(self.config))
        return folder

    def load_trainable(self, path: str | os.PathLike) -> CafeAssistant:
        """Load what :meth:`save_pretrained` wrote; the saved config must match this model's widths."""
        from safetensors.torch import load_file

        folder = Path(path)
        saved = read_config(folder)
        if (saved.patch_dim, saved.clip_dim) != (
            self.config.patch_dim,
            self.config.clip_dim,
        ):
            raise ValueError(
                f"{folder}: saved patch_dim/clip_dim {saved.patch_dim}/{saved.clip_dim} do not match "
                f"{self.config.patch_dim}/{self.config.clip_dim}"
            )
        tensors = load_file(folder / WEIGHTS_FILE)
        own = self.trainable_state_dict()
        if set(tensors) != set(own):
            raise ValueError(f"{folder}: expected tensors {sorted(own)}, found {sorted(tensors)}")
        with torch.no_grad():
            for name, param in own.items():
                if tensors[name].shape != param.shape:
                    raise ValueError(
                        f"{folder}: {name} has shape {tuple(tensors[name].shape)}, expected {tuple(param.shape)}"
                    )
                param.copy_(tensors[name].to(param.device, param.dtype))
        return self
