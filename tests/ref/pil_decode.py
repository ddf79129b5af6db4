"""Reference for the image-folder test: Pillow's decode of the given files, converted to RGB as
torchvision's ImageFolder does, saved as one uint8 [N, 3, H, W] .npy.

Usage: pil_decode.py OUT.npy FILE...
"""
import sys

import numpy as np
from PIL import Image

out, files = sys.argv[1], sys.argv[2:]
images = [np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files]
np.save(out, np.stack(images).astype(np.uint8))
