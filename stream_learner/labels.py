"""Raw labels (int or str) ↔ class indices, growing as new labels appear.

>>> m = LabelMap()
>>> m.encode(["spam", "ham", "spam", 3])
[0, 1, 0, 2]
>>> m.decode([2, 0]), len(m)
([3, 'spam'], 3)
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

Label = int | str


class LabelMap:
    """Class index assignment in order of first appearance; ``1`` and ``"1"`` differ."""

    def __init__(self, labels: Iterable[Label] = ()) -> None:
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
        index = self._index
        out = []
        for label in labels:
            idx = index.get((type(label), label))
            out.append(self._add(label) if idx is None else idx)
        return out

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
        self.__init__(state["labels"])  # type: ignore[misc]
