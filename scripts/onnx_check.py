"""Checks striate's ONNX export with the real tools: `onnx.checker.check_model` (full check,
with shape inference) and ONNX Runtime's logits against striate's `predict` on the same input.

Usage: python3 scripts/onnx_check.py <dir> [<dir> ...]
Each <dir> holds `model.onnx`, and `input.bin` / `logits.bin` (little-endian f32) with their
shapes in `shapes.json` ({"input": [...], "logits": [...]}), as the Rust test
`tests/onnx_runtime.rs` writes them. Prints one line per model with the largest absolute
difference and exits non-zero if any exceeds the tolerance (1e-4) or a check fails.
"""
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime

TOLERANCE = 1e-4


def check(directory: pathlib.Path) -> float:
    model_path = directory / "model.onnx"
    onnx.checker.check_model(str(model_path), full_check=True)
    model = onnx.load(str(model_path))
    shapes = json.loads((directory / "shapes.json").read_text())
    x = np.fromfile(directory / "input.bin", dtype="<f4").reshape(shapes["input"])
    expected = np.fromfile(directory / "logits.bin", dtype="<f4").reshape(shapes["logits"])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(model_path), options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    batch = session.get_inputs()[0].shape[0]
    assert isinstance(batch, str), f"batch dimension is not dynamic: {batch!r}"
    (actual,) = session.run(None, {input_name: x})
    assert actual.shape == expected.shape, f"{actual.shape} != {expected.shape}"
    # the batch is dynamic: one image alone gives the same logits as in the batch
    (single,) = session.run(None, {input_name: x[:1]})
    assert np.allclose(single, actual[:1], atol=TOLERANCE), "batch of one differs"
    names = {t.name for t in model.graph.initializer}
    return float(np.abs(actual - expected).max()), len(names), float(np.abs(expected).max())


def main() -> int:
    failed = False
    for arg in sys.argv[1:]:
        directory = pathlib.Path(arg)
        try:
            worst, initializers, scale = check(directory)
        except Exception as e:  # report every model, then fail
            print(f"{directory.name}: FAILED: {e}")
            failed = True
            continue
        status = "ok" if worst <= TOLERANCE else "TOO LARGE"
        print(
            f"{directory.name}: max |onnxruntime - striate| = {worst:.3g} "
            f"(max |logit| {scale:.3g}, {initializers} initializers) {status}"
        )
        failed |= worst > TOLERANCE
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
