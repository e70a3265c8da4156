"""Attention-to-land-cover overlap on chips whose answer is known."""

from __future__ import annotations

import torch

from sarssl.analysis.attention import threshold_attention
from sarssl.analysis.attention_overlap import (
    attention_overlap, best_class_iou, brightness_sets, class_masks_on_patches,
)
from sarssl.data.products import IGNORE_INDEX

P = 4  # pixels per patch; chips 16 x 16 px -> 4 x 4 patches


def two_class_chip():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, :, 8:] = 3  # left half class 0, right half class 3
    return labels


def test_class_masks_and_presence():
    labels = two_class_chip()
    labels[0, 0, 0] = IGNORE_INDEX
    masks, present = class_masks_on_patches(labels, P, n_classes=5)
    assert masks.shape == (1, 5, 4, 4)
    assert masks[0, 0, :, :2].all() and not masks[0, 0, :, 2:].any()
    assert masks[0, 3, :, 2:].all()
    assert present[0].tolist() == [True, False, False, True, False]


def test_a_map_on_one_class_scores_one_and_a_uniform_map_scores_less():
    labels = two_class_chip()
    focused = torch.zeros(1, 2, 4, 4)
    focused[0, 0, :, :2] = 1.0  # head 0 on class 0
    focused[0, 1, :, 2:] = 1.0  # head 1 on class 3
    res = attention_overlap(threshold_attention(focused, 0.6), labels, P, 5)
    assert res["chips"].tolist() == [0] and res["per_head"].shape == (1, 2)
    # the 60 % set of a flat half holds 5 of its 8 patches: IoU 5/8 with that class
    assert abs(res["score"][0] - 5 / 8) < 1e-6
    full = attention_overlap(focused > 0, labels, P, 5)
    assert abs(full["score"][0] - 1.0) < 1e-6
    uniform = attention_overlap(torch.ones(1, 2, 4, 4, dtype=torch.bool), labels, P, 5)
    assert abs(uniform["score"][0] - 0.5) < 1e-6


def test_single_class_chips_are_left_out():
    labels = torch.cat([two_class_chip(), torch.zeros(1, 16, 16, dtype=torch.long)])
    res = attention_overlap(torch.ones(2, 1, 4, 4, dtype=torch.bool), labels, P, 5)
    assert res["chips"].tolist() == [0]


def test_brightness_baseline_takes_the_brightest_patches_of_the_heads_size():
    labels = two_class_chip()
    s1 = torch.zeros(1, 12, 16, 16)
    s1[0, 4, :, 8:] = 5.0  # channel 4 bright over class 3
    sizes = torch.tensor([[8, 4]])
    sets = brightness_sets(s1, sizes, P, channel=4)
    assert sets[0, 0, :, 2:].all() and sets[0, 0].sum() == 8 and sets[0, 1].sum() == 4
    sets_attn = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    sets_attn[0, 0, :, :2] = True
    res = attention_overlap(sets_attn, labels, P, 5, s1=s1, brightness_channel=4)
    assert abs(res["score"][0] - 1.0) < 1e-6 and abs(res["brightness"][0] - 1.0) < 1e-6


def test_iou_ignores_absent_classes():
    sets = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    masks = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    masks[0, 0] = True
    present = torch.tensor([[False, True]])
    assert best_class_iou(sets, masks, present).item() == 0.0
