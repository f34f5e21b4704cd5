"""``tokenunify evaluate SEG GT``: VOI (split, merge) and adapted Rand error."""

from __future__ import annotations

import argparse
import json

from .engine_common import open_image, print_metrics


def run(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate

    seg = open_image(args.segmentation, args.seg_dataset).data
    gt = open_image(args.ground_truth, args.gt_dataset).data
    mask = open_image(args.mask, args.mask_dataset).data if args.mask else None
    ignore = None if args.ignore_label < 0 else args.ignore_label
    import sys
    import warnings

    from ..engine.evaluate import GroundTruthWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GroundTruthWarning)
        metrics = evaluate(seg, gt, ignore_label=ignore, mask=mask,
                           boundary_tolerance=args.boundary_tolerance)
    for w in caught:
        if issubclass(w.category, GroundTruthWarning):
            print(f"tokenunify evaluate: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print_metrics(metrics)
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="VOI and adapted Rand error of a segmentation")
    p.add_argument("segmentation", help="labels to evaluate")
    p.add_argument("ground_truth", help="ground-truth labels")
    p.add_argument("--seg-dataset", help="dataset inside SEG (HDF5/Zarr/N5)")
    p.add_argument("--gt-dataset", help="dataset inside GT (HDF5/Zarr/N5)")
    p.add_argument("--mask", help="voxels to evaluate (non-zero = counted)")
    p.add_argument("--mask-dataset", help="dataset inside MASK")
    p.add_argument("--ignore-label", type=int, default=0,
                   help="ground-truth label left out (default 0; -1 for none)")
    p.add_argument("--boundary-tolerance", type=int, default=0, metavar="R",
                   help="also leave out voxels within R voxels of a ground-truth boundary "
                        "(CREMI-style tolerance; default 0: every voxel counts)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)
