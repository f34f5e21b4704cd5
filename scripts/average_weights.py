#!/usr/bin/env python
"""Average the weights of models finetuned from one start (a model soup, rule 23).

  python scripts/average_weights.py OUT MODEL MODEL [MODEL...]

OUT gets ``model.safetensors`` and the first model's card, with the ingredients recorded under
``training.soup``. The models must share architecture and output channels (bundle them first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_tokenunify.model import load_model, save_model
from napari_tokenunify.model.soup import SoupError, average_weights


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("models", nargs="+")
    args = p.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"{args.out} is not empty: give a new folder")
    try:
        soup = average_weights([load_model(m, device="cpu") for m in args.models])
    except SoupError as e:
        sys.exit(str(e))
    save_model(soup, args.out, soup.card)
    print(f"wrote the average of {len(args.models)} models to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
