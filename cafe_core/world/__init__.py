"""CAFE-mini: a procedural world in which the paper's off-the-shelf models are pretrained in minutes.

Subjects (objects and faces) with a class and fine identity details (:mod:`.records`),
DreamBench-style contexts and the world's language (:mod:`.language`), a renderer split by what it
draws (:mod:`.rendering`), all behind :class:`World` (:mod:`.world`); the world's datasets and tokenizers
(:mod:`.datasets`); the teacher standing in for ProFusion (:mod:`.teacher`); pretraining of the
world's foundation models (:mod:`.pretrain`) and probes of what they learned (:mod:`.probes`);
DreamBench-style evaluation cases (:mod:`.cases`) and the judge of the assistant's answers
(:mod:`.quality`); and the world as a data source (:mod:`.source`).
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
