"""The joint text spotter: shared CNN backbone, dense AABB detection head, text pooling, FCR recognizer.

Functions over a dict of float32 arrays keyed by checkpoint names ("backbone.conv1.weight", ...), with
a frozen `SpotterConfig`. Layer table (refq's design around the paper's components, docs/spotter.md T1-T3):

  backbone  (stride 4, shared)   conv3x3/2 1->16 ; conv3x3 16->32 ; conv3x3/2 32->64 ; conv3x3 64->64
  det head  (EAST-AABB, opt. B)  context branch: conv3x3/2 64->32 ; conv3x3/2 32->32 ; two conv3x3 32->32
                                 (dilation 2, 4) at stride 16 ; bilinear upsampling back to stride 4 ;
                                 concat with F, conv1x1 -> 32,
                                 conv3x3 32->32 ; score = conv1x1 -> 1 (sigmoid in the loss),
                                 geometry = text_scale * sigmoid(conv1x1 -> 4) = (d_top, d_right, d_bottom, d_left)
  text pool                      bilinear, height 8, width ~ box aspect ratio (`text_pool.py`)
  recognizer (FCR, no recurrence) conv3x3 64->64, pool(2,1) ; conv3x3 64->128, pool(2,1) ; conv3x3 128->128,
                                 pool(2,1)  (height 8 -> 1) ; three residual 1-D convs along the width, k = 3,
                                 dilation 1, 2, 4 ; conv1x1 -> K classes per column (CTC frames T = W_i)
  recognizer (RNN, ablation)     the same conv stages, then a BiLSTM (`recurrent.py`) instead of the 1-D convs

Two changes from a plain VGG-style stack with max-pools, both for speed or reach on a CPU:
* strided 3x3 convolutions replace the backbone's two 2x2 max-pools (same stride 4, a fifth fewer
  operations, and no pooling pass over the largest maps);
* the context branch is refq's addition to option B: the backbone alone sees 19 px, but the geometry
  channels must reach the left and right edges of words (median 70 px, up to 250 px wide); the branch
  (convs at stride 8 and 16, dilations 2 and 4) widens the receptive field to about 240 px (EAST gets
  its reach from a U-Net over VGG/ResNet).
Padded columns of the pooled batch are zeroed after every recognizer layer, so each word's outputs are
those it would get alone (zero padding), however wide its batch is.

`cfg.tasks` selects the joint model ("joint"), detection only ("det": backbone + det head) or
recognition only ("rec": backbone + recognizer on given boxes) for the joint-vs-separate ablation.

References:
    Sui et al., "A Novel Integrated Framework for Learning both Text Detection and Recognition", ICPR 2018
    (shared backbone, text pooling, fully convolutional recognizer "FCR").
    Zhou et al., "EAST: An Efficient and Accurate Scene Text Detector", CVPR 2017, Sec. 3.3 (score and
    AABB geometry maps). Shi et al., "CRNN", TPAMI 2017 (conv stages + per-column classifier).
    He et al., "Delving deep into rectifiers", ICCV 2015 (initialisation). docs/spotter.md, T1-T3.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.models.checks import check_param_shapes
from refq.models.ops import FLOAT_OPS, ModelOps
from refq.spotter.alphabet import DIGITS, LOWER, PUNCTUATION, Alphabet
from refq.spotter.recurrent import bilstm, init_bilstm
from refq.spotter.text_pool import column_mask, pooled_widths, text_pool

TASKS = ("joint", "det", "rec")
RECOGNIZERS = ("fcr", "lstm")
SPOTTER_CHARS = DIGITS + LOWER + PUNCTUATION  # case-folded, as the ICDAR end-to-end comparison (docs/spotter.md T3)


@dataclass(frozen=True)
class SpotterConfig:
    tasks: str = "joint"
    in_chans: int = 1
    backbone: tuple = (16, 32, 64, 64)
    det_ctx: int = 32  # channels of the detection head's context branch and merge layers
    text_scale: float = 256.0  # geometry = text_scale * sigmoid(.), in input pixels
    stride: int = 4
    pool_h: int = 8
    pool_aspect: float = 0.75  # W_i = round(pool_h * pool_aspect * w / h)
    pool_w_min: int = 4
    pool_w_max: int = 96
    rec_pad: float = 0.0  # recognition reads every box widened by rec_pad x its height, left and right
    rec_channels: tuple = (64, 128, 128)
    seq_dilations: tuple = (1, 2, 4)
    recognizer: str = "fcr"
    lstm_hidden: int = 64
    chars: str = SPOTTER_CHARS
    case_insensitive: bool = True

    def __post_init__(self):
        if self.tasks not in TASKS:
            raise ValueError(f"SpotterConfig: tasks={self.tasks!r}, expected one of {TASKS}")
        if self.recognizer not in RECOGNIZERS:
            raise ValueError(f"SpotterConfig: recognizer={self.recognizer!r}, expected one of {RECOGNIZERS}")
        if len(self.backbone) != 4 or len(self.rec_channels) != 3:
            raise ValueError(f"SpotterConfig: backbone={self.backbone} needs 4 widths, "
                             f"rec_channels={self.rec_channels} 3")
        if self.pool_h != 8:
            raise ValueError(f"SpotterConfig: pool_h={self.pool_h}; the recognizer's three (2,1) pools need 8")
        if self.stride != 4:
            raise ValueError(f"SpotterConfig: stride={self.stride}; the backbone has two stride-2 convs (stride 4)")
        if not 0.0 <= self.rec_pad <= 1.0:
            raise ValueError(f"SpotterConfig: rec_pad={self.rec_pad} must be in [0, 1]")

    @property
    def alphabet(self) -> Alphabet:
        return Alphabet(self.chars, case_insensitive=self.case_insensitive)

    @property
    def num_classes(self) -> int:
        return len(self.chars) + 1

    @property
    def has_det(self) -> bool:
        return self.tasks in ("joint", "det")

    @property
    def has_rec(self) -> bool:
        return self.tasks in ("joint", "rec")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "SpotterConfig":
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"SpotterConfig.from_dict: unknown keys {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _conv_shapes(cfg: SpotterConfig) -> dict[str, tuple]:
    """Weight shape [O, I, kh, kw] of every convolution of the model."""
    c1, c2, c3, c4 = cfg.backbone
    shapes = {"backbone.conv1": (c1, cfg.in_chans, 3, 3), "backbone.conv2": (c2, c1, 3, 3),
              "backbone.conv3": (c3, c2, 3, 3), "backbone.conv4": (c4, c3, 3, 3)}
    if cfg.has_det:
        m = cfg.det_ctx
        shapes.update({"det.ctx1": (m, c4, 3, 3), "det.ctx2": (m, m, 3, 3), "det.ctx3": (m, m, 3, 3),
                       "det.ctx4": (m, m, 3, 3), "det.merge1": (m, c4 + m, 1, 1), "det.merge2": (m, m, 3, 3),
                       "det.score": (1, m, 1, 1), "det.geo": (4, m, 1, 1)})
    if cfg.has_rec:
        r1, r2, r3 = cfg.rec_channels
        shapes.update({"rec.conv1": (r1, c4, 3, 3), "rec.conv2": (r2, r1, 3, 3), "rec.conv3": (r3, r2, 3, 3)})
        if cfg.recognizer == "fcr":
            shapes.update({f"rec.seq{i + 1}": (r3, r3, 1, 3) for i in range(len(cfg.seq_dilations))})
            shapes["rec.out"] = (cfg.num_classes, r3, 1, 1)
        else:
            shapes["rec.out"] = (cfg.num_classes, 2 * cfg.lstm_hidden, 1, 1)
    return shapes


def init_params(cfg: SpotterConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-normal conv weights, zero biases; the geometry bias starts at 16 px distances."""
    params = {}
    for name, shape in _conv_shapes(cfg).items():
        fan_in = shape[1] * shape[2] * shape[3]
        params[name + ".weight"] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        params[name + ".bias"] = np.zeros(shape[0], np.float32)
    if cfg.has_det:
        for head in ("det.score", "det.geo"):  # output layers: small weights, no ReLU follows
            params[head + ".weight"] *= np.float32(0.1)
        params["det.geo.bias"][:] = np.log(16.0 / (cfg.text_scale - 16.0))  # sigmoid^-1(16 / text_scale)
    if cfg.has_rec and cfg.recognizer == "lstm":
        params.update(init_bilstm("rec.lstm", cfg.rec_channels[2], cfg.lstm_hidden, rng))
    return params


