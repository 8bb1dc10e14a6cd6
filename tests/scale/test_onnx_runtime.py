"""ONNX export and the onnxruntime detector match PyTorch within 1e-4."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from plugin_helpers import FeatureHead
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from fakescope.cli import app
from fakescope.detector import Detector, gpu_driver_present
from fakescope.errors import ConfigError
from fakescope.models import create_model, load_model
from fakescope.models import onnx as onnx_module
from fakescope.models.bundle import LoadedModel, save_model
from fakescope.models.config import InputPolicy, ModelConfig
from fakescope.models.onnx import TELEMETRY_ENV, OnnxNetwork, export_onnx, onnx_network
from fakescope.scale.scan import scan_sources


@pytest.mark.parametrize("shape", [(5, 3, 112, 112), (1, 3, 70, 90), (2, 3, 64, 111), (1, 3, 113, 57)])
def test_bundled_export_matches_torch_on_tiles_and_whole_small_images(tmp_path, shape):
    network = load_model().network
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 4 - 2
    with torch.inference_mode():
        want = network(x)
    got = OnnxNetwork(export_onnx(network, tmp_path / "m.onnx"))(x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-4


def test_same_convolutions_export_as_one_conv_each_without_a_pad(tmp_path):
    import onnx

    nodes = onnx.load(export_onnx(load_model().network, tmp_path / "m.onnx")).graph.node
    same = [n for n in nodes if n.op_type == "Conv" and any(a.name == "auto_pad" and a.s == b"SAME_UPPER" for a in n.attribute)]
    assert len(same) == 5 and not [n for n in nodes if n.op_type in ("Pad", "Shape")]  # the bundled network's 5 Conv2dSame



def test_a_dilated_same_convolution_exports_as_timm_pads_it_and_runs(tmp_path):
    """onnxruntime refuses `auto_pad=SAME_UPPER` with dilation ('Dilation not supported for AutoPadType::SAME_UPPER')
    when run, not when loaded: a dilated `Conv2dSame` (a plugin's architecture) keeps timm's Pad; the others still
    become one Conv."""
    import onnx
    from timm.layers import Conv2dSame

    network = torch.nn.Sequential(Conv2dSame(3, 4, 3, stride=2, dilation=2), Conv2dSame(4, 4, 3, stride=2)).eval()
    path = export_onnx(network, tmp_path / "m.onnx", tile_size=32)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("Pad") == 1 and ops.count("Conv") == 2
    for shape in [(2, 3, 32, 32), (1, 3, 17, 23)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
        with torch.inference_mode():
            want = network(x)
        torch.testing.assert_close(OnnxNetwork(path)(x), want, rtol=0, atol=1e-5)

def test_onnx_detector_scores_match_torch(image_folder, detector):
    sources = list(scan_sources([str(image_folder)]))
    fast = Detector.load(device="cpu", batch_size=4, provenance=False, runtime="onnx")
    for a, b in zip(detector.predict(sources), fast.predict(sources)):
        assert a.source == b.source and a.error == b.error
        if a.ok:
            assert abs(a.probability - b.probability) < 1e-4 and a.verdict == b.verdict
    assert fast.predict_logits([]).size == 0


def test_onnx_threads_are_the_sessions(image_folder):
    one = Detector.load(device="cpu", provenance=False, runtime="onnx", threads=1)
    options = one.model.network.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # idle threads sleep
    default = Detector.load(device="cpu", provenance=False, runtime="onnx")
    sources = list(scan_sources([str(image_folder)]))
    assert [r.probability for r in one.predict(sources)] == pytest.approx([r.probability for r in default.predict(sources)], abs=1e-5)


def test_auto_runtime_picks_onnx_on_cpu_and_falls_back_to_torch(image_folder, monkeypatch):
    sources = list(scan_sources([str(image_folder)]))
    auto = Detector.load(device="cpu", provenance=False, runtime="auto")
    torch_scores = [r.probability for r in Detector.load(device="cpu", provenance=False).predict(sources)]
    assert auto.runtime == "onnx"
    assert [r.probability for r in auto.predict(sources)] == pytest.approx(torch_scores, abs=1e-4)

    def broken_export(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr("fakescope.models.onnx.onnx_network", broken_export)
    with pytest.warns(UserWarning, match="ONNX export failed .*unsupported operator.*using torch"):
        fallback = Detector.load(device="cpu", provenance=False, runtime="auto")
    assert fallback.runtime == "torch"
    assert [r.probability for r in fallback.predict(sources)] == pytest.approx(torch_scores, abs=1e-6)



def test_a_cached_export_runs_without_the_torch_network_which_gradcam_builds_on_demand(image_folder, detector):
    source = next(s for s in scan_sources([str(image_folder)]) if detector.predict(s).ok)
    Detector.load(device="cpu", runtime="onnx")  # exports into the cache once
    fast = Detector.load(device="cpu", runtime="onnx", provenance=False)
    assert not fast.torch_model.built  # found the cached export from the weights file alone
    assert abs(fast.predict(source).probability - detector.predict(source).probability) < 1e-4
    heat = fast.explain(source, "gradcam")
    assert fast.torch_model.built and heat.shape == detector.explain(source, "gradcam").shape

def test_export_is_cached_by_weights(tmp_path):
    tiny = create_model("test_tiny").eval()
    model = LoadedModel(tiny, ModelConfig("tiny", "test_tiny", input=InputPolicy(64, 2)), "mem")
    first = onnx_network(model, cache=tmp_path)
    stamp = first.path.stat().st_mtime_ns
    assert onnx_network(model, cache=tmp_path).path.stat().st_mtime_ns == stamp
    with torch.no_grad():
        next(tiny.parameters()).add_(1.0)
    changed = onnx_network(model, cache=tmp_path)
    assert changed.path != first.path and len(list(tmp_path.glob("*.onnx"))) == 2
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # the shifted weights give logits near 100: float32 agrees to ~1e-6 of that
        torch.testing.assert_close(changed(x), tiny(x), rtol=1e-5, atol=1e-4)


def _tiny_model() -> LoadedModel:
    return LoadedModel(create_model("test_tiny").eval(), ModelConfig("tiny", "test_tiny", input=InputPolicy(64, 2)), "mem")


def _assert_matches_torch(network, model):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(network(x), model.network(x), rtol=1e-5, atol=1e-4)


def test_a_truncated_cached_export_is_exported_again_with_one_warning(tmp_path, caplog):
    model = _tiny_model()
    path = onnx_network(model, cache=tmp_path).path
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a crash mid-write by an older version
    with caplog.at_level("WARNING", logger="fakescope"):
        again = onnx_network(model, cache=tmp_path)
    assert [r.message for r in caplog.records if "unreadable" in r.message and "exporting it again" in r.message]
    assert len(caplog.records) == 1 and again.path == path
    _assert_matches_torch(again, model)
    caplog.clear()
    with caplog.at_level("WARNING", logger="fakescope"):
        _assert_matches_torch(onnx_network(model, cache=tmp_path), model)  # repaired: no warning any more
    assert not caplog.records


def test_a_cached_export_without_onnxruntime_is_the_missing_package_not_a_reexport(tmp_path, monkeypatch, caplog):
    model = _tiny_model()
    path = onnx_network(model, cache=tmp_path).path
    stamp = path.stat().st_mtime_ns
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with caplog.at_level("WARNING", logger="fakescope"), pytest.raises(ImportError):
        onnx_network(model, cache=tmp_path)
    assert not caplog.records and path.stat().st_mtime_ns == stamp


def test_an_unwritable_cache_gives_an_export_in_memory_with_one_warning(tmp_path, caplog):
    model = _tiny_model()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # XDG_CACHE_HOME pointing at a file: the cache folder cannot be made
    with caplog.at_level("WARNING", logger="fakescope"):
        network = onnx_network(model, cache=blocker)
    assert len(caplog.records) == 1 and caplog.records[0].message.startswith(f"ONNX cache: cannot write {blocker}/")
    assert network.path is None and blocker.read_text() == ""
    _assert_matches_torch(network, model)


def test_onnx_runtime_detects_with_an_unwritable_cache(image_folder, monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "cache-file"
    blocker.write_text("")
    monkeypatch.setenv("FAKESCOPE_CACHE", str(blocker))
    with caplog.at_level("WARNING", logger="fakescope"):
        fast = Detector.load(device="cpu", provenance=False, runtime="onnx")
    assert fast.runtime == "onnx" and fast.predict(image_folder / "img0.png").ok
    assert [r.message for r in caplog.records if "exporting into memory" in r.message]


def test_an_export_gets_the_umasks_mode_not_a_private_temp_files(tmp_path):
    umask = os.umask(0o022)
    try:
        path = export_onnx(create_model("test_tiny").eval(), tmp_path / "t.onnx", tile_size=64)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the server's user, like any file written here
    assert [p.name for p in tmp_path.iterdir()] == ["t.onnx"]


@pytest.mark.parametrize("where", ["file/x.onnx", "ro/x.onnx"])
def test_export_to_an_unwritable_path_is_a_one_line_error(tmp_path, where):
    (tmp_path / "file").write_text("")
    (tmp_path / "ro").mkdir(mode=0o555)
    if where.startswith("ro") and os.access(tmp_path / "ro", os.W_OK):
        pytest.skip("running as root: a read-only folder is still writable")
    result = CliRunner().invoke(app, ["export", "--onnx", str(tmp_path / where)])
    assert result.exit_code == 2 and result.output.startswith(f"error: cannot write {tmp_path / where}: ")
    assert result.output.count("\n") == 1
    if where.startswith("file"):  # it said "File exists", as if x.onnx were there
        assert result.output.endswith(f": {tmp_path / 'file'} is a file, not a folder\n")


def test_runtime_errors_are_clean():
    with pytest.raises(ConfigError, match="unknown runtime"):
        Detector(load_model(), runtime="tensorrt")


UNEXPORTABLE = textwrap.dedent('''
    """An architecture of one's own that the ONNX exporter cannot express: Tensor.unfold of a traced size."""
    from torch import nn

    from fakescope.models import InputPolicy, register_model


''') + inspect.getsource(FeatureHead) + textwrap.dedent('''

    class Unfolding(FeatureHead):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(3 * 16, 1)

        def forward_features(self, x):
            if x.shape[-1] % 4 or x.shape[-2] % 4:  # a Python boolean of a size: the tracer warns of it
                x = x[..., : x.shape[-2] // 4 * 4, : x.shape[-1] // 4 * 4]
            patches = x.unfold(2, 4, 4).unfold(3, 4, 4)  # N, 3, h, w, 4, 4
            return patches.permute(0, 1, 4, 5, 2, 3).flatten(1, 3)


    @register_model(input=InputPolicy(crop_size=32, grid=2))
    def qa_unfolding(pretrained=False):
        """Patches by Tensor.unfold: no ONNX export."""
        return Unfolding()
''')


@pytest.fixture
def unexportable(tmp_path, monkeypatch):
    """Module `qa_unfolding` (`UNEXPORTABLE`) imported from `tmp_path`, and a model of its architecture in tmp_path/model."""
    (tmp_path / "qa_unfolding.py").write_text(UNEXPORTABLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("qa_unfolding", None)
    network = importlib.import_module("qa_unfolding").qa_unfolding()
    save_model(network, ModelConfig("unfolding", "qa_unfolding", input=InputPolicy(32, 2)), tmp_path / "model")
    return network


def test_a_network_onnx_cannot_express_is_a_one_line_export_error(tmp_path, unexportable):
    result = CliRunner().invoke(app, ["export", "--onnx", str(tmp_path / "s.onnx"), "--model", str(tmp_path / "model")])
    assert result.exit_code == 2 and result.output.startswith("error: Unfolding cannot be exported to ONNX: Unsupported")
    assert result.output.count("\n") == 1 and not list(tmp_path.glob("*.onnx"))


def test_the_tracers_warnings_about_a_networks_own_code_still_show(tmp_path, unexportable):
    """Export keeps quiet only the same-padding layers' reads of sizes, not what the tracer says of a network's code."""
    with pytest.warns(torch.jit.TracerWarning, match="Python boolean"), pytest.raises(ConfigError):
        export_onnx(unexportable, tmp_path / "s.onnx", tile_size=30)


def test_a_failed_export_under_auto_keeps_detects_jsonl_stdout_clean(tmp_path, image_folder, unexportable):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "FAKESCOPE_PLUGINS": "qa_unfolding"}
    run = subprocess.run([sys.executable, "-m", "fakescope", "detect", str(image_folder / "img0.png"), "--model", str(tmp_path / "model"),
                          "--no-provenance", "-f", "jsonl"], capture_output=True, text=True, env=env, check=True)
    assert [json.loads(line)["path"] for line in run.stdout.splitlines()] == [str(image_folder / "img0.png")]
    assert "ONNX export failed" in run.stderr and "IR graph" not in run.stderr and len(run.stderr.splitlines()) < 10


def test_export_and_detect_cli(image_folder, tmp_path):
    runner = CliRunner()
    done = runner.invoke(app, ["export", "--onnx", str(tmp_path / "d.onnx")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "d.onnx").is_file() and "max |onnx - torch|" in done.output
    assert float(done.output.rsplit(":", 1)[1]) < 1e-4
    detect = runner.invoke(app, ["detect", str(image_folder / "img0.png"), "--runtime", "onnx", "--no-provenance", "-f", "jsonl"])
    assert detect.exit_code == 0, detect.output
    assert '"path": ' in detect.output


def test_an_upgraded_exporter_exports_again_instead_of_reusing_the_old_graph(tmp_path, monkeypatch):
    model = _tiny_model()
    first = onnx_network(model, cache=tmp_path).path
    installed = onnx_module._version  # a torch upgrade: its exporter may write another graph
    monkeypatch.setattr(onnx_module, "_version", lambda name: "99.0.0" if name == "torch" else installed(name))
    upgraded = onnx_network(model, cache=tmp_path).path
    assert upgraded != first and first.is_file() and upgraded.is_file()
    _assert_matches_torch(OnnxNetwork(upgraded), model)


def test_replaced_weights_are_refused_on_onnx_even_when_their_export_is_cached(tmp_path):
    """The onnx runtime finds a cached export without building the network, where the sha256 was checked."""
    from fakescope.errors import ModelLoadError

    for seed, name in [(0, "mine"), (1, "other")]:
        torch.manual_seed(seed)
        save_model(create_model("test_tiny"), ModelConfig(name, "test_tiny", input=InputPolicy(64, 2)), tmp_path / name)
    Detector.load(tmp_path / "other", device="cpu", provenance=False, runtime="onnx")  # its export is cached now
    (tmp_path / "mine" / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match=r"mine/model\.safetensors: sha256 differs from the weights_sha256"):
        Detector.load(tmp_path / "mine", device="cpu", provenance=False, runtime="onnx")


_NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, NoTorch())
from fakescope.cli import main

sys.argv = ["fakescope", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("flags", [["--runtime", "onnx"], []], ids=["onnx", "defaults"])
def test_detect_on_a_cached_onnx_export_runs_without_torch(tiny_model_dir, tmp_path, monkeypatch, flags):
    """torch took 4.2 of the 4.9 s `import fakescope.detector` took: a cached export, host tiles in numpy and the
    watermark read in numpy leave it unloaded, so `detect --runtime onnx` starts in about a second; so does a plain
    `detect` (device and runtime auto) on a Linux machine without a GPU driver, which is the CPU without asking torch."""
    if not flags and gpu_driver_present():
        pytest.skip("this machine has a GPU driver: device auto asks torch whether CUDA works")
    image = Path(__file__).parents[2] / "examples" / "coffee.jpg"
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path))
    expected = Detector.load(tiny_model_dir, runtime="onnx").predict(image).probability  # exports into tmp_path
    done = subprocess.run([sys.executable, "-c", _NO_TORCH, "detect", str(image), "--model", str(tiny_model_dir),
                           *flags, "-f", "jsonl"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["score"] == round(expected, 6)



_SESSION = """
import onnx.helper as h
from fakescope.models.onnx import OnnxNetwork
graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "g", [h.make_tensor_value_info("x", 1, [1])],
                     [h.make_tensor_value_info("y", 1, [1])])
OnnxNetwork(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=8).SerializeToString())
"""


def test_onnxruntime_keeps_no_telemetry(tmp_path):
    """onnxruntime 1.32 wrote a device id and an event database under ~/.cache/Microsoft at its first session, and
    uploaded the events to mobile.events.data.microsoft.com (seen as CONNECTs through HTTPS_PROXY at `fakescope serve`'s
    start), unless ORT_DISABLE_TELEMETRY was set before it started."""
    env = {k: v for k, v in os.environ.items() if k != TELEMETRY_ENV}
    env |= {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / ".cache")}
    subprocess.run([sys.executable, "-c", _SESSION], env=env, check=True, timeout=60)
    assert not list(tmp_path.rglob("*"))  # was .cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db}
