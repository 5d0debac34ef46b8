"""Inference options: a dataclass read from our TOML or from Google's InferenceRequest pbtxt.

Thresholds are probabilities, as in Google's InferenceOptions. Google stores
them in float32 protobuf fields, converts them to logits in float64 and stores
the logits back into float32 fields; `Thresholds` repeats that exactly so that
comparisons against the canvas fall on the same side as Google's.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from volumes.errors import InputError

NORMALIZATIONS = ("model", "volume", "clahe")  # ffn/normalization.py implements them


def check_normalization(method: str) -> str:
    """`method` if it is one of NORMALIZATIONS (inference and training options both check through here)."""
    if method not in NORMALIZATIONS:
        raise InputError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, not {method!r}")
    return method
from volumes.options_file import check_option_names, read_toml


PRECISIONS = ("fp32", "bf16", "fp16", "tf32")
VIEW_COUNTS = (1, 2, 4, 8)  # ffn.forward.SYMMETRIC_VIEWS: each count's views are closed under composition


@dataclass
class InferenceOptions:
    """How to run and threshold the FFN; defaults are Google's FIB-25 settings."""

    init_activation: float = 0.95
    pad_value: float = 0.05
    move_threshold: float = 0.9
    segment_threshold: float = 0.6
    min_segment_size: int = 1000
    min_boundary_dist: tuple[int, int, int] = (1, 1, 1)  # z, y, x
    # Google's proto default is 0, which *enables* freezing of voxels once below 0.5; negative disables.
    disco_seed_threshold: float = 0.0
    seed_policy: str = "PolicyPeaks"
    seed_policy_args: dict = field(default_factory=dict)
    # network outputs averaged over this many flipped/transposed copies of each FOV (one of VIEW_COUNTS):
    # not Google's (1); with a weakly trained network, usually better segments for that many times the compute
    averaged_views: int = 1
    # Throughput settings (do not change fp32 results).
    precision: str = "fp32"  # fp32 | bf16 | fp16 | tf32 (the last two on GPU)
    channels_last: bool = True
    batch_size: int = 1  # canvases per forward pass
    compile: bool = False  # TorchInductor with frozen weights: fused conv+ReLU/add; ~20 s to compile, pays off on long runs
    max_segments: int | None = None
    # The image intensities the network sees: "model" (the model file's mean/stddev, Google's), "volume"
    # (the image's own, sampled blockwise) or "clahe" (local contrast equalised first); see ffn/normalization.py.
    normalize: str = "model"

    def __post_init__(self):
        for name in ("init_activation", "pad_value", "move_threshold", "segment_threshold"):
            value = float(getattr(self, name))
            if not 0.0 < value < 1.0:
                raise InputError(f"inference option {name} must be a probability strictly between 0 and 1, got {value}")
            setattr(self, name, value)
        self.min_boundary_dist = tuple(int(v) for v in self.min_boundary_dist)
        if len(self.min_boundary_dist) != 3 or min(self.min_boundary_dist) < 0:
            raise InputError(f"min_boundary_dist must be three non-negative integers z,y,x, got {self.min_boundary_dist}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if int(self.batch_size) < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}")
        self.batch_size = int(self.batch_size)
        check_normalization(self.normalize)
        if int(self.averaged_views) not in VIEW_COUNTS:
            raise InputError(f"averaged_views must be one of {VIEW_COUNTS}, got {self.averaged_views}")
        self.averaged_views = int(self.averaged_views)


@dataclass(frozen=True)
class Thresholds:
    """Probabilities converted to logits once, with Google's float32 round trips."""

    init_activation: np.float32
    pad_value: np.float32
    move_threshold: np.float32
    segment_threshold: np.float32
    move_score_threshold: float  # the movement policy keeps its own float64 logit
    disco_seed_threshold: np.float32

    @classmethod
    def from_options(cls, options: InferenceOptions) -> "Thresholds":
        def logit64(p: float) -> float:
            p = float(np.float32(p))
            return float(np.log(p / (1.0 - p)))

        return cls(
            init_activation=np.float32(logit64(options.init_activation)),
            pad_value=np.float32(logit64(options.pad_value)),
            move_threshold=np.float32(logit64(options.move_threshold)),
            segment_threshold=np.float32(logit64(options.segment_threshold)),
            move_score_threshold=logit64(options.move_threshold),
            disco_seed_threshold=np.float32(options.disco_seed_threshold),
        )


# --- Google's protobuf text format (only what InferenceRequest needs) ------------------------------

