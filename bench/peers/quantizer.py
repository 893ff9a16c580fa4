"""artemis's int8 graph against ONNX Runtime's own quantizer, on the same float graph.

    bench/peers/run --quantizer --run RUN [--data ROOT] [--threads 2]

RUN is a run folder after `artemis export --run RUN --quantize int8` (its export/model.onnx and
export/model-int8.onnx). The script preprocesses the run's validation pictures, a seeded
sample of 256 training pictures (calibration) and up to 800 other training pictures with
Pillow, quantizes the float graph with `onnxruntime.quantization.quantize_static` (QDQ,
per-channel int8 weights, uint8 activations) under three calibrators, and prints how often
each int8 graph's top class differs from the float graph's, and the mean |difference| of the
float graph's top-class probability. Pillow's resize is not artemis's, so the counts differ
slightly from `artemis eval`'s; every graph sees the same tensors. Only runs that squash
as-decoded pictures (no `--framing head`) are supported.
"""

import argparse
import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from peers import MEAN, STD, pil_load


def preprocess(path, pre):
    """Pillow's decode and bilinear resize (peers.py's), then the run's scaling, as CHW."""
    x = pil_load(path, pre["width"], draft=False)
    scaling = pre["scaling"]
    if scaling == "lite":
        x = (x - 127) / 128
    elif scaling == "imagenet":
        x = (x / 255 - MEAN) / STD
    elif scaling == "inception":
        x = x / 127.5 - 1
    elif scaling == "unit":
        x = x / 255
    return x.transpose(2, 0, 1)


def tensors(run, data_root):
    config = json.loads((run / "config.json").read_text())
    pre = config["preprocess"]
    square = pre["width"] == pre["height"]
    if pre.get("framing", "as-is") != "as-is" or pre["resize"] != "squash" or not square:
        raise SystemExit(f"{run}: only square, squashed, as-decoded runs are supported")
    manifest = Path(config["manifest"])
    root = Path(data_root or config["data_root"])
    rows = [line.rstrip("\n").split("\t") for line in manifest.open() if not line.startswith("#")]
    rows = rows[1:]
    val = [r[1] for r in rows if r[0] == "val"]
    train = [r[1] for r in rows if r[0] == "train"]
    random.Random(7).shuffle(train)
    load = lambda paths: np.stack([preprocess(root / p, pre) for p in paths]).astype(np.float32)
    return load(val), load(train[:256]), load(train[256:1056])


def session(path, threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def probabilities(path, x, threads):
    s = session(path, threads)
    name = s.get_inputs()[0].name
    z = np.concatenate([s.run(None, {name: x[i : i + 32]})[0] for i in range(0, len(x), 32)])
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--data", help="data root (default: the run's)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    val, cal, train = tensors(a.run, a.data)
    float_graph = a.run / "export" / "model.onnx"
    graphs = {"artemis (export --quantize int8)": a.run / "export" / "model-int8.onnx"}
    tmp = Path(tempfile.mkdtemp())
    pre = tmp / "pre.onnx"
    quant_pre_process(str(float_graph), str(pre), skip_symbolic_shape=True)
    name = session(float_graph, 1).get_inputs()[0].name
    for label, method, extra in [
        ("onnxruntime, min/max", CalibrationMethod.MinMax, {}),
        ("onnxruntime, moving-average min/max", CalibrationMethod.MinMax, {"CalibMovingAverage": True}),
        ("onnxruntime, percentile", CalibrationMethod.Percentile, {}),
    ]:
        batches = iter([{name: cal[i : i + 32]} for i in range(0, len(cal), 32)])

        class Reader(CalibrationDataReader):
            def get_next(self):
                return next(batches, None)

        out = tmp / f"{len(graphs)}.onnx"
        quantize_static(
            str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=method, extra_options=extra,
        )
        graphs[label] = out
    print(f"{'split':<10} {'n':>5}  {'int8 graph':<38} {'disagreements':>13} {'mean |dp|':>9}")
    for split, x in [("val", val), ("train", train)]:
        f = probabilities(float_graph, x, a.threads)
        top = f.argmax(1)
        rows = np.arange(len(x))
        for label, path in graphs.items():
            q = probabilities(path, x, a.threads)
            dis = int((q.argmax(1) != top).sum())
            dp = np.abs(f[rows, top] - q[rows, top]).mean()
            print(f"{split:<10} {len(x):>5}  {label:<38} {dis:>13} {dp:>9.4f}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
