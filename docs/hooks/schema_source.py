"""The config schema read from its source, without importing medexp: dataclass fields (type, default, the
one-line help of their trailing `# ...` comment), enums and their values, and the values of each option file.

Read with `ast` and `tokenize`, so the docs build needs neither torch nor medexp installed, and whatever is added
to a schema dataclass besides fields (`RULES: ClassVar[...]`, a `check` staticmethod) is passed over.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MISSING = "???"  # how OmegaConf shows a value every option must set
ENUM_BASES = {"Enum", "StrEnum", "IntEnum"}


@dataclass
class Field:
    name: str
    annotation: ast.expr
    default: ast.expr | None
    help: str
    module: str  # the module the dataclass is defined in: names in annotation and default resolve there


@dataclass
class Klass:
    name: str
    module: str
    bases: list[str]
    doc: str
    fields: list[Field] = field(default_factory=list)
    members: dict[str, tuple[Any, str]] = field(default_factory=dict)  # an enum's: name -> (value, help)
    is_enum: bool = False


@dataclass
class Module:
    classes: dict[str, Klass]
    imports: dict[str, str]  # name -> the medexp module it is imported from
    constants: dict[str, ast.expr]  # module-level NAME = <expr>


def comments(text: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def help_of(node: ast.stmt, notes: dict[int, str], lines: list[str]) -> str:
    """A field's help: the comment on its own line(s), else the comment lines just above it."""
    assert node.end_lineno is not None
    for line in range(node.lineno, node.end_lineno + 1):
        if line in notes:
            return notes[line]
    above, line = [], node.lineno - 1
    while line >= 1 and lines[line - 1].strip().startswith("#"):
        above.insert(0, notes.get(line, ""))
        line -= 1
    return " ".join(above)


def is_classvar(annotation: ast.expr) -> bool:
    target = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return annotation.value.startswith(("ClassVar", "typing.ClassVar"))
    return ast.unparse(target) in ("ClassVar", "typing.ClassVar")


