"""User-facing latency on the CPU: the CLI's start-up and one image through `Detector`, in fresh processes.

For each `--src` tree (default: this checkout's `src`), run in turns so the machine's load hits
every tree alike, it times in wall-clock seconds: `import fakescope`, `import fakescope.cli`,
`import fakescope.forensics` (what a C2PA or metadata check starts with), `fakescope --help`,
`fakescope models list`, `fakescope models info`, `fakescope detect IMAGE` (the first call of the
run, then the median of the rest), and in one process per runtime `Detector.load()` (the Python
default, torch; and runtime auto, the CLI's: onnxruntime on the CPU when installed), its first
`predict` of IMAGE and a warm one. Each row prints the median over `--repeats` runs.

    python benchmarks/cli_latency.py --repeats 5
    python benchmarks/cli_latency.py --src /tmp/before/src --src src    # before and after, in one run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import file, machine

ROOT = Path(__file__).resolve().parents[1]
DETECT = "fakescope detect IMAGE"
IN_PROCESS = """
import json, sys, time
t0 = time.perf_counter()
from fakescope import Detector
t1 = time.perf_counter()
detector = Detector.load(device="cpu", runtime=sys.argv[2])
t2 = time.perf_counter()
detector.predict(sys.argv[1])
t3 = time.perf_counter()
detector.predict(sys.argv[1])
t4 = time.perf_counter()
steps = {"import Detector": t1 - t0, "Detector.load()": t2 - t1, "first predict": t3 - t2, "warm predict": t4 - t3}
print(json.dumps({f"{step}, runtime {sys.argv[2]} ({detector.runtime})": seconds for step, seconds in steps.items()}))
"""


def _timed(src: Path, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _one_round(src: Path, image: str) -> dict[str, float]:
    cli = ("-m", "fakescope")
    row = {
        "import fakescope": _timed(src, "-c", "import fakescope"),
        "import fakescope.cli": _timed(src, "-c", "import fakescope.cli"),
        "import fakescope.forensics": _timed(src, "-c", "import fakescope.forensics"),
        "fakescope --help": _timed(src, *cli, "--help"),
        "fakescope models list": _timed(src, *cli, "models", "list"),
        "fakescope models info": _timed(src, *cli, "models", "info"),
        DETECT: _timed(src, *cli, "detect", image),
    }
    env = {**os.environ, "PYTHONPATH": str(src)}
    for runtime in ("torch", "auto"):
        done = subprocess.run([sys.executable, "-c", IN_PROCESS, image, runtime], env=env, check=True, capture_output=True,
                              text=True)
        row |= json.loads(done.stdout.splitlines()[-1])
    return row


def _tree(text: str) -> Path:
    """An argparse type: a src folder holding fakescope (else the installed fakescope would be timed instead)."""
    if not (Path(text) / "fakescope" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} holds no fakescope/__init__.py")
    return Path(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", action="append", type=_tree, help="a tree's src folder to time (repeatable)")
    parser.add_argument("--image", type=file, default=str(ROOT / "examples" / "chelsea.jpg"),
                        help="the image `fakescope detect` scores")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each step; the median is printed")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    trees = [p.resolve() for p in args.src or [ROOT / "src"]]
    rounds: dict[Path, list[dict[str, float]]] = {src: [] for src in trees}
    for _ in range(args.repeats):
        for src in trees:
            rounds[src].append(_one_round(src, args.image))
    print(machine())
    print(f"Python {sys.version.split()[0]}, image {Path(args.image).name}, "
          f"median of {args.repeats} runs (detect: of all but the first call, which has a row of its own)")
    print("| step | " + " | ".join(str(src) for src in trees) + " |")
    print("|---|" + "---|" * len(trees))
    for step in rounds[trees[0]][0]:
        later = slice(1 if step == DETECT and args.repeats > 1 else 0, None)  # the first detect call has a row of its own
        cells = [f"{statistics.median(r[step] for r in rounds[src][later]):.2f} s" for src in trees]
        print(f"| {step} | " + " | ".join(cells) + " |")
    firsts = [f"{rounds[src][0][DETECT]:.2f} s" for src in trees]
    print(f"| {DETECT}, first call | " + " | ".join(firsts) + " |")


if __name__ == "__main__":
    main()
