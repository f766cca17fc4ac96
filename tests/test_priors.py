"""Priors on synthetic clips with true motion: occlusion and dynamic-region masks."""

import numpy as np
import pytest

from data_prep.priors import compute_priors, occlusion
from data_prep.synthetic import SyntheticConfig, generate


@pytest.fixture(scope="module")
def moving():
    config = SyntheticConfig(width=192, height=108, num_frames=10, moving_object=True, seed=2)
    clip = generate(config, progress=False)
    flow, masks = compute_priors(clip.frames, clip.K, clip.c2w)
    return clip, flow, masks


def test_dynamic_mask_finds_the_moving_box_and_little_else(moving):
    clip, _, masks = moving
    truth, found = clip.dynamic_mask, masks["dynamic"]
    recall = (found & truth).sum() / truth.sum()
    false_positive = (found & ~truth).sum() / (~truth).sum()
    assert recall > 0.6, recall
    assert false_positive < 0.02, false_positive


def test_static_scene_has_no_dynamic_regions():
    clip = generate(SyntheticConfig(width=192, height=108, num_frames=8, seed=3), progress=False)
    _, masks = compute_priors(clip.frames, clip.K, clip.c2w)
    assert masks["dynamic"].mean() < 0.005


def test_flow_and_occlusion_shapes_and_behaviour(moving):
    clip, flow, masks = moving
    t, h, w = clip.depth.shape
    assert flow["forward"].shape == (t - 1, h, w, 2) and masks["occlusion_forward"].shape == (t - 1, h, w)
    # the camera dollies sideways: a strip at the leading edge leaves the view and is occluded
    assert 0.005 < masks["occlusion_forward"].mean() < 0.3


def test_consistent_flow_is_not_occluded():
    shift = np.zeros((1, 20, 30, 2), np.float32)
    shift[..., 0] = 2.0
    back = -shift
    occluded = occlusion(shift, back)
    assert not occluded[0, :, :27].any() and occluded[0, :, 28:].all()  # only what leaves the frame
    assert occlusion(shift, np.zeros_like(shift))[0, :, :27].all()  # inconsistent everywhere
