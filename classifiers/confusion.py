"""Binary classification figures: one definition for ``modgate eval`` and the training report,
so a figure in the model card and the same figure from ``modgate eval`` mean the same thing.

A rate whose denominator is zero is None (JSON null), never an error. F1 is 2TP/(2TP+FP+FN),
which equals 2PR/(P+R) and is 0, not undefined, when positives exist and none was predicted;
like recall, it is undefined (None) on texts without positives.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Confusion", "metrics"]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def add(self, actual: bool, predicted: bool) -> None:
        if actual and predicted:
            self.tp += 1
        elif actual:
            self.fn += 1
        elif predicted:
            self.fp += 1
        else:
            self.tn += 1

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.n)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        if not self.positives:  # like recall, undefined without positives
            return None
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def fpr(self) -> float | None:
        return _ratio(self.fp, self.fp + self.tn)

    def as_dict(self, digits: int | None = None) -> dict[str, int | float | None]:
        """Counts and rates, the rates rounded to ``digits`` when given."""
        out: dict[str, int | float | None] = {"n": self.n, "positives": self.positives}
        out.update(tp=self.tp, fp=self.fp, tn=self.tn, fn=self.fn)
        for name in ("accuracy", "precision", "recall", "f1", "fpr"):
            value = getattr(self, name)
            out[name] = value if value is None or digits is None else round(value, digits)
        return out


def metrics(c: Confusion) -> dict[str, int | float | None]:
    """:meth:`Confusion.as_dict`, unrounded."""
    return c.as_dict()
