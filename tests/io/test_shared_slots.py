"""Shared-memory slots: a worker process writes an array, its parent reads the same array back."""

from __future__ import annotations

import multiprocessing
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import resource_tracker

import numpy as np

from fakescope.io import shared_slots
from fakescope.io.shared_slots import SharedSlots


def _fill(slot: int, value: int, shape: tuple[int, ...]) -> bool:
    return shared_slots.write(slot, np.full(shape, value, np.uint8))


def _attach_and_fill(name: str, slot_bytes: int, slot: int) -> None:
    shared_slots.attach(name, slot_bytes)
    sys.exit(0 if _fill(slot, 5, (8,)) else 1)


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


def test_a_worker_forked_while_another_thread_holds_the_resource_trackers_lock_attaches():
    """One `Detector(processes=True)` shared by threads: one thread's slots take the resource tracker's
    lock just as another thread forks its workers, which inherit that lock held and must not wait on it."""
    held, done = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with resource_tracker._resource_tracker._lock:
            held.set()
            done.wait()

    with SharedSlots(count=1, slot_bytes=64) as slots:
        slot, holder = slots.take(), threading.Thread(target=hold_the_lock)
        holder.start()
        held.wait()
        try:
            child = multiprocessing.get_context("fork").Process(target=_attach_and_fill,
                                                                args=(slots.name, slots.slot_bytes, slot))
            child.start()
        finally:
            done.set()
            holder.join()
        child.join(120)  # a bound on a hang, not a timing: attaching takes milliseconds
        if hung := child.is_alive():
            child.kill()
        assert not hung and child.exitcode == 0
        assert np.array_equal(slots.read(slot, (8,)), np.full(8, 5, np.uint8))