def expected_shapes(cfg: SpotterConfig) -> dict[str, tuple]:
    """Name -> shape of every parameter of a model with this config."""
    shapes = {}
    for name, shape in _conv_shapes(cfg).items():
        shapes[name + ".weight"], shapes[name + ".bias"] = shape, (shape[0],)
    if cfg.has_rec and cfg.recognizer == "lstm":
        shapes.update({k: v.shape for k, v in init_bilstm("rec.lstm", cfg.rec_channels[2], cfg.lstm_hidden,
                                                          np.random.default_rng(0)).items()})
    return shapes


def check_params(params: dict, cfg: SpotterConfig) -> None:
    """ValueError unless params has exactly the config's names and shapes, all float32."""
    check_param_shapes(params, expected_shapes(cfg), "spotter")
    for name, arr in params.items():
        if arr.dtype != np.float32:
            raise ValueError(f"spotter checkpoint: {name} has dtype {arr.dtype}, expected float32")


def param_count(params: dict, prefix: str = "") -> int:
    """Number of scalars in the parameters whose name starts with prefix."""
    return int(sum(np.asarray(v.data if isinstance(v, Tensor) else v).size for k, v in params.items()
                   if k.startswith(prefix)))


def as_tensors(params: dict, requires_grad: bool = False) -> dict[str, Tensor]:
    """The parameter dict as Tensors (leaves for training when requires_grad)."""
    return {k: Tensor(np.asarray(v, dtype=np.float32), requires_grad=requires_grad) for k, v in params.items()}


