"""Writes segmamba_base_keys.json: the state_dict keys and shapes of TokenUnify's finetuning
network ``SegMamba()`` (src/segmamba.py at commit 221674f, default arguments: in 1, out 3,
depths [2,2,2,2], feat_size [32,64,128,256], hidden 512, kernel (1,5,5), MONAI UNETR blocks with
res_block=True and instance norms without affine, Mamba(bimamba_type="v3", d_state 16, d_conv 4,
expand 2)). Written by hand from reading that code, independently of our module tree."""

from __future__ import annotations

import json
import math
from pathlib import Path


def mamba(prefix: str, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> dict:
    di = expand * dim
    rank = math.ceil(dim / 16)
    out = {f"{prefix}in_proj.weight": [2 * di, dim]}
    for sfx in ("", "_b", "_s"):
        out[f"{prefix}A{sfx}_log"] = [di, d_state]
        out[f"{prefix}conv1d{sfx}.weight"] = [di, 1, d_conv]
        out[f"{prefix}conv1d{sfx}.bias"] = [di]
        out[f"{prefix}x_proj{sfx}.weight"] = [rank + 2 * d_state, di]
        out[f"{prefix}dt_proj{sfx}.weight"] = [di, rank]
        out[f"{prefix}dt_proj{sfx}.bias"] = [di]
        out[f"{prefix}D{sfx}"] = [di]
    out[f"{prefix}out_proj.weight"] = [dim, di]
    return out


def res_block(prefix: str, cin: int, cout: int, k=(1, 5, 5)) -> dict:
    out = {
        f"{prefix}conv1.conv.weight": [cout, cin, *k],
        f"{prefix}conv2.conv.weight": [cout, cout, *k],
    }
    if cin != cout:
        out[f"{prefix}conv3.conv.weight"] = [cout, cin, 1, 1, 1]
    return out


def segmamba(depths=(2, 2, 2, 2), dims=(32, 64, 128, 256), hidden=512, cin=1, cout=3) -> dict:
    keys: dict[str, list[int]] = {
        "vit.downsample_layers.0.0.weight": [dims[0], cin, 1, 7, 7],
        "vit.downsample_layers.0.0.bias": [dims[0]],
    }
    for i in range(3):
        keys[f"vit.downsample_layers.{i + 1}.1.weight"] = [dims[i + 1], dims[i], 1, 2, 2]
        keys[f"vit.downsample_layers.{i + 1}.1.bias"] = [dims[i + 1]]
    for i, d in enumerate(dims):
        for j in range(depths[i]):
            p = f"vit.stages.{i}.{j}."
            keys[p + "norm.weight"] = [d]
            keys[p + "norm.bias"] = [d]
            keys.update(mamba(p + "mamba.", d))
        for n, k in (("proj", 3), ("proj2", 3), ("proj3", 1), ("proj4", 1)):
            keys[f"vit.gscs.{i}.{n}.weight"] = [d, d, k, k, k]
            keys[f"vit.gscs.{i}.{n}.bias"] = [d]
        keys[f"vit.mlps.{i}.fc1.weight"] = [2 * d, d, 1, 1, 1]
        keys[f"vit.mlps.{i}.fc1.bias"] = [2 * d]
        keys[f"vit.mlps.{i}.fc2.weight"] = [d, 2 * d, 1, 1, 1]
        keys[f"vit.mlps.{i}.fc2.bias"] = [d]
    chans = [cin, *dims]
    for i in range(4):
        keys.update(res_block(f"encoder{i + 1}.layer.", chans[i], chans[i + 1]))
    keys.update(res_block("encoder5.layer.", dims[3], hidden))
    ups = [(5, hidden, dims[3]), (4, dims[3], dims[2]), (3, dims[2], dims[1]), (2, dims[1], dims[0])]
    for n, a, b in ups:
        keys[f"decoder{n}.transp_conv.conv.weight"] = [a, b, 2, 2, 2]
        keys.update(res_block(f"decoder{n}.conv_block.", 2 * b, b))
    keys.update(res_block("decoder1.layer.", dims[0], dims[0]))
    keys["out.conv.conv.weight"] = [cout, dims[0], 1, 1, 1]
    keys["out.conv.conv.bias"] = [cout]
    return keys


if __name__ == "__main__":
    keys = segmamba()
    total = sum(math.prod(s) for s in keys.values())
    out = Path(__file__).with_name("segmamba_base_keys.json")
    out.write_text(json.dumps({"n_parameters": total, "keys": keys}, indent=1) + "\n")
    print(f"{len(keys)} keys, {total} parameters -> {out}")
