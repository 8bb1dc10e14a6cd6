"""Shared-memory slots: a worker process writes an array, its parent reads the same array back."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np

from fakescope.io import shared_slots
from fakescope.io.shared_slots import SharedSlots


def _fill(slot: int, value: int, shape: tuple[int, ...]) -> bool:
    return shared_slots.write(slot, np.full(shape, value, np.uint8))


def test_a_worker_process_hands_arrays_to_its_parent_through_the_slots():
    with SharedSlots(count=2, slot_bytes=64) as slots:
        with ProcessPoolExecutor(2, initializer=shared_slots.attach, initargs=(slots.name, slots.slot_bytes)) as pool:
            first, second = slots.take(), slots.take()
            fits = [pool.submit(_fill, first, 7, (2, 4, 8)), pool.submit(_fill, second, 9, (8, 8))]
            too_big = pool.submit(_fill, first, 1, (65,))
            assert [f.result() for f in fits] == [True, True] and too_big.result() is False
        assert np.array_equal(slots.read(first, (2, 4, 8)), np.full((2, 4, 8), 7, np.uint8))
        assert np.array_equal(slots.read(second, (8, 8)), np.full((8, 8), 9, np.uint8))
        assert sorted([slots.take(), slots.take()]) == sorted([first, second])  # read frees the slot


def test_write_outside_an_attached_worker_says_no():
    assert shared_slots.write(0, np.zeros(4, np.uint8)) is False