def normalize_images(images) -> np.ndarray:
    """uint8 grayscale images [B, H, W] (or one [H, W]) -> float32 [B, 1, H, W] in [-1, 1]."""
    a = np.asarray(images)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise ValueError(f"normalize_images: images have dtype {a.dtype} and shape {a.shape}, expected uint8 [B, H, W]")
    a = a[None] if a.ndim == 2 else a
    return (a.astype(np.float32) / np.float32(127.5) - np.float32(1.0))[:, None]  # [B, H, W] -> [B, 1, H, W]


def conv(p: dict, name: str, x, padding=0, dilation=1, stride=1, ops: ModelOps = FLOAT_OPS) -> Tensor:
    """The named convolution (weight and bias from p) applied to x, through the ops hook (float or int8)."""
    return ops.conv(name, x, p[name + ".weight"], p[name + ".bias"], stride=stride, padding=padding, dilation=dilation)


def backbone(p: dict, x, ops: ModelOps = FLOAT_OPS) -> Tensor:
    """Shared features F: [B, 1, H, W] -> [B, C, H/4, W/4]."""
    h = F.relu(conv(p, "backbone.conv1", x, padding=1, stride=2, ops=ops))  # [B, 1, H, W] -> [B, 16, H/2, W/2]
    h = F.relu(conv(p, "backbone.conv2", h, padding=1, ops=ops))  # -> [B, 32, H/2, W/2]
    h = F.relu(conv(p, "backbone.conv3", h, padding=1, stride=2, ops=ops))  # -> [B, 64, H/4, W/4]
    return F.relu(conv(p, "backbone.conv4", h, padding=1, ops=ops))  # -> [B, 64, H/4, W/4]


