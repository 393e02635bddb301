"""Reading a suite file safely and turning a validation error into one line.

The YAML reader bounds size, nesting and alias expansion before anything is validated, and
``suite_error`` names the field path, the bad value and what was expected, with a "did you
mean" for a misspelt key. Nothing here knows what a suite contains beyond its models.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bench.config import PretrainConfig
from bench.errors import SuiteError, did_you_mean, shown

# A suite is a few kilobytes and a handful of levels deep (pretrain.NAME.dataset.options.KEY);
# far past these a file is generated, hostile or not a suite, and is refused before it costs
# memory, time or a RecursionError.
MAX_SUITE_BYTES = 256 << 10
MAX_DEPTH = 32
# What validation walks once YAML aliases are expanded: nodes, and characters of text.
MAX_EXPANDED_NODES = 100_000
MAX_EXPANDED_CHARS = 4 << 20


class _TooDeep(Exception):
    def __init__(self, mark: Any):
        self.mark = mark


class _SuiteLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a bound on nesting; its composer would otherwise recurse without one."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_yaml(path: Path, file: str) -> Any:
    """The file's YAML document, bounded in size, depth and alias expansion."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SUITE_BYTES + 1)
        if len(data) > MAX_SUITE_BYTES:
            raise SuiteError(f"larger than {MAX_SUITE_BYTES // 1024} KiB; a suite file is a few KiB of YAML", file=file)
        text = data.decode("utf-8")
    except OSError as exc:
        raise SuiteError(f"cannot read: {exc.strerror or exc}", file=file) from None
    except UnicodeDecodeError as exc:
        raise SuiteError(f"not UTF-8 text (byte {exc.start}); save it as UTF-8", file=file) from None
    loader: _SuiteLoader | None = None
    try:
        loader = _SuiteLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, file)
        return loader.construct_document(node)
    except _TooDeep as exc:
        raise SuiteError(
            f"line {exc.mark.line + 1}, column {exc.mark.column + 1}: nested more than {MAX_DEPTH} levels deep",
            file=file,
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"{where}invalid YAML: {problem}", file=file) from None
    except RecursionError:
        raise SuiteError(f"nested too deeply (more than {MAX_DEPTH} levels, or merge keys chained too far)",
                         file=file) from None
    except (ValueError, TypeError, OverflowError, AttributeError, KeyError, IndexError) as exc:
        # PyYAML's scalar constructors on values they do not expect: an integer longer than Python
        # converts, a '!!timestamp' that is no date (AttributeError), a '!!binary' that is no base64.
        raise SuiteError(f"a value cannot be read: {shown(str(exc) or type(exc).__name__)}", file=file) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_expansion(root: yaml.Node, file: str) -> None:
    """Refuse aliases that expand to more than validation should walk, or that contain themselves."""
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            nodes, chars = 1, 0
            for child in _children(node):
                child_nodes, child_chars = sizes[id(child)]
                nodes, chars = nodes + child_nodes, chars + child_chars
            if nodes > MAX_EXPANDED_NODES or chars > MAX_EXPANDED_CHARS:
                mark = node.start_mark
                raise SuiteError(
                    f"line {mark.line + 1}, column {mark.column + 1}: holds more than {MAX_EXPANDED_NODES:,} values "
                    f"or {MAX_EXPANDED_CHARS >> 20} MiB of text once aliases are expanded", file=file,
                )
            sizes[key] = (nodes, chars)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            mark = node.start_mark
            raise SuiteError(f"line {mark.line + 1}, column {mark.column + 1}: an alias refers to a value that "
                             "contains it", file=file)
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = (1, len(node.value))
            continue
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def default_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem).strip("-.") or "suite"


def suite_error(exc: ValidationError, root: type[BaseModel], file: str | None) -> SuiteError:
    """Turn pydantic's first error into one line: field path, bad value, what is allowed."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    value = error.get("input")
    field = ".".join(loc)
    if error["type"] == "extra_forbidden":
        key = loc[-1]
        allowed = _allowed_keys(root, loc[:-1])
        hint = did_you_mean(key, allowed)
        return SuiteError(
            f"unknown key {shown(repr(key))}{hint}; allowed here: {', '.join(allowed)}",
            file=file, field=shown(field, 200), value=key,
        )
    if error["type"] == "missing":
        return SuiteError("required field is missing", file=file, field=field)
    message = error["msg"].removeprefix("Value error, ")
    text = repr(value)
    if text in message:
        message = message.replace(text, shown(text))  # a validator quoted the value; a long one is cut
    got = "" if isinstance(value, (dict, list)) or text in error["msg"] else f" (got {shown(text)})"
    return SuiteError(f"{message}{got}", file=file, field=shown(field, 200) or None, value=value)


def _allowed_keys(root: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the model found at ``loc`` inside a suite (``root``)."""
    model = root
    for part in loc:
        if part.isdigit():
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        nested = _model_in(annotation)
        if nested is None:
            if model is root and part == "pretrain":
                model = PretrainConfig
                continue
            if model is PretrainConfig:
                continue
            break
        model = nested
    return [name for name in model.model_fields if name != "source"]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None

