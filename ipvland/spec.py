"""Load and validate the YAML configuration into a `model.Spec`.

Pure: reads files, never touches the network. `load()` either returns a Spec or raises `SpecError`
carrying *every* problem found, each with FILE:LINE:COL and a dotted path; it never raises
anything else, whatever the input.

How it works:
1. read each file (main + config.d drop-ins) with a size cap, decode strict UTF-8;
2. compose the YAML into nodes with a restricted loader (no aliases, no tags, no sexagesimal
   numbers, no timestamps, bounded nesting) and build plain Python data from the nodes ourselves,
   remembering where every key and value came from and refusing duplicate keys;
3. validate the structure against the JSON Schema (`SCHEMA`, loaded from ipvland/schema.json)
   and translate its errors into short human messages;
4. check the values (names, addresses, prefixes, MACs, ranges) and build per-file drafts;
5. merge the drafts in file order and run the cross-object checks (duplicates, clashes, modes).

One tree, many hosts (`load_tree`): every file is read, parsed and checked ONCE (steps 1-4); a
drop-in whose top-level `hosts:` globs do not match a host's identity is left out of that host's
merge (step 5), which is memoised per set of selected files. One device may be spread over several
files, field by field; the same field with two different values is an error naming both places.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import ipaddress
import json
import math
import os
import re
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

import jsonschema
import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver

from ipvland import normalize
from ipvland.model import (
    MAIN_TABLE,
    PLAIN,
    TEMP_PREFIX,
    AddressOptions,
    Device,
    Flag,
    IPAddress,
    IPInterface,
    IPNetwork,
    Mode,
    Neighbor,
    Nexthop,
    Parent,
    ParentMatch,
    Probe,
    Route,
    Rule,
    Spec,
    State,
    interned,
)

__all__ = ["SCHEMA", "ConfigError", "SpecError", "Tree", "default_config_path", "default_host", "dropin_paths",
           "excerpt", "load", "load_stream", "load_tree", "loads", "render_path", "render_yaml"]

DEFAULT_CONFIG = "/etc/ipvland/config.yaml"
MAX_FILE_SIZE = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_ERRORS_PER_FILE = 50
EXCERPT = 32  # characters of a key or value that a message may quote
IFNAMSIZ = 15  # bytes, without the terminating NUL
NETNS_MAX = 255  # NAME_MAX: the name becomes /run/netns/NAME
LOCAL_TABLE = 255


# ---------------------------------------------------------------- public API


@dataclass(frozen=True)
class ConfigError:
    """One problem in a config file. line/col are 1-based; 0 means the file as a whole (no position)."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class SpecError(Exception):
    """The configuration is invalid; `errors` holds the problems, sorted by file, line, col.

    At most MAX_ERRORS_PER_FILE per file, followed by one `FILE: … and N more error(s)` line;
    `total` counts them all.
    """

    def __init__(self, errors: tuple[ConfigError, ...] | list[ConfigError]) -> None:
        ordered = sorted(set(errors), key=lambda e: (e.file, e.line, e.col, e.path, e.message))
        self.total = len(ordered)
        self.errors: tuple[ConfigError, ...] = tuple(_bounded(ordered))
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def _bounded(ordered: list[ConfigError]) -> Iterator[ConfigError]:
    """The first MAX_ERRORS_PER_FILE errors of each file, then how many more there are."""
    shown = 0
    for i, e in enumerate(ordered):
        shown = shown + 1 if i and ordered[i - 1].file == e.file else 1
        if shown <= MAX_ERRORS_PER_FILE:
            yield e
        last_of_file = i + 1 == len(ordered) or ordered[i + 1].file != e.file
        if last_of_file and shown > MAX_ERRORS_PER_FILE:
            yield ConfigError(e.file, 0, 0, "", f"… and {shown - MAX_ERRORS_PER_FILE} more error(s) "
                                                f"(only the first {MAX_ERRORS_PER_FILE} are shown)")


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """A value from a config file as it may appear in a message: quoted, control characters
    escaped, and cut to `limit` characters with an ellipsis. Errors never echo more of a file."""
    if isinstance(value, str):
        return repr(value[:limit] + "…") if len(value) > limit else repr(value)
    text = repr(value)
    return text[:limit] + "…" if len(text) > limit else text


def default_config_path() -> Path:
    """$IPVLAND_CONFIG if set (and not empty), else /etc/ipvland/config.yaml."""
    return Path(os.environ.get("IPVLAND_CONFIG") or DEFAULT_CONFIG)


def default_host() -> str:
    """The host's identity for `hosts:` selection: $IPVLAND_HOST if set (and not empty), else the hostname."""
    return os.environ.get("IPVLAND_HOST") or socket.gethostname()


def dropin_paths(path: str | os.PathLike[str]) -> list[Path]:
    """The drop-ins `load(path)` reads: config.d/*.yaml|*.yml beside the main file, lexical order.

    Hidden files and editor/package-manager leftovers are ignored. A missing or unreadable
    config.d gives an empty list here (load() reports an unreadable one).
    """
    paths, _ = _list_dropins(Path(path))
    return paths


def load(path: str | os.PathLike[str], host: str | None = None) -> Spec:
    """Read the main file and its drop-ins, validate everything, return the Spec merged for `host`
    (default: `default_host()`): the drop-ins whose `hosts:` do not match it are checked, not merged."""
    return Loader()(path, host)


class Loader:
    """`load` for a caller that reads the same files again and again (the daemon, at every resync and
    reload): when every file is byte for byte what the last good load read, the files are not parsed
    and checked again (the schema check of a 1000-device file was most of a resync's CPU under
    emulation, README "Performance"). The files are still listed, stat'ed and read each time."""

    def __init__(self) -> None:
        self.last: Tree | None = None  # the last tree without errors

    def __call__(self, path: str | os.PathLike[str], host: str | None = None) -> Spec:
        main = str(path)
        try:
            tree = load_tree(path, reuse=self.last)
            self.last = None if tree.errors.strong or tree.errors.weak else tree
            return tree.spec(default_host() if host is None else host)
        except SpecError:
            raise
        except RecursionError:
            raise SpecError([ConfigError(main, 0, 0, "", "configuration is nested too deeply")]) from None
        except Exception as e:  # the daemon must never crash on a config
            raise SpecError([ConfigError(main, 0, 0, "", f"internal error while loading: "
                                                         f"{type(e).__name__}: {excerpt(str(e), 200)}")]) from None


# ---------------------------------------------------------------- JSON Schema

def _load_schema() -> dict[str, Any]:
    """The JSON Schema of a config file: ONE copy, ipvland/schema.json in the package (`ipvland schema`
    prints it; editors find it where the README's install steps put it)."""
    text = resources.files("ipvland").joinpath("schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


SCHEMA: dict[str, Any] = _load_schema()


def _is_int(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_int),
)
_VALIDATOR: Any = None


def _validator() -> Any:
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = _Validator(SCHEMA)
    return _VALIDATOR


# ---------------------------------------------------------------- errors and positions

PathT = tuple[str | int, ...]
Loc = tuple[str, int, int]  # file, line, col (1-based)

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.@+-]+")
# what a mistyped key looks like; anything else (a line of /etc/shadow, a base64 key) is not echoed
_KEY_LIKE = re.compile(r"[^\s\x00-\x1f\x7f-\x9f:$/\\]{1,32}")


def _render_path(path: PathT) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _PLAIN_KEY.fullmatch(p) and len(p) <= EXCERPT:
            out += f".{p}" if out else p
        else:
            out += f"[{excerpt(p)}]"
    return out


def render_path(path: PathT) -> str:
    """A path as errors show it: parents.eth0.devices.web0.addresses[0]."""
    return _render_path(path)


def _at(loc: Loc) -> str:
    return f"{loc[0]}:{loc[1]}:{loc[2]}"


@dataclass
class _Errors:
    strong: list[ConfigError] = field(default_factory=list)
    weak: list[ConfigError] = field(default_factory=list)  # shown only if nothing else is there

    def add(self, loc: Loc, path: PathT, message: str, weak: bool = False) -> None:
        e = ConfigError(loc[0], loc[1], loc[2], _render_path(path), message)
        (self.weak if weak else self.strong).append(e)

    def file(self, file: str, message: str) -> None:
        self.strong.append(ConfigError(file, 0, 0, "", message))

    def result(self) -> list[ConfigError]:
        places = {(e.file, e.line, e.col) for e in self.strong}
        return self.strong + [e for e in self.weak if (e.file, e.line, e.col) not in places]


@dataclass
class _Doc:
    """One parsed file: plain data plus where every value (and key) came from."""

    file: str
    data: Any
    vpos: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    kpos: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    tags: dict[PathT, str] = field(default_factory=dict)  # resolved tag of scalar values
    raw: dict[PathT, str] = field(default_factory=dict)  # original text of scalar values
    bad: set[PathT] = field(default_factory=set)  # values already reported (tags, bad scalars)

    def at(self, path: PathT) -> Loc:
        """Location of the value at path (or of its closest ancestor)."""
        p = path
        while True:
            if p in self.vpos:
                return (self.file, *self.vpos[p])
            if not p:
                return (self.file, 1, 1)
            p = p[:-1]

    def key_at(self, path: PathT) -> Loc:
        """Location of the key whose value is at path."""
        if path in self.kpos:
            return (self.file, *self.kpos[path])
        return self.at(path)


# ---------------------------------------------------------------- reading files


def _open(path: Path) -> IO[bytes]:  # a seam for tests
    return open(path, "rb")


