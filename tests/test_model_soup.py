"""Weight averaging (rule 23's soup)."""

import pytest
import torch

from napari_tokenunify.model import build_model, load_model, save_model
from napari_tokenunify.model.soup import SoupError, average_weights


def _pair():
    torch.manual_seed(0)
    a = build_model("tiny")
    b = build_model("tiny")
    with torch.no_grad():
        for p in b.parameters():
            p.add_(1.0)
    return a, b


def test_soup_is_the_mean_of_the_weights_and_records_its_ingredients(tmp_path):
    a, b = _pair()
    a.card.name = "first"
    soup = average_weights([a, b])
    for (n, pa), pb, ps in zip(a.state_dict().items(), b.state_dict().values(), soup.state_dict().values(), strict=True):
        if pa.is_floating_point():
            assert torch.allclose(ps, (pa + pb) / 2, atol=1e-6), n
    assert [i["name"] for i in soup.card.training["soup"]][0] == "first"
    assert len({i["sha256"] for i in soup.card.training["soup"]}) == 2
    # the inputs are untouched and the soup saves and loads as a model
    assert not torch.equal(next(a.parameters()), next(soup.parameters()))
    assert soup.source_path is None
    save_model(soup, tmp_path / "soup", soup.card)
    back = load_model(tmp_path / "soup", device="cpu")
    x = torch.rand(1, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.allclose(back(x), soup.eval()(x), atol=1e-6)


def test_soup_refuses_one_model_and_different_architectures():
    a, _ = _pair()
    with pytest.raises(SoupError, match="at least two"):
        average_weights([a])
    other = build_model("tiny", out_channels=9)
    with pytest.raises(SoupError, match="bundle them first"):
        average_weights([a, other])
