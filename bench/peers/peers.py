"""artemis's inference against the Python peers, measured in one run on one machine.

1. Runs `artemis bench --inference --json` (burn and ONNX Runtime through artemis, batch 1
   and 32, and end-to-end folder prediction), keeping the benchmark's run folders so that
2. Python's onnxruntime runs the very same exported graphs, and PyTorch (default and
   channels_last) and TensorFlow/Keras run the same architectures (torchvision and
   keras.applications, 12 classes, random weights: speed does not depend on their values);
3. the folder pipeline a Python user would write (PIL or OpenCV decoding and resizing, numpy
   normalisation, batches of 32, one JSON row per file) runs on the same folder with the same
   exported MobileNetV2 graph and with PyTorch;
4. prints every figure and the ratios the README quotes.

Run it through `bench/peers/run`, which makes the throw-away venv with the pinned packages.
Figures are medians of repeated timed calls after one warm-up call, as artemis measures.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BATCHES = (1, 32)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def median_rate(batch, fn, min_steps, budget):
    fn()
    rates, start = [], time.perf_counter()
    while len(rates) < min_steps or (time.perf_counter() - start < budget and len(rates) < 50):
        t = time.perf_counter()
        fn()
        rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)


def steps_for(batch, steps):
    return (10, 3.0) if batch == 1 else (steps, 10.0)


def run_artemis(args, keep):
    cmd = [args.artemis, "bench", "--inference", "--json", "--keep", keep,
           "--model", ",".join(args.models), "--threads", str(args.threads), "--steps", str(args.steps)]
    if args.data:
        cmd += ["--data", args.data, "--burn-files", str(args.burn_files)]
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("{"))
    print("\n".join(lines[:start]), flush=True)
    return json.loads("\n".join(lines[start:]))


def python_onnxruntime(args, keep, rows):
    import onnxruntime as ort
    out = {}
    for r in rows:
        if r["batch"] != BATCHES[0]:
            continue
        name, side = r["model"], r["input"]
        path = os.path.join(keep, f"{name}-{side}", "export", "model.onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for b in BATCHES:
            x = np.random.default_rng(0).uniform(-1, 1, (b, 3, side, side)).astype(np.float32)
            n, budget = steps_for(b, args.steps)
            out[(name, b)] = median_rate(b, lambda: sess.run(["logits"], {"image": x}), n, budget)
    return out


def torch_models(side):
    import torchvision
    return {
        "mobilenetv2": lambda: torchvision.models.mobilenet_v2(num_classes=12),
        "inceptionv3": lambda: torchvision.models.inception_v3(num_classes=12, aux_logits=False, init_weights=False),
    }


def python_torch(args, rows):
    import torch
    torch.set_num_threads(args.threads)
    out = {}
    for r in rows:
        if r["batch"] != BATCHES[0] or r["model"] not in torch_models(r["input"]):
            continue
        name, side = r["model"], r["input"]
        model = torch_models(side)[name]().eval()
        for layout in ("default", "channels_last"):
            m = model.to(memory_format=torch.channels_last) if layout == "channels_last" else model
            for b in BATCHES:
                x = torch.rand(b, 3, side, side)
                if layout == "channels_last":
                    x = x.to(memory_format=torch.channels_last)
                n, budget = steps_for(b, args.steps)
                with torch.inference_mode():
                    out[(name, layout, b)] = median_rate(b, lambda: m(x).numpy(), n, budget)
    return out


def keras_models(side):
    import keras
    return {
        "mobilenetv2": lambda: keras.applications.MobileNetV2(input_shape=(side, side, 3), weights=None, classes=12),
        "inceptionv3": lambda: keras.applications.InceptionV3(input_shape=(side, side, 3), weights=None, classes=12),
        "efficientnet-lite0": None,
        "baseline": lambda: reference_baseline(side),
    }


def reference_baseline(side):
    """The reference project's baseline CNN (Keras, sigmoid, valid padding)."""
    import keras
    from keras import layers
    m = keras.Sequential([keras.Input((side, side, 3))])
    for filters, k in [(32, 2), (64, 3), (32, 3), (32, 3), (64, 2)]:
        m.add(layers.Conv2D(filters, k, activation="sigmoid"))
        m.add(layers.MaxPooling2D(2))
    m.add(layers.Flatten())
    m.add(layers.Dense(44, activation="sigmoid"))
    m.add(layers.Dense(32, activation="sigmoid"))
    m.add(layers.Dense(12))
    return m


