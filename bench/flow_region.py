"""Flow's order (issue 21): TV-L1 on the whole resized frame then cropped (kinetics-i3d README) vs per 224 crop.

Prints, after a header naming the machine and its load:

* ``epe``: per source, the end-point error (pixels) between the two orders' flow inside the centre
  224 crop: mean, p99, and the mean by distance to the crop's border;
* ``pool``: the flow stream's ``pool`` features of the two orders (one window over all pairs),
  relative L2 -- synthetic calibrated flow weights (i3d_convert.weights.synthetic; DeepMind's trained
  flow weights cannot be had offline), so this shows the input change reaching the features, not
  the size of the change for trained weights;
* ``pixels``: TV-L1 pixels per frame pair for centre / five / ten crops under each order, 4:3
  (256x341) and 16:9 (256x455) frames;
* ``seconds``: measured OpenCV TV-L1 seconds per pair, whole 256x341 frame vs its 224 crop;
* ``mediapipe_flow_storage``: MediaPipe's uint8 + JPEG flow storage against the flow it stored, and
  OpenCV's JPEG decoder against TensorFlow's (the graph's reader) when TensorFlow is installed.

Sources: DeepMind's sample GIF (224x224, resized to 256x256 by the recipe: the flow sees 32 more
rows and columns) and a generated 4:3 video (256x341 texture sliding right 2 px a frame, a bright
square crossing from outside the crop). Run: ``nice -n 10 python bench/flow_region.py [--pairs 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe, machine_info  # noqa: E402

from i3d_convert.dataset.crops import crop_offsets  # noqa: E402
from i3d_convert.flow import tvl1  # noqa: E402
from i3d_convert.io.video_decode import DecodeOptions, decode  # noqa: E402

GIF = Path(__file__).resolve().parent.parent / "tests" / "data" / "kinetics-i3d" / "v_CricketShot_g04_c01_rgb.gif"
CROP = 224
BANDS = ((0, 4), (4, 8), (8, 16), (16, 32), (32, 112))


def generated(count: int) -> np.ndarray:
    """256x341 frames: smoothed texture sliding right 2 px a frame, a 40 px bright square moving left
    6 px a frame that enters the centre crop from the right."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (256, 341 + 2 * count, 3)).astype(np.float32)
    for axis in (0, 1):
        for _ in range(2):
            base = (base + np.roll(base, 1, axis) + np.roll(base, -1, axis)) / 3
    frames = np.stack([base[:, 2 * (count - t): 2 * (count - t) + 341] for t in range(count)])
    for t in range(count):
        left = 300 - 6 * t
        frames[t, 100:140, max(left, 0): left + 40] = 230.0
    return frames.round().astype(np.uint8)


def orders(frames: np.ndarray) -> tuple:
    """(resized order, crop order) raw TV-L1 flow in pixels inside the centre crop, [T-1, 224, 224, 2]."""
    top, left = crop_offsets(frames.shape[1], frames.shape[2], CROP)[0]
    box = (slice(None), slice(top, top + CROP), slice(left, left + CROP))
    whole = tvl1.tvl1_flow(frames)[box]
    crop = tvl1.tvl1_flow(np.ascontiguousarray(frames[box]))
    return whole, crop


def epe_record(name: str, whole: np.ndarray, crop: np.ndarray) -> dict:
    epe = np.linalg.norm(whole - crop, axis=-1)
    ys, xs = np.mgrid[0:CROP, 0:CROP]
    distance = np.minimum(np.minimum(ys, CROP - 1 - ys), np.minimum(xs, CROP - 1 - xs))
    bands = {f"{a}-{b}px": round(float(epe[:, (distance >= a) & (distance < b)].mean()), 4) for a, b in BANDS}
    return {"what": "epe", "source": name, "pairs": int(epe.shape[0]), "mean": round(float(epe.mean()), 4),
            "p99": round(float(np.percentile(epe, 99)), 4), "by_distance_to_crop_border": bands,
            "flow_magnitude_mean": round(float(np.linalg.norm(crop, axis=-1).mean()), 4)}


def pool_rel_l2(whole: np.ndarray, crop: np.ndarray) -> float:
    from i3d_convert.conversion.tf_to_torch import convert_to_file
    from i3d_convert.dataset.features import extract_features
    from i3d_convert.verification.metrics import difference
    from i3d_convert.weights.factory import i3d
    from i3d_convert.weights.synthetic import write_synthetic_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "flow.safetensors"
        convert_to_file(write_synthetic_checkpoint(Path(tmp) / "ckpt", "flow_imagenet"), weights)
        model = i3d("flow_imagenet", weights=str(weights), final_endpoint="Mixed_5c")
        feats = [extract_features(model, tvl1.flow_to_input(f), window=len(f)).features for f in (whole, crop)]
    return float(difference(feats[0], feats[1]).rel_l2)


