"""The seeded watershed over the affinity graph (engine.edge_flood) and its use for fragments."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tokenunify.affinities import labels_to_affinities
from napari_tokenunify.engine.edge_flood import flood_affinities
from napari_tokenunify.engine.fragments import fragments_from_affinities


def test_compiled_flood_matches_the_reference_flood():
    rng = np.random.default_rng(3)
    affs = rng.random((3, 9, 11, 13)).astype(np.float32)
    seeds = np.zeros((9, 11, 13), dtype=np.uint64)
    seeds.flat[rng.choice(seeds.size, 25, replace=False)] = np.arange(1, 26)
    compiled = flood_affinities(affs, seeds)
    reference = flood_affinities(affs, seeds, compiled=False)
    np.testing.assert_array_equal(compiled, reference)
    assert (compiled > 0).all()  # a connected grid: every voxel reached
    assert set(np.unique(compiled)) == set(range(1, 26))
    # seeds keep their ids
    np.testing.assert_array_equal(compiled[seeds > 0], seeds[seeds > 0])


def test_a_cut_stays_on_the_link_the_affinities_cut():
    # two bodies meeting between x = 4 and x = 5; one seed deep in each
    truth = np.ones((4, 6, 10), dtype=np.uint32)
    truth[..., 5:] = 2
    affs, _ = labels_to_affinities(truth)
    seeds = np.zeros(truth.shape, dtype=np.uint64)
    seeds[2, 3, 0], seeds[2, 3, 9] = 1, 2
    np.testing.assert_array_equal(flood_affinities(affs, seeds), truth)
    # the same through the fragments: every fragment lies inside one body
    frags = fragments_from_affinities(affs, flood="edges")
    for f in np.unique(frags):
        assert len(np.unique(truth[frags == f])) == 1


def test_a_zero_link_still_connects_and_bad_seeds_are_refused():
    affs = np.ones((3, 3, 4, 5), dtype=np.float32)
    affs[2, :, :, 2] = 0.0  # the links across x = 1 | 2 are zero
    seeds = np.zeros((3, 4, 5), dtype=np.uint64)
    seeds[0, 0, 0] = 7
    out = flood_affinities(affs, seeds)
    # a zero link is still a link (the weakest): the flood reaches everything, last
    assert (out == 7).all()
    with pytest.raises(ValueError, match="seeds have shape"):
        flood_affinities(affs, seeds[:, :2])


def test_fragments_refuse_an_unknown_flood_and_work_section_by_section():
    rng = np.random.default_rng(0)
    affs = rng.random((3, 4, 20, 20)).astype(np.float32)
    with pytest.raises(ValueError, match="unknown flood"):
        fragments_from_affinities(affs, flood="diagonal")
    frags = fragments_from_affinities(affs, voxel_size=(40, 4, 4), flood="edges")
    assert (frags > 0).all()
    # anisotropic: no fragment spans two sections
    for f in np.unique(frags):
        assert len(np.unique(np.nonzero(frags == f)[0])) == 1
