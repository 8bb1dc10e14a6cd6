"""End-to-end images/s on one CUDA GPU: nvJPEG decoding on the device, tiling, the bundled model.

Pipeline per batch: encoded JPEG bytes -> `torchvision.io.decode_jpeg(..., device="cuda")` ->
native-resolution tiles cut on the GPU (the model's input policy) -> normalise -> network in
bf16, channels_last -> mean tile logit -> calibrated P(ai) back on the host.
Prints decode-only, network-only (tiles of already decoded images) and end-to-end images/s, each the
median of `--repeats` timed runs after the warm-up, with their range, and end to end over decode
only, all measured in one run (decode-only rates swung 13k-24k between H100 calls).

- `--compile` runs the network through `torch.compile` (`--compile-mode`, e.g.
  `max-autotune-no-cudagraphs`); `--freeze` lets Inductor fold the frozen weights and batch norm
  into the convolutions. Compilation happens in the warm-up, outside the timed runs.
- `--bf16-weights` casts the network to bf16 instead of running it under bf16 autocast.
- `--decode-threads N` splits each batch into N parts decoded at once from N host threads, each on
  its own CUDA stream; `--overlap` decodes batch i+1 while batch i is scored.
- `--start-at T` waits until Unix time T after the warm-up, so several processes sharing the GPU
  (each with its own nvJPEG decoder) time the same window.

    python benchmarks/gpu.py --images 8192 --batch 512 [--compile [--freeze]] [--overlap]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch
from _machine import machine, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8192, help="generated JPEGs to decode and score")
    parser.add_argument("--batch", type=int, default=512, help="images per batch")
    parser.add_argument("--size", type=size, default="512x384", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--model", default=None, help="model name or path (default: the bundled model)")
    parser.add_argument("--grid", type=int, default=None, help="at most N x N tiles per image (default: the model's own)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--freeze", action="store_true", help="Inductor freezing: fold weights and batch norm (with --compile)")
    parser.add_argument("--bf16-weights", action="store_true", help="cast the network to bf16 instead of autocast")
    parser.add_argument("--decode-threads", type=int, default=1, help="host threads (and CUDA streams) decoding each batch")
    parser.add_argument("--overlap", action="store_true", help="decode batch i+1 while scoring batch i")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each rate; the median is printed (default 3)")
    parser.add_argument("--start-at", type=float, default=None,
                        help="Unix time to start the timed runs at, after the warm-up (aligns several processes)")
    args = parser.parse_args()
    if args.freeze and not args.compile:
        parser.error("--freeze needs --compile")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU and none is visible; run benchmarks/detect_throughput.py on a CPU machine")

    import torchvision

    from fakescope.models.bundle import load_model
    from fakescope.models.calibration import apply_calibration
    from fakescope.models.tiling import tile_positions

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    width, height = map(int, args.size.split("x"))
    encoded = _jpegs(args.images, width, height)
    model = load_model(args.model, device=device)
    network = model.network.eval().to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if args.bf16_weights else torch.float32
    network = network.to(dtype)
    if args.compile:
        from torch._inductor import config as inductor_config

        inductor_config.freezing = args.freeze
        network = torch.compile(network, mode=args.compile_mode)
    policy = replace(model.config.input, grid=args.grid or model.config.input.grid)
    c = policy.crop_size
    tops, lefts = tile_positions(height, c, policy.grid), tile_positions(width, c, policy.grid)
    mean = torch.tensor(policy.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(policy.std, device=device).view(1, 3, 1, 1) * 255
    batches = [encoded[i:i + args.batch] for i in range(0, len(encoded), args.batch)]
    decoder = _Decoder(args.decode_threads, device)

    @torch.inference_mode()
    def score(pixels: torch.Tensor) -> np.ndarray:
        tiles = torch.stack([pixels[:, :, t:t + c, l:l + c] for t in tops for l in lefts], 1).flatten(0, 1)
        x = ((tiles.float() - mean) / std).to(dtype).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=not args.bf16_weights):
            logits = network(x).float().view(len(pixels), -1).mean(1)
        return apply_calibration(model.config.calibration, logits.cpu().numpy())

    def detect_all() -> list:
        if not args.overlap:
            return [score(decoder.wait(*decoder(b))) for b in batches]
        results = []
        with ThreadPoolExecutor(1) as ahead:
            pending = ahead.submit(decoder, batches[0])
            for following in [*batches[1:], None]:
                decoded = pending.result()
                if following is not None:
                    pending = ahead.submit(decoder, following)
                results.append(score(decoder.wait(*decoded)))
        return results

    sizes = {len(b) for b in batches}  # warm-up per batch shape: cudnn autotuning, nvJPEG handles, compilation
    for n in sorted(sizes):
        score(decoder.wait(*decoder(next(b for b in batches if len(b) == n))))
    decoded = [decoder.wait(*decoder(b)) for b in batches]
    if args.start_at is not None:
        torch.cuda.synchronize()
        time.sleep(max(0.0, args.start_at - time.time()))
        print(f"timed runs began {time.time() - args.start_at:+.1f} s after --start-at")
    decode_rate, decode_range = _rate(lambda: [decoder.wait(*decoder(b)) for b in batches], len(encoded), args.repeats)
    network_rate, network_range = _rate(lambda: [score(p) for p in decoded], len(encoded), args.repeats)
    decoded.clear()  # frees the decoded images before the end-to-end run
    detect_rate, detect_range = _rate(detect_all, len(encoded), args.repeats)
    decoder.close()
    options = [f"network {'bf16 weights' if args.bf16_weights else 'fp32 weights, bf16 autocast'}"]
    if args.compile:
        options.append(f"torch.compile mode {args.compile_mode}" + (" with freezing" if args.freeze else ""))
    options.append(f"{args.decode_threads} decode thread(s)" + (", next batch decoded while scoring" if args.overlap else ""))
    print(machine("cuda"))
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  torchvision {torchvision.__version__}")
    print(f"images: {len(encoded)} JPEG {width}x{height}, batch {args.batch}, {len(tops) * len(lefts)} tiles of {c}px each")
    print("options: " + "; ".join(options) + f"; median of {args.repeats} timed run(s) after the warm-up")
    print(f"decode only (nvJPEG on device): {decode_rate:,.0f} images/s{decode_range}")
    print(f"network only (tiles + model + calibration of decoded images): {network_rate:,.0f} images/s{network_range}")
    print(f"end to end (decode + tiles + model + calibration): {detect_rate:,.0f} images/s{detect_range}")
    print(f"end to end / decode only: {detect_rate / decode_rate:.2f}")


class _Decoder:
    """Decodes a batch in `threads` parts at once, each from its own host thread and CUDA stream."""

    def __init__(self, threads: int, device: torch.device):
        from torchvision.io import decode_jpeg

        self._decode_jpeg, self._device = decode_jpeg, device
        self._streams = [torch.cuda.Stream() for _ in range(threads)]
        self._pool = ThreadPoolExecutor(threads)

    def __call__(self, batch: list) -> tuple[list, list]:
        """Start decoding; returns each part's pixels and the event that marks them ready."""
        n = len(self._streams)
        parts = [batch[i * len(batch) // n:(i + 1) * len(batch) // n] for i in range(n)]
        done = list(self._pool.map(self._decode, parts, self._streams))
        return [p for p, _ in done], [e for _, e in done]

    def _decode(self, part: list, stream: torch.cuda.Stream):
        with torch.cuda.stream(stream):
            pixels = torch.stack(self._decode_jpeg(part, device=self._device))
            ready = torch.cuda.Event()
            ready.record(stream)
        return pixels, ready

    @staticmethod
    def wait(parts: list, events: list) -> torch.Tensor:
        """The batch's (B, 3, H, W) uint8 pixels, usable on the current stream."""
        current = torch.cuda.current_stream()
        for pixels, ready in zip(parts, events, strict=True):
            current.wait_event(ready)
            pixels.record_stream(current)  # the allocator must not reuse it while this stream reads it
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        self._pool.shutdown()


def _rate(run, n: int, repeats: int) -> tuple[float, str]:
    """The median images/s of `repeats` runs of `run` over `n` images, and their range as text (none for one run)."""
    rates = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), (f" (range {min(rates):,.0f}-{max(rates):,.0f})" if repeats > 1 else "")


def _jpegs(n: int, width: int, height: int) -> list[torch.Tensor]:
    """`n` encoded JPEGs (64 distinct smooth-noise images, repeated) as uint8 tensors."""
    from PIL import Image

    rng = np.random.default_rng(0)
    distinct = []
    for _ in range(64):
        small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        distinct.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    return [distinct[i % len(distinct)] for i in range(n)]


if __name__ == "__main__":
    main()
