"""Load network weights from torch files without ever running code from them.

Checkpoints come from strangers on the internet, so every file goes through ``torch.load(weights_only=True)``,
which rebuilds tensors and plain containers and refuses any other Python global. Whatever goes wrong (no
file, a half download, an HTML page saved as ``.pt``, a pickle that wants ``os.system``, the wrong release,
another network's weights) ends as one :class:`~synthdb.errors.SynthdbError` line that names the file and
the fix, because these are the errors users meet first and cannot debug from a torch traceback.

:func:`load_torch_file` is the one place synthdb calls ``torch.load`` (embedders here, generator files in
:mod:`synthdb.nets.generator`), and it bounds what a small file can make torch allocate. ``torch.save``
stores its zip entries uncompressed, but a crafted zip may deflate 256 KB into 256 MiB: the central
directory's sizes are checked first (:data:`ZIP_RATIO`). After loading, a tensor may not view more bytes
than its storage holds (a stride-0 view of one float can claim gigabytes that the first copy materialises),
and all tensors together at most :data:`TENSOR_RATIO` times the file's size (:func:`check_tensors`).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from synthdb.errors import SynthdbError
from synthdb.files import sha256_hex
from synthdb.nets.unpickler import describe

#: Where training code puts the network inside a checkpoint: PyTorch Lightning (AdaFace) saves the module
#: as ``model`` next to its ``head``; ``DataParallel`` / DDP prefix every key with ``module.``.
WRAPPER_PREFIXES = ("model.", "module.")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format since torch 1.6
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickled magic number of old torch.save
_EXAMPLES = 3
ZIP_RATIO = 2
"""The most a torch zip may inflate: its entries' declared sizes add up to at most this times the file's
size (plus :data:`BYTES_SLACK`), and no compressed entry inflates more (``torch.save`` compresses nothing)."""
TENSOR_RATIO = 2
"""Tensor bytes, counted once per name, may add up to this times the file's size (plus :data:`BYTES_SLACK`):
storages are stored raw, and a network ties few weights."""
BYTES_SLACK = 1 << 20
"""Added to both bounds, so that tiny files keep room for their small tensors."""
MAX_OBJECTS = 1_000_000
"""Containers and values walked in a loaded file looking for tensors (a checkpoint holds thousands)."""


def load_state_dict(path: str | Path, expected_keys: Collection[str] | None = None, sha256: str | None = None,
                    *, architecture: str = "the network", drop_prefixes: Sequence[str] = (),
                    model: str = "NAME") -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` dict in a torch file, unwrapped from its training container.

    ``sha256`` (from a model card) is checked before anything is unpickled. Keys under ``drop_prefixes``
    (a classifier the embedder does not use) are removed. With ``expected_keys``, the remaining keys must be
    exactly those; BatchNorm ``num_batches_tracked`` counters may be absent (exports from MXNet or old torch
    lack them, and eval mode never reads them). ``model`` (a card name) completes the commands that errors
    suggest.
    """
    path = Path(path)
    fix = f"fetch it (`synthdb models fetch {model}`) or copy it (`synthdb models add {model} --file PATH`)"
    _check_file(path, sha256, fix)
    state = _unwrap(path, _torch_load(path, fix))
    state = {k: v for k, v in state.items() if not k.startswith(tuple(drop_prefixes))}
    if expected_keys is not None:
        _check_keys(path, state, expected_keys, architecture)
    return state


def load_weights(module: nn.Module, path: str | Path, sha256: str | None = None, *,
                 architecture: str = "the network", drop_prefixes: Sequence[str] = (),
                 model: str = "NAME") -> nn.Module:
    """Load a torch file into ``module`` after checking that every key and tensor shape fits it."""
    expected = module.state_dict()
    state = load_state_dict(path, expected.keys(), sha256, architecture=architecture,
                            drop_prefixes=drop_prefixes, model=model)
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
             if v.shape != expected[k].shape]
    if wrong:
        raise SynthdbError(f"{path} does not fit {architecture}: {len(wrong)} tensors have the wrong shape "
                           f"(file vs network: {', '.join(wrong[:_EXAMPLES])}): it holds weights of another "
                           "variant; use the file its model card names")
    module.load_state_dict(state)
    return module


def _check_file(path: Path, sha256: str | None, fix: str) -> None:
    if not path.is_file():
        raise SynthdbError(f"weights file {path} does not exist: {fix}")
    if sha256 and (actual := sha256_hex(path)) != sha256.lower():
        raise SynthdbError(f"{path} has sha256 {actual} but its model card says {sha256.lower()}: the "
                           "file is damaged or a different release; download it again")


def _torch_load(path: Path, fix: str) -> object:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if size == 0:
        raise SynthdbError(f"{path} is empty (an interrupted download?): delete it, then {fix}")
    if not head.startswith(_ZIP_MAGIC) and head != _LEGACY_MAGIC:
        kind = "a plain Python pickle" if head.startswith(b"\x80") else "not a file torch.save wrote"
        raise SynthdbError(f"{path} is {kind} (it starts with {head[:8]!r}): synthdb reads only torch.save "
                           "files; if it is a web page (Google Drive's download warning), download the real "
                           "file in a browser")
    try:
        return load_torch_file(path)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:
            raise _corrupt(path, size, error, fix) from None
        raise SynthdbError(
            f"{path} is a pickle that needs the Python global {found.group(1)}; "
            "torch.load(weights_only=True) refuses it because unpickling it could run arbitrary code: in an "
            "environment you trust, re-save just its tensors with torch.save(state_dict, ...) and use that "
            "file") from None
    # what torch's loaders raise for damaged files (its legacy reader asserts and indexes its memo)
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, AssertionError,
            zipfile.BadZipFile) as error:
        raise _corrupt(path, size, error, fix) from None


