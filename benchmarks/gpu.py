"""End-to-end images/s on one CUDA GPU: nvJPEG decoding on the device, tiling, the bundled model.

Pipeline per batch: encoded JPEG bytes -> `torchvision.io.decode_jpeg(..., device="cuda")` ->
native-resolution tiles cut on the GPU (the model's input policy) -> normalise -> network in
bf16 autocast, channels_last -> mean tile logit -> calibrated P(ai) back on the host.
Prints decode-only images/s, end-to-end images/s and their ratio, measured in one run.
`--compile` runs the network through `torch.compile` (`--compile-mode reduce-overhead` adds CUDA
graphs); compilation happens in the warm-up, outside the timed runs. `--overlap` decodes the next
batch on a side CUDA stream, from a second host thread, while the current one is scored.

    python benchmarks/gpu.py --images 8192 --batch 512 [--compile] [--overlap]
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--size", default="512x384", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--model", default=None, help="model name or path (default: the bundled model)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode, e.g. max-autotune, reduce-overhead")
    parser.add_argument("--overlap", action="store_true", help="decode batch i+1 on a side stream while scoring batch i")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU and none is visible; run benchmarks/detect_throughput.py on a CPU machine")

    import torchvision
    from torchvision.io import decode_jpeg

    from fakescope.models.bundle import load_model
    from fakescope.models.calibration import apply_calibration
    from fakescope.models.tiling import tile_positions

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    width, height = map(int, args.size.split("x"))
    encoded = _jpegs(args.images, width, height)
    model = load_model(args.model, device=device)
    network = model.network.to(memory_format=torch.channels_last)
    if args.compile:
        network = torch.compile(network, mode=args.compile_mode)
    policy = model.config.input
    c = policy.crop_size
    tops, lefts = tile_positions(height, c, policy.grid), tile_positions(width, c, policy.grid)
    mean = torch.tensor(policy.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(policy.std, device=device).view(1, 3, 1, 1) * 255
    batches = [encoded[i:i + args.batch] for i in range(0, len(encoded), args.batch)]

    def decode(batch):
        return decode_jpeg(batch, device=device)

    @torch.inference_mode()
    def detect(batch) -> np.ndarray:
        return score(torch.stack(decode(batch)))  # (B, 3, H, W) uint8; one size in this benchmark

    @torch.inference_mode()
    def score(pixels: torch.Tensor) -> np.ndarray:
        tiles = torch.stack([pixels[:, :, t:t + c, l:l + c] for t in tops for l in lefts], 1).flatten(0, 1)
        x = ((tiles.float() - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = network(x).float().view(len(pixels), -1).mean(1)
        return apply_calibration(model.config.calibration, logits.cpu().numpy())

    for fn in (decode, detect):  # warm-up: cudnn autotuning, nvJPEG handles, compilation
        fn(batches[0])
    if len(batches) > 1 and len(batches[-1]) != args.batch:
        detect(batches[-1])  # the short last batch has its own shapes
    torch.cuda.synchronize()
    decode_rate = _rate(lambda: [decode(b) for b in batches], len(encoded))
    run = (lambda: _overlapped(batches, decode, score)) if args.overlap else (lambda: [detect(b) for b in batches])
    detect_rate = _rate(run, len(encoded))
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  torchvision {torchvision.__version__}")
    print(f"images: {len(encoded)} JPEG {width}x{height}, batch {args.batch}, {len(tops) * len(lefts)} tiles of {c}px each"
          + (f", torch.compile mode {args.compile_mode}" if args.compile else "")
          + (", decoding overlapped on a side stream" if args.overlap else ""))
    print(f"decode only (nvJPEG on device): {decode_rate:,.0f} images/s")
    print(f"end to end (decode + tiles + model + calibration): {detect_rate:,.0f} images/s")
    print(f"end to end / decode only: {detect_rate / decode_rate:.2f}")


def _overlapped(batches: list, decode, score) -> list:
    """Score every batch while a second thread decodes the next one on its own CUDA stream."""
    from concurrent.futures import ThreadPoolExecutor

    side, main = torch.cuda.Stream(), torch.cuda.current_stream()

    def decode_on_side(batch):
        with torch.cuda.stream(side):
            pixels = torch.stack(decode(batch))
            done = torch.cuda.Event()
            done.record(side)
        return pixels, done

    results = []
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(decode_on_side, batches[0])
        for following in [*batches[1:], None]:
            pixels, done = pending.result()
            if following is not None:
                pending = pool.submit(decode_on_side, following)
            main.wait_event(done)
            pixels.record_stream(main)  # the allocator must not reuse it while the main stream reads it
            results.append(score(pixels))
    return results


def _rate(run, n: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


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
