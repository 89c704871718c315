"""A pickle machine for files from strangers: the opcodes network pickles use, with bounded work.

A pickle is a program for a stack machine. Python's unpickler runs any of it: it calls whatever globals
``find_class`` hands out, lets BUILD call ``__setstate__`` on any object (a tensor's re-points it at any
memory range; a numpy dtype's mutates a shared singleton), hashes nested tuples recursively and allocates
whatever length a few bytes declare. :class:`Unpickler` is a small interpreter of our own instead:

- only the opcodes of protocols 2 to 4 that network pickles use exist (no text opcodes, INST/OBJ, EXT or
  out-of-band buffers); every opcode executed, and every item a constructor copies, is counted against
  :data:`MAX_OPS`, which bounds the objects built (and the memory they take) whatever the file's size;
- every declared length is checked against the bytes left in the file before anything is read or
  allocated; integers are at most :data:`MAX_INT_BYTES` bytes long;
- dict keys and set items must be strings, bytes, None, bools or 32-bit integers (:func:`key`): no recursive
  hashing and no hash-collision floods;
- the only globals are the :class:`Global` objects of its allow-list; REDUCE and NEWOBJ call their
  ``reduce`` / ``new`` and nothing else, BUILD fills only an object that one of them registered with
  :meth:`Unpickler.will_build`, and APPEND / SETITEM / ADDITEMS grow only lists, dicts and sets.

What the globals build, and the allow-list of NVIDIA's network pickles, is :mod:`synthdb.nets.pickles`.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

MAX_OPS = 2_000_000
"""Opcodes one file may execute, plus items constructors copy. The G and G_ema of a full-size StyleGAN2 1024
snapshot run about 36,000; each opcode makes at most one object, so this bounds the objects (a few hundred
megabytes at worst) and the time (seconds) whatever the file holds."""
MAX_INT_BYTES = 16
"""The longest integer (LONG1 / LONG4) read: 128 bits. torch's legacy magic number needs 73."""
BYTES_SLACK = 1 << 20
"""What storage/array bytes and tensor bytes may each add up to beyond the file's size: storages are
stored raw, so a real file never needs more, and tiny files keep room for their small buffers."""
_MAX_NAME = 256  # characters of a GLOBAL's module or name line


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global off the allow-list; nothing it names has been called."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class TensorFlowPickle(pickle.UnpicklingError):
    """A TensorFlow-era StyleGAN pickle: its weights are TF variables, not torch tensors."""


class OverBudget(pickle.UnpicklingError):
    """The pickle would make synthdb build more than its bounds allow; what was built is dropped."""


class Budget:
    """What one file may make the reader build, spent as it is built: opcodes and copied items against
    :data:`MAX_OPS`, storage/array bytes and tensor bytes each against the file size + :data:`BYTES_SLACK`."""

    def __init__(self, file_size: int) -> None:
        self.ops = MAX_OPS
        self.data_bytes = self.tensor_bytes = file_size + BYTES_SLACK
        self.file_size = file_size

    def spend_ops(self, count: int) -> None:
        self.ops -= count
        if self.ops < 0:
            raise OverBudget(f"it makes more than {MAX_OPS:,} objects")

    def spend_data(self, nbytes: int) -> None:
        """Storage and numpy array bytes: copies of bytes the file holds."""
        self.data_bytes -= nbytes
        if self.data_bytes < 0:
            raise OverBudget(f"its storages and arrays hold more bytes than the file's {self.file_size:,}")

    def spend_tensor(self, nbytes: int) -> None:
        """Tensor bytes: views of storages, which would be multiplied if views could expand or repeat."""
        self.tensor_bytes -= nbytes
        if self.tensor_bytes < 0:
            raise OverBudget(f"its tensors view more bytes than the file's {self.file_size:,}")