def load_torch_file(path: Path, safe_globals: Sequence[type] = ()) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, with ``safe_globals`` allowed besides tensors and
    plain containers, within bounds: a zip's declared sizes are checked before torch reads it, and the
    loaded tensors by :func:`check_tensors`. Bounds are one :class:`SynthdbError` line; torch's own errors
    for damaged files propagate, for the caller to word (it knows what the file should have been)."""
    _check_archive(path)
    with torch.serialization.safe_globals(list(safe_globals)):
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    check_tensors(path, _tensors(path, loaded))
    return loaded


def check_tensors(path: Path, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Refuse tensors that view more bytes than their storage holds (stride 0, overlapping strides) and a
    total above :data:`TENSOR_RATIO` times the file's size plus :data:`BYTES_SLACK`: the bounds of the
    memory a file can make synthdb use once its tensors are copied. Meta tensors hold no memory."""
    limit, total = BYTES_SLACK, 0
    for name, tensor in tensors:
        if not name.isprintable():
            raise SynthdbError(f"{path}: a tensor is named {describe(name)}: the file is damaged or crafted")
        if tensor.device.type == "meta":
            continue
        nbytes = tensor.numel() * tensor.element_size()
        storage = tensor.untyped_storage().nbytes()
        if nbytes > storage:
            raise SynthdbError(
                f"{path}: its tensor {name} of shape {tuple(tensor.shape)} and strides {tensor.stride()} "
                f"views {nbytes:,} bytes of a {storage:,}-byte storage (an expanding view): the file is "
                "damaged or crafted; synthdb reads only tensors stored in full"
            )
        total += nbytes
        if total > limit and limit == BYTES_SLACK:  # past the slack, the file's size counts
            limit += TENSOR_RATIO * path.stat().st_size
        if total > limit:
            raise SynthdbError(
                f"{path}: its tensors add up to more than {limit:,} bytes, {TENSOR_RATIO} times its size "
                "(storages viewed again and again): the file is damaged or crafted"
            )


def _check_archive(path: Path) -> None:
    """A torch zip's central directory, before torch allocates what it declares (torch decides the format
    by the first bytes, as here; the legacy format stores its storages raw and is bounded by the file)."""
    with open(path, "rb") as f:
        if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            return
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
    size = path.stat().st_size
    declared = sum(entry.file_size for entry in entries)
    inflating = [
        e.filename for e in entries if e.file_size > ZIP_RATIO * e.compress_size + BYTES_SLACK
    ]
    if declared > ZIP_RATIO * size + BYTES_SLACK or inflating:
        raise SynthdbError(
            f"{path} declares {declared:,} bytes of content in a {size:,}-byte zip"
            + (f" ({inflating[0]} is compressed)" if inflating else "")
            + ": torch.save writes its entries uncompressed, so the file is crafted (a zip bomb) or damaged; "
            "re-save the weights with torch.save"
        )


def _tensors(path: Path, loaded: object) -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) for every distinct tensor in a loaded file, walked iteratively and each object
    once (torch's unpickler shares objects, so a file can be a DAG); names are cut at 200 characters."""
    seen: set[int] = set()
    pending: list[tuple[str, object]] = [("", loaded)]
    while pending:
        name, value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if len(seen) > MAX_OBJECTS:
            raise SynthdbError(f"{path} holds more than {MAX_OBJECTS:,} objects: it is not a checkpoint")
        if isinstance(value, torch.Tensor):
            yield name or "(the file)", value
        elif isinstance(value, Mapping):
            pending.extend((_child(name, k), v) for k, v in value.items())
        elif isinstance(value, list | tuple | set | frozenset):
            pending.extend((_child(name, i), v) for i, v in enumerate(value))


def _child(name: str, key: object) -> str:
    part = key[:200] if isinstance(key, str) else describe(key)
    return f"{name}.{part}".lstrip(".")[:200]


def _corrupt(path: Path, size: int, error: BaseException, fix: str) -> SynthdbError:
    reason = str(error).split(". ")[0] or type(error).__name__
    return SynthdbError(f"{path} is truncated or corrupt ({size} bytes; torch: {reason}): "
                        f"delete it, then {fix}")


def _unwrap(path: Path, obj: object) -> dict[str, torch.Tensor]:
    """Take the state dict out of a Lightning/AdaFace ``{'state_dict': ...}`` and strip wrapper prefixes."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        found = f"a dict with keys {', '.join(map(str, list(obj)[:5]))}" if isinstance(obj, Mapping) \
            else f"a {type(obj).__name__}"
        raise SynthdbError(f"{path} holds {found}, not a state dict (name -> tensor): save the network's "
                           "weights with torch.save(model.state_dict(), ...)")
    state = dict(obj)
    for prefix in WRAPPER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _check_keys(path: Path, state: Mapping[str, torch.Tensor], expected: Collection[str],
                architecture: str) -> None:
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    known = set(expected)
    unexpected = [k for k in state if k not in known]
    if missing or unexpected:
        raise SynthdbError(
            f"{path} does not fit {architecture}: {len(missing)} missing keys "
            f"({', '.join(missing[:_EXAMPLES]) or '-'}) and {len(unexpected)} unexpected keys "
            f"({', '.join(unexpected[:_EXAMPLES]) or '-'}): it holds weights of another network; "
            "use the file its model card names")
