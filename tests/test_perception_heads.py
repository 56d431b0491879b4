"""Dense heads (FPN neck, segmentation, depth, losses, metrics) and the category readout of
:mod:`vlnkit.perception.heads`, on small fake backbones."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlnkit.perception.backbones.base import Backbone, FeatureInfo
from vlnkit.perception.heads import (
    CategoryReadout,
    DensePredictor,
    DepthHead,
    FPNNeck,
    SegmentationHead,
    bearing_from_attention,
    class_iou,
    confusion_matrix,
    depth_abs_rel,
    depth_loss,
    miou,
    pixel_accuracy,
    segmentation_loss,
    sine_position_encoding,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakePyramid(Backbone):
    """A four-level CNN pyramid: strides 4/8/16/32, channels 8/16/24/32."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_info = [FeatureInfo(4, 8), FeatureInfo(8, 16), FeatureInfo(16, 24), FeatureInfo(32, 32)]
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU())
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a.channels, b.channels, 3, stride=2, padding=1), nn.ReLU())
            for a, b in zip(self.feature_info, self.feature_info[1:])
        )

    def forward_features(self, x: Tensor) -> list[Tensor]:
        maps = [self.stem(x)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        return maps


class FakeViT(Backbone):
    """A plain ViT-like backbone: one stride-16 map of 24 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_info = [FeatureInfo(16, 24)]
        self.patch = nn.Conv2d(3, 24, 16, stride=16)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return [self.patch(x)]


def small_readout(**kwargs) -> CategoryReadout:
    torch.manual_seed(0)
    options = dict(sectors=8, d_model=32, heads=4, ffn_dim=64)
    options.update(kwargs)
    return CategoryReadout(16, 3, **options)


# --- metrics and losses on hand-computed cases ------------------------------------------------------------------

# (target, pred) per pixel: (0,0) (1,1) (2,1) (2,2) (ignored, pred 3) (1,0)
PRED = torch.tensor([[0, 1, 1], [2, 3, 0]])
TARGET = torch.tensor([[0, 1, 2], [2, 255, 1]])


def test_confusion_matrix_rows_are_targets_and_ignored_pixels_do_not_count():
    conf = confusion_matrix(PRED, TARGET, num_classes=4, ignore_index=255)
    # row = target, column = pred; the ignored pixel (predicted 3) is not counted, so class 3 is empty
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(conf, expected)
    with pytest.raises(ValueError, match="target has labels"):
        confusion_matrix(PRED, TARGET, num_classes=4)  # 255 is out of range when not ignored


def test_miou_excludes_classes_absent_from_pred_and_target():
    # IoU = TP / (TP + FP + FN): class 0: 1 / (1 + 1 + 0) = 1/2; class 1: 1 / (1 + 1 + 1) = 1/3;
    # class 2: 1 / (1 + 0 + 1) = 1/2; class 3 absent from both (its only prediction is on an ignored pixel).
    # mIoU = (1/2 + 1/3 + 1/2) / 3 = 4/9, not (4/3) / 4 = 1/3 as if class 3 counted as 0.
    assert miou(PRED, TARGET, num_classes=4, ignore_index=255) == pytest.approx(4 / 9)
    iou = class_iou(confusion_matrix(PRED, TARGET, 4, 255))
    assert iou[:3].tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 2]) and math.isnan(iou[3])
    # a class in the target that is never predicted counts as IoU 0: target all 1, pred all 0 -> (0 + 0) / 2
    assert miou(torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long), 2) == 0.0
    assert math.isnan(miou(PRED, torch.full_like(TARGET, 255), 4, ignore_index=255))


def test_pixel_accuracy_over_non_ignored_pixels():
    # correct: (0,0) (1,1) (2,2) of 5 non-ignored pixels -> 3/5
    assert pixel_accuracy(PRED, TARGET, ignore_index=255) == pytest.approx(0.6)
    # without an ignore index all 6 pixels count and the 255 one is wrong -> 3/6
    assert pixel_accuracy(PRED, TARGET) == pytest.approx(0.5)


def test_depth_abs_rel_skips_invalid_pixels():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    target = torch.tensor([[[2.0, 2.0], [0.0, 4.0]]])
    # |1-2|/2 = 0.5, |2-2|/2 = 0, target 0 is invalid, |5-4|/4 = 0.25 -> 0.75 / 3 = 0.25
    assert depth_abs_rel(pred, target) == pytest.approx(0.25)
    # a mask keeping the left column: (0, 0) gives 0.5 and (1, 0) has target 0, so only 0.5 is left
    valid = torch.tensor([[[True, False], [True, False]]])
    assert depth_abs_rel(pred, target, valid) == pytest.approx(0.5)


def test_silog_and_l1_depth_losses():
    pred, target = torch.tensor([[2.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    # g = (ln 2, 0): mean(g^2) - 0.5 mean(g)^2 = (ln 2)^2 / 2 - 0.5 (ln 2)^2 / 4 = 3/8 (ln 2)^2
    assert float(depth_loss(pred, target)) == pytest.approx(3 / 8 * math.log(2) ** 2)
    # a pure scale error g = ln 2 everywhere: (ln 2)^2 - 0.5 (ln 2)^2 with Eigen's weight, 0 when fully invariant
    doubled = torch.tensor([[2.0, 6.0]])
    assert float(depth_loss(doubled, torch.tensor([[1.0, 3.0]]))) == pytest.approx(0.5 * math.log(2) ** 2)
    assert float(depth_loss(doubled, torch.tensor([[1.0, 3.0]]), variance_weight=1.0)) == pytest.approx(0.0, abs=1e-7)
    # L1 over valid pixels: |2-1| + |1-1| over 2 (the target-0 pixel is left out) = 0.5
    assert float(depth_loss(torch.tensor([[2.0, 1.0, 7.0]]), torch.tensor([[1.0, 1.0, 0.0]]), kind="l1")) == 0.5
    # per image: the second image has no valid pixel and is left out of the mean
    two = depth_loss(torch.tensor([[2.0, 1.0], [5.0, 5.0]]), torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    assert float(two) == pytest.approx(3 / 8 * math.log(2) ** 2)
    with pytest.raises(ValueError, match="kind"):
        depth_loss(pred, target, kind="l2")


def test_segmentation_loss_ignores_pixels():
    logits = torch.tensor([math.log(3.0), 0.0]).reshape(1, 2, 1, 1).expand(1, 2, 1, 3).contiguous()
    target = torch.tensor([[[0, 1, 255]]])
    # p = (3/4, 1/4) at every pixel: target 0 -> ln(4/3), target 1 -> ln 4, ignored -> nothing; mean = ln(16/3) / 2
    assert float(segmentation_loss(logits, target)) == pytest.approx(math.log(16 / 3) / 2)
    logits.requires_grad_(True)
    empty = segmentation_loss(logits, torch.full((1, 1, 3), 255))
    empty.backward()
    assert float(empty.detach()) == 0.0 and logits.grad is not None


# --- FPN neck and dense heads --------------------------------------------------------------------------------------


def test_fpn_neck_top_down_sum_and_concat_by_hand():
    info = [FeatureInfo(4, 1), FeatureInfo(8, 1)]
    fine, coarse = torch.full((1, 1, 4, 4), 2.0), torch.full((1, 1, 2, 2), 5.0)
    for fuse, expected in (("sum", [2.0 + 5.0 + 5.0]), ("concat", [2.0 + 5.0, 5.0])):
        neck = FPNNeck(info, channels=1, fuse=fuse)
        with torch.no_grad():  # identity laterals and smoothing (centre tap 1), no biases
            for conv in [*neck.lateral, *neck.smooth]:
                conv.weight.zero_()
                conv.weight[..., conv.weight.shape[-2] // 2, conv.weight.shape[-1] // 2] = 1.0
                conv.bias.zero_()
        out = neck([fine, coarse])
        # fine level = lateral(fine) + up(coarse) = 7 inside the map; coarse level = 5 upsampled
        assert out.shape == (1, len(expected), 4, 4)
        centre = out[0, :, 1:3, 1:3]  # away from the zero padding of the 3x3 smoothing
        assert torch.allclose(centre, torch.tensor(expected).reshape(-1, 1, 1).expand_as(centre))


@pytest.mark.parametrize("backbone_cls, size, finest", [(FakePyramid, (64, 64), (16, 16)), (FakeViT, (64, 96), (4, 6))])
def test_dense_head_shapes(backbone_cls, size, finest):
    torch.manual_seed(0)
    backbone = backbone_cls()
    images = torch.randn(2, 3, *size)
    features = backbone.forward_features(images)
    seg = SegmentationHead(backbone.feature_info, num_classes=5, channels=16)
    assert seg(features).shape == (2, 5, *finest)
    assert seg(features, out_size=size).shape == (2, 5, *size)
    concat = SegmentationHead(backbone.feature_info, num_classes=5, channels=16, fuse="concat")
    assert concat.neck.out_channels == 16 * len(backbone.feature_info)
    assert DensePredictor(backbone, concat)(images).shape == (2, 5, *size)
    depth = DensePredictor(backbone, DepthHead(backbone.feature_info, channels=16))(images)
    assert depth.shape == (2, *size) and bool((depth > 0).all())
    bounded = DepthHead(backbone.feature_info, channels=16, activation="sigmoid", min_depth=0.5, max_depth=2.0)
    with torch.no_grad():
        bounded.out.bias.fill_(50.0)  # saturate: the sigmoid must still cap at max_depth
        d = bounded(features, out_size=size)
    assert bool((d >= 0.5).all()) and bool((d <= 2.0).all()) and float(d.max()) == pytest.approx(2.0)


def test_dense_heads_handle_sizes_not_multiple_of_the_stride():
    torch.manual_seed(0)
    backbone = FakePyramid()
    model = DensePredictor(backbone, SegmentationHead(backbone.feature_info, num_classes=3, channels=8))
    assert model(torch.randn(1, 3, 50, 70)).shape == (1, 3, 50, 70)


def test_dense_heads_reject_mismatched_features():
    backbone = FakePyramid()
    head = SegmentationHead(backbone.feature_info, num_classes=3, channels=8)
    features = backbone.forward_features(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="got 3 feature maps, expected 4"):
        head(features[:3])
    with pytest.raises(ValueError, match=r"expected \(B, 16, H, W\)"):
        head([features[0], features[2], features[2], features[3]])
    with pytest.raises(ValueError, match="feature_info"):
        DensePredictor(FakeViT(), head)
    with pytest.raises(ValueError, match="strides"):
        FPNNeck([FeatureInfo(16, 8), FeatureInfo(8, 8)])


def block_batch() -> tuple[Tensor, Tensor]:
    """Two 32x32 images of 8x8 blocks, each block one of 3 classes coloured by its class (plus fixed noise)."""
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (2, 4, 4), generator=gen).repeat_interleave(8, 1).repeat_interleave(8, 2)
    images = F.one_hot(labels, 3).permute(0, 3, 1, 2).float() + 0.1 * torch.randn(2, 3, 32, 32, generator=gen)
    return images, labels


def test_segmentation_overfits_one_batch():
    images, labels = block_batch()
    torch.manual_seed(0)
    backbone = FakePyramid()
    model = DensePredictor(backbone, SegmentationHead(backbone.feature_info, num_classes=3, channels=16, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        first = float(segmentation_loss(model(images), labels))
    for _ in range(40):
        loss = segmentation_loss(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # chance level is ln 3 = 1.10 (the loss starts near it); 0.3 means a mean probability of the right class of
    # exp(-0.3) = 0.74, reachable only if gradients reach the weights (block edges blur after the x4 upsampling,
    # so 0 is out of reach)
    assert first > 0.8
    assert loss.item() < 0.3
    with torch.no_grad():
        assert pixel_accuracy(model(images).argmax(1), labels) > 0.9


def test_depth_overfits_one_batch():
    images, labels = block_batch()
    depth = 1.0 + 2.0 * labels.float()  # 1, 3 or 5 m by block class
    torch.manual_seed(0)
    backbone = FakePyramid()
    model = DensePredictor(backbone, DepthHead(backbone.feature_info, channels=16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        first = depth_abs_rel(model(images), depth)
    for _ in range(40):
        loss = depth_loss(model(images), depth)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = depth_abs_rel(model(images), depth)
    # an untrained softplus head predicts about ln 2 = 0.7 m everywhere (abs_rel ~ 0.6). The best constant
    # depth for this batch (31% 1 m, 28% 3 m, 41% 5 m) is 1 m, abs_rel = 0.28 * 2/3 + 0.41 * 4/5 = 0.51, so
    # below 0.25 the head must read the blocks; it cannot reach 0 as block edges blur in the x4 upsampling
    assert first > 0.4
    assert last < 0.25


# --- category readout ------------------------------------------------------------------------------------------


def test_readout_shape_range_and_kept_attention():
    readout = small_readout().eval()
    x = torch.randn(2, 16, 3, 12)
    closeness, attn = readout(x, return_attention=True)
    assert closeness.shape == (2, 8, 3)
    assert bool((closeness >= 0).all()) and bool((closeness <= 1).all())
    assert attn.shape == (2, 4, 3, 36)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 4, 3))
    assert torch.equal(readout.attention, attn.detach()) and readout.attention_size == (3, 12)
    # a backbone's list of maps: the coarsest (level -1) is read
    assert torch.allclose(readout([torch.randn(2, 8, 6, 24), x]), closeness)
    named = CategoryReadout(16, ["bank", "bench"], sectors=4, d_model=32, heads=4, ffn_dim=64)
    assert named.category_names == ["bank", "bench"] and named(x).shape == (2, 4, 2)
    with pytest.raises(ValueError, match=r"expected \(B, 16, H, W\)"):
        readout(torch.randn(2, 8, 3, 12))


def test_readout_category_columns_read_only_their_own_query():
    readout = small_readout()
    outputs = torch.randn(2, 3, 32)
    changed = outputs.clone()
    changed[:, 1] += torch.randn(2, 32)
    before, after = readout.read(outputs), readout.read(changed)
    assert torch.equal(before[..., [0, 2]], after[..., [0, 2]])
    assert not torch.allclose(before[..., 1], after[..., 1])


def test_cross_attention_with_zeroed_qk_is_the_mean_of_values():
    readout = small_readout().eval()
    ca = readout.layers[0].cross_attn
    with torch.no_grad():
        for proj in (ca.q_proj, ca.k_proj):
            proj.weight.zero_()
            proj.bias.zero_()
    torch.manual_seed(1)
    memory, pos, query = torch.randn(2, 36, 32), torch.randn(36, 32), torch.randn(2, 3, 32)
    out, weights = ca(query, memory + pos, memory)
    # naive: W_o * mean_j(W_v F_j + b_v) + b_o, the same for every query
    values = memory @ ca.v_proj.weight.T + ca.v_proj.bias
    expected = values.mean(1) @ ca.out_proj.weight.T + ca.out_proj.bias
    assert torch.allclose(out, expected[:, None].expand_as(out), atol=1e-5)
    assert torch.allclose(weights, torch.full_like(weights, 1 / 36))
    readout(torch.randn(2, 16, 3, 12))
    assert torch.allclose(readout.attention, torch.full((2, 4, 3, 36), 1 / 36))


def test_permuting_memory_with_its_encoding_leaves_outputs_unchanged():
    readout = small_readout().eval()
    torch.manual_seed(2)
    memory = torch.randn(2, 36, 32)
    pos = readout.position_encoding(3, 12)
    perm = torch.randperm(36)
    out, attn = readout.decode(memory, pos)
    out_perm, attn_perm = readout.decode(memory[:, perm], pos[perm])
    assert torch.allclose(out, out_perm, atol=1e-5)
    assert torch.allclose(attn[..., perm], attn_perm, atol=1e-6)
    # control: permuting the tokens alone moves content against the encoding and does change the outputs
    out_tokens_only, _ = readout.decode(memory[:, perm], pos)
    assert not torch.allclose(out, out_tokens_only, atol=1e-3)


def test_readout_overfits_closeness_targets():
    readout = small_readout(dropout=0.0)
    gen = torch.Generator().manual_seed(3)
    x, target = torch.randn(2, 16, 3, 12, generator=gen), torch.rand(2, 8, 3, generator=gen)
    opt = torch.optim.Adam(readout.parameters(), lr=3e-3)
    with torch.no_grad():
        first = float(F.mse_loss(readout(x), target))
    for _ in range(40):
        loss = F.mse_loss(readout(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # uniform [0, 1] targets against outputs near 0.5 start at about 1/12 = 0.083 (their variance); a tenth of
    # the start needs per-image, per-sector fits, i.e. gradients through the attention to the input projection
    assert loss.item() < 0.1 * first
    assert readout.input_proj.weight.grad is not None and float(readout.input_proj.weight.grad.abs().sum()) > 0


# --- position encoding and bearings ----------------------------------------------------------------------------


def test_circular_encoding_is_periodic_in_the_width():
    width = 12
    pe = sine_position_encoding(3, width + 1, 32, circular=True, period=width)
    assert torch.allclose(pe[:, :, 0], pe[:, :, width], atol=1e-6)  # column 0 and column W: one code
    # first column harmonic (channel 16) at column x is sin(2 pi (x + 0.5) / W); the second (18) doubles it
    x = torch.arange(width + 1) + 0.5
    assert torch.allclose(pe[16, 0], torch.sin(2 * math.pi * x / width), atol=1e-6)
    assert torch.allclose(pe[18, 0], torch.sin(4 * math.pi * x / width), atol=1e-6)
    # row encoding (channel 0): sin(2 pi (y + 0.5) / H)
    assert torch.allclose(pe[0, :, 0], torch.sin(2 * math.pi * (torch.arange(3) + 0.5) / 3), atol=1e-6)


def test_circular_encoding_makes_the_seam_continuous():
    def gap(pe: Tensor, a: int, b: int) -> float:
        return float((pe[:, 0, a] - pe[:, 0, b]).norm())

    circular = sine_position_encoding(2, 16, 32, circular=True)
    plain = sine_position_encoding(2, 16, 32)
    # across the seam (column 15 -> 0) the circular code moves as much as between neighbours 0 -> 1
    assert gap(circular, 15, 0) == pytest.approx(gap(circular, 0, 1), rel=1e-5)
    assert gap(plain, 15, 0) > 3 * gap(plain, 0, 1)
    assert torch.allclose(small_readout(circular=True).position_encoding(2, 16), circular.flatten(1).T)


def test_bearing_from_attention_hand_made_maps():
    height, width = 2, 18  # 20 degree columns centred at 10, 30, ..., 350
    attn = torch.zeros(3, height, width)
    attn[0, 1, 4] = 1.0  # column 4: centre (4 + 0.5) * 20 = 90
    attn[1, 0, 17], attn[1, 1, 0] = 0.5, 0.5  # 350 and 10 -> 0, not 180
    attn[2, 0, 0], attn[2, 1, 17] = 0.75, 0.25  # atan2(0.75 sin 10 - 0.25 sin 10, cos 10) = atan(0.5 tan 10) = 5.038
    bearing = bearing_from_attention(attn.flatten(1), width)
    assert bearing.shape == (3,)
    assert float(bearing[0]) == pytest.approx(90.0, abs=1e-4)
    assert min(float(bearing[1]), 360.0 - float(bearing[1])) == pytest.approx(0.0, abs=1e-4)
    assert float(bearing[2]) == pytest.approx(5.0383, abs=1e-3)
    # origin -180 (heading at the centre column): column 9, centre 190 - 180 = 10 degrees right of the heading
    at_nine = torch.zeros(1, height * width)
    at_nine[0, 9] = 1.0
    assert float(bearing_from_attention(at_nine, width, origin=-180.0)[0]) == pytest.approx(10.0, abs=1e-4)
    with pytest.raises(ValueError, match="multiple of width=18"):
        bearing_from_attention(torch.zeros(2, 35), width)
