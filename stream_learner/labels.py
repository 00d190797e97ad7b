"""Raw labels (int or str) ↔ class indices, growing as new labels appear.

>>> m = LabelMap()
>>> m.encode(["spam", "ham", "spam", 3])
[0, 1, 0, 2]
>>> m.decode([2, 0]), len(m)
([3, 'spam'], 3)
>>> capped = LabelMap(max_size=2)
>>> capped.encode(["a", "b", "c", "a"])     # "c" would be a third class: refused (-1)
[0, 1, -1, 0]
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

Label = int | str
REFUSED = -1   # encode()'s index for a label beyond max_size


class LabelMap:
    """Class index assignment in order of first appearance; ``1`` and ``"1"`` differ.

    ``max_size`` bounds the classes (``model.max_classes``): each class is a head row,
    lives in every checkpoint and federation update, so junk labels must not grow it
    without bound.  A label that would exceed it encodes as ``REFUSED``.
    """

    def __init__(self, labels: Iterable[Label] = (), max_size: int | None = None) -> None:
        self.max_size = max_size
        self._labels: list[Label] = []
        self._index: dict[tuple[type, Label], int] = {}
        for label in labels:
            self._add(label)

    def _add(self, label: Label) -> int:
        idx = len(self._labels)
        self._labels.append(label)
        self._index[(type(label), label)] = idx
        return idx

    def encode(self, labels: Sequence[Label]) -> list[int]:
        """Class indices; ``REFUSED`` for a new label when ``max_size`` classes are known."""
        index = self._index
        out = []
        for label in labels:
            idx = index.get((type(label), label))
            if idx is None:
                idx = REFUSED if self.full else self._add(label)
            out.append(idx)
        return out

    @property
    def full(self) -> bool:
        return self.max_size is not None and len(self._labels) >= self.max_size

    def knows(self, label: Label) -> bool:
        return (type(label), label) in self._index

    def decode(self, indices: Iterable[int]) -> list[Label]:
        labels = self._labels
        return [labels[i] for i in indices]

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> list[Label]:
        return list(self._labels)

    def state_dict(self) -> dict[str, Any]:
        return {"labels": list(self._labels)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A checkpoint may hold more classes than a lowered max_classes allows: keep them
        # (they are the model's head rows); only new labels are refused.
        max_size = self.max_size
        self.__init__(state["labels"])  # type: ignore[misc]
        self.max_size = max_size