def det_head(p: dict, cfg: SpotterConfig, feats, ops: ModelOps = FLOAT_OPS) -> tuple[Tensor, Tensor]:
    """Score logits [B, 1, h, w] and AABB geometry [B, 4, h, w] (d_top, d_right, d_bottom, d_left in pixels)."""
    h, w = feats.shape[2:]
    c = F.relu(conv(p, "det.ctx1", feats, padding=1, stride=2, ops=ops))  # [B, C, h, w] -> [B, M, h/2, w/2]
    c = F.relu(conv(p, "det.ctx2", c, padding=1, stride=2, ops=ops))  # -> [B, M, h/4, w/4] (stride 16)
    c = F.relu(conv(p, "det.ctx3", c, padding=2, dilation=2, ops=ops))  # [B, M, h/4, w/4]
    c = F.relu(conv(p, "det.ctx4", c, padding=4, dilation=4, ops=ops))  # [B, M, h/4, w/4]
    up = F.resize_bilinear(c, (h, w))  # -> [B, M, h, w]
    m = F.relu(conv(p, "det.merge1", F.concat([feats, up], axis=1), ops=ops))  # [B, C + M, h, w] -> [B, M, h, w]
    m = F.relu(conv(p, "det.merge2", m, padding=1, ops=ops))  # [B, M, h, w]
    score_logits = conv(p, "det.score", m, ops=ops)  # -> [B, 1, h, w]
    geo = F.mul(F.sigmoid(conv(p, "det.geo", m, ops=ops)), cfg.text_scale)  # -> [B, 4, h, w]
    return score_logits, geo


def roi_widths(cfg: SpotterConfig, boxes) -> np.ndarray:
    """Pooled width W_i (= CTC frames) of every box [R, 4] under the config's aspect rule."""
    return pooled_widths(boxes, cfg.pool_h, cfg.pool_aspect, cfg.pool_w_min, cfg.pool_w_max)


def pool_rois(cfg: SpotterConfig, feats, boxes, batch_index, widths) -> Tensor:
    """Text pooling of image-pixel boxes: [B, C, h, w] -> [R, C, 8, max W_i]."""
    return text_pool(feats, boxes, batch_index, widths, cfg.stride, cfg.pool_h)


def recognizer(p: dict, cfg: SpotterConfig, pooled, widths, ops: ModelOps = FLOAT_OPS) -> Tensor:
    """Per-column class logits [R, T, K] (T = max W_i) of pooled text features [R, C, 8, T]."""
    mask = column_mask(widths, np.float32)  # [R, 1, 1, T]
    h = pooled
    for name in ("rec.conv1", "rec.conv2", "rec.conv3"):  # height 8 -> 4 -> 2 -> 1
        h = F.max_pool2d(F.mul(F.relu(conv(p, name, h, padding=1, ops=ops)), mask), (2, 1))  # [R, C', H', T] -> [R, C', H'/2, T]
    if cfg.recognizer == "fcr":
        for i, d in enumerate(cfg.seq_dilations):  # the "successive conv layers" replacing the BiLSTM
            step = F.relu(conv(p, f"rec.seq{i + 1}", h, padding=(0, d), dilation=(1, d), ops=ops))  # [R, C, 1, T]
            h = F.add(h, F.mul(step, mask))  # residual, padding kept at zero
    else:
        seq = F.transpose(F.reshape(h, (h.shape[0], h.shape[1], h.shape[3])), (0, 2, 1))  # [R, C, 1, T] -> [R, T, C]
        seq = bilstm(p, "rec.lstm", seq, np.asarray(widths))  # -> [R, T, 2Hd]
        h = F.reshape(F.transpose(seq, (0, 2, 1)), (seq.shape[0], seq.shape[2], 1, seq.shape[1]))  # -> [R, 2Hd, 1, T]
    logits = conv(p, "rec.out", h, ops=ops)  # -> [R, K, 1, T]
    logits = F.reshape(logits, (logits.shape[0], logits.shape[1], logits.shape[3]))  # -> [R, K, T]
    return F.transpose(logits, (0, 2, 1))  # -> [R, T, K]