def _read(path: Path, file: str, errors: _Errors) -> str | None:
    try:
        st = os.stat(path)
    except OSError as e:
        errors.file(file, f"cannot read: {e.strerror or e}")
        return None
    if stat.S_ISDIR(st.st_mode):
        errors.file(file, "cannot read: Is a directory")
        return None
    if not stat.S_ISREG(st.st_mode):
        errors.file(file, "cannot read: not a regular file")
        return None
    if st.st_size > MAX_FILE_SIZE:
        errors.file(file, f"file is too large ({st.st_size} bytes; the limit is 4 MiB)")
        return None
    try:
        with _open(path) as f:
            data = f.read(MAX_FILE_SIZE + 1)
    except OSError as e:
        errors.file(file, f"cannot read: {e.strerror or e}")
        return None
    return _decode(data, file, errors)


def _decode(data: bytes, file: str, errors: _Errors) -> str | None:
    if len(data) > MAX_FILE_SIZE:
        errors.file(file, "file is too large (the limit is 4 MiB)")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        errors.add((file, line, col), (), f"not valid UTF-8 at byte {e.start}")
        return None


_IGNORED = re.compile(r"(^[.#])|(~$)|(\.(bak|old|orig|rej|tmp|swp|swo|save)$)|(\.dpkg-)|(\.rpm)|(\.ucf-)")


def _list_dropins(main: Path) -> tuple[list[Path], str | None]:
    directory = main.parent / "config.d"
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return [], None
    except OSError as e:
        return [], f"cannot read directory: {e.strerror or e}"
    picked = [n for n in names if n.endswith((".yaml", ".yml")) and not _IGNORED.search(n)]
    return [directory / n for n in sorted(picked)], None


# ---------------------------------------------------------------- YAML -> nodes -> data

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SCALAR_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL}


class _AliasError(yaml.MarkedYAMLError):
    pass