def python_keras(args, rows):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    out = {}
    for r in rows:
        if r["batch"] != BATCHES[0]:
            continue
        name, side = r["model"], r["input"]
        make = keras_models(side).get(name)
        if make is None:
            continue
        model = make()
        fn = tf.function(lambda x: model(x, training=False))
        for b in BATCHES:
            x = tf.random.uniform((b, side, side, 3))
            n, budget = steps_for(b, args.steps)
            out[(name, b)] = median_rate(b, lambda: fn(x).numpy(), n, budget)
    return out


def keras_fine_tuning(args, side=160, batch=32, train_images=2628):
    """Keras fine-tuning of MobileNetV2 the reference's way (whole network trainable, 160 px,
    GlobalAveragePooling, Dropout 0.5, Dense softmax, Adam 1e-3, batch 32): training
    images/s, from which an epoch over the reference split's 2,628 training images and its
    30 epochs follow. Random weights: the ImageNet ones cannot be fetched here, and the speed
    does not depend on them."""
    import keras
    import tensorflow as tf
    base = keras.applications.MobileNetV2(input_shape=(side, side, 3), weights=None, include_top=False)
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dropout(0.5)(x)
    out = keras.layers.Dense(12, activation="softmax")(x)
    model = keras.Model(base.input, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    xs = np.random.default_rng(0).uniform(0, 255, (batch * 4, side, side, 3)).astype(np.float32)
    ys = keras.utils.to_categorical(np.arange(batch * 4) % 12, 12)
    model.fit(xs[:batch], ys[:batch], batch_size=batch, epochs=1, verbose=0)  # warm-up (tracing)
    rates = []
    for _ in range(max(3, args.steps)):
        t = time.perf_counter()
        model.fit(xs, ys, batch_size=batch, epochs=1, verbose=0)
        rates.append(len(xs) / (time.perf_counter() - t))
    r = statistics.median(rates)
    return r, train_images / r


def folder_files(data):
    exts = (".jpg", ".jpeg", ".png")
    return sorted(p for p in glob.glob(os.path.join(data, "**", "*"), recursive=True) if p.lower().endswith(exts))


def pil_load(path, side, draft):
    from PIL import Image
    im = Image.open(path)
    if draft:
        im.draft("RGB", (side, side))  # DCT-scaled JPEG decoding (libjpeg-turbo)
    im = im.convert("RGB").resize((side, side), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32)


def cv2_load(path, side):
    import cv2
    im = cv2.imread(path, cv2.IMREAD_COLOR)
    im = cv2.cvtColor(cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return im.astype(np.float32)


def pipeline(files, load, infer, classes, batch=32):
    """Decode, resize, normalise, infer in batches, one JSON row per file: what a Python user
    writes; returns images/s."""
    rows, t = [], time.perf_counter()
    for i in range(0, len(files), batch):
        chunk = files[i:i + batch]
        x = np.stack([(load(p) / 255.0 - MEAN) / STD for p in chunk]).astype(np.float32)
        logits = infer(x)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        for f, pr in zip(chunk, p):
            k = int(pr.argmax())
            rows.append({"input": f, "class": classes[k], "confidence": float(pr[k]),
                         "probabilities": [[c, float(v)] for c, v in zip(classes, pr)]})
    json.dumps(rows)
    return len(files) / (time.perf_counter() - t)


def python_pipelines(args, keep, framework, side=224):
    files = folder_files(args.data)
    with open(os.path.join(keep, f"mobilenetv2-{side}", "config.json")) as f:
        classes = json.load(f)["classes"]
    out = {}
    if framework == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(os.path.join(keep, f"mobilenetv2-{side}", "export", "model.onnx"), so,
                                    providers=["CPUExecutionProvider"])
        infer = lambda x: sess.run(["logits"], {"image": x.transpose(0, 3, 1, 2).copy()})[0]
        out[f"PIL + onnxruntime ({len(files)} files)"] = pipeline(files, lambda p: pil_load(p, side, False), infer, classes)
        out[f"PIL draft + onnxruntime ({len(files)} files)"] = pipeline(files, lambda p: pil_load(p, side, True), infer, classes)
        out[f"OpenCV + onnxruntime ({len(files)} files)"] = pipeline(files, lambda p: cv2_load(p, side), infer, classes)
    else:
        import torch
        torch.set_num_threads(args.threads)
        tm = torch_models(side)["mobilenetv2"]().eval().to(memory_format=torch.channels_last)

        def infer(x):
            with torch.inference_mode():
                t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
                return tm(t).numpy()

        n = min(len(files), args.burn_files)
        out[f"PIL + PyTorch channels_last ({n} files)"] = pipeline(files[:n], lambda p: pil_load(p, side, False), infer, classes)
    return out


WORKERS = {}


def worker(fn):
    WORKERS[fn.__name__] = fn
    return fn


@worker
def w_ort(args, keep, rows):
    return {f"{m}|{b}": v for (m, b), v in python_onnxruntime(args, keep, rows).items()}


@worker
def w_torch(args, keep, rows):
    return {f"{m}|{l}|{b}": v for (m, l, b), v in python_torch(args, rows).items()}


@worker
def w_keras(args, keep, rows):
    return {f"{m}|{b}": v for (m, b), v in python_keras(args, rows).items()}


@worker
def w_keras_train(args, keep, rows):
    r, epoch = keras_fine_tuning(args)
    return {"rate": r, "epoch_s": epoch}


@worker
def w_pipelines_ort(args, keep, rows):
    return python_pipelines(args, keep, "onnxruntime")


@worker
def w_pipelines_torch(args, keep, rows):
    return python_pipelines(args, keep, "torch")


def run_worker(name, args, keep, rows):
    """Each framework in a process of its own: TensorFlow, PyTorch and onnxruntime loaded
    together in one process crashed (segmentation fault) here."""
    cmd = [sys.executable, __file__, "--worker", name, "--keep", keep, "--rows", json.dumps(rows),
           "--threads", str(args.threads), "--steps", str(args.steps), "--burn-files", str(args.burn_files)]
    if args.data:
        cmd += ["--data", args.data]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"peer {name} failed (exit {out.returncode}):\n{out.stderr[-2000:]}", flush=True)
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artemis", default="target/release/artemis")
    ap.add_argument("--data", default="../shared/data/artemis-planes")
    ap.add_argument("--models", nargs="+", default=["mobilenetv2", "efficientnet-lite0", "inceptionv3", "baseline"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--burn-files", type=int, default=256)
    ap.add_argument("--keras-train", action="store_true",
                    help="also time Keras fine-tuning MobileNetV2 the reference's way (160 px, whole network)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat everything this many times, artemis and the peers alternating, and "
                         "report medians (a shared machine's speed drifts within minutes)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--keep", help=argparse.SUPPRESS)
    ap.add_argument("--rows", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args, args.keep, json.loads(args.rows))))
        return
    keep = tempfile.mkdtemp(prefix="artemis-peers-")
    versions = subprocess.run([sys.executable, "-c", "import onnxruntime, torch, tensorflow, PIL, cv2; "
                               "print(f'onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, "
                               "tensorflow {tensorflow.__version__}, pillow {PIL.__version__}, opencv {cv2.__version__}')"],
                              capture_output=True, text=True).stdout.strip()
    print(f"python {sys.version.split()[0]}; {versions}; {args.threads} threads; {time.strftime('%Y-%m-%d')}")
    rounds = []
    for i in range(max(1, args.rounds)):
        if args.rounds > 1:
            print(f"\n== round {i + 1} of {args.rounds}", flush=True)
        art = run_artemis(args, keep)
        rows = art["inference"]
        rounds.append({
            "art": art,
            "ort": run_worker("w_ort", args, keep, rows),
            "torch": run_worker("w_torch", args, keep, rows),
            "keras": run_worker("w_keras", args, keep, rows),
            "pipes": ({**run_worker("w_pipelines_ort", args, keep, rows),
                       **run_worker("w_pipelines_torch", args, keep, rows)} if args.data else {}),
        })
    med = lambda xs: statistics.median(xs) if xs else None
    rows = [dict(r, onnxruntime=med([x["art"]["inference"][j]["onnxruntime"] for x in rounds]),
                 burn=med([x["art"]["inference"][j]["burn"] for x in rounds]))
            for j, r in enumerate(rounds[0]["art"]["inference"])]
    merge = lambda key: {k: med([x[key][k] for x in rounds if k in x[key]]) for k in rounds[0][key]}
    py_ort, py_torch, py_keras = merge("ort"), merge("torch"), merge("keras")
    folder = [dict(r, images_per_s=med([x["art"]["folder"][j]["images_per_s"] for x in rounds]))
              for j, r in enumerate(rounds[0]["art"]["folder"])]
    pipes = merge("pipes")
    if args.rounds > 1:
        print(f"\nmedians over {args.rounds} rounds", flush=True)
    print("\nmodel inference, median images/s (same graphs for both onnxruntime columns)")
    head = f"{'model':<18} {'input':>5} {'batch':>5} {'artemis ort':>11} {'artemis burn':>12} {'python ort':>10} " \
           f"{'torch':>7} {'torch cl':>8} {'keras':>7} {'vs py ort':>9} {'vs torch cl':>11}"
    print(head)
    for r in rows:
        m, b = r["model"], r["batch"]
        a = r["onnxruntime"]
        po = py_ort.get(f"{m}|{b}")
        td = py_torch.get(f"{m}|default|{b}")
        tc = py_torch.get(f"{m}|channels_last|{b}")
        kr = py_keras.get(f"{m}|{b}")
        f = lambda v: "-" if v is None else f"{v:.1f}"
        ratio = lambda x, y: "-" if x is None or y is None else f"{x / y:.2f}x"
        print(f"{m:<18} {r['input']:>5} {b:>5} {f(a):>11} {f(r['burn']):>12} {f(po):>10} "
              f"{f(td):>7} {f(tc):>8} {f(kr):>7} {ratio(a, po):>9} {ratio(a, tc):>11}", flush=True)

    if args.keras_train:
        k = run_worker("w_keras_train", args, keep, rows)
        if k:
            print(f"\nKeras fine-tuning MobileNetV2 the reference's way (160 px, whole network, batch 32): "
                  f"{k['rate']:.1f} training images/s; an epoch of 2,628 images {k['epoch_s']:.0f} s, "
                  f"the reference's 30 epochs {30 * k['epoch_s'] / 60:.0f} min", flush=True)

    if args.data:
        ours = next((r for r in folder if r["model"] == "mobilenetv2" and r["engine"] == "onnxruntime"), None)
        print(f"\nend-to-end folder prediction, MobileNetV2 224 px, {args.data}, images/s")
        for r in folder:
            if r["model"] == "mobilenetv2":
                print(f"  artemis predict ({r['engine']}, {r['files']} files): {r['images_per_s']:.1f}")
        for name, v in pipes.items():
            print(f"  python {name}: {v:.1f}")
        if ours and pipes:
            best = max(pipes.values())
            print(f"  artemis / fastest Python pipeline: {ours['images_per_s'] / best:.2f}x")


if __name__ == "__main__":
    main()