class Source:
    """The medexp modules the schema lives in, parsed on demand from a checkout's root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: dict[str, Module] = {}

    def module(self, name: str) -> Module:
        if name not in self.modules:
            path = self.root / (name.replace(".", "/") + ".py")
            if not path.is_file():
                path = self.root / name.replace(".", "/") / "__init__.py"
            self.modules[name] = self._parse(name, path.read_text())
        return self.modules[name]

    def _parse(self, name: str, text: str) -> Module:
        tree, notes, lines = ast.parse(text), comments(text), text.splitlines()
        module = Module({}, {}, {})
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medexp"):
                module.imports.update({alias.asname or alias.name: node.module for alias in node.names})
            elif (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                module.constants[node.targets[0].id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
                module.constants[node.target.id] = node.value
            elif isinstance(node, ast.ClassDef):
                module.classes[node.name] = self._klass(name, node, notes, lines)
        return module

    def _klass(self, module: str, node: ast.ClassDef, notes: dict[int, str], lines: list[str]) -> Klass:
        bases = [ast.unparse(base).split(".")[-1] for base in node.bases]
        klass = Klass(node.name, module, bases, (ast.get_docstring(node) or "").split("\n\n")[0])
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                if not is_classvar(item.annotation) and not item.target.id.isupper():
                    help_text = help_of(item, notes, lines)
                    klass.fields.append(Field(item.target.id, item.annotation, item.value, help_text, module))
            elif (
                isinstance(item, ast.Assign)
                and len(item.targets) == 1
                and isinstance(item.targets[0], ast.Name)
            ):
                member = item.targets[0].id
                if not member.startswith("_") and isinstance(item.value, ast.Constant):
                    klass.members[member] = (item.value.value, help_of(item, notes, lines))
        return klass

    def lookup(self, module: str, name: str) -> Klass | None:
        """The class `name` means in `module`: defined there, or imported from another medexp module."""
        parsed = self.module(module)
        if name in parsed.classes:
            klass = parsed.classes[name]
            klass.is_enum = klass.is_enum or any(self._enum_base(module, base) for base in klass.bases)
            return klass
        if name in parsed.imports:
            return self.lookup(parsed.imports[name], name)
        return None

    def _enum_base(self, module: str, base: str) -> bool:
        if base in ENUM_BASES:
            return True
        klass = self.lookup(module, base) if base != "str" else None
        return klass is not None and klass.is_enum

    def fields(self, klass: Klass) -> list[Field]:
        """A dataclass's fields in dataclass order: its bases' first, then its own (an override keeps its place)."""
        merged: dict[str, Field] = {}
        for base in klass.bases:
            parent = self.lookup(klass.module, base)
            if parent is not None and not parent.is_enum:
                merged.update({f.name: f for f in self.fields(parent)})
        for f in klass.fields:
            merged[f.name] = f
        return list(merged.values())

    def registry(self, module: str, name: str) -> dict[str, Klass]:
        """A module-level dict literal of names to classes (GROUPS, ROOTS), its classes resolved."""
        node = self.module(module).constants.get(name)
        if not isinstance(node, ast.Dict):
            raise LookupError(f"{module}.{name} is not a dict literal of names to schema classes")
        found = {}
        for key, value in zip(node.keys, node.values, strict=True):
            klass = self.lookup(module, ast.unparse(value)) if isinstance(key, ast.Constant) else None
            if klass is None:
                raise LookupError(f"{module}.{name}[{ast.unparse(key) if key else '**'}] is not a class")
            found[key.value] = klass
        return found

    def default(self, f: Field) -> Any:
        """A field's schema default as a plain value: MISSING is `???`, a factory its product."""
        node = f.default
        if node is None or (isinstance(node, ast.Name) and node.id == "MISSING"):
            return MISSING
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("field", "dataclasses.field"):
            keywords = {k.arg: k.value for k in node.keywords}
            if "default" in keywords:
                return self.default(Field(f.name, f.annotation, keywords["default"], "", f.module))
            factory = keywords.get("default_factory")
            if isinstance(factory, ast.Lambda):
                return self.literal(f.module, factory.body)
            name = ast.unparse(factory) if factory is not None else ""
            klass = self.lookup(f.module, name)
            return {"list": [], "dict": {}}.get(name, self.effective(klass, {}) if klass else name)
        return self.literal(f.module, node)

    def literal(self, module: str, node: ast.expr) -> Any:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):  # Enum.member
            klass = self.lookup(module, node.value.id)
            if klass is not None and node.attr in klass.members:
                return klass.members[node.attr][0]
        if isinstance(node, ast.Name) and node.id in self.module(module).constants:
            return self.literal(module, self.module(module).constants[node.id])
        try:
            return ast.literal_eval(node)
        except ValueError:
            return ast.unparse(node)

    def dataclass_of(self, f: Field) -> Klass | None:
        """The dataclass a field holds (`X` or `X | None`), or None for anything else."""
        inner, _ = unwrap(f.annotation)
        if isinstance(inner, ast.Name | ast.Attribute):
            klass = self.lookup(f.module, ast.unparse(inner).split(".")[-1])
            if klass is not None and not klass.is_enum:
                return klass
        return None

    def effective(self, klass: Klass, data: Any) -> dict[str, Any]:
        """What a config node holds once `data` (from YAML) is merged over the schema's defaults."""
        data = data if isinstance(data, dict) else {}
        out = {}
        for f in self.fields(klass):
            nested = self.dataclass_of(f)
            value = data[f.name] if f.name in data else self.default(f)
            out[f.name] = self.effective(nested, value) if nested and isinstance(value, dict) else value
        return out


def unwrap(annotation: ast.expr) -> tuple[ast.expr, bool]:
    """`X | None` and `Optional[X]` -> (`X`, True); `X` -> (`X`, False); a quoted annotation is parsed first."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        sides = [annotation.left, annotation.right]
        kept = [side for side in sides if not (isinstance(side, ast.Constant) and side.value is None)]
        return (kept[0], True) if len(kept) == 1 else (annotation, False)
    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value).endswith("Optional"):
        return annotation.slice, True
    return annotation, False


def load_options(folder: Path, own_schema: str = "schema") -> dict[str, dict]:
    """Each option file of a group folder, merged with the options of the same group its defaults list names."""
    cache: dict[str, dict] = {}

    def load(name: str) -> dict:
        if name not in cache:
            data = yaml.safe_load((folder / f"{name}.yaml").read_text()) or {}
            defaults = data.pop("defaults", []) if isinstance(data, dict) else []
            at = defaults.index("_self_") if "_self_" in defaults else len(defaults)  # Hydra: _self_ last
            merged: dict = {}
            for entry in defaults[:at]:
                merged = merge(merged, load(entry) if _sibling(folder, entry, own_schema) else {})
            merged = merge(merged, data)
            for entry in defaults[at + 1 :]:
                merged = merge(merged, load(entry) if _sibling(folder, entry, own_schema) else {})
            cache[name] = merged
        return cache[name]

    return {path.stem: load(path.stem) for path in sorted(folder.glob("*.yaml"))}


def _sibling(folder: Path, entry: Any, own_schema: str) -> bool:
    return isinstance(entry, str) and entry != own_schema and (folder / f"{entry}.yaml").is_file()


def merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base.get(key), value)
        return out
    return over
