"""Reads a TensorBoard event file with the tensorboard package's own readers, for tests/test_interop.cpp.

Usage: tensorboard_read.py EVENT_FILE OUT_DIR. Writes OUT_DIR/events.json:
  {"records": n (every record the raw reader accepts, the file_version record included; a record that fails its CRC
   ends the reading, so a wrong checksum shows as a short count),
   "file_version": "...", "scalars": [[tag, step, value], ...], "images": [[tag, step, width, height, file], ...]}
with each image's PNG bytes in OUT_DIR/<file>. Exits with 77 when tensorboard is not installed.
"""
import importlib.util
import json
import os
import sys

if importlib.util.find_spec("tensorboard") is None:
    print("tensorboard is not installed", file=sys.stderr)
    sys.exit(77)
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader  # noqa: E402


def main():
    path, out_dir = sys.argv[1], sys.argv[2]
    events = list(LegacyEventFileLoader(path).Load())
    result = {"records": len(events), "file_version": events[0].file_version if events else "", "scalars": [],
              "images": []}
    # EventAccumulator is what TensorBoard's scalar and image dashboards were built on.
    acc = event_accumulator.EventAccumulator(
        path, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in tags["scalars"]:
        for e in acc.Scalars(tag):
            result["scalars"].append([tag, e.step, e.value])
    for tag in tags["images"]:
        for i, e in enumerate(acc.Images(tag)):
            name = f"image_{tag}_{e.step}_{i}.png"
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(e.encoded_image_string)
            result["images"].append([tag, e.step, e.width, e.height, name])
    with open(os.path.join(out_dir, "events.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
