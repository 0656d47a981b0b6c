"""Reading the tensors of a PyTorch Lightning checkpoint without running any of its pickle.

`deadiff_v1.ckpt` is a 7.43 GB `torch.save` archive written by PyTorch Lightning: besides the `state_dict` it may
hold Lightning's own objects (callbacks, hyper-parameters as OmegaConf objects), which `torch.load(weights_only=True)`
refuses as a whole. This reader unpickles the archive with an unpickler that imports nothing:

- the few globals a tensor needs (`OrderedDict`, torch's tensor and parameter rebuild functions, the storage types)
  are answered by our own inert implementations, which only view bytes of the file;
- every other global becomes a placeholder class that records its name and ignores its arguments, so no function
  named by the file is ever looked up or called.

Tensors are views of the memory-mapped file (copy-on-write), so reading a state dict costs no copy; only what is
used is read from disk. The legacy (pre-1.6, non-zip) format and compressed archives are refused.
"""

from __future__ import annotations

import collections
import mmap
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stylecodes.checkpoint import CheckpointError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip entry's local header (30 bytes)


@dataclass
class LightningCheckpoint:
    state_dict: dict[str, Tensor]
    ignored_objects: list[str] = field(default_factory=list)  # globals that were replaced by placeholders


class _StorageType:
    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype


class _Placeholder:
    """Stands for any object the file describes that is not part of a tensor; it keeps nothing and runs nothing."""

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:  # e.g. what `getattr(module, name)` "returned"
        return self

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<ignored {self.global_name}>"


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple, stride: tuple, *unused: Any) -> Tensor:
    if not isinstance(storage, Tensor):
        raise pickle.UnpicklingError("a tensor refers to something that is not a stored array")
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(data: Tensor, *unused: Any) -> Tensor:
    return data


_TENSOR_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _InertUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _Archive) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.ignored: dict[str, None] = {}  # ordered set
        self.storages: dict[str, Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        known = _TENSOR_GLOBALS.get((module, name))
        if known is not None:
            return known
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        qualified = f"{module}.{name}"
        self.ignored[qualified] = None
        return type(name, (_Placeholder,), {"global_name": qualified})

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent reference {str(pid)[:80]}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"malformed storage reference {str(pid)[:80]}")
        if key not in self.storages:
            self.storages[key] = self.archive.array(key, storage_type.dtype, numel)
        return self.storages[key]


class _Archive:
    """The zip archive torch.save writes, memory-mapped; arrays are views of the stored (uncompressed) entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile as error:
            raise CheckpointError(
                f"{path} is not a zip-format torch checkpoint (corrupt, truncated, or saved by torch < 1.6, which "
                f"this reader does not take: load and re-save it with a recent torch first). ({error})"
            ) from error
        names = self.zip.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} is a zip file but not a torch checkpoint (it has no single data.pkl).")
        self.root = pickles[0][: -len("data.pkl")]
        byteorder = self._read_small("byteorder")
        if byteorder not in (None, b"little"):
            raise CheckpointError(f"{path} was saved on a {byteorder.decode(errors='replace')}-endian machine.")
        with open(path, "rb") as file:
            self.map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)

    def _read_small(self, name: str) -> bytes | None:
        try:
            return self.zip.read(self.root + name)
        except KeyError:
            return None

    def pickle_bytes(self) -> bytes:
        return self.zip.read(self.root + "data.pkl")

    def array(self, key: str, dtype: torch.dtype, numel: int) -> Tensor:
        name = f"{self.root}data/{key}"
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key} is missing from the archive") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise pickle.UnpicklingError(f"storage {key} is compressed; torch.save never compresses")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if info.file_size != numel * itemsize:
            raise pickle.UnpicklingError(f"storage {key} holds {info.file_size} bytes, not {numel} x {itemsize}")
        header = self.map[info.header_offset : info.header_offset + _LOCAL_HEADER.size]
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise pickle.UnpicklingError(f"storage {key}'s zip header is damaged")
        fields = _LOCAL_HEADER.unpack(header)
        start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
        if start + info.file_size > len(self.map):
            raise pickle.UnpicklingError(f"storage {key} runs past the end of the file (truncated download?)")
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(self.map, dtype=dtype, count=numel, offset=start)


def read_lightning_checkpoint(path: str | Path) -> LightningCheckpoint:
    """The `state_dict` of a (Lightning or plain) torch.save archive, read without executing its pickle."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}.")
    archive = _Archive(path)
    unpickler = _InertUnpickler(archive.pickle_bytes(), archive)
    try:
        loaded = unpickler.load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            RuntimeError, MemoryError) as error:  # RuntimeError: torch refusing a view outside its storage
        raise CheckpointError(
            f"Refusing {path}: its pickle is corrupt or not a checkpoint's ({type(error).__name__}: "
            f"{str(error)[:200]}). Nothing in it was executed; download it again."
        ) from error
    state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path} holds no state dict (got {type(loaded).__name__}).")
    tensors = {key: value for key, value in state_dict.items() if isinstance(key, str) and isinstance(value, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors under `state_dict`; is it a model checkpoint?")
    return LightningCheckpoint(tensors, list(unpickler.ignored))
