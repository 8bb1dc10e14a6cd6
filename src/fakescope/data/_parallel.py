"""Thread-pool maps over many images with a bounded queue and an optional progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

CHUNK = 4096
"""Items submitted at a time: `pool.map` over all of them would hold a future per item (1.6 GB per million)."""


def map_images(fn: Callable[[Item], Result], items: Sequence[Item], *, workers: int, progress: bool = False,
               desc: str = "images") -> Iterator[Result]:
    """`fn` over `items` in order on `workers` threads, a bar on stderr counting them when `progress`."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(items), desc=desc, unit="img", file=sys.stderr, disable=not progress, leave=False) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            yield from pool.map(fn, chunk)
            bar.update(len(chunk))
