"""The evaluation tests import their pycocotools reference (coco_reference.py) by name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