def pixels() -> list:
    out = []
    for aspect, (h, w) in (("4:3", (256, 341)), ("16:9", (256, 455))):
        for crops, n in (("center", 1), ("five", 5), ("ten", 10)):
            # crop order: TV-L1 on each base crop (mirrors reuse the five fields); resized: one field
            crop_first = (1 if n == 1 else 5) * CROP * CROP
            out.append({"what": "pixels", "frame": f"{h}x{w} ({aspect})", "crops": crops,
                        "crop_order": crop_first, "resized_order": h * w, "ratio": round(h * w / crop_first, 3)})
    return out


def seconds(frames: np.ndarray, pairs: int) -> dict:
    algo = tvl1.TVL1Params().create()
    gray = tvl1.to_gray(frames[: pairs + 1])
    top, left = crop_offsets(gray.shape[1], gray.shape[2], CROP)[0]
    result = {"what": "seconds", "pairs": pairs}
    for name, images in (("whole_256x341", gray), ("crop_224", np.ascontiguousarray(gray[:, top: top + CROP, left: left + CROP]))):
        algo.calc(images[0], images[1], None)  # warm-up
        start = time.perf_counter()
        for t in range(pairs):
            algo.calc(images[t], images[t + 1], None)
        result[name] = round((time.perf_counter() - start) / pairs, 3)
    result["ratio"] = round(result["whole_256x341"] / result["crop_224"], 3)
    return result


def mediapipe_storage(frames: np.ndarray) -> dict:
    """MediaPipe's flow storage (uint8 image, JPEG q100, decoded): end-point error to the flow it stored,
    and OpenCV's JPEG decoder vs TensorFlow's (the reader's ``tf.image.decode_jpeg``) on the same bytes."""
    import cv2

    from i3d_convert.dataset.mediapipe import flow_to_image, image_to_flow, stored_flow
    from i3d_convert.io.video_resize import mediapipe_scale

    scaled = np.stack([mediapipe_scale(f, 256) for f in frames])  # the graph's ScaleImageCalculator: 256x340
    flow = tvl1.tvl1_flow(scaled)
    epe = np.linalg.norm(stored_flow(flow) - flow, axis=-1)
    quantised = np.linalg.norm(image_to_flow(flow_to_image(flow)) - flow, axis=-1)
    record = {"what": "mediapipe_flow_storage", "frame": "x".join(map(str, scaled.shape[1:3])),
              "pairs": int(flow.shape[0]), "epe_mean": round(float(epe.mean()), 4),
              "epe_p99": round(float(np.percentile(epe, 99)), 4),
              "quantisation_only_epe_mean": round(float(quantised.mean()), 4)}
    try:
        import tensorflow as tf
    except ImportError:
        return record
    for kind, images in (("flow", flow_to_image(flow)), ("rgb", scaled)):
        for method in ("", "INTEGER_ACCURATE"):
            levels = []
            for image in images:
                data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 100])[1]
                ours = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].astype(int)
                theirs = tf.image.decode_jpeg(data.tobytes(), dct_method=method).numpy().astype(int)
                levels.append(np.abs(ours - theirs))
            levels = np.stack(levels)
            label = f"{kind}_cv2_vs_tf_{method.lower() or 'default'}"
            record.update({f"{label}_max_levels": int(levels.max()),
                           f"{label}_pixels_differing": round(float((levels.max(axis=-1) > 0).mean()), 5)})
    record["tf_version"] = tf.__version__
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8, help="frame pairs per source (default 8)")
    parser.add_argument("--mediapipe-only", action="store_true", help="only the MediaPipe storage record")
    args = parser.parse_args()
    info = machine_info(threads=1)
    print(describe(info), "| load:", " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    if args.mediapipe_only:
        print(json.dumps(mediapipe_storage(generated(5))), flush=True)
        return
    sources = {
        "sample_gif_224_to_256x256": decode(GIF, DecodeOptions(crop=None))[: args.pairs + 1],
        "generated_256x341": generated(args.pairs + 1),
    }
    for name, frames in sources.items():
        whole, crop = orders(frames)
        print(json.dumps(epe_record(name, whole, crop)), flush=True)
        print(json.dumps({"what": "pool", "source": name, "weights": "synthetic calibrated flow_imagenet",
                          "rel_l2": round(pool_rel_l2(whole, crop), 5)}), flush=True)
    for record in pixels():
        print(json.dumps(record))
    print(json.dumps(seconds(sources["generated_256x341"], min(args.pairs, 4))), flush=True)
    print(json.dumps(mediapipe_storage(sources["generated_256x341"][:5])), flush=True)


if __name__ == "__main__":
    main()
