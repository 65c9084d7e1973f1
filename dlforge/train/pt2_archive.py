"""Vetting a ``torch.export`` archive (``.pt2``) before torch reads it (stdlib only).

``torch.export.load`` is not safe on a file from elsewhere, and not only because of pickle:

- weights and constants marked ``use_pickle``, custom and opaque objects, and legacy ``*.pt``
  weight files are unpickled (``torch.load(weights_only=False)``, ``pickle.loads``); the sample
  inputs are unpickled with ``weights_only=True`` *and, when that fails, again without it*;
- the program's ``guards_code`` is Python source that ``ExportedProgram.module()`` passes to ``exec``;
- symbolic shape expressions (``expr_str``) go through ``sympy.sympify``, which evaluates Python;
- a node's target is looked up by name anywhere under ``torch``, ``math`` or ``operator`` and called
  when the model runs (``torch.os.system`` is such a name);
- names become identifiers in the Python code FX generates and executes for the graph;
- an AOTInductor package holds a shared library that is loaded.

So an archive is read here first, every entry accounted for, and refused (one-line error) unless
each is one of: the archive's small marker files, the program's JSON (every string checked: names
are identifiers, operators are ATen operators or the symbolic-shape arithmetic torch itself allows,
shape expressions contain only numbers, shape symbols and sympy's integer functions, no guard code
beyond plain size comparisons, no custom objects or sub-graphs), the weights / constants configs
(no ``use_pickle``, no custom or opaque objects) and the raw tensor bytes they point to. The sample
inputs, the one pickle every archive holds, must pickle nothing but tensors (checked opcode by opcode,
never unpickled) and are dropped anyway: :func:`vetted_entries` returns the entries from which the
caller assembles a fresh archive for torch, so torch never parses the user's file itself and never
reaches a pickle.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import zipfile
from typing import Any

from dlforge.errors import InputError

NAME = re.compile(r"[A-Za-z0-9_]+")
SAMPLE_INPUTS = re.compile(r"data/sample_inputs/([A-Za-z0-9_]+)\.pt")
# Entries relative to the archive's root folder, and what each may hold.
MARKERS = {
    "archive_format": re.compile(rb"pt2"),
    "archive_version": re.compile(rb"\d{1,4}"),
    "byteorder": re.compile(rb"little|big"),
    ".data/version": re.compile(rb"\d{1,4}\n?"),
    ".data/serialization_id": re.compile(rb"\d{1,64}"),
}
PROGRAM = re.compile(r"models/([A-Za-z0-9_]+)\.json")
WEIGHTS_CONFIG = re.compile(r"data/weights/([A-Za-z0-9_]+)_weights_config\.json")
CONSTANTS_CONFIG = re.compile(r"data/constants/([A-Za-z0-9_]+)_constants_config\.json")
WEIGHT = re.compile(r"data/weights/(weight_\d+)")
CONSTANT = re.compile(r"data/constants/(tensor_constant_\d+)")

# What a node may call: ATen operators, and the Python arithmetic on sizes that torch.export emits.
ATEN_TARGET = re.compile(r"torch\.ops\.aten\.(?!_?_)[A-Za-z0-9_]+\.(?!_?_)[A-Za-z0-9_]+")
SYMBOLIC_TARGETS = frozenset(
    [f"_operator.{op}" for op in ("getitem", "eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add", "sub",
                                  "floordiv", "mod", "pow", "truediv", "and_", "or_", "lshift", "rshift")]
    + ["math.trunc"]
    + [f"torch.{fn}" for fn in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt")])
# Shape expressions, as sympy's srepr writes them (``Mul(Integer(2), Symbol('s0', positive=True))``):
# numbers, operators, sympy's classes and integer functions called by name with keyword flags, and
# quoted strings that are shape-symbol names or numbers. No attribute access, subscripts or other
# names, so the ``eval`` inside ``sympy.sympify`` can build sympy objects and nothing else.
SYMPY_NAMES = frozenset((
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs", "floor", "ceiling",
    "Equality", "Unequality", "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan", "Eq", "Ne", "Lt",
    "Le", "Gt", "Ge", "And", "Or", "Not", "true", "false", "True", "False", "oo", "zoo", "nan",
    # keyword flags of Symbol and Float
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero", "nonzero",
    "even", "odd", "rational", "commutative", "precision"))
EXPR_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?(?:e[+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|'([^']*)'|"
                        r"(\*\*|//|==|!=|<=|>=|[-+*/%(),<>&|~=]))")
SHAPE_SYMBOL = re.compile(r"[a-z]{1,4}\d{1,9}")
NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:e[+-]?\d+)?")
# Guard code torch.export may record: a size of an input compared with an integer, nothing else.
GUARD = re.compile(r"L\['[A-Za-z_][A-Za-z0-9_]*'\](?:\.size\(\)\[\d{1,3}\])? ?(?:==|!=|<=|>=|<|>) ?-?\d{1,19}")
# A string that may end up in generated Python code as (part of) a name, a device or a version: no
# quotes, brackets, spaces, colons or newlines, so it cannot form an expression beyond a dotted name.
PLAIN = re.compile(r"[A-Za-z0-9_.+]*")
# Keys whose strings are free text torch only stores or parses as data (never code), or checks here.
FREE_TEXT = frozenset(("stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn", "custom", "from_node",
                       "in_spec", "out_spec", "as_string", "as_strings"))
# Parts of the program schema that carry objects or code torch would have to build: never accepted.
REFUSED_KEYS = {
    "as_custom_obj": "a custom (TorchBind) object",
    "custom_obj": "a custom (TorchBind) object input",
    "as_graph": "a sub-graph (higher-order operator)",
    "as_operator": "an operator passed as a value",
}
PROGRAM_KEYS = frozenset(("graph_module", "opset_version", "range_constraints", "schema_version", "verifiers",
                          "torch_version", "guards_code"))
NAME_MAPS = frozenset(("tensor_values", "sym_int_values", "sym_float_values", "sym_bool_values", "range_constraints"))
# Globals the sample inputs' pickle may name: how torch.save writes tensors.
TENSOR_GLOBALS = re.compile(r"torch\._utils _rebuild_tensor_v[23]|torch\._utils _rebuild_parameter|"
                            r"collections OrderedDict|torch [A-Za-z]{1,24}Storage|torch (?:device|Size)")
UNSAFE_OPCODES = frozenset(("STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"))
MAX_ENTRIES = 100_000


class Refused(Exception):
    """Why an archive is refused (turned into the caller's error type with the path)."""


def vetted_entries(data: bytes, *, where: str, error: type[InputError] = InputError) -> dict[str, bytes]:
    """Vouch for every entry of the ``.pt2`` archive ``data`` (read from ``where``) and return them by
    name, relative to the archive's root folder, the sample inputs emptied: what a fresh archive for
    torch may hold.

    Raises:
        error: ``data`` is not a zip archive, or holds anything not vouched for (the message names
            the entry and what it would make torch do).
    """
    try:
        entries = _read_zip(data)
        _vet(entries)
    except Refused as exc:
        raise error(f"{where} is refused: {exc}; dlforge loads only plain torch.export programs (ATen operators, "
                    "tensors, no pickled objects): re-export the model with torch.export.export and "
                    "torch.export.save") from None
    except zipfile.BadZipFile as exc:
        raise error(f"{where} is not a .pt2 archive ({exc}); save the model with torch.export.save") from None
    return {name: (b"" if SAMPLE_INPUTS.fullmatch(name) else data) for name, data in entries.items()}


def _read_zip(data: bytes) -> dict[str, bytes]:
    """Every entry of the zip under its single root folder; refused: duplicates, links out, encryption."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise Refused(f"it has {len(infos)} entries")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise Refused("it names an entry twice (two readers could see different files)")
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any("/" not in n for n in names):
            raise Refused(f"its entries are not under one root folder ({', '.join(sorted(roots)[:3])})")
        out = {}
        for info in infos:
            rel = info.filename.split("/", 1)[1]
            if info.is_dir() and rel == "":
                continue
            if info.flag_bits & 0x1:
                raise Refused(f"entry {info.filename} is encrypted")
            if "\\" in rel or any(p in ("", ".", "..") for p in rel.split("/")):
                raise Refused(f"entry name {info.filename!r} is not a plain relative path")
            out[rel] = archive.read(info)
    return out


def _vet(entries: dict[str, bytes]) -> None:
    programs = [m.group(1) for name in entries if (m := PROGRAM.fullmatch(name))]
    if programs != ["model"]:
        raise Refused("it holds no exported program (models/model.json)" if not programs else
                      f"it holds {len(programs)} programs ({', '.join(programs)}); expected one, 'model'")
    raw_tensors = set()
    for name, data in entries.items():
        if name in MARKERS:
            if not MARKERS[name].fullmatch(data):
                raise Refused(f"entry {name} holds {data[:40]!r}, not what torch.export.save writes")
        elif m := PROGRAM.fullmatch(name):
            _vet_program(_json(name, data))
        elif (m := WEIGHTS_CONFIG.fullmatch(name)) or (m := CONSTANTS_CONFIG.fullmatch(name)):
            raw_tensors |= _vet_payload_config(name, _json(name, data), "weights" in name)
        elif SAMPLE_INPUTS.fullmatch(name):
            _vet_tensor_pickle(name, data)
        elif WEIGHT.fullmatch(name) or CONSTANT.fullmatch(name):
            continue
        elif name.startswith("data/aotinductor/"):
            raise Refused(f"entry {name} is AOTInductor-compiled code (a shared library torch would load)")
        elif name.endswith(".pt") or name.endswith(".pkl"):
            raise Refused(f"entry {name} is a pickle (legacy weights or constants, or another object)")
        elif "/custom_obj_" in name or "/opaque_obj_" in name:
            raise Refused(f"entry {name} is a pickled object")
        else:
            raise Refused(f"entry {name} is not part of a plain torch.export archive")
    missing = sorted(n for n in raw_tensors if n not in entries)
    if missing:
        raise Refused(f"its configs name tensor data {missing[0]} that the archive does not hold")


def _json(name: str, data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(f"entry {name} is not valid JSON ({exc})") from None


def _vet_payload_config(name: str, config: Any, weights: bool) -> set[str]:
    """A weights / constants config: every tensor stored raw (``use_pickle`` false), none an object."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise Refused(f"entry {name} has no 'config' mapping")
    folder, pattern = ("data/weights/", WEIGHT) if weights else ("data/constants/", CONSTANT)
    files = set()
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise Refused(f"entry {name} stores {fqn!r} as a pickle (use_pickle), which torch would unpickle")
        file = f"{folder}{meta.get('path_name')}"
        if not pattern.fullmatch(file):
            raise Refused(f"entry {name} stores {fqn!r} as {meta.get('path_name')!r}, not a raw tensor "
                          "(custom and opaque objects are pickles)")
        if not isinstance(meta.get("tensor_meta"), dict):
            raise Refused(f"entry {name} gives {fqn!r} no tensor metadata")
        _vet_strings(meta, "config")
        files.add(file)
    return files


def _vet_program(program: Any) -> None:
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise Refused("models/model.json is not a serialized exported program")
    extra = sorted(set(program) - PROGRAM_KEYS)
    if extra:
        raise Refused(f"models/model.json has unknown field {extra[0]!r}")
    guards = program.get("guards_code", [])
    if not isinstance(guards, list) or not all(isinstance(g, str) and GUARD.fullmatch(g) for g in guards):
        bad = next((g for g in guards if not (isinstance(g, str) and GUARD.fullmatch(g))), guards) \
            if isinstance(guards, list) else guards
        raise Refused(f"models/model.json carries guard code {str(bad)[:60]!r}, Python that "
                      "ExportedProgram.module() would exec")
    _vet_strings(program, "program")
    graph = program["graph_module"].get("graph")
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise Refused("models/model.json has no graph")
    if graph.get("custom_obj_values"):
        raise Refused("the program holds custom (TorchBind) objects")
    for node in graph["nodes"]:
        target = node.get("target") if isinstance(node, dict) else None
        if not isinstance(target, str) or not (ATEN_TARGET.fullmatch(target) or target in SYMBOLIC_TARGETS):
            raise Refused(f"the program calls {str(target)[:80]!r}; only ATen operators (torch.ops.aten.*) and "
                          "size arithmetic are accepted")


def _vet_strings(value: Any, key: str) -> None:
    """Walk the JSON: refuse the keys that carry objects or code, and check every string by its key."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k in REFUSED_KEYS and v is not None:
                raise Refused(f"the program holds {REFUSED_KEYS[k]}")
            if key in NAME_MAPS and not (isinstance(k, str) and NAME.fullmatch(k)):
                raise Refused(f"{key} names {str(k)[:60]!r}, not an identifier")
            if not PLAIN.fullmatch(k):
                raise Refused(f"the program has a field named {k[:60]!r}")
            _vet_strings(v, k)
    elif isinstance(value, list):
        for v in value:
            _vet_strings(v, key)
    elif isinstance(value, str):
        if key == "expr_str":
            _vet_expression(value)
        elif key in FREE_TEXT or key == "guards_code":
            if any(ord(c) < 32 and c not in "\n\t" for c in value) or ("\n" in value and key != "stack_trace"):
                raise Refused(f"its {key} holds control characters (they could end a comment in generated code)")
        elif not PLAIN.fullmatch(value):
            raise Refused(f"its {key} {value[:60]!r} is not a plain name")


def _vet_expression(expr: str) -> None:
    """A symbolic size in sympy's srepr form, made of the tokens :data:`EXPR_TOKEN` allows; nothing else."""
    pos, end = 0, len(expr.rstrip())
    while pos < end:
        m = EXPR_TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            raise Refused(f"shape expression {expr[:60]!r} is not plain arithmetic (sympy would evaluate it)")
        name, text = m.group(2), m.group(3)
        if name is not None and name not in SYMPY_NAMES and not SHAPE_SYMBOL.fullmatch(name):
            raise Refused(f"shape expression {expr[:60]!r} names {name!r} (sympy would evaluate it)")
        if text is not None and not (SHAPE_SYMBOL.fullmatch(text) or NUMBER.fullmatch(text)):
            raise Refused(f"shape expression {expr[:60]!r} holds the string {text[:30]!r} (sympy would evaluate it)")
        pos = m.end()


def _vet_tensor_pickle(name: str, data: bytes) -> None:
    """The sample inputs: a torch.save zip whose pickle builds only tensors, tuples, lists and dicts.

    Checked opcode by opcode with :mod:`pickletools` (which reads, never executes): every global it
    names must be one torch.save uses for tensors, and the opcodes that import by other routes
    (``STACK_GLOBAL``, ``INST``, ``OBJ``, the extension registry) must not appear.
    """
    if not data:
        return
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            pickles = [n for n in inner.namelist() if n.endswith(".pkl")]
            if [n.split("/")[-1] for n in pickles] != ["data.pkl"]:
                raise Refused(f"entry {name} holds pickles {pickles}; expected one data.pkl")
            stream = inner.read(pickles[0])
    except zipfile.BadZipFile:
        raise Refused(f"entry {name} is not a torch.save archive (a bare pickle)") from None
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name in UNSAFE_OPCODES:
                raise Refused(f"entry {name} is a pickle that imports objects ({opcode.name})")
            if opcode.name == "GLOBAL" and not TENSOR_GLOBALS.fullmatch(str(arg)):
                raise Refused(f"entry {name} is a pickle that calls {arg!r}")
    except (ValueError, EOFError) as exc:  # pickletools' errors for a malformed stream
        raise Refused(f"entry {name} is not a well-formed pickle ({exc})") from None