@dataclass(frozen=True, eq=False)
class Global:
    """A global the pickle named, as the machine hands it out. ``reduce`` is what REDUCE may call with it,
    ``new`` what NEWOBJ may; both take the machine and the pickle's argument tuple. A global with neither
    is only ever an argument (``numpy.ndarray``, torch's storage types)."""

    name: str
    reduce: Callable[[Unpickler, tuple[Any, ...]], Any] | None = None
    new: Callable[[Unpickler, tuple[Any, ...]], Any] | None = None


def key(value: Any) -> Any:
    """A dict key or set item whose hash is cheap and collision-free: what network pickles use."""
    if isinstance(value, str | bytes) or value is None or type(value) is bool:
        return value
    if type(value) is int and -(2**31) <= value < 2**31:
        return value
    raise pickle.UnpicklingError(f"a dict key or set item of type {type(value).__name__}")


def arguments(args: tuple[Any, ...], low: int, high: int, name: str) -> tuple[Any, ...]:
    if not low <= len(args) <= high:
        raise pickle.UnpicklingError(f"{name} called with {len(args)} arguments")
    return args


class Unpickler:
    """A pickle interpreter for the opcodes of protocols 2 to 4 that network pickles use, within a
    :class:`Budget`. ``allowed`` maps (module, name) to the :class:`Global` a GLOBAL gives; ``persistent``
    answers BINPERSID (torch's legacy storage records), which is refused without it."""

    def __init__(
        self,
        file: BinaryIO,
        size: int,
        allowed: Mapping[tuple[str, str], Global],
        budget: Budget,
        persistent: Callable[[Any], Any] | None = None,
    ) -> None:
        self.file, self.left = file, size
        self.allowed, self.budget, self.persistent = allowed, budget, persistent
        self.builds: dict[int, tuple[Any, Callable[[Any], None]]] = {}
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}

    def load(self) -> Any:
        """One pickle, up to its STOP (torch's legacy format puts several in one file)."""
        self.stack, self.marks, self.memo = [], [], {}
        while True:
            self.budget.spend_ops(1)
            if self.left == 0:
                raise pickle.UnpicklingError("the file ends before the pickle does (truncated?)")
            op = self.read(1)
            if op == b".":
                return self.pop()
            handler = _OPCODES.get(op)
            if handler is None:
                raise pickle.UnpicklingError(f"opcode {op!r}, which network pickles do not use")
            handler(self)

    def will_build(self, obj: Any, build: Callable[[Any], None]) -> Any:
        """Let one BUILD fill ``obj`` with ``build(state)``; BUILD touches nothing else."""
        self.builds[id(obj)] = (obj, build)
        return obj

    # reading
    def read(self, count: int) -> bytes:
        if count > self.left:
            raise pickle.UnpicklingError(f"a length of {count:,} bytes runs past the end of the file")
        data = self.file.read(count)
        if len(data) != count:
            raise pickle.UnpicklingError("the file changed while it was read")
        self.left -= count
        return data

    def unpack(self, layout: str) -> Any:
        return struct.unpack(layout, self.read(struct.calcsize(layout)))[0]

    def line(self) -> str:
        out = bytearray()
        while (char := self.read(1)) != b"\n":
            out += char
            if len(out) > _MAX_NAME:
                raise pickle.UnpicklingError("a GLOBAL name longer than 256 characters")
        return out.decode("ascii")

    # the stack
    def push(self, value: Any) -> None:
        self.stack.append(value)

    def pop(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise pickle.UnpicklingError("an opcode takes more values than the stack holds")
        return self.stack.pop()

    def top(self) -> Any:
        value = self.pop()
        self.push(value)
        return value

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise pickle.UnpicklingError("an opcode needs a MARK that is not there")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def target(self, kind: type) -> Any:
        """The container under the values an APPEND/SETITEM/ADDITEMS adds: only ``kind`` may grow."""
        obj = self.top()
        if not isinstance(obj, kind) or (kind is not dict and type(obj) is not kind):
            raise pickle.UnpicklingError(f"items added to a {type(obj).__name__}")
        return obj

    # opcodes
    def op_proto(self) -> None:
        if self.read(1)[0] > pickle.HIGHEST_PROTOCOL:
            raise pickle.UnpicklingError("an unknown pickle protocol")

    def op_frame(self) -> None:
        if self.unpack("<Q") > self.left:  # frames only group opcodes: checked, then read as usual
            raise pickle.UnpicklingError("a frame runs past the end of the file")

    def op_mark(self) -> None:
        self.marks.append(len(self.stack))

    def op_pop(self) -> None:
        if self.marks and self.marks[-1] == len(self.stack):
            self.marks.pop()
        else:
            self.pop()

    def op_long(self, count: int) -> None:
        if not 0 <= count <= MAX_INT_BYTES:
            raise pickle.UnpicklingError(f"an integer of {count:,} bytes")
        self.push(int.from_bytes(self.read(count), "little", signed=True))

    def op_text(self, count: int) -> None:
        self.push(self.read(count).decode("utf-8", "surrogatepass"))

    def op_tuple(self, count: int | None) -> None:
        if count is None:
            self.push(tuple(self.pop_mark()))
        else:
            items = [self.pop() for _ in range(count)]
            self.push(tuple(reversed(items)))

    def op_append(self) -> None:
        value = self.pop()
        self.target(list).append(value)

    def op_appends(self) -> None:
        items = self.pop_mark()
        self.target(list).extend(items)

    def op_additems(self) -> None:
        items = self.pop_mark()
        self.target(set).update(map(key, items))

    def op_setitem(self) -> None:
        value = self.pop()
        name = self.pop()
        self.op_setitems([name, value])

    def op_dict(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise pickle.UnpicklingError("a dict with a key and no value")
        self.push({key(k): v for k, v in zip(items[::2], items[1::2], strict=True)})

    def op_setitems(self, items: list[Any]) -> None:
        if len(items) % 2:
            raise pickle.UnpicklingError("a dict item with a key and no value")
        target = self.target(dict)
        for k, value in zip(items[::2], items[1::2], strict=True):
            target[key(k)] = value

    def op_put(self, index: int) -> None:
        self.memo[index] = self.top()

    def op_get(self, index: int) -> None:
        if index not in self.memo:
            raise pickle.UnpicklingError(f"memo entry {index} is read before it is written")
        self.push(self.memo[index])

    def op_global(self, module: Any, name: Any) -> None:
        if not isinstance(module, str) or not isinstance(name, str):
            raise pickle.UnpicklingError("a global named by something other than strings")
        if not (module + name).isprintable() or len(module) + len(name) > _MAX_NAME:
            raise pickle.UnpicklingError(f"a global named {describe(module)}, {describe(name)}")
        if (module, name) == ("dnnlib.tflib.network", "Network"):
            raise TensorFlowPickle(f"{module}.{name}")
        found = self.allowed.get((module, name))
        if found is None:
            raise RefusedGlobal(module, name)
        self.push(found)

    def op_stack_global(self) -> None:
        name = self.pop()
        module = self.pop()
        self.op_global(module, name)

    def op_call(self, kind: str) -> None:
        args = self.pop()
        func = self.pop()
        call = getattr(func, kind, None) if isinstance(func, Global) else None
        if call is None or type(args) is not tuple:
            what = func.name if isinstance(func, Global) else f"a {type(func).__name__}"
            raise pickle.UnpicklingError(f"{'REDUCE' if kind == 'reduce' else 'NEWOBJ'} on {what}")
        self.push(call(self, args))

    def op_build(self) -> None:
        state = self.pop()
        obj = self.top()
        obj_and_build = self.builds.pop(id(obj), None)
        if obj_and_build is None or obj_and_build[0] is not obj:
            raise pickle.UnpicklingError(f"BUILD on a {type(obj).__name__}, which synthdb never fills")
        obj_and_build[1](state)

    def op_persistent(self) -> None:
        if self.persistent is None:
            raise pickle.UnpicklingError("a persistent id, which network pickles do not use")
        self.push(self.persistent(self.pop()))


#: opcode -> handler: protocols 2 to 4 without the text opcodes, INST/OBJ, EXT and out-of-band buffers
_OPCODES: dict[bytes, Callable[[Unpickler], None]] = {
    pickle.PROTO: Unpickler.op_proto,
    pickle.FRAME: Unpickler.op_frame,
    pickle.MARK: Unpickler.op_mark,
    pickle.POP: Unpickler.op_pop,
    pickle.POP_MARK: Unpickler.pop_mark,
    pickle.DUP: lambda m: m.push(m.top()),
    pickle.NONE: lambda m: m.push(None),
    pickle.NEWTRUE: lambda m: m.push(True),
    pickle.NEWFALSE: lambda m: m.push(False),
    pickle.BININT: lambda m: m.push(m.unpack("<i")),
    pickle.BININT1: lambda m: m.push(m.unpack("<B")),
    pickle.BININT2: lambda m: m.push(m.unpack("<H")),
    pickle.LONG1: lambda m: m.op_long(m.unpack("<B")),
    pickle.LONG4: lambda m: m.op_long(m.unpack("<i")),
    pickle.BINFLOAT: lambda m: m.push(m.unpack(">d")),
    pickle.SHORT_BINUNICODE: lambda m: m.op_text(m.unpack("<B")),
    pickle.BINUNICODE: lambda m: m.op_text(m.unpack("<I")),
    pickle.BINUNICODE8: lambda m: m.op_text(m.unpack("<Q")),
    pickle.SHORT_BINBYTES: lambda m: m.push(m.read(m.unpack("<B"))),
    pickle.BINBYTES: lambda m: m.push(m.read(m.unpack("<I"))),
    pickle.BINBYTES8: lambda m: m.push(m.read(m.unpack("<Q"))),
    pickle.EMPTY_TUPLE: lambda m: m.push(()),
    pickle.TUPLE1: lambda m: m.op_tuple(1),
    pickle.TUPLE2: lambda m: m.op_tuple(2),
    pickle.TUPLE3: lambda m: m.op_tuple(3),
    pickle.TUPLE: lambda m: m.op_tuple(None),
    pickle.EMPTY_LIST: lambda m: m.push([]),
    pickle.LIST: lambda m: m.push(m.pop_mark()),
    pickle.APPEND: Unpickler.op_append,
    pickle.APPENDS: Unpickler.op_appends,
    pickle.EMPTY_DICT: lambda m: m.push({}),
    pickle.DICT: Unpickler.op_dict,
    pickle.SETITEM: Unpickler.op_setitem,
    pickle.SETITEMS: lambda m: m.op_setitems(m.pop_mark()),
    pickle.EMPTY_SET: lambda m: m.push(set()),
    pickle.ADDITEMS: Unpickler.op_additems,
    pickle.FROZENSET: lambda m: m.push(frozenset(map(key, m.pop_mark()))),
    pickle.BINPUT: lambda m: m.op_put(m.unpack("<B")),
    pickle.LONG_BINPUT: lambda m: m.op_put(m.unpack("<I")),
    pickle.MEMOIZE: lambda m: m.op_put(len(m.memo)),
    pickle.BINGET: lambda m: m.op_get(m.unpack("<B")),
    pickle.LONG_BINGET: lambda m: m.op_get(m.unpack("<I")),
    pickle.GLOBAL: lambda m: m.op_global(m.line(), m.line()),
    pickle.STACK_GLOBAL: Unpickler.op_stack_global,
    pickle.REDUCE: lambda m: m.op_call("reduce"),
    pickle.NEWOBJ: lambda m: m.op_call("new"),
    pickle.BUILD: Unpickler.op_build,
    pickle.BINPERSID: Unpickler.op_persistent,
}


def describe(value: Any) -> str:
    """A short, safe rendering of a value from a hostile file (no 4,000-digit integers, no deep repr)."""
    if type(value) is int and abs(value) >= 2**64:
        return f"a {value.bit_length()}-bit integer"
    if isinstance(value, int | float | bool) or value is None:
        return repr(value)
    if isinstance(value, str | bytes):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    return f"a {type(value).__name__}"
