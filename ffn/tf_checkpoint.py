"""Read TensorFlow checkpoints (tensor bundles) without TensorFlow, and import Google's FFN weights.

A checkpoint `PREFIX` is two files: `PREFIX.index`, a LevelDB-format table
mapping tensor names to `BundleEntryProto`s (dtype, shape, shard, offset,
size), and `PREFIX.data-00000-of-00001` holding the raw little-endian bytes.
We decode just enough of the table format and protobuf wire format for that.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import torch

from ffn.model import ConvStack3DFFN, FFNConfig
from volumes.errors import InputError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type byte + crc32c
# tensorflow DataType enum values we can read
TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64, 10: np.bool_, 14: np.uint16, 19: np.float16}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) triples of one protobuf message."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _read_block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """Key/value entries of one table block (keys are prefix-compressed)."""
    if data[offset + size] != 0:
        raise InputError("checkpoint index uses a compressed table block, which is not supported")
    block = data[offset:offset + size]
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * num_restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos:pos + value_length]))
        pos += value_length
    return entries


def _block_handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _read_index(path: Path) -> dict[str, dict]:
    data = path.read_bytes()
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise InputError(f"{path} is not a TensorFlow checkpoint index (bad table footer)")
    footer = data[-FOOTER_SIZE:]
    _, _, pos = _block_handle(footer)  # metaindex, unused
    index_offset, index_size, _ = _block_handle(footer, pos)
    entries = {}
    for _, handle in _read_block(data, index_offset, index_size):
        offset, size, _ = _block_handle(handle)
        for key, value in _read_block(data, offset, size):
            if key:  # the empty key holds the BundleHeaderProto
                entries[key.decode()] = _parse_entry(value)
    return entries


def _parse_entry(buf: bytes) -> dict:
    entry = {"dtype": 0, "shape": [], "shard": 0, "offset": 0, "size": 0}
    for number, _, value in _proto_fields(buf):
        if number == 1:
            entry["dtype"] = value
        elif number == 2:
            for dim_number, _, dim in _proto_fields(value):
                if dim_number == 2:
                    size = dict((n, v) for n, _, v in _proto_fields(dim)).get(1, 0)
                    entry["shape"].append(size)
        elif number == 3:
            entry["shard"] = value
        elif number == 4:
            entry["offset"] = value
        elif number == 5:
            entry["size"] = value
        elif number == 7:
            raise InputError("partitioned (sliced) checkpoint variables are not supported")
    return entry


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a TensorFlow checkpoint, by variable name."""
    prefix = Path(prefix)
    index_path = Path(f"{prefix}.index")
    if not index_path.is_file():
        raise InputError(f"checkpoint index {index_path} does not exist")
    entries = _read_index(index_path)
    shards: dict[int, bytes] = {}
    tensors = {}
    for name, entry in entries.items():
        dtype = TF_DTYPES.get(entry["dtype"])
        if dtype is None:
            continue  # strings, resources etc.: not weights
        shard = entry["shard"]
        if shard not in shards:
            candidates = sorted(prefix.parent.glob(f"{prefix.name}.data-{shard:05d}-of-*"))
            if not candidates:
                raise InputError(f"checkpoint data file {prefix}.data-{shard:05d}-of-... does not exist")
            shards[shard] = candidates[0].read_bytes()
        raw = shards[shard][entry["offset"]:entry["offset"] + entry["size"]]
        if len(raw) != entry["size"]:
            raise InputError(f"checkpoint data for {name} is truncated")
        tensors[name] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(entry["shape"]).copy()
    return tensors


def _layer_names(depth: int) -> list[tuple[str, str]]:
    """(Google variable scope, our state-dict prefix) for every conv layer."""
    names = [("conv0_a", "conv0_a"), ("conv0_b", "conv0_b")]
    for i in range(1, depth):
        names += [(f"conv{i}_a", f"modules_list.{i - 1}.conv_a"), (f"conv{i}_b", f"modules_list.{i - 1}.conv_b")]
    names.append(("conv_lom", "conv_lom"))
    return names


def google_weights_to_model(tensors: dict[str, np.ndarray], config: FFNConfig, scope: str = "seed_update") -> ConvStack3DFFN:
    """Build our network from Google's variables; weights go (z, y, x, in, out) -> (out, in, z, y, x)."""
    if config.use_layernorm:
        raise InputError("Google's TF convstack_3d has no LayerNorm; import with use_layernorm off")
    present_depth = len({m.group(1) for k in tensors if (m := re.match(rf"{scope}/conv(\d+)_a/weights$", k))})
    if present_depth != config.depth:
        raise InputError(f"checkpoint has {present_depth} residual levels (conv0..conv{present_depth - 1}) but the config declares depth {config.depth}")
    model = ConvStack3DFFN(config)
    state = model.state_dict()
    for google, ours in _layer_names(config.depth):
        for suffix, our_suffix in (("weights", "weight"), ("biases", "bias")):
            name = f"{scope}/{google}/{suffix}"
            if name not in tensors:
                raise InputError(f"checkpoint lacks variable {name}")
            value = tensors[name].astype(np.float32)
            if suffix == "weights":
                value = value.transpose(4, 3, 0, 1, 2)
            target = state[f"{ours}.{our_suffix}"]
            if tuple(value.shape) != tuple(target.shape):
                raise InputError(f"checkpoint variable {name} has shape {tuple(tensors[name].shape)}, which does not fit the declared config (expects {tuple(target.shape)} in torch layout)")
            state[f"{ours}.{our_suffix}"] = torch.from_numpy(np.ascontiguousarray(value))
    model.load_state_dict(state)
    return model.eval()


def import_tf_checkpoint(prefix: str | Path, config: FFNConfig) -> ConvStack3DFFN:
    """Read a Google FFN checkpoint and return the equivalent PyTorch network."""
    return google_weights_to_model(read_tf_checkpoint(prefix), config)


def convert_checkpoint(prefix: str | Path, out_path: str | Path, request_path: str | Path | None = None,
                       overrides: dict | None = None) -> FFNConfig:
    """A Google checkpoint to our model file; the architecture from Google's inference pbtxt, then `overrides`.

    `connectome ffn import-tf` and the demo both call this. Overrides that are None are ignored;
    what neither gives takes FFNConfig's defaults (the published FIB-25 model).
    """
    from ffn.model import save_model
    from ffn.options import model_args_from_request, read_pbtxt

    fields: dict = {}
    if request_path:
        fields.update(model_args_from_request(read_pbtxt(request_path), str(request_path)))
    fields.update({key: value for key, value in (overrides or {}).items() if value is not None})
    config = FFNConfig(**fields)
    save_model(out_path, import_tf_checkpoint(prefix, config), config)
    return config
