"""Names every layer shares: the modalities, the evaluation metrics and the catalogue of training methods.

Torch-free and import-free, so the command line can validate a method name or print a
metric without loading a model library.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ant_config.errors import UserError

MODALITIES = ("text", "image", "price")  # the frozen item features ANT reads
CUTOFFS = (10, 50)
METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
SELECT_ON = "recall@10"  # picks the best epoch, the served model and the transfer verdict


@dataclass(frozen=True)
class Method:
    name: str
    parent: Literal["ant", "text-only"] | None  # the pre-trained model it starts from
    trains: bool                                 # False: a sanity baseline without parameters
    summary: str

    @property
    def transfers(self) -> bool:
        """Judged against scratch for negative transfer."""
        return self.parent is not None


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("relearn", "ant", True, "ANT: item adaptors and positions re-learned, pre-trained Transformer kept"),
    Method("finetune", "ant", True, "every pre-trained parameter trained further on the target"),
    Method("finetune-frozen", "ant", True, "fine-tuning with the pre-trained Transformer frozen"),
    Method("scratch", None, True, "ANT's architecture trained on the target alone (the negative-transfer reference)"),
    Method("sasrec", None, True, "SASRec as RecBole implements it: item IDs, dot-product scores, full softmax"),
    Method("unisrec", "text-only", True, "UniSRec-style: a text-only pre-trained model, fine-tuned"),
    Method("features-sasrec", None, True, "the frozen features through one linear layer each, no pre-training"),
    Method("pop", None, False, "the most popular training items (history excluded)"),
    Method("random", None, False, "random scores: the floor every model must clear"),
)}
SANITY_BASELINES = tuple(m for m, spec in METHODS.items() if not spec.trains)


class UnknownMethod(UserError, ValueError):
    """A method name that is not in the catalogue."""


def method(name: str) -> Method:
    """The method called `name`; an unknown name lists the valid ones."""
    if name not in METHODS:
        raise UnknownMethod(f"unknown method {name!r}; one of {', '.join(METHODS)}")
    return METHODS[name]
