"""Our UNETR-style decoder blocks against MONAI's (what TokenUnify's SegMamba uses): a network
assembled from MONAI blocks around our encoder loads our state_dict strictly and computes the
same output. Skipped when MONAI is not installed."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from napari_tokenunify.model import build_model

monai_unetr = pytest.importorskip("monai.networks.blocks.unetr_block")
monai_dyn = pytest.importorskip("monai.networks.blocks.dynunet_block")


pytestmark = pytest.mark.usefixtures("single_torch_thread")


class MonaiSegMamba(nn.Module):
    """SegMamba's decoder as written in TokenUnify's src/segmamba.py (MONAI blocks,
    res_block=True, norm "instance"), around our encoder ``vit``."""

    def __init__(self, vit, cin, cout, f, hidden, k):
        super().__init__()
        basic = monai_unetr.UnetrBasicBlock
        up = monai_unetr.UnetrUpBlock
        kw = dict(spatial_dims=3, kernel_size=k, norm_name="instance", res_block=True)
        self.vit = vit
        self.encoder1 = basic(in_channels=cin, out_channels=f[0], stride=1, **kw)
        self.encoder2 = basic(in_channels=f[0], out_channels=f[1], stride=1, **kw)
        self.encoder3 = basic(in_channels=f[1], out_channels=f[2], stride=1, **kw)
        self.encoder4 = basic(in_channels=f[2], out_channels=f[3], stride=1, **kw)
        self.encoder5 = basic(in_channels=f[3], out_channels=hidden, stride=1, **kw)
        self.decoder5 = up(in_channels=hidden, out_channels=f[3], upsample_kernel_size=2, **kw)
        self.decoder4 = up(in_channels=f[3], out_channels=f[2], upsample_kernel_size=2, **kw)
        self.decoder3 = up(in_channels=f[2], out_channels=f[1], upsample_kernel_size=2, **kw)
        self.decoder2 = up(in_channels=f[1], out_channels=f[0], upsample_kernel_size=2, **kw)
        self.decoder1 = basic(in_channels=f[0], out_channels=f[0], stride=1, **kw)
        self.out = monai_dyn.UnetOutBlock(spatial_dims=3, in_channels=f[0], out_channels=cout)

    def forward(self, x):
        outs = self.vit(x)
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(outs[0])
        enc3 = self.encoder3(outs[1])
        enc4 = self.encoder4(outs[2])
        hidden = self.encoder5(outs[3])
        d = self.decoder5(hidden, enc4)
        d = self.decoder4(d, enc3)
        d = self.decoder3(d, enc2)
        d = self.decoder2(d, enc1)
        return torch.sigmoid(self.out(self.decoder1(d)))


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_monai_assembly_has_our_keys(preset):
    with torch.device("meta"):
        ours = build_model(preset)
        c = ours.config
        ref = MonaiSegMamba(ours.vit, c.in_channels, c.out_channels, c.feature_sizes, c.hidden_size, c.kernel_size)
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert a == b


def test_monai_assembly_computes_our_output():
    torch.manual_seed(0)
    ours = build_model("tiny").eval()
    c = ours.config
    ref = MonaiSegMamba(ours.vit, c.in_channels, c.out_channels, c.feature_sizes, c.hidden_size, c.kernel_size)
    with torch.no_grad():  # non-trivial weights everywhere
        for p in ours.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref.load_state_dict(ours.state_dict(), strict=True)
    ref.eval()
    x = torch.rand(1, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
