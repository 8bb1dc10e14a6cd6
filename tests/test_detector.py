"""`Detector`: every input kind, batches, failures, options, result records, and the bundled model."""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import fakescope._preparation as preparation
from fakescope._preparation import ACCEPTED
from fakescope.detection import Detection, Evidence
from fakescope.detector import Detector
from fakescope.errors import ConfigError, FakescopeError, ImageLoadError, StorageUnavailableError
from fakescope.forensics import fuse
from fakescope.forensics.fusion import PIXEL_ONLY
from fakescope.io import shared_slots
from fakescope.io.image import read_source
from fakescope.models.bundle import BUNDLED_DIR, DEFAULT_MODEL, WEIGHTS_FILE, load_model

CLI_FIELDS = {"path", "score", "label", "threshold", "model", "evidence", "width", "height", "format"}
SIZES = [(96, 80), (150, 130), (64, 64), (200, 90), (40, 120)]  # whole, 2x2 tiles, whole, 2 tiles, whole


@pytest.fixture(scope="module")
def detector(tiny_model_dir) -> Detector:
    return Detector.load(tiny_model_dir, device="cpu", provenance=False)


@pytest.fixture(scope="module")
def image_files(image_factory, tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("detector-images")
    formats = ["PNG", "JPEG", "WEBP", "PNG", "BMP"]
    return [str(image_factory.file(folder / f"img{i}.{fmt.lower()}", fmt, size, seed=i))
            for i, (fmt, size) in enumerate(zip(formats, SIZES, strict=True))]


def test_every_input_kind_gives_the_same_score(detector, image_factory, tmp_path):
    pil = image_factory.pil((150, 130), seed=4)
    data = image_factory.encode(pil, "PNG")
    path = tmp_path / "same.png"
    path.write_bytes(data)
    results = [detector.predict(x) for x in (str(path), path, data, pil, np.asarray(pil), bytearray(data), memoryview(data))]
    assert all(isinstance(r, Detection) and r.ok for r in results)
    assert len({r.probability for r in results}) == 1
    assert [r.format for r in results] == ["PNG", "PNG", "PNG", "PIL", "array", "PNG", "PNG"]
    assert [r.source for r in results[:4]] == [str(path), str(path), "<bytes #0>", "<Image #0>"]
    assert detector(str(path)).probability == results[0].probability  # __call__ is predict


def test_a_binary_file_object_is_one_input_read_to_its_end(detector, image_files, tmp_path):
    data = read_source(image_files[1])
    expected = detector.predict(data).probability
    read_end, write_end = os.pipe()  # a stream that cannot seek
    with open(write_end, "wb") as stream:
        stream.write(data)
    with open(image_files[1], "rb") as opened, open(read_end, "rb") as piped:
        one = detector.predict(opened)
        batch = detector.predict([io.BytesIO(data), piped, image_files[1]])
    assert isinstance(one, Detection) and one.source == image_files[1] and one.probability == expected
    assert [r.source for r in batch] == ["<BytesIO #0>", "<BufferedReader #1>", image_files[1]]
    assert [r.probability for r in batch] == pytest.approx([expected] * 3, abs=1e-6)
    with open(image_files[1]) as text:
        assert "open it in binary mode" in detector.predict(text).error


def test_a_tensor_is_one_image_like_its_array(detector, image_factory):
    pixels = np.array(image_factory.pil((150, 130), seed=4))
    expected = detector.predict(pixels).probability
    chw = torch.from_numpy(pixels).permute(2, 0, 1)
    one = detector.predict(chw)
    assert isinstance(one, Detection) and one.source == "<Tensor #0>" and one.probability == expected
    batch = detector.predict([torch.from_numpy(pixels), chw.float() / 255, chw.to(torch.bfloat16) / 255])
    assert [r.probability for r in batch[:2]] == pytest.approx([expected] * 2, abs=1e-6)
    assert batch[2].ok  # bf16 rounds the pixels: a close score, not the same
    assert detector.predict(chw.float() / 127.5 - 1).error.startswith("float array values span [-1, 1]")  # not clipped
    assert detector.explain(chw, "tiles").shape == (130, 150)


def test_list_in_list_out_in_order(detector, image_files):
    results = detector.predict(image_files)
    assert isinstance(results, list) and [r.source for r in results] == image_files
    assert [(r.width, r.height) for r in results] == SIZES
    singles = [detector.predict(p).probability for p in image_files]
    assert [r.probability for r in results] == pytest.approx(singles, abs=1e-6)
    assert len({round(r.probability, 6) for r in results}) == len(results)  # distinct images, distinct scores


def test_decoding_threads_take_inputs_in_chunks_and_results_keep_their_order(tiny_model_dir, image_files):
    inputs = image_files * 7  # batch 32 and 2 workers: tasks of 4 inputs, partly filled at the end
    threaded = Detector.load(tiny_model_dir, device="cpu", provenance=False, workers=2, batch_size=32).predict(inputs)
    sequential = Detector.load(tiny_model_dir, device="cpu", provenance=False).predict(inputs)
    assert [r.source for r in threaded] == inputs
    assert [r.probability for r in threaded] == pytest.approx([r.probability for r in sequential], abs=1e-6)


def test_an_array_of_paths_is_many_inputs_not_one_image(detector, image_files):
    paths = np.array(image_files[:2])  # as numpy (np.loadtxt, train_test_split) or pandas' .values hold them
    results = detector.predict(paths)
    assert [type(r.source) for r in results] == [str, str] and [r.source for r in results] == image_files[:2]
    assert detector.predict(paths.astype(object))[1].probability == results[1].probability
    assert "array of dtype <U1 is not an image" in detector.predict([np.full((64, 64), "x")])[0].error


def test_stream_takes_one_input_as_one(detector, image_files):
    data = read_source(image_files[0])
    for one in (image_files[0], data):  # not each character of the path, each byte of the image
        assert [r.probability for r in detector.stream(one)] == [detector.predict(one).probability]


def test_one_input_that_is_no_image_nor_iterable_is_one_error_record_naming_the_inputs_it_takes(detector, image_files):
    for one in (5, None, 1.5, {image_files[0]: "real"}):  # not a TypeError from iterating it, nor a dict's keys as paths
        result = detector.predict(one)
        assert result.error == f"cannot read an image from {type(one).__name__}; {ACCEPTED}" and result.probability is None
    mixed = detector.predict([image_files[0], object(), Image.open(image_files[1])])
    assert [r.ok for r in mixed] == [True, False, True] and mixed[1].error.startswith("cannot read an image from object; ")
    with pytest.raises(ImageLoadError, match=r"cannot read an image from int; an input is a path, storage URI or http\(s\) URL, bytes"):
        detector.explain(5)


def test_generators_are_consumed(detector, image_files):
    results = detector.predict(p for p in image_files[:2])
    assert [r.source for r in results] == image_files[:2]


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_reads_an_endless_input_only_a_few_batches_ahead(tiny_model_dir, image_files, workers):
    """Memory stays flat however many inputs: `predict` would keep every result, `stream` hands each one over."""
    taken = []

    def endless():
        for i in itertools.count():
            taken.append(i)
            yield image_files[i % len(image_files)]

    results = Detector.load(tiny_model_dir, device="cpu", provenance=False, batch_size=4, workers=workers).stream(endless())
    first = list(itertools.islice(results, 20))
    results.close()
    assert [r.source for r in first] == (image_files * 4)[:20] and all(r.ok for r in first)
    assert len(taken) <= 20 + 8 + 4  # the decode-ahead window (8 inputs with 2 workers) and one batch


def test_bad_inputs_become_error_records_and_the_batch_goes_on(detector, image_files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    inputs = [image_files[0], str(broken), b"random bytes", str(tmp_path / "absent.png"), image_files[1],
              np.zeros((8, 8), np.uint8)]
    results = detector.predict(inputs)
    assert [r.ok for r in results] == [True, False, False, False, True, False]
    assert "corrupt or unsupported JPEG" in results[1].error
    assert "not an image" in results[2].error
    assert "no such file" in results[3].error
    assert "too small" in results[5].error
    for failed in results[1:4]:
        assert (failed.probability, failed.verdict, failed.model) == (None, None, "test-tiny")
        assert failed.to_dict()["error"] == failed.error
    assert results[4].probability == pytest.approx(detector.predict(image_files[1]).probability, abs=1e-6)


def test_a_path_with_a_nul_byte_is_an_error_record_not_a_stopped_batch(detector, image_files):
    """open() raised ValueError (embedded null byte), which ended predict and lost the other results."""
    results = detector.predict(["a\0b.jpg", image_files[0]])
    assert results[0].error == "not a file name: it holds a NUL byte" and results[1].ok


def test_a_folder_is_refused_with_the_helper_that_lists_its_images(detector, image_files):
    """A folder said only 'is a directory'; it now names the public helper the CLI lists folders with."""
    folder = os.path.dirname(image_files[0])
    refused = detector.predict(folder)
    assert refused.error == "is a directory; list its images first, as the CLI does: fakescope.io.iter_sources(folder)"
    from fakescope.io import iter_sources  # the helper it names, as named

    listed = detector.predict(iter_sources(folder))
    assert sorted(r.source for r in listed) == sorted(image_files) and all(r.ok for r in listed)


@pytest.mark.parametrize("processes", [False, True])
def test_a_pil_image_that_fails_to_decode_is_an_error_record(tiny_model_dir, image_factory, image_files, processes):
    data = image_factory.bytes("JPEG", (128, 128))
    broken = Image.open(io.BytesIO(data[: len(data) // 2]))  # decoded only when used (or sent to a process)
    detector = Detector.load(tiny_model_dir, device="cpu", provenance=False, workers=2, processes=processes)
    results = detector.predict([image_files[1], broken, image_files[0]])
    assert "corrupt or unsupported JPEG image" in results[1].error
    assert results[0].ok and results[2].ok


def test_an_unreachable_storage_stops_the_batch_after_one_try(tiny_model_dir, image_files, monkeypatch):
    tries = []

    def unreachable(source):
        tries.append(source)
        raise StorageUnavailableError(f"S3 unreachable: no answer from AWS's S3 endpoint while reading {source}")

    monkeypatch.setattr(preparation, "read_source", unreachable)
    detector = Detector.load(tiny_model_dir, device="cpu", provenance=False, workers=2)
    with pytest.raises(StorageUnavailableError, match="^S3 unreachable: no answer from AWS"):
        detector.predict(["s3://bucket/a.png", "s3://bucket/b.png"])
    assert len(tries) <= 2 and len(set(tries)) == len(tries)  # each read once: not tried again in the calling thread


def test_decoding_workers_do_not_change_results(tiny_model_dir, image_files):
    inline = Detector.load(tiny_model_dir, device="cpu", provenance=False, workers=0)
    threaded = Detector.load(tiny_model_dir, device="cpu", provenance=False, workers=2, batch_size=2)
    inline, threaded = inline.predict(image_files), threaded.predict(image_files)
    # batches differ (batch_size 2 vs 32), so only float summation order may change the scores
    assert [r.probability for r in threaded] == pytest.approx([r.probability for r in inline], abs=1e-6)
    strip = lambda r: {k: v for k, v in r.to_dict().items() if k not in ("score", "evidence", "reason")}  # noqa: E731
    assert [strip(r) for r in threaded] == [strip(r) for r in inline]


def test_decoding_processes_match_threads_with_evidence_and_errors(tiny_model_dir, image_files, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    inputs = [image_files[0], str(corrupt), *image_files[1:]]
    threads = Detector.load(tiny_model_dir, device="cpu", workers=2, batch_size=3).predict(inputs)
    processes = Detector.load(tiny_model_dir, device="cpu", workers=2, batch_size=3, processes=True).predict(inputs)
    assert [r.to_dict() for r in processes] == [r.to_dict() for r in threads]  # provenance evidence included
    assert processes[1].error and len(processes) == len(inputs)
    kinds = [e.kind for e in processes[0].evidence]
    assert kinds[0] == "pixel" and len(kinds) > 1  # the provenance checks ran in the workers


def _ctrl_c_reaches_this_process() -> str:
    try:
        signal.raise_signal(signal.SIGINT)  # a terminal's Ctrl-C goes to every process of the command
    except KeyboardInterrupt:
        return "interrupted"
    return "decoding on"


def test_ctrl_c_is_left_to_the_command_not_its_decoding_processes():
    """Each decoding process turned a terminal's Ctrl-C into a KeyboardInterrupt traceback on stderr; the command
    itself stops (130) and shuts them down."""
    with preparation.new_pool(True, None, 1) as pool:
        assert pool.submit(_ctrl_c_reaches_this_process).result(timeout=60) == "decoding on"


def test_tiles_too_large_for_a_shared_slot_come_back_by_value(tiny_model_dir):
    model = load_model(tiny_model_dir)
    whole = replace(model, config=replace(model.config, input=replace(model.config.input, upscale_small=False)))
    rng = np.random.default_rng(3)
    inputs = [rng.integers(0, 256, (48, 1000, 3), np.uint8), rng.integers(0, 256, (200, 300, 3), np.uint8)]
    # the first is scored whole: 48 x 1000 x 3 bytes, more than a slot's 2 x 2 tiles of 64 px
    threads = Detector(whole, workers=2, provenance=False).predict(inputs)
    processes = Detector(whole, workers=2, provenance=False, processes=True).predict(inputs)
    assert "over 1 tile(s)" in processes[0].evidence[0].detail
    assert [r.probability for r in processes] == pytest.approx([r.probability for r in threads], abs=1e-6)


def test_without_room_in_shared_memory_processes_send_tiles_through_the_pipe(tiny_model_dir, image_files, monkeypatch):
    monkeypatch.setattr(shared_slots.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(64 << 20, 64 << 20, 100_000))
    assert shared_slots.affordable_slots(1000, 49_152) == 1  # half of 100 kB: one slot of 2 x 2 tiles of 64 px
    detector = Detector.load(tiny_model_dir, device="cpu", provenance=False, workers=2, processes=True)
    with pytest.warns(UserWarning, match="too little free shared memory"):
        results = detector.predict(image_files)
    expected = Detector.load(tiny_model_dir, device="cpu", provenance=False).predict(image_files)
    assert [r.probability for r in results] == pytest.approx([r.probability for r in expected], abs=1e-6)


class _KillsItsWorker:
    """An input whose unpickling ends the process, as a decoder crash on a hostile file would."""

    def __reduce__(self):
        return os._exit, (1,)


@pytest.mark.parametrize("batch_size", [2, 32])  # one input per worker task; four (the crash shares its task)
def test_a_worker_process_that_dies_costs_only_its_input(tiny_model_dir, image_files, batch_size):
    inputs = [image_files[0], _KillsItsWorker(), *image_files[1:]]
    detector = Detector.load(tiny_model_dir, device="cpu", provenance=False, workers=2, batch_size=batch_size, processes=True)
    results = detector.predict(inputs)
    assert results[1].error == "decoding this input crashed its worker process"
    expected = Detector.load(tiny_model_dir, device="cpu", provenance=False).predict(image_files)
    assert [r.probability for r in results[:1] + results[2:]] == pytest.approx([r.probability for r in expected], abs=1e-6)


def test_a_consumer_that_stops_early_cancels_the_queued_decoding(tiny_model_dir, image_files, monkeypatch):
    """The second read lasts until the queue is cancelled: it slept 0.2 s, in which the consumer had to score the
    first image and stop (a loaded machine took longer, and the worker started a third read). The consumer stops once
    the second read has begun (on a loaded machine it could stop before the worker took it up)."""
    loads, cancelled = [], threading.Event()

    class Pool(ThreadPoolExecutor):  # the real pool, saying when its shutdown has cancelled the queued reads
        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            super().shutdown(wait=False, cancel_futures=cancel_futures)
            cancelled.set()
            super().shutdown(wait=wait)

    def held_read(item):
        loads.append(item)
        if len(loads) > 1:  # running when the consumer stops
            cancelled.wait(timeout=60)
        return read_source(item)

    monkeypatch.setattr(preparation, "read_input", held_read)
    monkeypatch.setattr(preparation, "new_pool", lambda processes, slots, workers: Pool(workers))
    detector = Detector.load(tiny_model_dir, device="cpu", provenance=False, workers=1, batch_size=1)
    stream = detector.stream(image_files * 5)  # a window of 4 images is queued ahead
    assert next(stream).error is None
    deadline = time.monotonic() + 60
    while len(loads) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.close()
    assert len(loads) == 2  # the first, and the one already running when the consumer stopped


def test_a_batch_queued_ahead_changes_nothing(tiny_model_dir, image_files, tmp_path):
    """CUDA queues the next batch before reading one (`_lookahead`); forced here on the CPU."""
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    inputs = [*image_files, str(corrupt), *image_files]
    plain = Detector.load(tiny_model_dir, device="cpu", batch_size=3)
    queued = Detector.load(tiny_model_dir, device="cpu", batch_size=3)
    queued._lookahead = 2
    expected = [r.to_dict() for r in plain.predict(inputs, heatmap=True)]
    assert [r.to_dict() for r in queued.stream(inputs, heatmap=True)] == expected
    assert plain._lookahead == 0


def test_batch_size_does_not_change_scores(tiny_model_dir, image_files):
    one = Detector.load(tiny_model_dir, device="cpu", provenance=False, batch_size=1).predict(image_files)
    many = Detector.load(tiny_model_dir, device="cpu", provenance=False, batch_size=32).predict(image_files)
    assert np.allclose([r.probability for r in one], [r.probability for r in many], atol=1e-5, rtol=0)


MIXED = [((96, 80), "RGB"), ((150, 130), "L"), ((64, 64), "RGBA"), ((200, 90), "P"), ((40, 120), "CMYK"), ((130, 150), "LA")]


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_an_image_scores_as_alone_in_any_batch_and_from_8_threads_sharing_a_detector(tiny_model_dir, image_factory, runtime):
    """Sizes and modes mixed (whole images, 2 and 4 tiles); the threads as a web server's share one detector."""
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    images = [image_factory.pil(size, mode, seed=i) for i, (size, mode) in enumerate(MIXED)]
    load = functools.partial(Detector.load, tiny_model_dir, device="cpu", provenance=False, runtime=runtime)
    alone = [load().predict(image).probability for image in images]
    for batch_size in (1, 2, 5, 32):
        batch = load(batch_size=batch_size).predict(images)
        assert [r.probability for r in batch] == pytest.approx(alone, abs=1e-5), batch_size
    shared = load(batch_size=3)
    with ThreadPoolExecutor(8) as pool:  # each thread its own rotation of the images, and its own batches
        rotations = list(pool.map(lambda k: (k, shared.predict(images[k:] + images[:k])), [k % len(images) for k in range(24)]))
    for k, results in rotations:
        assert [r.probability for r in results] == pytest.approx(alone[k:] + alone[:k], abs=1e-5)


def test_inputs_are_told_apart_while_another_thread_is_still_importing_torch(tiny_model_dir, image_factory, monkeypatch):
    """An onnx detector tells a tensor by `sys.modules["torch"].Tensor`; while another thread was importing torch its
    module was there without `Tensor` yet, and `predict` raised AttributeError ("partially initialized module")."""
    pytest.importorskip("onnxruntime")
    onnx = Detector.load(tiny_model_dir, device="cpu", provenance=False, runtime="onnx")
    image = image_factory.pil((96, 80), seed=1)
    alone = onnx.predict(image).probability
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # as the importing thread has left it so far
    results = onnx.predict([image, np.array(image), image_factory.bytes("PNG", (96, 80), seed=1)])
    assert [r.probability for r in results] == pytest.approx([alone] * 3, abs=1e-5)

def test_threshold_override_moves_the_uncertain_band(tiny_model_dir, image_files):
    default = Detector.load(tiny_model_dir, device="cpu", provenance=False)
    assert (default.threshold, default.band) == (0.5, (0.35, 0.65))
    strict = Detector.load(tiny_model_dir, device="cpu", provenance=False, threshold=0.9)
    lenient = Detector.load(tiny_model_dir, device="cpu", provenance=False, threshold=0.1)
    assert strict.band == (0.829, 0.944) and lenient.band == (0.056, 0.171)  # the same shift in log-odds
    extreme = [Detector.load(tiny_model_dir, device="cpu", provenance=False, threshold=t) for t in (0.9995, 0.0005)]
    assert 0.9995 < extreme[0].band[1] < 1 and 0 < extreme[1].band[0] < 0.0005  # 3 decimals made them 1.0 and 0.0
    for d in (strict, lenient, *extreme):  # both ends stay inside (0, 1): each verdict stays reachable
        assert [fuse(p, [], d.threshold, d.band).verdict for p in (0.0, d.threshold, 0.9999)] == ["real", "uncertain", "ai"]
    for d, expected in ((strict, "real"), (lenient, "ai")):
        for r in d.predict(image_files):
            assert 0.25 <= r.probability < 0.75  # a random tiny model stays near 0.5
            assert (r.verdict, r.threshold) == (expected, d.threshold)
            assert r.to_dict()["threshold"] == d.threshold


def test_unreadable_trust_list_fails_at_load_not_per_image(tiny_model_dir, tmp_path, monkeypatch):
    """Else every signed AI image got a c2pa error record and fell back to its pixel score, exit status 0."""
    monkeypatch.setenv("FAKESCOPE_C2PA_TRUST_ANCHORS", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="FAKESCOPE_C2PA_TRUST_ANCHORS=.*missing.pem"):
        Detector.load(tiny_model_dir, device="cpu")
    assert not Detector.load(tiny_model_dir, device="cpu", provenance=False).provenance  # not read: no error
    for content in (b"not a certificate\n", b"\x30\x82\x01\x0a\xff"):  # a wrong file, a DER certificate
        (tmp_path / "anchors.pem").write_bytes(content)
        monkeypatch.setenv("FAKESCOPE_C2PA_TRUST_ANCHORS", str(tmp_path / "anchors.pem"))
        with pytest.raises(ConfigError, match="anchors.pem: no PEM certificate"):
            Detector.load(tiny_model_dir, device="cpu")


def test_a_numpy_threshold_still_gives_json_records(tiny_model_dir, image_files):
    detector = Detector.load(tiny_model_dir, device="cpu", provenance=False, threshold=np.float32(0.25))
    record = json.loads(json.dumps(detector.predict(image_files[0]).to_dict()))
    assert record["threshold"] == 0.25


@pytest.mark.parametrize(("option", "message"), [({"threshold": 1.5}, "threshold must be within"),
                                                  ({"threshold": -0.1}, "threshold must be within"),
                                                  ({"batch_size": 0}, "batch_size must be a whole number at least 1"),
                                                  ({"batch_size": 8.5}, "batch_size must be a whole number"),
                                                  ({"grid": 2.5}, "grid must be a whole number"),
                                                  ({"grid": True}, r"grid must be a whole number from 1 to 32 \(tiles per side\), got True"),
                                                  ({"batch_size": True},
                                                   "batch_size must be a whole number at least 1, got True"),
                                                  ({"workers": False}, "workers must be a whole number at least 0 .*got False"),
                                                  ({"workers": -1}, r"workers must be a whole number at least 0 \(0 decodes"),
                                                  ({"workers": 1.5}, "workers must be a whole number")])
def test_an_option_out_of_range_is_refused_when_loading_not_when_predicting(tiny_model_dir, option, message):
    with pytest.raises(FakescopeError, match=message):
        Detector.load(tiny_model_dir, device="cpu", provenance=False, **option)


@pytest.mark.parametrize("given", ["fakescope-default", BUNDLED_DIR])
def test_a_name_or_path_given_to_the_constructor_points_to_load(given):
    with pytest.raises(TypeError, match=r"Detector takes a LoadedModel, not .*; load a model name or path with "
                                        r"Detector\.load\("):
        Detector(given)


def test_repr_names_the_model_and_its_settings(tiny_model_dir):
    detector = Detector.load(tiny_model_dir, device="cpu", provenance=False, threshold=0.6, grid=1)
    assert repr(detector) == str(detector) == ("Detector('test-tiny', device='cpu', runtime='torch', threshold=0.6, "
                                               "band=(0.447, 0.736), grid=1, crop_size=64, provenance=False)")
    model = load_model(tiny_model_dir, lazy=True)
    assert repr(model) == f"LoadedModel('test-tiny', architecture='test_tiny', location={str(tiny_model_dir)!r}, " \
                          "device='cpu', built=False)"


def test_a_detections_repr_is_its_answer_at_a_glance(detector, image_files):
    found, missing = detector.predict([image_files[0], "missing.png"])
    head = (f"Detection({image_files[0]!r}, verdict={found.verdict!r}, probability={round(found.probability, 3)}, "
            f"decided_by='pixel', evidence=[{', '.join(e.kind for e in found.evidence)}]")
    assert repr(replace(found, caveat=None)) == f"{head}, model='test-tiny')"
    caveated = repr(replace(found, caveat=PIXEL_ONLY))
    assert caveated == f"{head}, caveat='pixel model only, no signed provenance', model='test-tiny')"
    assert repr(missing) == "Detection('missing.png', error='no such file', model='test-tiny')"


def test_verdict_follows_the_band(detector, image_files):
    lower, upper = detector.band
    for r in detector.predict(image_files):
        expected = "ai" if r.probability >= upper else "real" if r.probability < lower else "uncertain"
        assert r.verdict == expected


def test_to_dict_has_every_cli_field(detector, image_files):
    record = detector.predict(image_files[1]).to_dict()
    assert CLI_FIELDS <= set(record)
    assert record["path"] == image_files[1] and record["model"] == "test-tiny"
    assert (record["width"], record["height"], record["format"]) == (150, 130, "JPEG")
    assert 0 < record["score"] < 1 and record["label"] in {"ai", "real", "uncertain"}
    assert "error" not in record
    for evidence in record["evidence"]:
        assert {"kind", "score", "detail"} <= set(evidence)


def test_evidence_scores_are_rounded_as_the_score_is(tiny_model_dir, image_files):
    """The top-level score had 6 places and the evidence scores all 17 (pixel 0.41234567890123...)."""
    detection = Detector.load(tiny_model_dir, device="cpu", provenance=True).predict(image_files[1])
    record = json.loads(json.dumps(detection.to_dict()))
    scored = [(e.score, r["score"]) for e, r in zip(detection.evidence, record["evidence"], strict=True) if e.score is not None]
    assert scored and all(shown == round(score, 6) for score, shown in scored)
    assert record["score"] == round(detection.probability, 6)
    back = Detection.from_dict(record)
    assert back.to_dict() == record  # a record read back writes the same record


def test_from_dict_reads_a_json_record_back(tiny_model_dir, image_files):
    detector = Detector.load(tiny_model_dir, device="cpu", provenance=True)
    found, missing = detector.predict([image_files[1], "missing.png"], heatmap=True)
    signed = Evidence("c2pa", 0.99, "signed AI manifest", decisive=True, data={"issuer": "x"})
    broken = Evidence("watermark", None, "could not read", error="truncated")
    rounded = tuple(replace(e, score=None if e.score is None else round(e.score, 6)) for e in found.evidence)
    found = replace(found, probability=round(found.probability, 6), evidence=(*rounded, signed, broken), caveat=PIXEL_ONLY)
    assert found.heatmap is not None and len(found.evidence) > 3
    for detection in (found, missing):
        back = Detection.from_dict(json.loads(json.dumps(detection.to_dict())))
        assert back == detection and back.heatmap is None  # the heatmap is not in the record
        assert [e.to_dict() for e in back.evidence] == [e.to_dict() for e in detection.evidence]
    assert missing.error == "no such file" and missing.to_dict()["error_kind"] == "permanent"
    passing = replace(missing, transient=True)
    assert passing.to_dict()["error_kind"] == "transient" and Detection.from_dict(passing.to_dict()) == passing
    with pytest.raises(ValueError, match="not a Detection record: no 'score', 'label'"):
        Detection.from_dict({"path": "a.png", "threshold": 0.5, "model": "m"})


def test_without_provenance_only_pixel_evidence(detector, image_files):
    result = detector.predict(image_files[1])
    assert [e.kind for e in result.evidence] == ["pixel"]
    assert result.decided_by == "pixel"
    assert result.probability == pytest.approx(result.evidence[0].score)
    assert "4 tile(s)" in result.evidence[0].detail


def test_with_provenance_the_pixel_evidence_comes_first(tiny_model_dir, image_files):
    result = Detector.load(tiny_model_dir, device="cpu", provenance=True).predict(image_files[0])
    kinds = [e.kind for e in result.evidence]
    assert kinds[0] == "pixel" and len(kinds) > 1 and "c2pa" in kinds
    assert result.decided_by == "pixel"  # a generated PNG carries no provenance


def test_heatmap_matches_the_image(detector, image_files):
    result = detector.predict(image_files[1], heatmap=True)
    assert result.heatmap.shape == (130, 150)
    assert 0.0 <= result.heatmap.min() <= result.heatmap.max() <= 1.0
    assert np.array_equal(detector.explain(image_files[1]), result.heatmap)
    assert detector.predict(image_files[1]).heatmap is None
    for method in ("tiles", "cam"):
        with pytest.raises(FakescopeError, match="explain takes one image, not a list"):
            detector.explain(image_files[:2], method)


def test_grid_override_trades_tiles_for_speed(tiny_model_dir, image_factory):
    image = image_factory.bytes("PNG", (300, 250), seed=5)
    tiles = {}
    for grid in (None, 1, 3):
        d = Detector.load(tiny_model_dir, device="cpu", provenance=False, grid=grid)
        detail = d.predict(image).evidence[0].detail
        tiles[grid] = int(detail.split(" over ")[1].split(" ")[0])
        assert d.predict(image, heatmap=True).heatmap.shape == (250, 300)
    assert tiles == {None: 4, 1: 1, 3: 9}  # the model's own grid is 2
    for refused in (0, 33, 10000):  # memory grows with grid squared: bounded before an image is cut
        with pytest.raises(ConfigError, match=rf"^grid must be a whole number from 1 to 32 \(tiles per side\), got {refused}$"):
            Detector.load(tiny_model_dir, device="cpu", grid=refused)
    assert Detector.load(tiny_model_dir, device="cpu", grid=32).model.config.input.grid == 32
    assert Detector.load(tiny_model_dir, device="cpu", grid=np.int64(1), batch_size=np.int64(8)).model.config.input.grid == 1
    with pytest.raises(FakescopeError, match="threads must be at least 1"):
        Detector.load(tiny_model_dir, device="cpu", threads=0)


class _NanNetwork(torch.nn.Module):
    """A network that overflows: NaN logits for the tiles of images whose first pixel is bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, 0, 0, 0] > 0, torch.nan, x.mean((1, 2, 3)))


def test_a_non_finite_model_score_is_an_error_record_and_json_stays_valid(tiny_model_dir):
    detector = Detector(load_model(tiny_model_dir).with_network(_NanNetwork()), workers=0)
    bright, dark = Image.new("RGB", (64, 64), "white"), Image.new("RGB", (64, 64), "black")
    failed, scored = detector.predict([bright, dark])
    assert (failed.error, failed.probability, failed.verdict) == ("the model gave no finite score (nan)", None, None)
    assert scored.error is None and math.isfinite(scored.probability)
    assert json.dumps([failed.to_dict(), scored.to_dict()], allow_nan=False)


def test_the_device_is_built_once_not_per_batch(detector, image_files):
    """The torch runtime asks for its device on every batch: one `torch.device`, built on the first ask."""
    detector.predict(image_files)
    assert detector.device is detector.device and detector.device == torch.device("cpu")


def test_unusable_device_is_a_clean_error(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        Detector.load(tiny_model_dir, device="cuda")
    with pytest.raises(ConfigError, match="invalid device"):
        Detector.load(tiny_model_dir, device="tpu-please")
    with pytest.raises(ConfigError) as excinfo:  # torch's own message lists some twenty device types
        Detector.load(tiny_model_dir, device="cdua")
    assert str(excinfo.value) == "invalid device 'cdua': use cpu, cuda, cuda:N, mps or auto"
    if not torch.backends.mps.is_available():  # a device type torch knows but this build or machine lacks
        with pytest.raises(ConfigError, match="device 'mps' is not available on this machine"):
            Detector.load(tiny_model_dir, device="mps")


# -- the bundled model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> Detector:
    return Detector.load(device="cpu", provenance=False)


def test_bundled_model_scores_are_valid_and_deterministic(bundled, image_factory):
    rng = np.random.default_rng(11)
    fixtures = [
        image_factory.bytes("PNG", (300, 250), seed=1),  # 3x3 tiles
        image_factory.bytes("JPEG", (200, 160), seed=2, quality=85),  # 2x2 tiles
        image_factory.encode(image_factory.pil((64, 64), seed=3), "WEBP"),  # smaller than a tile
        rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),  # pure noise
    ]
    first = bundled.predict(fixtures)
    second = bundled.predict(fixtures)
    scores = [r.probability for r in first]
    assert all(r.ok and r.model == DEFAULT_MODEL for r in first)
    assert all(math.isfinite(p) and 0.0 < p < 1.0 for p in scores)
    assert scores == [r.probability for r in second]
    assert np.std(scores) > 1e-4  # it reacts to the content
    assert "9 tile(s)" in first[0].evidence[0].detail and "1 tile(s)" in first[2].evidence[0].detail


def test_bundled_config_is_sane(bundled):
    config = bundled.model.config
    assert (config.name, config.architecture) == (DEFAULT_MODEL, "efficientnet_lite0")
    assert (config.input.crop_size, config.input.grid) == (112, 3)
    assert config.calibration.method in {"temperature", "isotonic"}
    if config.calibration.method == "temperature":
        assert 0.2 <= config.calibration.temperature <= 5.0 and abs(config.calibration.bias) < 2.0
    lower, upper = config.band
    assert 0.05 <= lower <= config.threshold <= upper <= 0.95 and upper - lower <= 0.6
    weights = BUNDLED_DIR / DEFAULT_MODEL / WEIGHTS_FILE
    assert config.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    auc = config.metrics["test"]["overall"]["auc"]
    assert 0.5 < auc <= 1.0


def test_device_auto_is_the_cpu_without_a_gpu_driver_file(tmp_path, monkeypatch):
    """On Linux no driver file means no CUDA, known without importing torch; with one, torch is asked."""
    import fakescope.detector as detector_module

    monkeypatch.setattr(detector_module.sys, "platform", "linux")
    monkeypatch.setattr(detector_module, "GPU_DRIVER_FILES", (str(tmp_path / "nvidiactl"),))
    assert not detector_module.gpu_driver_present()
    (tmp_path / "nvidiactl").touch()
    assert detector_module.gpu_driver_present()
    monkeypatch.setattr(detector_module.sys, "platform", "win32")
    (tmp_path / "nvidiactl").unlink()
    assert detector_module.gpu_driver_present()
