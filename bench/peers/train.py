"""Whole-network training speed of artemis against PyTorch and Keras, measured in one run.

One training step = forward, backward and an Adam step on a batch of 32 random images
(speed does not depend on the values), 12 classes. For each model and size, in every round:

1. `artemis bench --json` (its `train` row) with artemis's own CPU training kernels, and
   again with `ARTEMIS_KERNELS=burn` (burn's kernels: what artemis did before them);
2. PyTorch: torchvision's MobileNetV2, and the reference baseline written in torch, in the
   default layout and in channels_last;
3. Keras: keras.applications.MobileNetV2 and the reference baseline (`train_on_batch`).

Each framework runs in a process of its own, the rounds alternate between them, and the
figures printed are medians over rounds of each round's median images/s, with the ratios
of artemis to each peer. Run it through `bench/peers/run --train`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# The Keras version of the reference baseline, as the inference peers build it.
from peers import reference_baseline

CLASSES = 12
# (model, input side) pairs: MobileNetV2 at 160 and 224 px, the reference baseline at its 150.
DEFAULT_CASES = ["mobilenetv2:160", "mobilenetv2:224", "baseline:150", "baseline:224"]


def median_rate(batch, fn, steps, warmup):
    for _ in range(max(warmup, 1)):
        fn()  # warm-up (graph tracing, allocator, first-touch page faults)
    rates = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)


def torch_baseline(nn):
    """The reference's baseline CNN: valid convolutions, sigmoid after every layer but the
    last, max-pooling 2 (floor), dense 44 -> 32 -> classes."""
    layers, c = [], 3
    for filters, k in [(32, 2), (64, 3), (32, 3), (32, 3), (64, 2)]:
        layers += [nn.Conv2d(c, filters, k), nn.Sigmoid(), nn.MaxPool2d(2)]
        c = filters
    layers += [nn.Flatten(), nn.LazyLinear(44), nn.Sigmoid(), nn.Linear(44, 32), nn.Sigmoid(), nn.Linear(32, CLASSES)]
    return nn.Sequential(*layers)


def w_torch(args):
    import torch
    import torchvision
    torch.set_num_threads(args.threads)
    out = {}
    for case in args.cases:
        name, side = case.split(":")
        side = int(side)
        for layout in ("default", "channels_last"):
            torch.manual_seed(0)
            if name == "mobilenetv2":
                model = torchvision.models.mobilenet_v2(num_classes=CLASSES)
            else:
                model = torch_baseline(torch.nn)
            x = torch.rand(args.batch, 3, side, side) * 255
            model(x[:1])  # materialise the lazy layer
            if layout == "channels_last":
                model = model.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            model.train()
            y = torch.arange(args.batch) % CLASSES
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            loss_fn = torch.nn.CrossEntropyLoss()

            def step():
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()

            out[f"{case}|{layout}"] = median_rate(args.batch, step, args.steps, args.warmup)
    return out


def w_keras(args):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    out = {}
    for case in args.cases:
        name, side = case.split(":")
        side = int(side)
        keras.utils.set_random_seed(0)
        if name == "mobilenetv2":
            model = keras.applications.MobileNetV2(input_shape=(side, side, 3), weights=None, classes=CLASSES,
                                                   classifier_activation=None)
        else:
            model = reference_baseline(side)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x = np.random.default_rng(0).uniform(0, 255, (args.batch, side, side, 3)).astype(np.float32)
        y = np.arange(args.batch) % CLASSES
        out[case] = median_rate(args.batch, lambda: model.train_on_batch(x, y), args.steps, args.warmup)
    return out


def w_artemis(args, kernels):
    rates = {}
    env = dict(os.environ, ARTEMIS_KERNELS=kernels, RAYON_NUM_THREADS=str(args.threads))
    for case in args.cases:
        name, side = case.split(":")
        cmd = [args.artemis, "bench", "--json", "--train-only", "--model", name, "--input-size", side,
               "--batch-size", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        rows = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
        rates[case] = next(r["images_per_s"] for r in rows if r["mode"] == "train")
    return rates


def run_worker(name, args):
    cmd = [sys.executable, __file__, "--worker", name, "--threads", str(args.threads), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch), "--artemis", args.artemis, "--cases", *args.cases]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"peer {name} failed (exit {out.returncode}):\n{out.stderr[-3000:]}", flush=True)
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


WORKERS = {
    "artemis": lambda a: w_artemis(a, "own"),
    "artemis-burn": lambda a: w_artemis(a, "burn"),
    "torch": w_torch,
    "keras": w_keras,
}


def med(rounds, key, sub):
    vals = [r[key][sub] for r in rounds if sub in r.get(key, {})]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artemis", default="target/release/artemis")
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="model:side pairs")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed steps before each measurement, for every peer (the first steps of a "
                         "process fault in their buffers' pages and trace graphs)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peers", nargs="+", default=list(WORKERS), help="which of " + ", ".join(WORKERS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    versions = subprocess.run([sys.executable, "-c", "import torch, tensorflow; "
                               "print(f'torch {torch.__version__}, tensorflow {tensorflow.__version__}')"],
                              capture_output=True, text=True).stdout.strip()
    print(f"python {sys.version.split()[0]}; {versions}; {args.threads} threads; batch {args.batch}; "
          f"{args.steps} steps a round after {args.warmup} warm-up; {time.strftime('%Y-%m-%d')}", flush=True)
    rounds = []
    for i in range(args.rounds):
        r = {}
        for name in args.peers:
            t = time.perf_counter()
            r[name] = run_worker(name, args)
            print(f"round {i + 1}/{args.rounds} {name}: {json.dumps(r[name])} ({time.perf_counter() - t:.0f} s)", flush=True)
        rounds.append(r)
    print("\nimages/s, whole-network training step (forward + backward + Adam), medians over rounds")
    head = ["model", "px", "artemis", "artemis (burn kernels)", "PyTorch", "PyTorch channels_last", "Keras",
            "vs burn kernels", "vs PyTorch", "vs PyTorch CL", "vs Keras"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for case in args.cases:
        name, side = case.split(":")
        a = med(rounds, "artemis", case)
        peers = [med(rounds, "artemis-burn", case), med(rounds, "torch", f"{case}|default"),
                 med(rounds, "torch", f"{case}|channels_last"), med(rounds, "keras", case)]
        fmt = lambda v: "-" if v is None else f"{v:.1f}"
        ratio = lambda p: "-" if a is None or p is None else f"{a / p:.2f}x"
        print("| " + " | ".join([name, side, fmt(a)] + [fmt(p) for p in peers] + [ratio(p) for p in peers]) + " |")


if __name__ == "__main__":
    main()
