"""CAFE-mini: a procedural world in which the paper's off-the-shelf models are pretrained in minutes.

Subjects (objects and faces) with a class and fine identity details, DreamBench-style contexts,
a renderer, captions and dialogues (:mod:`.world`); the world's datasets and tokenizers
(:mod:`.datasets`); the teacher standing in for ProFusion (:mod:`.teacher`); pretraining of the
world's foundation models (:mod:`.pretrain`) and probes of what they learned (:mod:`.probes`);
and DreamBench-style evaluation cases (:mod:`.cases`).
The method's models never import this package.
"""

from .world import DOMAINS, FAMILIES, SPLITS, TURN_KINDS, Context, Subject, Turn, World, WorldConfig, make_world, words

__all__ = [
    "DOMAINS",
    "FAMILIES",
    "SPLITS",
    "TURN_KINDS",
    "Context",
    "Subject",
    "Turn",
    "World",
    "WorldConfig",
    "make_world",
    "words",
]
