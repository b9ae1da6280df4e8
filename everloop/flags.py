"""Command-line flags made from a dataclass (cleanRL-style): a field's default and its
docstring are written once, on the field, and the flag, its default and its --help text are
read from there, so the command line and the Python API cannot disagree.

A field becomes `--name-with-dashes` unless its metadata says otherwise (`flag(...)`):
another flag name, an argparse `type` that checks the value (validate.py), `choices`, a
`metavar`, `positional=True`, `required=True` (a flag that must be given though the API has a
default, so fields can keep their order), `cli=False` (not a flag: the API only) or `invert="--quiet"`
(a True-by-default bool switched off by a flag). A bool field is a store-true switch; a
field without a default is a required flag. Argparse itself holds no default: a flag not
given is absent from the namespace (`given()`), and the dataclass fills it, which also
tells a resumed run what the user typed and what it left to the run."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import textwrap


def flag(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, **meta):
    """A dataclass field with command-line metadata (see the module docstring)."""
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_docs(cls) -> dict[str, str]:
    """{field name: the docstring written under it}, read from the class's source."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def help_text(f: dataclasses.Field, doc: str) -> str:
    """The docstring, plus the default where it says something (not None, False or empty)."""
    default = default_of(f)
    quiet = default is None or default is False or default is dataclasses.MISSING or default in ({}, ())
    shown = "" if quiet else f" (default: {default})"
    return (doc + shown).replace("%", "%%")  # argparse formats help with %


def cli_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def add_flags(parser: argparse.ArgumentParser, cls, only: dict[str, dict] | None = None) -> None:
    """One argument per field of the dataclass `cls`, in field order (positionals first).
    `only`: just these fields, {name: metadata} (for a config whose fields are not all flags)."""
    docs = field_docs(cls)
    fields = sorted(cli_fields(cls), key=lambda f: not f.metadata.get("positional", False))
    for f in fields:
        if only is not None and f.name not in only:
            continue
        meta, doc = {**f.metadata, **(only or {}).get(f.name, {})}, docs.get(f.name, "")
        kw = {k: meta[k] for k in ("type", "choices", "metavar") if k in meta}
        if "invert" in meta:  # progress=True <- --quiet
            parser.add_argument(meta["invert"], dest=f.name, action="store_false", default=argparse.SUPPRESS,
                                help=doc.replace("%", "%%"))
            continue
        if meta.get("positional"):
            if default_of(f) is not dataclasses.MISSING:
                kw["nargs"] = "?"
            parser.add_argument(f.name, default=argparse.SUPPRESS, help=help_text(f, doc), **kw)
            continue
        name = meta.get("flag", "--" + f.name.replace("_", "-"))
        if isinstance(default_of(f), bool):
            kw["action"] = "store_true"
        elif "action" in meta:
            kw["action"] = meta["action"]
        if default_of(f) is dataclasses.MISSING or meta.get("required"):
            kw["required"] = True
        parser.add_argument(name, dest=f.name, default=argparse.SUPPRESS, help=help_text(f, doc), **kw)


def given(namespace: argparse.Namespace, cls) -> dict:
    """The fields of `cls` the user gave on the command line (the rest keep their defaults)."""
    names = {f.name for f in cli_fields(cls)}
    return {k: v for k, v in vars(namespace).items() if k in names}
