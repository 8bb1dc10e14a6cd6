"""`fakescope train` under torchrun with two gloo CPU processes matches a one-process run."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.models import registry

ENTRY = Path(__file__).with_name("ddp_entry.py")


def _manifest(folder: Path) -> Path:
    """Noise images as `real`, blurred noise as `ai`: 16 train, 8 val, 4 test rows."""
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 16), ("val", 8), ("test", 4)):
        for i in range(n):
            label = "ai" if i % 2 else "real"
            image = Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8))
            if label == "ai":
                image = image.filter(ImageFilter.GaussianBlur(2))
            path = folder / f"{split}-{i}.png"
            image.save(path)
            rows.append({"uri": path.name, "label": label, "split": split, "source": f"s{i % 4 // 2}"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def _run(cfg_path: Path, nproc: int, *launch_args: str, status: int = 0, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", **env}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *launch_args]
    cmd = [*launcher, str(ENTRY), "train", str(cfg_path), "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == status, done.stderr[-3000:]
    return done


@pytest.fixture
def one_process(monkeypatch):
    """`fakescope train` in this process (no torchrun, no new interpreter), with ddp_entry's test_tiny_gn
    registered until the test ends."""
    registry.list_models()  # the built-in families first: registered into the copy, they would go with it
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.syspath_prepend(str(ENTRY.parent))
    importlib.reload(importlib.import_module(ENTRY.stem))  # registers test_tiny_gn into the copy
    return lambda cfg_path: CliRunner().invoke(app, ["train", str(cfg_path), "--no-progress"])


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_and_warns_once_while_every_rank_scores_its_test_share(tmp_path, one_process):
    """Same global batches, averaged gradients, gathered validation: same losses and weights. Every rank scores its
    share of the test split, not rank 0 alone while the others wait at a barrier: one that outlasts the process group's
    timeout (30 minutes) fails the job before the model is saved. What one rank meets (an unreadable test image) it
    names; no pretrained weights, nothing to resume, unsplit rows, a broken plugin entry point: rank 0 alone says each.
    One torchrun launch checks all of it: none of these changes what is trained (unsplit rows are left out, the
    network is built unpretrained, the test split is scored after training)."""
    manifest = _manifest(tmp_path)
    (tmp_path / "test-1.png").write_bytes(b"not an image")  # rank 1's share: test images 1 and 3
    pd.concat([pd.read_csv(manifest), pd.DataFrame([{"uri": "train-0.png", "label": "real"}])]).to_csv(manifest, index=False)
    info = tmp_path / "site" / "qa_broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qa-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fakescope.models]\nbroken = qa_missing\n")
    path = os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"run{nproc}"
        cfg = {"manifest": str(manifest), "out": str(out), "architecture": "test_tiny_gn", "resume": True,
               "epochs": 2, "batch_size": 8, "samples_per_epoch": 16, "num_workers": 0, "device": "cpu",
               "patience": 5, "seed": 3}  # pretrained: true
        cfg_path = tmp_path / f"cfg{nproc}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        if nproc == 1:
            result = one_process(cfg_path)
            assert result.exit_code == 0, result.output
        else:
            _run(cfg_path, nproc, f"--log-dir={tmp_path / 'logs'}", "--redirects=3", PYTHONPATH=path)
        runs[nproc] = out

    one, two = (pd.read_csv(runs[n] / "metrics.csv") for n in (1, 2))
    assert len(one) == len(two) == 2
    np.testing.assert_allclose(two["train_loss"], one["train_loss"], rtol=1e-5)
    w1, w2 = (torch.load(runs[n] / "checkpoint.pt", weights_only=False)["network"] for n in (1, 2))
    assert w1.keys() == w2.keys()
    diffs = {k: (w1[k].float() - w2[k].float()).abs().max().item() for k in w1 if w1[k].is_floating_point()}
    assert max(diffs.values()) < 1e-5
    assert not list(runs[2].glob("*rank*"))  # only rank 0 wrote files
    assert (runs[2] / "model" / "model.safetensors").is_file()
    logs = {(rank, stream): next((tmp_path / "logs").glob(f"**/attempt_0/{rank}/{stream}.log")).read_text()
            for rank in (0, 1) for stream in ("stdout", "stderr")}
    assert logs[0, "stdout"].count("saved ") == 1 and "saved " not in logs[1, "stdout"]  # the summary line of rank 0 only
    stderr = {rank: logs[rank, "stderr"] for rank in (0, 1)}
    assert "skipping unreadable image" in stderr[1] and "test-1.png" in stderr[1]
    assert "test-1.png" not in stderr[0]
    assert json.loads((runs[2] / "metrics.json").read_text())["test"]["overall"]["n"] == 3
    for warning in ("warning: architecture 'test_tiny_gn' registers no pretrained_source",
                    f"warning: nothing to resume in {runs[2]}", "warning: 1 unsplit manifest row(s)",
                    "warning: entry point broken (qa_missing): cannot load"):
        assert stderr[0].count(warning) + stderr[1].count(warning) == 1, stderr


@pytest.mark.slow
def test_with_dropout_each_rank_draws_its_own_masks_and_rank_0_those_of_one_process(tmp_path, one_process, monkeypatch):
    """Every rank seeds torch alike, so without a reseed all ranks drop the same features; a resumed rank > 0 would
    restore rank 0's random state from the checkpoint. Rank 0 must draw what a one-process run draws (the model
    card's bit-for-bit reproducible CPU run)."""
    cfg = {"manifest": str(_manifest(tmp_path)), "out": str(tmp_path / "run"), "architecture": "test_tiny_gn",
           "architecture_kwargs": {"drop_rate": 0.5}, "pretrained": False, "epochs": 1,
           "batch_size": 8, "samples_per_epoch": 16, "num_workers": 0, "device": "cpu", "seed": 3}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump({**cfg, "out": str(tmp_path / "one")}))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "resume.yaml").write_text(yaml.safe_dump({**cfg, "epochs": 2, "resume": True}))
    probes = {}
    for name, cfg_path in (("one", "one.yaml"), ("two", "cfg.yaml"), ("resumed", "resume.yaml")):
        (tmp_path / name).mkdir()
        if name == "one":
            monkeypatch.setenv("FAKESCOPE_TEST_PROBE", str(tmp_path / name))
            result = one_process(tmp_path / cfg_path)
            assert result.exit_code == 0, result.output
        else:
            _run(tmp_path / cfg_path, 2, FAKESCOPE_TEST_PROBE=str(tmp_path / name))
        probes[name] = [(tmp_path / name / f"rank{r}.txt").read_text().splitlines() for r in (0, 1) if name != "one" or not r]
    one, (rank0, rank1), (resumed0, resumed1) = probes["one"][0], probes["two"], probes["resumed"]
    assert rank0[0].startswith("rng ") and rank0[0] == one[0] != rank1[0]  # rank 0 starts on one process's stream
    for a, b in ((rank0, rank1), (resumed0, resumed1)):  # resumed: rank 1 has not taken rank 0's state
        masks = [[line for line in lines if line.startswith("kept ")] for lines in (a, b)]
        assert masks[0] and len(masks[0]) == len(masks[1]) and masks[0] != masks[1]
        assert not {line for line in a if line.startswith("rng ")} & {line for line in b if line.startswith("rng ")}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds and pauses a rank through Linux /proc")