class _Guard(Composer):
    """The composer, refusing aliases (no billion laughs) and nesting beyond MAX_DEPTH."""

    depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
            event = self.get_event()  # type: ignore[attr-defined]
            raise _AliasError(None, None, "YAML aliases (*name) are not supported", event.start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[attr-defined]
                raise _AliasError(None, None, f"nesting deeper than {MAX_DEPTH} levels",
                                  event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Loader(_Guard, yaml.SafeLoader):
    """SafeLoader without sexagesimal numbers, timestamps, merge keys, octal-by-leading-zero,
    aliases or unbounded nesting. `12:34:56:00:00:11` stays the string it looks like."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 (PyYAML looks it up per class)


_Loader.add_implicit_resolver(
    _BOOL,
    re.compile(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"),
    list("yYnNtTfFoO"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?0o[0-7_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])

_LoaderClass: Any = _Loader
try:  # the same, with libyaml's scanner and parser (10x faster); composing stays ours
    from yaml._yaml import CParser

    class _CLoader(_Guard, CParser, SafeConstructor, BaseResolver):
        yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            BaseResolver.__init__(self)

    _LoaderClass = _CLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    pass


def _scalar(loader: Any, node: ScalarNode) -> Any:
    if node.tag == _STR:
        return node.value
    if node.tag == _NULL:
        return None
    if node.tag == _BOOL:
        return loader.construct_yaml_bool(node)
    if node.tag == _FLOAT:
        return loader.construct_yaml_float(node)
    text = node.value.replace("_", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    for prefix, base in (("0x", 16), ("0o", 8), ("0b", 2)):
        if text.startswith(prefix):
            return sign * int(text[2:], base)
    if len(text) > 1 and text.startswith("0"):  # only through an explicit !!int: YAML 1.1 octal
        return sign * int(text, 8)
    return sign * int(text, 10)


def _mark(m: Any) -> tuple[int, int]:
    return (m.line + 1, m.column + 1)


def _reader_error(file: str, text: str, e: yaml.reader.ReaderError) -> tuple[Loc, str]:
    m = yaml.reader.Reader.NON_PRINTABLE.search(text)
    char: int | None
    if m is not None:
        position, char = m.start(), ord(m.group())
    else:  # libyaml counts bytes
        position = len(text.encode("utf-8", "surrogatepass")[: max(0, int(e.position))]
                       .decode("utf-8", "ignore"))
        char = ord(text[position]) if position < len(text) else None
    before = text[:position]
    line = before.count("\n") + 1
    col = position - (before.rfind("\n") + 1) + 1
    what = f"#x{char:04x}" if char is not None else "character"
    return (file, line, col), f"unacceptable character {what}: control characters (and NUL) are not allowed"


def _parse(file: str, text: str, errors: _Errors, loader_class: Any = None) -> _Doc | None:
    loader: Any = None
    try:
        loader = (loader_class or _LoaderClass)(text)
        node = loader.get_single_node()
    except yaml.reader.ReaderError as e:
        loc, message = _reader_error(file, text, e)
        errors.add(loc, (), message)
        return None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        pos = _mark(mark) if mark is not None else (1, 1)
        message = str(e.problem or "invalid YAML")
        if not isinstance(e, _AliasError):
            message = f"YAML syntax error: {message}"
            if e.context and e.context_mark is not None and e.context_mark is not mark:
                message += f" ({e.context} at line {e.context_mark.line + 1})"
            lines = text.splitlines()
            if mark is not None and 0 <= mark.line < len(lines) and "\t" in lines[mark.line]:
                message += "; indent with spaces, not tabs"
        errors.add((file, *pos), (), message)
        return None
    except yaml.YAMLError as e:
        errors.add((file, 1, 1), (), f"YAML error: {excerpt(str(e), 200)}")
        return None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        errors.add((file, 1, 1), (), "empty document: expected a mapping starting with 'version: 1'")
        return None
    problem = _not_a_config(node)
    if problem:  # say nothing of its content: it may be any file (/etc/shadow, a key) linked here
        errors.add((file, *_mark(node.start_mark)), (), problem)
        return None
    doc = _Doc(file, None)
    doc.data = _build(loader, doc, node, (), errors)
    return doc


_TOP_KEYS = ("version", "parents", "probes", "hosts")


def _not_a_config(node: Node) -> str | None:
    """Why the document cannot be an ipvland config at all, without quoting any of it; else None."""
    if isinstance(node, MappingNode) and node.tag == _MAP:
        keys = [k.value for k, _ in node.value if isinstance(k, ScalarNode) and isinstance(k.value, str)]
        if not node.value or any(k in _TOP_KEYS or difflib.get_close_matches(k, _TOP_KEYS, n=1, cutoff=0.6)
                                 for k in keys):
            return None
        return ("not an ipvland config: a mapping with none of the keys version, parents, probes "
                "(its content is not shown)")
    what = "a list" if isinstance(node, SequenceNode) else "a mapping" if isinstance(node, MappingNode) \
        else "a single value"
    if node.tag not in (_SEQ, _MAP, *_SCALAR_TAGS):
        what += " with a YAML tag"
    return f"the document must be a mapping starting with 'version: 1', not {what} (its content is not shown)"


def _build(loader: Any, doc: _Doc, node: Node, path: PathT, errors: _Errors) -> Any:
    doc.vpos[path] = _mark(node.start_mark)
    if isinstance(node, ScalarNode):
        if node.tag not in _SCALAR_TAGS:
            errors.add(doc.at(path), path, f"YAML tag {node.tag} is not supported")
            doc.bad.add(path)
            return None
        doc.tags[path] = node.tag
        doc.raw[path] = node.value
        try:
            return _scalar(loader, node)
        except Exception:
            errors.add(doc.at(path), path, f"{excerpt(node.value)} is not a valid {node.tag.rsplit(':', 1)[-1]}")
            doc.bad.add(path)
            return None
    if isinstance(node, SequenceNode):
        if node.tag != _SEQ:
            errors.add(doc.at(path), path, f"YAML tag {node.tag} is not supported")
            doc.bad.add(path)
            return None
        return [_build(loader, doc, item, (*path, i), errors) for i, item in enumerate(node.value)]
    if isinstance(node, MappingNode):
        if node.tag != _MAP:
            errors.add(doc.at(path), path, f"YAML tag {node.tag} is not supported")
            doc.bad.add(path)
            return None
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            kpos = _mark(knode.start_mark)
            if not isinstance(knode, ScalarNode) or knode.tag not in _SCALAR_TAGS:
                errors.add((doc.file, *kpos), path, "mapping keys must be plain strings")
                continue
            key = knode.value
            sub = (*path, key)
            if key in out:
                shown = (sub, repr(key)) if _KEY_LIKE.fullmatch(key) else (path, "(not shown)")
                errors.add((doc.file, *kpos), shown[0],
                           f"duplicate key {shown[1]} (first at line {doc.kpos[sub][0]})")
                continue
            doc.kpos[sub] = kpos
            out[key] = _build(loader, doc, vnode, sub, errors)
        return out
    errors.add(doc.at(path), path, "unsupported YAML node")  # pragma: no cover
    doc.bad.add(path)
    return None


# ---------------------------------------------------------------- schema errors -> messages

_TYPE_NAMES = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
    "number": "a number", "null": "empty", "boolean": "true or false",
}


def _what(doc: _Doc, path: PathT, value: Any) -> str:
    tag = doc.tags.get(path)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    raw = doc.raw.get(path, str(value))
    kind = {_BOOL: "a boolean", _INT: "an integer", _FLOAT: "a number"}.get(tag or "", "")
    return f"{excerpt(raw)}, which YAML reads as {kind}" if kind else excerpt(raw)


def _range(schema: dict[str, Any]) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo = schema.get("exclusiveMinimum")
    if lo is not None and hi is not None:
        return f"must be between {lo} and {hi}"
    if xlo is not None and hi is not None:
        return f"must be greater than {xlo} and at most {hi}"
    if lo is not None:
        return f"must be at least {lo}"
    if hi is not None:
        return f"must be at most {hi}"
    return f"must be greater than {xlo}"


def _schema_errors(doc: _Doc, errors: _Errors) -> None:
    found: dict[PathT, list[tuple[Loc, PathT, str, bool]]] = {}
    type_msgs: set[str] = set()
    typed: set[PathT] = set()
    for err in _validator().iter_errors(doc.data):
        path: PathT = tuple(err.absolute_path)
        kind = err.validator
        inst = err.instance
        sub = err.schema if isinstance(err.schema, dict) else {}
        out = found.setdefault(path, [])
        if "propertyNames" in err.schema_path:
            kpath = (*path, inst) if isinstance(inst, str) else path
            out.append((doc.key_at(kpath), kpath, f"invalid name {excerpt(inst)}", True))
        elif kind == "additionalProperties" and isinstance(inst, dict):
            valid = sorted(sub.get("properties", {}))
            for key in inst:
                if key in valid:
                    continue
                close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(valid)})"
                kpath = (*path, key)
                if _KEY_LIKE.fullmatch(key):
                    out.append((doc.key_at(kpath), kpath, f"unknown key {key!r}{hint}", False))
                else:  # not even shaped like a key: perhaps a line of a file that is no config at all
                    out.append((doc.key_at(kpath), path, f"unknown key of {len(key)} characters, not shown "
                                                         f"(not a key name){hint}", False))
        elif kind == "required" and isinstance(inst, dict):
            for key in err.validator_value:
                if key not in inst:
                    hint = ""
                    if path == () and key == "version":
                        hint = " (every config file starts with 'version: 1')"
                    out.append((doc.at(path), path, f"missing required key {key!r}{hint}", False))
        elif kind == "type":
            types: list[str] = [str(t) for t in (err.validator_value if isinstance(err.validator_value, list)
                                                  else [err.validator_value])]
            want = " or ".join(_TYPE_NAMES.get(t, t) for t in types if t != "null")
            got = _what(doc, path, inst)
            if path == ():
                msg = f"the document must be a mapping starting with 'version: 1', not {got}"
            elif path == ("version",):
                msg = f"must be the integer 1, not {got}"
            else:
                msg = f"must be {want}, not {got}"
                if "string" in types and doc.tags.get(path) in (_BOOL, _INT, _FLOAT, _NULL):
                    msg += " (quote it)"
                if inst is None and "array" in types:
                    msg += " (write [] for none)"
                elif inst is None and "object" in types:
                    msg += " (write {} for none)"
            typed.add(path)
            type_msgs.add(msg)
            out.append((doc.at(path), path, msg, False))
        elif kind == "enum":
            choices = ", ".join(str(c) for c in err.validator_value)
            out.append((doc.at(path), path, f"must be one of {choices}, not {_what(doc, path, inst)}", False))
        elif kind == "not" and path[-1:] == ("table",):
            out.append((doc.at(path), path, "table 255 is the kernel's local table; ipvland does not "
                                            "manage it", False))
        elif kind == "const" and path == ("version",):
            out.append((doc.at(path), path, f"unsupported version {excerpt(inst)}; this ipvland reads version 1",
                        False))
        elif kind == "minProperties" and isinstance(inst, dict):
            keys = ", ".join(sorted(sub.get("properties", {})))
            out.append((doc.at(path), path, f"needs at least one of {keys}", False))
        elif kind == "minItems" and isinstance(inst, list):
            least = err.validator_value
            out.append((doc.at(path), path, f"needs at least {least} item{'s' if least != 1 else ''}, not {len(inst)}",
                        False))
        elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            out.append((doc.at(path), path, f"{_range(sub)}, not {excerpt(inst)}", False))
        else:  # pattern, minLength, maxLength, not, const: the value checks say it better
            out.append((doc.at(path), path, f"invalid value {excerpt(inst)}", True))
    for path, items in found.items():
        if path in doc.bad:
            continue
        for loc, epath, msg, weak in items:
            if path in typed and msg not in type_msgs:
                continue
            errors.add(loc, epath, msg, weak=weak)


# ---------------------------------------------------------------- value checks


def _bad_chars(name: str, extra: str) -> list[str]:
    return sorted({c for c in name if c in extra or c.isspace() or not c.isprintable()})


_RESERVED_IFNAMES = ("all", "default")


def _ifname_problem(name: str) -> str | None:
    if not name:
        return "an interface name must not be empty"
    if name in (".", ".."):
        return f"{excerpt(name)} is not a valid interface name"
    if name in _RESERVED_IFNAMES:
        return (f"{name!r} cannot be an interface name: the kernel refuses it, since "
                f"/proc/sys/net/ipv4/conf/{name} (and ipv6) holds its settings for every device")
    bad = _bad_chars(name, "/:%")
    if bad:
        return f"interface name {excerpt(name)} contains {', '.join(repr(c) for c in bad)}; " \
               "'/', ':', '%' (the kernel would pick a name like eth%d), whitespace and control " \
               "characters are not allowed"
    size = len(name.encode("utf-8"))
    if size > IFNAMSIZ:
        return f"interface name {excerpt(name)} is {size} bytes long; the kernel allows at most {IFNAMSIZ}"
    return None


def _netns_problem(name: str) -> str | None:
    if not name:
        return "a namespace name must not be empty"
    if name in (".", ".."):
        return f"{excerpt(name)} is not a valid namespace name"
    bad = _bad_chars(name, "/")
    if bad:
        return f"namespace name {excerpt(name)} contains {', '.join(repr(c) for c in bad)}; " \
               "'/', whitespace and control characters are not allowed"
    size = len(name.encode("utf-8"))
    if size > NETNS_MAX:
        return f"namespace name is {size} bytes long; at most {NETNS_MAX} are allowed"
    return None


def _ip(text: str) -> IPAddress | None:
    if "%" in text or "/" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}")


@dataclass
class _RouteD:
    route: Route
    loc: Loc


@dataclass
class _NeighD:
    neighbor: Neighbor
    loc: Loc


@dataclass
class _DevD:
    name: str
    parent: str
    loc: Loc
    netns: str | None = None
    addresses: list[tuple[IPInterface, Loc, PathT]] = field(default_factory=list)
    mtu: int | None = None
    mtu_loc: Loc | None = None
    state: State = State.UP
    routes: list[_RouteD] = field(default_factory=list)
    neighbors: list[_NeighD] = field(default_factory=list)
    sysctls: list[tuple[str, int]] = field(default_factory=list)
    sysctls_loc: Loc | None = None
    ip_forward: tuple[bool, Loc] | None = None
    address_options: list[tuple[IPInterface, AddressOptions]] = field(default_factory=list)
    keys: dict[str, tuple[Any, Loc]] = field(default_factory=dict)  # each key the file gives: raw value, place


@dataclass
class _ParentD:
    name: str
    loc: Loc
    mode: tuple[Mode | None, Loc] | None = None  # (None, loc): present but invalid
    flags: tuple[Flag | None, Loc] | None = None
    routes: list[_RouteD] = field(default_factory=list)
    neighbors: list[_NeighD] = field(default_factory=list)
    devices: dict[str, _DevD] = field(default_factory=dict)
    match: tuple[ParentMatch, Loc] | None = None


@dataclass
class _RuleD:
    rule: Rule
    loc: Loc
    path: PathT


@dataclass
class _FileD:
    file: str
    parents: list[_ParentD] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    rules: list[_RuleD] = field(default_factory=list)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _extract(doc: _Doc, errors: _Errors, main: bool) -> _FileD:
    data = _dict(doc.data)
    out = _FileD(doc.file)
    if main and isinstance(doc.data, dict) and "parents" not in data:
        errors.add(doc.at(()), (), "missing required key 'parents' in the main file "
                                   "(write 'parents: {}' to manage nothing)")
    parents = _dict(data.get("parents"))
    for pname, pval in parents.items():
        ppath: PathT = ("parents", pname)
        problem = _ifname_problem(pname)
        if problem:
            errors.add(doc.key_at(ppath), ppath, problem)
        out.parents.append(_parent(doc, errors, pname, _dict(pval), ppath))
    for i, pv in enumerate(_list(data.get("probes"))):
        probe = _probe(doc, errors, _dict(pv), ("probes", i))
        if probe is not None:
            out.probes.append(probe)
    for i, rv in enumerate(_list(data.get("rules"))):
        out.rules.extend(_RuleD(rule, doc.at(("rules", i)), ("rules", i))
                         for rule in _rule(doc, errors, _dict(rv), ("rules", i)))
    return out


def _rule(doc: _Doc, errors: _Errors, r: dict[str, Any], path: PathT) -> list[Rule]:
    """One `rules:` entry: one rule, or two (IPv4 and IPv6) when nothing says the family."""
    ok = True
    netns = r.get("netns") if isinstance(r.get("netns"), str) else None
    if netns is not None and _netns_problem(netns):
        errors.add(doc.at((*path, "netns")), (*path, "netns"), _netns_problem(netns) or "")
        ok = False
    nets: dict[str, IPNetwork | None] = {}
    for key in ("from", "to"):
        nets[key] = _prefix(doc, errors, r[key], (*path, key)) if isinstance(r.get(key), str) else None
        ok = ok and (nets[key] is not None or key not in r)
    versions = {n.version for n in nets.values() if n is not None}
    if len(versions) > 1:
        errors.add(doc.at((*path, "to")), (*path, "to"), "from and to are of different families")
        ok = False
    family = {"ipv4": 4, "ipv6": 6}.get(r.get("family", ""))
    if family is not None and versions and versions != {family}:
        errors.add(doc.at((*path, "family")), (*path, "family"), f"family {r['family']} but from/to are "
                                                                  f"IPv{versions.pop()}")
        ok = False
    families = [family] if family is not None else sorted(versions) or [4, 6]
    for key, net in nets.items():
        if net is not None and net.prefixlen == 0:
            nets[key] = None  # "from all": the kernel keeps no prefix (and dumps none)
    action = r.get("action", "table")
    table = r.get("table") if isinstance(r.get("table"), int) and not isinstance(r.get("table"), bool) else None
    if action == "table" and table is None and "table" not in r:
        errors.add(doc.at(path), path, "a rule that looks up a table needs 'table' (or another action)")
        ok = False
    if action != "table" and "table" in r:
        errors.add(doc.at((*path, "table")), (*path, "table"), f"action {action} looks up no table")
        ok = False
    if "fwmask" in r and "fwmark" not in r:
        errors.add(doc.at((*path, "fwmask")), (*path, "fwmask"), "fwmask needs fwmark")
        ok = False
    priority, fwmark, fwmask = r.get("priority"), r.get("fwmark"), r.get("fwmask")
    ints = [v for v in (priority, fwmark, fwmask, table) if v is not None]
    if not ok or not isinstance(priority, int) or any(isinstance(v, bool) or not isinstance(v, int) for v in ints):
        return []  # the schema reported a wrong type or range
    if action not in ("table", "blackhole", "unreachable", "prohibit"):
        return []
    iif = r.get("iif") if isinstance(r.get("iif"), str) else None
    oif = r.get("oif") if isinstance(r.get("oif"), str) else None
    return [Rule(priority, f, netns, nets["from"], nets["to"], iif, oif, fwmark, fwmask, table, action,
                 r.get("not") is True) for f in families]


def _parent(doc: _Doc, errors: _Errors, name: str, p: dict[str, Any], path: PathT) -> _ParentD:
    draft = _ParentD(name, doc.key_at(path))
    if "mode" in p:
        mode = p["mode"]
        valid = isinstance(mode, str) and mode in ("l2", "l3", "l3s")
        draft.mode = (Mode.from_label(mode) if valid else None, doc.at((*path, "mode")))
    if "flags" in p:
        flags = p["flags"]
        valid = isinstance(flags, str) and flags in ("bridge", "private", "vepa")
        draft.flags = (Flag.from_label(flags) if valid else None, doc.at((*path, "flags")))
    draft.routes = _routes(doc, errors, p.get("routes"), (*path, "routes"))
    draft.neighbors = _neighbors(doc, errors, p.get("neighbors"), (*path, "neighbors"))
    if isinstance(p.get("match"), dict):
        m = p["match"]
        macs = {k: _mac(doc, errors, m.get(k), (*path, "match", k)) for k in ("mac", "permanent_mac")}
        match = ParentMatch(macs["mac"], macs["permanent_mac"], m["path"] if isinstance(m.get("path"), str) else None)
        if match != ParentMatch():
            draft.match = (match, doc.at((*path, "match")))
    for dname, dval in _dict(p.get("devices")).items():
        dpath = (*path, "devices", dname)
        draft.devices[dname] = _device(doc, errors, dname, name, _dict(dval), dpath)
    return draft


def _device(doc: _Doc, errors: _Errors, name: str, parent: str, d: dict[str, Any], path: PathT) -> _DevD:
    draft = _DevD(name, parent, doc.key_at(path))
    draft.keys = {k: (v, doc.at((*path, k))) for k, v in d.items()}
    problem = _ifname_problem(name)
    if problem:
        errors.add(draft.loc, path, problem)
    elif name.startswith(TEMP_PREFIX):
        errors.add(draft.loc, path, f"device names starting with {TEMP_PREFIX!r} are reserved for "
                                    "ipvland's temporary names")
    elif name == "lo":
        errors.add(draft.loc, path, "'lo' is the loopback device of every namespace")
    netns = d.get("netns")
    if isinstance(netns, str):
        problem = _netns_problem(netns)
        if problem:
            errors.add(doc.at((*path, "netns")), (*path, "netns"), problem)
        draft.netns = netns
    elif isinstance(netns, dict) and isinstance(netns.get("path"), str):
        npath = (*path, "netns", "path")
        given = netns["path"]
        if not given.startswith("/") or any(part in (".", "..") for part in given.split("/")) or "\0" in given:
            errors.add(doc.at(npath), npath, f"{excerpt(given)} is not an absolute path without '.' or '..'")
        else:
            draft.netns = os.path.normpath(given)  # a namespace by path: model.is_path_netns
    for i, item in enumerate(_list(d.get("addresses"))):
        apath = (*path, "addresses", i)
        long = item if isinstance(item, dict) else {}
        text = long.get("address", item)
        if not isinstance(text, str):
            continue
        iface = _interface(doc, errors, text, (*apath, "address") if long else apath)
        if iface is not None:
            draft.addresses.append((iface, doc.at(apath), apath))
            options = _address_options(doc, errors, iface, long, apath)
            if options != PLAIN:
                draft.address_options.append((iface, options))
    mtu = d.get("mtu")
    if isinstance(mtu, int) and not isinstance(mtu, bool) and 68 <= mtu <= 65535:
        draft.mtu, draft.mtu_loc = mtu, doc.at((*path, "mtu"))
    if d.get("state") == "down":
        draft.state = State.DOWN
    draft.routes = _routes(doc, errors, d.get("routes"), (*path, "routes"))
    draft.neighbors = _neighbors(doc, errors, d.get("neighbors"), (*path, "neighbors"))
    for family in ("ipv6", "ipv4"):
        block = _dict(d.get(family))
        for name, value in block.items():
            sysctl = normalize.SYSCTLS.get(f"{family}.{name}")
            if sysctl is None:
                continue  # the schema reported it
            if sysctl.labels and isinstance(value, str) and value in sysctl.labels:
                draft.sysctls.append((sysctl.key, sysctl.labels.index(value)))
            elif isinstance(value, bool) or (sysctl.exact and isinstance(value, int) and not sysctl.labels):
                draft.sysctls.append((sysctl.key, int(value)))
        if block and draft.sysctls_loc is None:
            draft.sysctls_loc = doc.at((*path, family))
        if family == "ipv4" and isinstance(block.get("ip_forward"), bool):
            draft.ip_forward = (block["ip_forward"], doc.at((*path, "ipv4", "ip_forward")))
    if ("ipv6.disable_ipv6", 1) in draft.sysctls:
        for iface, loc, apath in draft.addresses:
            if iface.version == 6:
                errors.add(loc, apath, f"{iface} on a device with ipv6: {{disable_ipv6: true}}: the kernel "
                                       "keeps no IPv6 address there")
    return draft


def _address_options(doc: _Doc, errors: _Errors, iface: IPInterface, a: dict[str, Any],
                     path: PathT) -> AddressOptions:
    """The long form of an address: {address, nodad, noprefixroute, home, preferred_lft, peer}."""
    flags = {k: a.get(k) is True for k in ("nodad", "noprefixroute", "home")}
    for key in ("nodad", "home"):
        if flags[key] and iface.version == 4:
            errors.add(doc.at((*path, key)), (*path, key), f"{key} is for IPv6 addresses only")
    peer = None
    if isinstance(a.get("peer"), str):
        peer = _ip(a["peer"])
        if peer is None or peer.version != iface.version or peer.is_multicast or peer.is_unspecified:
            errors.add(doc.at((*path, "peer")), (*path, "peer"), f"{excerpt(a['peer'])} is not a peer address of "
                                                                 f"the same family (no prefix length: the address's is "
                                                                 "the peer's)")
            peer = None
    return AddressOptions(**flags, deprecated=a.get("preferred_lft") == 0, peer=peer)


def _interface(doc: _Doc, errors: _Errors, text: str, path: PathT) -> IPInterface | None:
    loc = doc.at(path)
    bare = _ip(text)
    if bare is not None:
        plen = 32 if bare.version == 4 else 128
        errors.add(loc, path, f"{excerpt(text)} needs a prefix length, e.g. {bare}/{plen}")
        return None
    addr, sep, plen_text = text.partition("/")
    if not sep or not plen_text.isascii() or not plen_text.isdigit() or _ip(addr) is None:
        errors.add(loc, path, f"{excerpt(text)} is not an interface address like 192.0.2.10/24 or 2001:db8::10/64")
        return None
    try:
        iface: IPInterface = ipaddress.ip_interface(f"{addr}/{int(plen_text)}")
    except ValueError:
        errors.add(loc, path, f"{excerpt(text)}: the prefix length is too long for this address")
        return None
    ip = iface.ip
    if ip.version == 6 and ip.is_link_local:
        errors.add(loc, path, f"{excerpt(text)} is an IPv6 link-local address; the kernel manages those, "
                              "leave them out")
        return None
    if ip.is_multicast or ip.is_unspecified:
        kind = "multicast" if ip.is_multicast else "unspecified"
        errors.add(loc, path, f"{excerpt(text)} is a {kind} address and cannot be an interface address")
        return None
    return interned(iface)


def _routes(doc: _Doc, errors: _Errors, value: Any, path: PathT) -> list[_RouteD]:
    out = []
    for i, r in enumerate(_list(value)):
        route = _route(doc, errors, _dict(r), (*path, i))
        if route is not None:
            out.append(_RouteD(route, doc.at((*path, i))))
    return out


def _route(doc: _Doc, errors: _Errors, r: dict[str, Any], path: PathT) -> Route | None:
    ok = True
    via: IPAddress | None = None
    if "via" in r:
        if isinstance(r["via"], str):
            via = _ip(r["via"])
            if via is None or via.is_multicast or via.is_unspecified:
                errors.add(doc.at((*path, "via")), (*path, "via"),
                           f"{excerpt(r['via'])} is not a gateway address (a unicast IP address without prefix)")
                ok = False
                via = None
        else:
            ok = False
    to_text = r.get("to")
    to: IPNetwork | None = None
    tpath = (*path, "to")
    if isinstance(to_text, str):
        if to_text == "default":
            to = ipaddress.ip_network("::/0" if via is not None and via.version == 6 else "0.0.0.0/0")
        else:
            to = _prefix(doc, errors, to_text, tpath)
    if to is None:
        return None
    if via is not None and via.version != to.version:
        errors.add(doc.at((*path, "via")), (*path, "via"),
                   f"gateway {via} is IPv{via.version} but destination {to} is IPv{to.version}")
        ok = False
    src: IPAddress | None = None
    if isinstance(r.get("src"), str):
        spath = (*path, "src")
        src = _ip(r["src"])
        if src is None or src.is_multicast or src.is_unspecified:
            errors.add(doc.at(spath), spath, f"{excerpt(r['src'])} is not a source address (a unicast IP "
                                             "address without prefix)")
            ok = False
        elif src.version != to.version:
            errors.add(doc.at(spath), spath, f"source {src} is IPv{src.version} but destination {to} is "
                                             f"IPv{to.version}")
            ok = False
    metric = r.get("metric")
    metric = metric if isinstance(metric, int) and not isinstance(metric, bool) else None
    table = r.get("table")
    table = table if isinstance(table, int) and not isinstance(table, bool) else None
    if table == LOCAL_TABLE:  # the schema reported it
        ok = False
    if table == MAIN_TABLE:
        table = None
    extras = _route_extras(doc, errors, r, path, to, via)
    if not ok or extras is None:
        return None
    return Route(to, via, metric, table, src, **extras)


def _route_extras(doc: _Doc, errors: _Errors, r: dict[str, Any], path: PathT, to: IPNetwork,
                  via: IPAddress | None) -> dict[str, Any] | None:
    """type, onlink, scope, mtu, nexthops: what the kernel would refuse or rewrite (normalize) is an
    error here, at the key that says it. None when any of them is wrong."""
    out: dict[str, Any] = {}
    ok = True

    def refuse(key: str, message: str) -> None:
        nonlocal ok
        errors.add(doc.at((*path, key)), (*path, key), message)
        ok = False

    rtype = r.get("type", "unicast")
    if rtype not in normalize.ROUTE_TYPES:
        return None  # the schema reported it
    out["type"] = rtype
    if rtype in normalize.REJECT_TYPES or rtype == "local":
        for key in ("via", "nexthops", "onlink") if rtype == "local" else ("via", "nexthops", "onlink", "src"):
            if key in r:
                refuse(key, f"a {rtype} route has no {key} (the kernel refuses it)")
    if r.get("onlink") is True:
        out["onlink"] = True
        if via is None and "via" not in r and rtype not in normalize.REJECT_TYPES:
            refuse("onlink", "onlink needs a gateway ('via'): the kernel refuses an on-link route without one")
    scope = r.get("scope")
    if isinstance(scope, str) and scope in normalize.ROUTE_SCOPES:
        if to.version == 6:
            refuse("scope", "IPv6 routes have no scope (the kernel keeps none); leave it out")
        elif scope != "global" and (via is not None or "nexthops" in r):
            refuse("scope", f"scope {scope} with a gateway: the kernel refuses it (a gateway needs scope global)")
        else:
            out["scope"] = normalize.ROUTE_SCOPES[scope]
    mtu = r.get("mtu")
    if isinstance(mtu, int) and not isinstance(mtu, bool):
        if to.version == 6 and mtu < normalize.IPV6_MIN_MTU:
            refuse("mtu", f"mtu {mtu} is below 1280, the minimum for IPv6")
        out["mtu"] = mtu
    hops = r.get("nexthops")
    if isinstance(hops, list):
        if "via" in r:
            refuse("nexthops", "a route has either 'via' or 'nexthops', not both")
        nexthops = []
        for i, h in enumerate(hops):
            hpath: PathT = (*path, "nexthops", i)
            h = h if isinstance(h, dict) else {}
            hvia = _ip(h["via"]) if isinstance(h.get("via"), str) else None
            if isinstance(h.get("via"), str) and (hvia is None or hvia.is_multicast or hvia.is_unspecified):
                errors.add(doc.at((*hpath, "via")), (*hpath, "via"), f"{excerpt(h['via'])} is not a gateway "
                                                                     "address (a unicast IP address without prefix)")
                ok = False
            elif hvia is not None and hvia.version != to.version:
                errors.add(doc.at((*hpath, "via")), (*hpath, "via"),
                           f"gateway {hvia} is IPv{hvia.version} but destination {to} is IPv{to.version}")
                ok = False
            elif hvia is None and to.version == 6:
                errors.add(doc.at(hpath), hpath, "an IPv6 nexthop needs a gateway ('via'): the kernel makes "
                                                 "multipath routes of gateways only")
                ok = False
            dev = h.get("dev") if isinstance(h.get("dev"), str) else None
            weight = h.get("weight", 1)
            if not (isinstance(weight, int) and not isinstance(weight, bool) and 1 <= weight <= 256):
                ok = False  # the schema reported it
                continue
            nexthops.append(Nexthop(hvia, dev, weight))
        if len(nexthops) < 2:
            ok = False  # the schema reported it
        out["nexthops"] = tuple(nexthops)
    return out if ok else None


def _prefix(doc: _Doc, errors: _Errors, text: str, path: PathT) -> IPNetwork | None:
    loc = doc.at(path)
    bare = _ip(text)
    if bare is not None:
        return ipaddress.ip_network(f"{bare}/{32 if bare.version == 4 else 128}")
    addr, sep, plen_text = text.partition("/")
    ip = _ip(addr)
    if not sep or ip is None or not plen_text.isascii() or not plen_text.isdigit():
        errors.add(loc, path, f"{excerpt(text)} is not a prefix like 198.51.100.0/24, an address, or 'default'")
        return None
    try:
        iface = ipaddress.ip_interface(f"{ip}/{int(plen_text)}")
    except ValueError:
        errors.add(loc, path, f"{excerpt(text)}: the prefix length is too long for this address")
        return None
    if iface.ip != iface.network.network_address:
        errors.add(loc, path, f"{text} has host bits set; did you mean {iface.network}?")
        return None
    return iface.network


def _neighbors(doc: _Doc, errors: _Errors, value: Any, path: PathT) -> list[_NeighD]:
    out = []
    for i, n in enumerate(_list(value)):
        npath = (*path, i)
        n = _dict(n)
        address: IPAddress | None = None
        if isinstance(n.get("address"), str):
            address = _ip(n["address"])
            if address is None:
                errors.add(doc.at((*npath, "address")), (*npath, "address"),
                           f"{excerpt(n['address'])} is not an IP address (no prefix length here)")
        lladdr = _mac(doc, errors, n.get("lladdr"), (*npath, "lladdr"))
        if address is not None and lladdr is not None:
            out.append(_NeighD(Neighbor(address, lladdr), doc.at(npath)))
    return out


def _mac(doc: _Doc, errors: _Errors, value: Any, path: PathT) -> str | None:
    if not isinstance(value, str):
        return None  # the schema reported it
    loc = doc.at(path)
    if doc.tags.get(path) != _STR:  # pragma: no cover - non-strings never get here
        return None
    if not _MAC.fullmatch(value):
        errors.add(loc, path, f"{excerpt(value)} is not a MAC address like \"e8:6a:6e:8a:a2:44\"")
        return None
    mac = value.lower().replace("-", ":")
    octets = [int(o, 16) for o in mac.split(":")]
    if all(o == 0 for o in octets):
        errors.add(loc, path, f"{value} is the all-zero MAC address")
        return None
    if all(o == 0xFF for o in octets):
        errors.add(loc, path, f"{value} is the broadcast MAC address")
        return None
    if octets[0] & 1:
        errors.add(loc, path, f"{value} is a multicast MAC address; a neighbor needs a unicast one")
        return None
    return mac


def _probe(doc: _Doc, errors: _Errors, p: dict[str, Any], path: PathT) -> Probe | None:
    ok = True
    netns = p.get("netns")
    if isinstance(netns, str):
        problem = _netns_problem(netns)
        if problem:
            errors.add(doc.at((*path, "netns")), (*path, "netns"), problem)
            ok = False
    else:
        ok = ok and netns is None
        netns = None
    target = None
    if isinstance(p.get("target"), str):
        target = _ip(p["target"])
        if target is None:
            errors.add(doc.at((*path, "target")), (*path, "target"),
                       f"{excerpt(p['target'])} is not an IP address (no prefix length here)")
    tries = p.get("tries", 3)
    if not (isinstance(tries, int) and not isinstance(tries, bool) and 1 <= tries <= 20):
        ok = False
    timeout = p.get("timeout", 1)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        ok = False
    elif not (math.isfinite(timeout) and 0 < timeout <= 30):
        if math.isnan(timeout):
            errors.add(doc.at((*path, "timeout")), (*path, "timeout"),
                       "must be greater than 0 and at most 30, not nan")
        ok = False
    if not ok or target is None:
        return None
    return Probe(target=target, netns=netns, tries=tries, timeout=float(timeout))


# ---------------------------------------------------------------- merging


def _unite_routes(items: list[_RouteD], errors: _Errors, path: PathT) -> tuple[Route, ...]:
    seen: dict[Any, _RouteD] = {}
    for item in items:
        other = seen.get(item.route.key)
        if other is None:
            seen[item.route.key] = item
        elif other.route.attrs != item.route.attrs:  # same key and attributes: the same kernel route
            errors.add(item.loc, path, f"route {item.route.describe()} conflicts with route "
                                       f"{other.route.describe()} at {_at(other.loc)} "
                                       "(same destination, table and metric)")
    return tuple(i.route for i in seen.values())


def _unite_neighbors(items: list[_NeighD], errors: _Errors, path: PathT) -> tuple[Neighbor, ...]:
    seen: dict[IPAddress, _NeighD] = {}
    for item in items:
        other = seen.get(item.neighbor.address)
        if other is None:
            seen[item.neighbor.address] = item
        elif other.neighbor != item.neighbor:
            errors.add(item.loc, path, f"neighbor {item.neighbor.address} lladdr {item.neighbor.lladdr} "
                                       f"conflicts with lladdr {other.neighbor.lladdr} at {_at(other.loc)}")
    return tuple(i.neighbor for i in seen.values())


@dataclass
class _Merged:
    name: str
    loc: Loc
    mode: tuple[Mode | None, Loc] | None = None
    flags: tuple[Flag | None, Loc] | None = None
    routes: list[_RouteD] = field(default_factory=list)
    neighbors: list[_NeighD] = field(default_factory=list)
    devices: dict[str, _DevD] = field(default_factory=dict)
    match: tuple[ParentMatch, Loc] | None = None


def _rkey(route: Route) -> tuple[int, int, int, int, int]:
    """Route.key as plain integers (hashing ipaddress objects is what a merge of many hosts spends its
    time on): family, destination, prefix length, table, metric as the kernel stores them."""
    return (route.to.version, int(route.to.network_address), route.to.prefixlen,
            normalize.route_table(route.table), normalize.route_metric(route.to.version, route.metric))


@dataclass
class _DevOut:
    """What one (merged) device gives every host that has it, computed once per tree: its Device, the
    errors of the device alone, and plain keys for the checks across devices."""

    device: Device
    errors: _Errors
    ips: list[tuple[tuple[int, int], IPInterface, Loc, PathT]]
    prefixes: list[tuple[tuple[int, int, int, int, int], IPInterface, Loc]]
    routes: list[tuple[tuple[int, int, int, int, int], _RouteD]]


@dataclass
class _Cache:
    """Shared by the merges of one tree (its drafts never change): merged devices per pair of drafts,
    and each device's own result. Objects are kept alive here, so their ids stay unique."""

    merged: dict[tuple[int, int], tuple[_DevD, _Errors]] = field(default_factory=dict)
    devices: dict[int, tuple[_DevD, _DevOut]] = field(default_factory=dict)


def _replay(errors: _Errors, more: _Errors) -> None:
    errors.strong.extend(more.strong)
    errors.weak.extend(more.weak)


def _device_out(d: _DevD, cache: _Cache) -> _DevOut:
    hit = cache.devices.get(id(d))
    if hit is not None:
        return hit[1]
    errors = _Errors()
    dpath: PathT = ("parents", d.parent, "devices", d.name)
    if d.mtu is not None and d.mtu < normalize.IPV6_MIN_MTU and d.mtu_loc is not None:
        if any(a.version == 6 for a, _, _ in d.addresses):
            errors.add(d.mtu_loc, (*dpath, "mtu"), f"mtu {d.mtu} is below 1280, the minimum for the "
                                                   "device's IPv6 addresses")
        elif any(key.startswith("ipv6.") for key, _ in d.sysctls):
            errors.add(d.mtu_loc, (*dpath, "mtu"), f"mtu {d.mtu} is below 1280: the kernel drops "
                                                   f"IPv6 from the device, so its ipv6 settings at "
                                                   f"{_at(d.sysctls_loc or d.loc)} cannot be kept")
    device = Device(
        name=d.name, parent=d.parent, netns=d.netns,
        addresses=tuple(a for a, _, _ in d.addresses), mtu=d.mtu, state=d.state,
        routes=_unite_routes(d.routes, errors, (*dpath, "routes")),
        neighbors=_unite_neighbors(d.neighbors, errors, (*dpath, "neighbors")),
        sysctls=tuple(d.sysctls), ip_forward=d.ip_forward[0] if d.ip_forward else None,
        address_options=tuple(d.address_options))
    prefixes = []
    for iface, loc, _ in d.addresses:
        if any(a == iface and o.noprefixroute for a, o in d.address_options):
            continue  # the kernel adds no prefix route for it
        if normalize.has_prefix_route(iface.version, iface.network.prefixlen):
            kernels = Route(iface.network, metric=normalize.PREFIX_ROUTE_METRIC[iface.version])
            prefixes.append((_rkey(kernels), iface, loc))
    out = _DevOut(device, errors, [((iface.version, int(iface.ip)), iface, loc, apath)
                                   for iface, loc, apath in d.addresses],
                  prefixes, [(_rkey(r.route), r) for r in d.routes])
    cache.devices[id(d)] = (d, out)
    return out


def _merge(files: list[_FileD], errors: _Errors, cache: _Cache | None = None) -> Spec:
    cache = cache if cache is not None else _Cache()
    merged: dict[str, _Merged] = {}
    for f in files:
        for p in f.parents:
            m = merged.setdefault(p.name, _Merged(p.name, p.loc))
            ppath: PathT = ("parents", p.name)
            for attr, label in (("mode", "mode"), ("flags", "flags")):
                new = getattr(p, attr)
                old = getattr(m, attr)
                if new is None:
                    continue
                if old is None:
                    setattr(m, attr, new)
                elif old[0] is not None and new[0] is not None and old[0] != new[0]:
                    errors.add(new[1], (*ppath, label),
                               f"parent {p.name} {label} {new[0].label} conflicts with {label} "
                               f"{old[0].label} at {_at(old[1])} (one value per parent)")
            m.routes.extend(p.routes)
            if p.match is not None and m.match is None:
                m.match = p.match
            elif p.match is not None and m.match is not None and p.match[0] != m.match[0]:
                errors.add(p.match[1], (*ppath, "match"), f"parent {p.name} match ({p.match[0].describe()}) "
                                                          f"conflicts with the match at {_at(m.match[1])}")
            m.neighbors.extend(p.neighbors)
            for dname, d in p.devices.items():
                old_d = m.devices.get(dname)
                if old_d is None:
                    m.devices[dname] = d
                    continue
                hit = cache.merged.get((id(old_d), id(d)))
                if hit is None:
                    more = _Errors()
                    hit = (_merge_device(old_d, d, more, (*ppath, "devices", dname)), more)
                    cache.merged[(id(old_d), id(d))] = hit  # drafts live in the Tree, merged ones here
                m.devices[dname] = hit[0]
                _replay(errors, hit[1])

    # cross checks on the merged result
    by_ns: dict[tuple[str | None, str], _DevD] = {}
    parents: list[Parent] = []
    outs: dict[str, list[tuple[_DevD, _DevOut]]] = {}
    for m in merged.values():
        ppath = ("parents", m.name)
        if m.devices and m.mode is None:
            first = next(iter(m.devices.values()))
            errors.add(m.loc, ppath, f"parent {m.name} has devices (e.g. {first.name} at {_at(first.loc)}) "
                                     "but no mode; set mode: l2, l3 or l3s")
        ips: dict[tuple[int, int], tuple[_DevD, Loc]] = {}
        devices: list[Device] = []
        mine = outs[m.name] = []
        for d in m.devices.values():
            dpath = (*ppath, "devices", d.name)
            out = _device_out(d, cache)
            mine.append((d, out))
            key = (d.netns, d.name)
            if key in by_ns:
                other = by_ns[key]
                where = f"netns {d.netns}" if d.netns else "ipvland's own namespace"
                errors.add(d.loc, dpath, f"device {d.name} is also defined on parent {other.parent} at "
                                         f"{_at(other.loc)} (same name in {where})")
            else:
                by_ns[key] = d
            if d.netns is None and d.name in merged:
                errors.add(d.loc, dpath, f"device {d.name} has the same name as parent {d.name} "
                                         f"(at {_at(merged[d.name].loc)}), in the same namespace; "
                                         "rename it or give it a netns")
            for ip, iface, loc, apath in out.ips:
                if ip in ips:
                    od, oloc = ips[ip]
                    on = "this device" if od is d else f"device {od.name}"
                    errors.add(loc, apath, f"address {iface.ip} is also on {on} at {_at(oloc)} "
                                           f"(each IP at most once on the ipvlans of parent {m.name})")
                else:
                    ips[ip] = (d, loc)
            _replay(errors, out.errors)
            devices.append(out.device)
        parents.append(Parent(
            name=m.name,
            mode=m.mode[0] if m.mode is not None else None,
            flags=(m.flags[0] or Flag.BRIDGE) if m.flags is not None else Flag.BRIDGE,
            routes=_unite_routes(m.routes, errors, (*ppath, "routes")),
            neighbors=_unite_neighbors(m.neighbors, errors, (*ppath, "neighbors")),
            devices=tuple(devices), match=m.match[0] if m.match is not None else None))
    _route_places(merged, outs, errors)
    _ip_forward(merged, errors)
    probes: list[Probe] = []
    for f in files:
        probes.extend(p for p in f.probes if p not in probes)
    return Spec(version=1, parents=tuple(parents), sources=tuple(f.file for f in files),
                probes=tuple(probes), rules=_unite_rules(files, {d.netns for d in by_ns.values()}, errors))


def _unite_rules(files: list[_FileD], namespaces: set[str | None], errors: _Errors) -> tuple[Rule, ...]:
    """Rules of every file; one per namespace, family and priority (the same one twice collapses)."""
    seen: dict[tuple[str | None, int, int], _RuleD] = {}
    for f in files:
        for item in f.rules:
            rule = item.rule
            if rule.netns is not None and rule.netns not in namespaces:
                errors.add(item.loc, item.path, f"netns {rule.netns} holds none of the spec's devices; a rule "
                                                "goes in ipvland's own namespace or a device's")
                continue
            other = seen.setdefault(rule.key, item)
            if other is not item and other.rule != rule:
                errors.add(item.loc, item.path, f"{rule.describe()} has the priority of {other.rule.describe()} "
                                                f"at {_at(other.loc)} (one rule per priority, family and "
                                                "namespace)")
    return tuple(i.rule for i in seen.values())


def _ip_forward(merged: dict[str, _Merged], errors: _Errors) -> None:
    """ip_forward belongs to a namespace: its devices agree on it, and none of them also sets its own
    forwarding (writing ip_forward sets every device's, normalize.IP_FORWARD)."""
    first: dict[str | None, tuple[_DevD, bool, Loc]] = {}
    devices = [(m.name, d) for m in merged.values() for d in m.devices.values()]
    for pname, d in devices:
        if d.ip_forward is not None:
            other = first.setdefault(d.netns, (d, *d.ip_forward))
            if other[1] != d.ip_forward[0]:
                kpath: PathT = ("parents", pname, "devices", d.name, "ipv4", "ip_forward")
                errors.add(d.ip_forward[1], kpath, f"ip_forward {str(d.ip_forward[0]).lower()} conflicts with "
                                                   f"ip_forward {str(other[1]).lower()} at {_at(other[2])} "
                                                   "(one value per namespace)")
    for pname, d in devices:
        if d.netns in first and any(key == "ipv4.forwarding" for key, _ in d.sysctls):
            errors.add(d.sysctls_loc or d.loc, ("parents", pname, "devices", d.name, "ipv4", "forwarding"),
                       f"forwarding on {d.name}, and ip_forward for its namespace at {_at(first[d.netns][2])}: "
                       "writing ip_forward sets every device's forwarding; say one or the other")


# Which _DevD attributes each key of a device sets: how one device spread over several files is merged,
# field by field. Every device property of the schema must be here (a unit test checks it).
DEVICE_FIELDS: dict[str, tuple[str, ...]] = {
    "netns": ("netns",),
    "addresses": ("addresses", "address_options"),
    "mtu": ("mtu", "mtu_loc"),
    "state": ("state",),
    "routes": ("routes",),
    "neighbors": ("neighbors",),
    "ipv6": (),  # sysctls of that family: see _merge_sysctls
    "ipv4": ("ip_forward",),  # and its sysctls
}


def _merge_device(old: _DevD, new: _DevD, errors: _Errors, path: PathT) -> _DevD:
    """One device given by several files: each field from the file that sets it; a field two files set
    must be the same value in both (else an error at the second naming the first). Drafts are never
    changed (they are shared by every host's merge)."""
    out: _DevD | None = None
    for key, (value, loc) in new.keys.items():
        have = (out or old).keys.get(key)
        if have is not None:
            if have[0] != value:
                errors.add(loc, (*path, key), f"device {new.name} {key} {excerpt(value)} conflicts with "
                                              f"{excerpt(have[0])} at {_at(have[1])} (a field of a device "
                                              "has one value: set it in one file)")
            continue
        if out is None:
            out = dataclasses.replace(old, keys=dict(old.keys))
        for attr in DEVICE_FIELDS.get(key, ()):
            setattr(out, attr, getattr(new, attr))
        if key in ("ipv4", "ipv6"):  # two blocks share the sysctls list: take this family's alone
            out.sysctls = [*(x for x in out.sysctls if not x[0].startswith(f"{key}.")),
                           *(x for x in new.sysctls if x[0].startswith(f"{key}."))]
            out.sysctls_loc = out.sysctls_loc or new.sysctls_loc
        out.keys[key] = (value, loc)
    return out or old


def _route_places(merged: dict[str, _Merged], outs: dict[str, list[tuple[_DevD, _DevOut]]],
                  errors: _Errors) -> None:
    """Routes that could never converge, whatever the kernel does (normalize's table):

    - the same route (destination, table, metric as the kernel stores them) on two devices or
      parents of one namespace: ipvland would move it back and forth forever;
    - a route the kernel installs itself for an address of the spec in that namespace (its prefix
      route, proto kernel): adding it fails with EEXIST every time.
    """
    first: dict[tuple[str | None, Any], tuple[str, _RouteD]] = {}
    prefix: dict[tuple[str | None, Any], tuple[str, IPInterface, Loc]] = {}
    places: list[tuple[str | None, str, PathT, list[tuple[Any, _RouteD]]]] = []
    for m in merged.values():
        places.append((None, f"parent {m.name}", ("parents", m.name, "routes"),
                       [(_rkey(r.route), r) for r in m.routes]))
        for d, out in outs[m.name]:
            places.append((d.netns, f"device {d.name}", ("parents", m.name, "devices", d.name, "routes"),
                           out.routes))
            for rkey, iface, loc in out.prefixes:
                prefix.setdefault((d.netns, rkey), (d.name, iface, loc))
    devices = {(None, name) for name in merged} | {(d.netns, d.name) for m in merged.values()
                                                    for d in m.devices.values()}
    for netns, where, path, routes in places:
        for rkey, item in routes:
            for hop in item.route.nexthops:
                if hop.dev is not None and (netns, hop.dev) not in devices:
                    ns = f"netns {netns}" if netns else "ipvland's own namespace (a parent or a device without netns)"
                    errors.add(item.loc, path, f"nexthop dev {hop.dev} is not a device of the spec in {ns}")
            key = (netns, rkey)
            if key in prefix:
                dev, iface, loc = prefix[key]
                errors.add(item.loc, path, f"route {item.route.describe()} is the prefix route the kernel "
                                           f"adds itself for address {iface} of device {dev} at {_at(loc)} "
                                           "(proto kernel, same destination, table and metric); leave it "
                                           "out, or give it another metric")
            other = first.setdefault(key, (where, item))
            if other[0] != where:
                ns = f"netns {netns}" if netns else "ipvland's own namespace"
                errors.add(item.loc, path, f"route {item.route.describe()} on {where} is also on {other[0]} "
                                           f"at {_at(other[1].loc)}: one route per destination, table and "
                                           f"metric in {ns} (the kernel keeps one; both can never hold)")


# ---------------------------------------------------------------- driver


def _iter_files(main: Path, errors: _Errors) -> Iterator[tuple[Path, str]]:
    yield main, str(main)
    dropins, problem = _list_dropins(main)
    if problem:
        errors.file(str(main.parent / "config.d"), problem)
    for p in dropins:
        yield p, str(p)


# ---------------------------------------------------------------- one tree, many hosts

_GLOB = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+")


@dataclass
class _Part:
    """One file of the tree, read and checked once: its draft, and which hosts it applies to."""

    file: str
    doc: _Doc | None  # None: it did not parse (its errors are the tree's)
    draft: _FileD | None
    select: re.Pattern[str] | None = None  # None: every host
    sha256: str = ""  # of the bytes parsed


def _selection(doc: _Doc, errors: _Errors, main: bool) -> re.Pattern[str] | None:
    """The compiled `hosts:` globs of a file (None: every host). Invalid globs select nothing (the
    file's errors make every host's config invalid anyway)."""
    data = doc.data
    if not isinstance(data, dict) or "hosts" not in data:
        return None
    if main:
        errors.add(doc.key_at(("hosts",)), ("hosts",), "'hosts' selects the hosts of a drop-in; the main "
                                                       "file applies to every host (move it to config.d/)")
        return re.compile(r"(?!)")
    globs = data["hosts"]
    good: list[str] = []
    for i, glob in enumerate(_list(globs)):
        if not isinstance(glob, str) or not glob:
            continue  # the schema reported it
        if not _GLOB.fullmatch(glob) or len(glob) > 253:
            errors.add(doc.at(("hosts", i)), ("hosts", i),
                       f"host pattern {excerpt(glob)}: use letters, digits, '-', '_', '.' and the globs * ? [...]")
            continue
        good.append(fnmatch.translate(glob.lower()))
    return re.compile("|".join(good) if good else r"(?!)")


def host_selected(select: re.Pattern[str], host: str) -> bool:
    """Whether a file's `hosts:` globs select `host`, case-insensitively. A host whose identity is
    fully qualified (the hostname of many installs, many Kubernetes node names) is also selected by
    its short name, the first label: `hosts: [db-1]` selects db-1.example.com, so one inventory of
    short names serves hosts whether or not their hostname carries the domain."""
    name = host.lower()
    return bool(select.fullmatch(name) or ("." in name and select.fullmatch(name.split(".", 1)[0])))


@dataclass
class Tree:
    """A main file and its drop-ins, each read, parsed and checked once; `spec(host)` merges the files
    that apply to one host. Pure: no kernel, no root."""

    main: str
    parts: list[_Part]
    errors: _Errors  # the files' own errors: the same for every host
    read: tuple[tuple[str, str], ...] = ()  # (file, sha256) of every file read, in order (load_tree's reuse)
    _memo: dict[tuple[int, ...], tuple[Spec | None, _Errors]] = field(default_factory=dict, repr=False)
    _cache: _Cache = field(default_factory=lambda: _Cache(), repr=False)

    @property
    def file_errors(self) -> list[ConfigError]:
        """The errors of the files themselves (syntax, schema, values, `hosts:`), for every host."""
        return self.errors.result()

    def selected(self, host: str) -> tuple[int, ...]:
        """Indexes of the parts that apply to `host` (see `host_selected`)."""
        return tuple(i for i, part in enumerate(self.parts)
                     if part.draft is not None and (part.select is None or host_selected(part.select, host)))

    def matches(self, hosts: list[str]) -> list[bool]:
        """For each part: whether it applies to at least one of `hosts` (a file without hosts: always)."""
        return [part.select is None or any(host_selected(part.select, h) for h in hosts) for part in self.parts]

    def files_for(self, host: str) -> list[str]:
        return [self.parts[i].file for i in self.selected(host)]

    def host_errors(self, host: str) -> tuple[Spec | None, list[ConfigError]]:
        """The merge for `host` alone: its Spec (None if invalid) and the errors of the merge itself
        (conflicts between the files it selects), without the files' own errors."""
        spec, errors = self._merged(self.selected(host))
        return (spec, errors.result())

    def spec(self, host: str) -> Spec:
        """The Spec for `host`; raises SpecError with every error (the files' and the merge's)."""
        key = self.selected(host)
        spec, merge = self._merged(key)
        errors = _Errors(self.errors.strong + merge.strong, self.errors.weak + merge.weak).result()
        if errors or spec is None:
            raise SpecError(errors)
        h = hashlib.sha256()
        for i in key:
            h.update(f"{self.parts[i].file}\0{self.parts[i].sha256}\0".encode())
        return dataclasses.replace(spec, files_sha256=h.hexdigest())

    def _merged(self, key: tuple[int, ...]) -> tuple[Spec | None, _Errors]:
        hit = self._memo.get(key)
        if hit is None:
            errors = _Errors()
            drafts = [d for d in (self.parts[i].draft for i in key) if d is not None]
            spec = _merge(drafts, errors, self._cache)
            hit = (None if errors.strong or errors.weak else spec, errors)
            self._memo[key] = hit
        return hit

    def render(self, host: str) -> tuple[dict[str, Any], dict[PathT, Loc]]:
        """The effective config for `host` as plain data that `validate` accepts, and where each value came
        from. Raises SpecError when the host's config is invalid."""
        self.spec(host)
        return _render([p.doc for p in (self.parts[i] for i in self.selected(host)) if p.doc is not None])


def load_tree(path: str | os.PathLike[str], reuse: Tree | None = None) -> Tree:
    """Read and check the main file and every drop-in once, whatever their `hosts:`; never raises for a
    bad config (the errors are in the Tree). `reuse`: a tree without errors, returned as it is when
    the same files were read again, each with the same bytes, without an error (the rest of a load
    is a function of those bytes alone)."""
    main = Path(path)
    errors = _Errors()
    texts: list[tuple[int, str, str, str]] = []  # (its place among the files, file, text, sha256)
    for i, (p, file) in enumerate(_iter_files(main, errors)):
        text = _read(p, file, errors)
        if text is not None:
            texts.append((i, file, text, hashlib.sha256(text.encode("utf-8")).hexdigest()))
    if (reuse is not None and not (errors.strong or errors.weak or reuse.errors.strong or reuse.errors.weak)
            and tuple((file, digest) for _, file, _, digest in texts) == reuse.read):
        return reuse
    parts: list[_Part] = []
    for i, file, text, digest in texts:
        try:
            doc = _parse(file, text, errors)
            if doc is None:
                continue
            _schema_errors(doc, errors)
            parts.append(_Part(file, doc, _extract(doc, errors, main=(i == 0)),
                               _selection(doc, errors, main=(i == 0)), digest))
        except RecursionError:
            errors.file(file, "configuration is nested too deeply")
    return Tree(str(main), parts, errors, tuple((file, digest) for _, file, _, digest in texts))


def _render(docs: list[_Doc]) -> tuple[dict[str, Any], dict[PathT, Loc]]:
    """The selected files merged as plain data (valid: the Spec was built from them): parents by name,
    device fields from the file that sets them, lists united; `hosts` left out."""
    out: dict[str, Any] = {"version": 1, "parents": {}}
    prov: dict[PathT, Loc] = {}
    if docs:
        prov[("version",)] = docs[0].at(("version",))
        prov[("parents",)] = docs[0].key_at(("parents",))

    def unite(target: list[Any], doc: _Doc, src: PathT, dst: PathT, items: list[Any]) -> None:
        for i, item in enumerate(items):
            if item not in target:
                prov[(*dst, len(target))] = doc.at((*src, i))
                target.append(item)

    probes: list[Any] = []
    for doc in docs:
        data = _dict(doc.data)
        for pname, pval in _dict(data.get("parents")).items():
            pp: PathT = ("parents", pname)
            parent = out["parents"].setdefault(pname, {})
            prov.setdefault(pp, doc.key_at(pp))
            for key, value in _dict(pval).items():
                kp = (*pp, key)
                if key == "devices":
                    devices = parent.setdefault("devices", {})
                    for dname, dval in _dict(value).items():
                        dp = (*kp, dname)
                        device = devices.setdefault(dname, {})
                        prov.setdefault(dp, doc.key_at(dp))
                        for fkey, fval in _dict(dval).items():
                            if fkey not in device:
                                device[fkey] = fval
                                prov[(*dp, fkey)] = doc.at((*dp, fkey))
                elif isinstance(value, list):
                    unite(parent.setdefault(key, []), doc, kp, kp, value)
                elif value is not None and parent.get(key) is None:
                    parent[key] = value
                    prov[kp] = doc.at(kp)
        unite(probes, doc, ("probes",), ("probes",), _list(data.get("probes")))
    if probes:
        out["probes"] = probes
    return out, prov


_YAML_WORDS = re.compile(r"(?i)(y|n|yes|no|true|false|on|off|null|~)")


def _yaml_key(key: str) -> str:
    plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", key) and not _YAML_WORDS.fullmatch(key)
    return key if plain else json.dumps(key)


def render_yaml(document: dict[str, Any], provenance: dict[PathT, Loc], header: str = "") -> str:
    """`Tree.render`'s result as YAML with a `# FILE:LINE` comment on each value: values in JSON's flow
    syntax (a subset of YAML that ipvland's loader reads back exactly)."""
    lines: list[str] = [f"# {line}" for line in header.splitlines()]

    def where(path: PathT) -> str:
        loc = provenance.get(path)
        return f"  # {loc[0]}:{loc[1]}" if loc else ""

    def emit(value: Any, path: PathT, indent: int, key: str) -> None:
        pad = "  " * indent
        block_map = path[0] == "parents" and (len(path) <= 2 or (len(path) <= 4 and path[2] == "devices"))
        if block_map and isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:{where(path)}")
            for k, v in value.items():
                emit(v, (*path, k), indent + 1, _yaml_key(k))
        elif len(path) in (1, 3) and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}:")  # parents' routes and neighbors, probes: one place per item
            for i, item in enumerate(value):
                lines.append(f"{pad}  - {json.dumps(item)}{where((*path, i))}")
        else:
            lines.append(f"{pad}{key}: {json.dumps(value)}{where(path)}")

    for k, v in document.items():
        emit(v, (k,), 0, k)
    return "\n".join(lines) + "\n"


def _draft(file: str, text: str, errors: _Errors, *, main: bool, drafts: list[_FileD]) -> None:
    doc = _parse(file, text, errors)
    if doc is not None:
        _schema_errors(doc, errors)
        drafts.append(_extract(doc, errors, main=main))


def loads(text: str, source: str = "<string>") -> Spec:
    """One document from text, no drop-ins: what `show` printed, or a state to roll back to."""
    errors = _Errors()
    drafts: list[_FileD] = []
    try:
        _draft(source, text, errors, main=True, drafts=drafts)
        return _finish(drafts, errors)
    except SpecError:
        raise
    except Exception as e:
        raise SpecError([ConfigError(source, 0, 0, "", f"internal error while loading: "
                                                       f"{type(e).__name__}: {excerpt(str(e), 200)}")]) from None


def load_stream(stream: IO[bytes], source: str = "<stdin>") -> Spec:
    """One main document read from a stream (`validate -c -`), with the same limits as a file; no drop-ins."""
    errors = _Errors()
    try:
        data = stream.read(MAX_FILE_SIZE + 1)
    except OSError as e:
        raise SpecError([ConfigError(source, 0, 0, "", f"cannot read: {e.strerror or e}")]) from None
    text = _decode(data, source, errors)
    if text is None:
        raise SpecError(errors.result())
    return loads(text, source)


def _finish(drafts: list[_FileD], errors: _Errors) -> Spec:
    spec = _merge(drafts, errors)
    result = errors.result()
    if result:
        raise SpecError(result)
    return spec
