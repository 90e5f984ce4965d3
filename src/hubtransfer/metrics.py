"""Per-class metrics of a classifier on a split: the view one accuracy number hides.

On a 90/10 folder, a model that always answers the majority class scores 0.90 accuracy
and 0.50 balanced accuracy; its minority-class recall is 0. This module computes those
numbers from labels and predictions, in NumPy, and does not import TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "IMBALANCE_RATIO",
    "ClassMetrics",
    "SplitMetrics",
    "predicted_classes",
    "split_metrics",
]

#: A split is called imbalanced when its largest class is more than this times its smallest.
IMBALANCE_RATIO = 3.0


@dataclass(frozen=True)
class ClassMetrics:
    """One class on one split.

    Attributes:
        name: The class name.
        precision: Of the examples predicted as this class, the share that are (0 when
            nothing was predicted as it).
        recall: Of the examples of this class, the share predicted as it.
        f1: Harmonic mean of precision and recall (0 when both are 0).
        support: Examples of this class in the split.
    """

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class SplitMetrics:
    """How a classifier does on one split, overall and per class.

    Attributes:
        accuracy: Share of examples predicted right.
        balanced_accuracy: Mean recall over the classes present (chance: 1 / classes).
        per_class: One :class:`ClassMetrics` per class, in label order.
        confusion: ``confusion[true][predicted]`` counts.
        examples: Examples scored.
    """

    accuracy: float
    balanced_accuracy: float
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]
    examples: int

    @property
    def imbalance(self) -> float:
        """Largest class support / smallest (inf when a class has no example)."""
        supports = [c.support for c in self.per_class]
        return float("inf") if min(supports) == 0 else max(supports) / min(supports)

    @property
    def is_imbalanced(self) -> bool:
        """Whether the largest class is more than :data:`IMBALANCE_RATIO` x the smallest."""
        return self.imbalance > IMBALANCE_RATIO

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists, not tuples: it equals itself read back from JSON)."""
        loaded: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return loaded

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitMetrics:
        """The inverse of :meth:`to_dict`."""
        return cls(
            accuracy=float(data["accuracy"]),
            balanced_accuracy=float(data["balanced_accuracy"]),
            per_class=tuple(ClassMetrics(**c) for c in data["per_class"]),
            confusion=tuple(tuple(int(v) for v in row) for row in data["confusion"]),
            examples=int(data["examples"]),
        )

    def to_markdown(self) -> str:
        """A per-class table with the confusion matrix's rows."""
        names = [c.name for c in self.per_class]
        lines = [
            "| class | precision | recall | F1 | support | "
            + " | ".join(f"pred {n}" for n in names)
            + " |",
            "|---|---|---|---|---|" + "---|" * len(names),
        ]
        for c, row in zip(self.per_class, self.confusion, strict=True):
            lines.append(
                f"| {c.name} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support} | "
                + " | ".join(str(v) for v in row)
                + " |"
            )
        return "\n".join(lines) + "\n"


def predicted_classes(logits: np.ndarray) -> np.ndarray:
    """Class indices from a classifier's ``(n, outputs)`` logits: one logit (two classes)
    is class 1 above 0, else the largest logit."""
    values = np.asarray(logits, np.float32)
    classes: np.ndarray = (
        (values[:, 0] > 0).astype(np.int64) if values.shape[-1] == 1 else values.argmax(-1)
    )
    return classes.astype(np.int64)


def split_metrics(
    labels: Sequence[int] | np.ndarray,
    predicted: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
) -> SplitMetrics:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/support, confusion matrix.

    Args:
        labels: True class indices.
        predicted: Predicted class indices, same length.
        class_names: Name of each class index; fixes the number of classes.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(predicted, dtype=np.int64).ravel()
    k = len(class_names)
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"need as many predictions as labels (> 0); got {y.size} and {p.size}")
    if y.min() < 0 or y.max() >= k or p.min() < 0 or p.max() >= k:
        raise ValueError(f"class indices must be in [0, {k}) for {k} class names")
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, p), 1)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    hits = np.diag(confusion)
    precision = np.divide(hits, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    recall = np.divide(hits, support, out=np.zeros(k), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(k), where=denominator > 0)
    present = support > 0
    return SplitMetrics(
        accuracy=float(hits.sum() / y.size),
        balanced_accuracy=float(recall[present].mean()),
        per_class=tuple(
            ClassMetrics(
                str(name), float(precision[i]), float(recall[i]), float(f1[i]), int(support[i])
            )
            for i, name in enumerate(class_names)
        ),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        examples=int(y.size),
    )
