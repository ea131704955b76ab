"""Every key of a config schema with its type, default and field docstring (`vislab config keys [FAMILY]`).

The schemas document each field with an attribute docstring (a string right below the field, as litgpt's
`TrainArgs` does); Python keeps those only in the source, so they are read back with `ast`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class KeyDoc:
    key: str
    """Dotted key, e.g. 'optim.lr'."""
    type: str
    """The field's annotation as written in the schema."""
    default: Any
    doc: str


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a class and its bases (a subclass's own docstring wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # builtins, or no source (frozen apps)
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in zip(body, body[1:], strict=False):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def describe_keys(cls: type, prefix: str = "") -> list[KeyDoc]:
    """Every leaf key of the dataclass schema `cls`, in declaration order; groups are recursed into."""
    out: list[KeyDoc] = []
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        default = _default(f)
        if dataclasses.is_dataclass(default):
            out.extend(describe_keys(type(default), f"{prefix}{f.name}."))
            continue
        ftype = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(KeyDoc(f"{prefix}{f.name}", ftype, default, docs.get(f.name, "")))
    return out


def format_keys(keys: list[KeyDoc]) -> str:
    """One line per key: `key  type = default`, then its docstring indented below."""
    lines = []
    for k in keys:
        default = "???" if k.default == "???" else repr(k.default)
        lines.append(f"{k.key}: {k.type} = {default}")
        if k.doc:
            lines.extend("    " + line for line in textwrap.wrap(k.doc, 100))
    return "\n".join(lines)