def test_ctrl_c_under_torchrun_says_how_to_continue_once(tmp_path):
    """A terminal's Ctrl-C reaches torchrun, which sends SIGINT to every rank. Here rank 1 lags, so rank 0 waits
    for it in a collective; where rank 1 was paused outside that collective (most runs), it exits on its interrupt
    and rank 0's collective fails (connection closed) before rank 0's own interrupt is raised, which replaces that
    error. Rank 0 says how to continue, once, and neither rank prints a traceback."""
    import signal
    import time

    cfg = {"manifest": str(_manifest(tmp_path)), "out": str(tmp_path / "run"), "architecture": "test_tiny_gn",
           "pretrained": False, "epochs": 2, "batch_size": 8, "samples_per_epoch": 100_000, "num_workers": 0, "device": "cpu"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(ENTRY),
                             "train", str(tmp_path / "cfg.yaml"), "--no-progress"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job ignores it
    metrics = tmp_path / "run" / "metrics.csv"  # rank 0 creates it as the first epoch starts
    deadline = time.monotonic() + 200
    while not metrics.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not metrics.exists():
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the first epoch did not start: {proc.communicate()[1][-3000:]}")
    rank1 = _worker(proc.pid, rank=1)
    os.kill(rank1, signal.SIGSTOP)
    time.sleep(1)  # rank 0 ends its step (milliseconds) and waits for rank 1's gradients
    os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while not _pending(rank1, signal.SIGINT) and time.monotonic() < deadline:  # torchrun has passed the Ctrl-C on
        time.sleep(0.05)
    os.kill(rank1, signal.SIGCONT)
    stderr = proc.communicate(timeout=90)[1]
    line = (f"interrupted: {tmp_path / 'run'} holds the last finished epoch; continue with fakescope train "
            f"{tmp_path / 'cfg.yaml'} --no-progress --resume\n")
    assert stderr.count(line) == 1, stderr
    assert "[rank0]:" not in stderr and "[rank1]:" not in stderr, stderr  # torch.distributed's prefix on an uncaught error


def _worker(launcher: int, rank: int) -> int:
    """The pid of torchrun's worker process of `rank`."""
    for pid in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        if f"RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            return int(pid)
    raise LookupError(f"torchrun {launcher} has no rank {rank}")


def _pending(pid: int, signum: int) -> bool:
    """Whether `signum` waits to be delivered to the (stopped) process `pid`."""
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    return any(int(status[key], 16) >> (signum - 1) & 1 for key in ("SigPnd", "ShdPnd"))


def test_a_one_process_run_draws_dropout_from_its_seed_unreseeded(tmp_path, one_process, monkeypatch):
    """The model card's CPU run reproduces the shipped weights bit for bit: its first training step draws from torch's
    stream as seeded, advanced only by building the network and the loader's own draw, with no reseed for a rank."""
    from torch.utils.data import DataLoader

    torch.manual_seed(3)
    registry.create_checked("test_tiny_gn", 64, False, drop_rate=0.5)
    next(iter(DataLoader([0])))  # each loader iterator draws its workers' base seed
    expected = "rng " + hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()
    cfg = {"manifest": str(_manifest(tmp_path)), "out": str(tmp_path / "run"), "architecture": "test_tiny_gn",
           "architecture_kwargs": {"drop_rate": 0.5}, "pretrained": False, "epochs": 1, "batch_size": 8,
           "samples_per_epoch": 8, "num_workers": 0, "device": "cpu", "seed": 3}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("FAKESCOPE_TEST_PROBE", str(tmp_path))
    result = one_process(tmp_path / "cfg.yaml")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rank0.txt").read_text().splitlines()[0] == expected


def test_a_network_whose_outputs_overflow_to_nan_is_named_not_taken_for_unreadable_images(tmp_path, one_process):
    """Group norm turns huge but finite weights into NaN logits, which marked unreadable images."""
    cfg = {"manifest": str(_manifest(tmp_path)), "out": str(tmp_path / "run"), "architecture": "test_tiny_gn",
           "pretrained": False, "epochs": 2, "batch_size": 8, "lr": 1e8, "num_workers": 0, "device": "cpu"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings(record=True) as shown:  # pytest records warnings: they do not reach result.stderr
        warnings.resetwarnings()
        for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", hidden)  # Python's default filters show a user all other warnings
        result = one_process(tmp_path / "cfg.yaml")
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: the network's outputs are NaN: training diverged (lower lr)\n"
    assert [f"{w.category.__name__}: {w.message}" for w in shown] == []  # nothing else on a user's stderr
