"""Offline continual-learning streams for ``stream-learner bench continual``.

Each builder returns a :class:`TaskStream`: a list of tasks, each with a training part
(presented once, in a fixed shuffled order) and a held-out test part.  The digits
streams are built from scikit-learn's ``load_digits`` (1797 8x8 images, 64 features
scaled to [0, 1]); one train/test split of the images is shared by every task, so a
permuted or rotated task is the same images seen through another transformation.

>>> s = permuted_digits(n_tasks=3, seed=0)
>>> s.name, len(s.tasks), s.tasks[0].train_x.shape[1], s.tasks[0].train_x.dtype
('permuted-digits', 3, 64, dtype('float32'))
>>> sorted(set(s.tasks[1].train_y.tolist())) == list(range(10))
True
>>> sp = split_digits(n_tasks=5)
>>> [sorted(set(t.train_y.tolist())) for t in sp.tasks][:2]
[[0, 1], [2, 3]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Task:
    name: str
    train_x: np.ndarray   # float32 (n, d)
    train_y: np.ndarray   # int64 labels
    test_x: np.ndarray
    test_y: np.ndarray
    # What made this task from the shared data, in words ("perm:3,0,...", "rot:9",
    # "classes:1/2", "sea:variant=1,seed=100003"): what a tuning stream must not share
    # with a reported one.
    transform: str = ""


@dataclass
class TaskStream:
    name: str
    tasks: list[Task]
    class_incremental: bool   # True: each task brings new classes (argmax over all known)
    description: str

    @property
    def train_events(self) -> int:
        return sum(len(t.train_y) for t in self.tasks)


def _digits(test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return tuple(train_test_split(x, y, test_size=test_fraction, random_state=seed,  # type: ignore[return-value]
                                  stratify=y))


def _shuffled(x: np.ndarray, y: np.ndarray, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(y))
    return np.ascontiguousarray(x[order]), np.ascontiguousarray(y[order])


def permuted_digits(n_tasks: int = 10, test_fraction: float = 0.3, seed: int = 0,
                    identity_first: bool = True) -> TaskStream:
    """Task 0: original pixels (``identity_first``, else a permutation too); task k > 0:
    one fixed random pixel permutation drawn from ``seed``."""
    xtr, xte, ytr, yte = _digits(test_fraction, seed)
    rng = np.random.default_rng(seed)
    tasks = []
    for k in range(n_tasks):
        perm = np.arange(64) if k == 0 and identity_first else rng.permutation(64)
        tx, ty = _shuffled(xtr[:, perm], ytr, rng)
        tasks.append(Task(f"perm{k}", tx, ty, np.ascontiguousarray(xte[:, perm]), yte,
                          "perm:" + ",".join(map(str, perm.tolist()))))
    return TaskStream("permuted-digits", tasks, False,
                      f"{n_tasks} fixed pixel permutations of load_digits, 10 shared classes")


def rotated_digits(n_tasks: int = 10, test_fraction: float = 0.3, seed: int = 0,
                   angle_offset: float = 0.0) -> TaskStream:
    """Task k: every image rotated by ``(k + angle_offset) * 180 / n_tasks`` degrees
    (bilinear, 8x8 kept); ``angle_offset=0.5`` gives angles between the default ones."""
    from scipy.ndimage import rotate

    xtr, xte, ytr, yte = _digits(test_fraction, seed)
    rng = np.random.default_rng(seed)

    def rot(x: np.ndarray, angle: float) -> np.ndarray:
        if angle == 0:
            return x.copy()
        imgs = x.reshape(-1, 8, 8)
        out = rotate(imgs, angle, axes=(1, 2), reshape=False, order=1, mode="constant")
        return np.clip(out, 0.0, 1.0).reshape(-1, 64).astype(np.float32)

    tasks = []
    for k in range(n_tasks):
        angle = (k + angle_offset) * 180.0 / n_tasks
        tx, ty = _shuffled(rot(xtr, angle), ytr, rng)
        tasks.append(Task(f"rot{angle:g}", tx, ty, np.ascontiguousarray(rot(xte, angle)), yte,
                          f"rot:{angle:g}"))
    step = f"{180 / n_tasks:g}"
    angles = f"k*{step}" if angle_offset == 0 else f"(k+{angle_offset:g})*{step}"
    return TaskStream("rotated-digits", tasks, False,
                      f"{n_tasks} rotations by {angles} degrees, 10 shared classes")


def split_digits(n_tasks: int = 5, test_fraction: float = 0.3, seed: int = 0,
                 class_shift: int = 0) -> TaskStream:
    """Class-incremental: task k holds the classes ``{2k, 2k+1}`` (10 / n_tasks per task),
    each shifted by ``class_shift`` modulo 10 (1: ``{1, 2}, {3, 4}, ..., {9, 0}``)."""
    xtr, xte, ytr, yte = _digits(test_fraction, seed)
    rng = np.random.default_rng(seed)
    per = 10 // n_tasks
    tasks = []
    for k in range(n_tasks):
        classes = [(c + class_shift) % 10 for c in range(k * per, (k + 1) * per)]
        mtr, mte = np.isin(ytr, classes), np.isin(yte, classes)
        tx, ty = _shuffled(xtr[mtr], ytr[mtr], rng)
        tasks.append(Task("classes " + "/".join(map(str, classes)), tx, ty,
                          np.ascontiguousarray(xte[mte]), yte[mte],
                          "classes:" + "/".join(map(str, sorted(classes)))))
    return TaskStream("split-digits", tasks, True,
                      f"class-incremental, {n_tasks} tasks x {per} classes, argmax over all "
                      "known classes")


def recurring_sea(n_tasks: int = 4, train_per_task: int = 2000, test_per_task: int = 500,
                  variants: tuple[int, int] = (0, 3), seed: int = 0) -> TaskStream:
    """river SEA concepts A, B, A, B, ... (``variants``), one segment per task; labels 0/1.

    SEA with ``noise=0``: A and B differ only in the threshold on ``x1 + x2``, so they
    disagree on a band of the input space; a recurring concept tests whether what was
    learned on A survives B.
    """
    from river.datasets import synth

    if seed < 0 or n_tasks > 100:
        raise ValueError("recurring_sea: seed >= 0 and at most 100 segments")
    tasks = []
    for k in range(n_tasks):
        variant = variants[k % len(variants)]
        gen_seed = seed * 100 + k          # distinct generators for seeds 0, 1, 2, ...
        gen = synth.SEA(variant=variant, noise=0.0, seed=gen_seed)
        rows = list(gen.take(train_per_task + test_per_task))
        x = np.array([[r[0][i] for i in sorted(r[0])] for r in rows], dtype=np.float32)
        y = np.array([int(r[1]) for r in rows], dtype=np.int64)
        n = train_per_task
        tasks.append(Task(f"{'AB'[k % 2]}(variant {variant})", x[:n], y[:n], x[n:], y[n:],
                          f"sea:variant={variant},seed={gen_seed}"))
    return TaskStream("recurring-sea", tasks, False,
                      f"river SEA variants {variants} alternating, {n_tasks} segments of "
                      f"{train_per_task} events")


BUILDERS = {
    "permuted": permuted_digits,
    "rotated": rotated_digits,
    "split": split_digits,
    "sea": recurring_sea,
}