_TOKEN = re.compile(r'\s*(?:#[^\n]*\n\s*)*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}:\[\],;<>]|[^\s{}:\[\],;<>"\']+)')


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    text = re.sub(r"#[^\n]*", "", text)
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            if text[pos:].strip():
                raise InputError(f"cannot parse pbtxt near {text[pos:pos + 30]!r}")
            break
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def _scalar(token: str):
    if token[0] in "\"'":
        return token[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
    for convert in (int, float):
        try:
            return convert(token)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(token, token)


def _parse_message(tokens: list[str], pos: int, closing: str | None) -> tuple[dict, int]:
    message: dict = {}
    while pos < len(tokens):
        token = tokens[pos]
        if token == closing:
            return message, pos + 1
        name, pos = token, pos + 1
        if pos < len(tokens) and tokens[pos] == ":":
            pos += 1
        if pos >= len(tokens):
            raise InputError(f"pbtxt ends after field {name!r}")
        if tokens[pos] in ("{", "<"):
            value, pos = _parse_message(tokens, pos + 1, "}" if tokens[pos] == "{" else ">")
        else:
            value, pos = _scalar(tokens[pos]), pos + 1
            # adjacent string literals concatenate
            while pos < len(tokens) and isinstance(value, str) and tokens[pos][0] in "\"'":
                value, pos = value + _scalar(tokens[pos]), pos + 1
        if pos < len(tokens) and tokens[pos] in (",", ";"):
            pos += 1
        if name in message:
            existing = message[name]
            message[name] = (existing if isinstance(existing, list) else [existing]) + [value]
        else:
            message[name] = value
    if closing is not None:
        raise InputError("pbtxt has an unclosed '{'")
    return message, pos


def parse_pbtxt(text: str) -> dict:
    """A protobuf text-format message as nested dicts (repeated fields become lists)."""
    message, _ = _parse_message(_tokens(text), 0, None)
    return message


def read_pbtxt(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"inference config {path} does not exist")
    return parse_pbtxt(path.read_text())


def require_field(message: dict, name: str, source: str):
    if name not in message:
        raise InputError(f"{source} lacks the field {name!r}")
    return message[name]


def options_from_request(request: dict, source: str = "pbtxt") -> InferenceOptions:
    """InferenceOptions from a parsed Google InferenceRequest (all of inference_options is required)."""
    inference = require_field(request, "inference_options", source)
    values = {}
    for name in ("init_activation", "pad_value", "move_threshold", "segment_threshold", "min_segment_size"):
        values[name] = require_field(inference, name, f"{source} inference_options")
    if "min_boundary_dist" in inference:
        mbd = inference["min_boundary_dist"]
        values["min_boundary_dist"] = (int(mbd.get("z", 0)), int(mbd.get("y", 0)), int(mbd.get("x", 0)))
    else:
        values["min_boundary_dist"] = (0, 0, 0)  # proto default
    values["disco_seed_threshold"] = float(inference.get("disco_seed_threshold", 0.0))
    values["seed_policy"] = request.get("seed_policy", "PolicyPeaks")
    if request.get("seed_policy_args"):
        values["seed_policy_args"] = json.loads(request["seed_policy_args"])
    return InferenceOptions(**values)


def model_args_from_request(request: dict, source: str = "pbtxt") -> dict:
    """FFNConfig fields from Google's model_args JSON (fov/deltas are x, y, z there) and image mean/stddev."""
    try:
        args = json.loads(require_field(request, "model_args", source))
    except json.JSONDecodeError:
        raise InputError(f"{source} model_args is not valid JSON") from None
    config = {"depth": int(args.get("depth", 9))}
    if "fov_size" in args:
        config["fov_size"] = tuple(int(v) for v in args["fov_size"])[::-1]
    if "deltas" in args:
        config["deltas"] = tuple(int(v) for v in args["deltas"])[::-1]
    config["image_mean"] = float(require_field(request, "image_mean", source))
    config["image_stddev"] = float(require_field(request, "image_stddev", source))
    return config


def load_options(path: str | Path | None, **overrides) -> InferenceOptions:
    """Options from a Google pbtxt (.pbtxt) or our TOML (anything else); None gives the defaults."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"options file {path} does not exist")
        if path.suffix in (".pbtxt", ".txt", ".pb"):
            values = {f.name: getattr(options_from_request(read_pbtxt(path), str(path)), f.name) for f in fields(InferenceOptions)}
        else:
            data = read_toml(path, "options file")
            data = data.get("inference", data)
            values = check_option_names(InferenceOptions, data, f"{path}: inference options")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return InferenceOptions(**values)
