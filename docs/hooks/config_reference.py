"""mkdocs hook: the configuration reference (reference/configuration.md), generated from the schema at every
build, so it cannot drift from the code.

Every field of every config group (medexp/config/schema.py GROUPS), of every command's root (ROOTS in
medexp/config/commands.py) and of the sweeper (medexp/sweep/schema.py) is one row: its dotted key, its type
(an enum's allowed values), its one-line help (the field's trailing comment) and its value in each option file
of the group (conf/<group>/*.yaml merged over the schema's defaults). `python docs/hooks/config_reference.py`
prints the page.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from markdown_text import ABSENT, BELOW, anchor, cell, code, description, grouped, prose, show
from schema_source import Klass, Source, load_options, unwrap

PAGE = "reference/configuration.md"
SCHEMA, COMMANDS, SWEEPER = "medexp.config.schema", "medexp.config.commands", "medexp.sweep.schema"
SWEEPER_CLASS = "MedexpOptunaSweeperConf"
COLUMNS = 3  # up to this many option files get a column each; more share one column, grouped by value
WATCHED = ("medexp/config", "medexp/sweep/schema.py", "conf")  # what `mkdocs serve` rebuilds on


@dataclass
class Row:
    key: str
    type: str
    help: str
    values: dict[str, Any]
    enum: Klass | None = None


@dataclass
class Section:
    title: str
    intro: str
    rows: list[Row]
    options: dict[str, str]  # option -> its one-line description


def rows(
    source: Source, klass: Klass, prefix: str, data: dict[str, Any], groups: dict[str, str]
) -> list[Row]:
    """One row per field of `klass` (nested dataclasses as dotted keys); `data`: option -> this node's value."""
    out = []
    for f in source.fields(klass):
        key = prefix + f.name
        values = {o: d.get(f.name, ABSENT) if isinstance(d, dict) else ABSENT for o, d in data.items()}
        (inner, optional), nested = unwrap(f.annotation), source.dataclass_of(f)
        if nested is not None and nested.name in groups:
            group = groups[nested.name]
            out.append(
                Row(key, f"[`{group}`](#{group}) group", f.help or f"an option of conf/{group}/", values)
            )
        elif nested is not None:
            if f.help or optional:
                shown = {o: v if v is None else BELOW for o, v in values.items()}  # null, or its keys below
                kind = code(nested.name) + (" or `null`" if optional else "")
                out.append(Row(key, kind, f.help or nested.doc, shown))
            out += rows(source, nested, key + ".", values, groups)
        elif (mapped := mapping(source, f.module, inner)) is not None:
            if mapped.name in groups:
                group = groups[mapped.name]
                kind = f"map: name → a [`{group}`](#{group}) option"
                out.append(Row(key, kind, f.help, values))
            else:
                out.append(Row(key, code(ast.unparse(f.annotation)), f.help, values))
                out += rows(source, mapped, key + ".<name>.", dict.fromkeys(data, ABSENT), groups)
        else:
            enum = source.lookup(f.module, ast.unparse(inner).split(".")[-1]) if is_name(inner) else None
            enum = enum if enum is not None and enum.is_enum else None
            kind = " · ".join(code(v) for v, _ in enum.members.values()) if enum else code(ast.unparse(inner))
            out.append(Row(key, kind + (" or `null`" if optional else ""), f.help, values, enum))
    return out


def is_name(node: ast.expr) -> bool:
    return isinstance(node, ast.Name | ast.Attribute)


def mapping(source: Source, module: str, node: ast.expr) -> Klass | None:
    """The dataclass of `dict[str, X]`'s values, or None."""
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("dict", "Dict", "Mapping"):
        value = node.slice.elts[-1] if isinstance(node.slice, ast.Tuple) else node.slice
        klass = source.lookup(module, ast.unparse(value)) if is_name(value) else None
        return klass if klass is not None and not klass.is_enum else None
    return None


def table(section: Section) -> list[str]:
    names = list(dict.fromkeys(o for row in section.rows for o in row.values))
    split = len(names) <= COLUMNS
    head = ["key", "type", "help", *(f"`{n}`" for n in names)] if split else ["key", "type", "help", "value"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in section.rows:
        values = [show(row.values.get(n, ABSENT)) for n in names]
        if not split:
            values = [grouped(row.values)]
        out.append(
            "| " + " | ".join(cell(c) for c in [code(row.key), row.type, prose(row.help), *values]) + " |"
        )
    return out


def allowed(section: Section) -> list[str]:
    """The meaning of each allowed value, for the enum fields whose values carry a comment."""
    out = []
    for row in section.rows:
        if row.enum is not None and any(help_text for _, help_text in row.enum.members.values()):
            out.append(f"- {code(row.key)}")
            out += [f"    - {code(v)}" + (f": {prose(h)}" if h else "") for v, h in row.enum.members.values()]
    return ["**Allowed values.**", "", *out] if out else []


def group_sections(source: Source, root: Path) -> tuple[list[Section], dict[str, str]]:
    groups = source.registry(SCHEMA, "GROUPS")
    by_class = {klass.name: name for name, klass in groups.items()}
    picked = root_defaults(root / "conf" / "train.yaml")
    sections = []
    for name, klass in groups.items():
        folder = root / "conf" / name
        options = load_options(folder)
        order = sorted(options, key=lambda o: (o != picked.get(name), o))  # train.yaml's default first
        data = {o: source.effective(klass, options[o]) for o in order}
        described = {o: description(folder / f"{o}.yaml") for o in order}
        intro = f"`{name}=<option>` picks a file of `conf/{name}/`; `{name}.<key>=<value>` overrides one key."
        own = {k: v for k, v in by_class.items() if v != name}
        sections.append(Section(name, intro, rows(source, klass, f"{name}.", data, own), described))
    return sections, by_class


def root_defaults(path: Path) -> dict[str, str]:
    """The group options a root config's defaults list picks."""
    entries = read_yaml(path).get("defaults", [])
    return {k: str(v) for e in entries if isinstance(e, dict) for k, v in e.items() if "/" not in k}


def read_yaml(path: Path) -> dict:
    """A root config's keys; none for a command whose root config is not written yet."""
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    return data if isinstance(data, dict) else {}


def root_sections(source: Source, root: Path, by_class: dict[str, str]) -> list[Section]:
    sections = []
    for command, klass in source.registry(COMMANDS, "ROOTS").items():
        path = root / "conf" / f"{command}.yaml"
        data = read_yaml(path)
        data.update(root_defaults(path))  # a group's row shows the option the command starts from
        value = {f"conf/{command}.yaml": source.effective(klass, data)}
        intro = f"The top-level keys of `python -m medexp.{command}` (`conf/{command}.yaml`): `key=value` overrides one."
        sections.append(Section(command, intro, rows(source, klass, "", value, by_class), {}))
    return sections


def sweeper_section(source: Source, root: Path) -> Section:
    klass = source.lookup(SWEEPER, SWEEPER_CLASS)
    if klass is None:
        raise LookupError(f"{SWEEPER} defines no {SWEEPER_CLASS}")
    presets = load_options(root / "conf" / "hparams_search")
    data = {"schema default": source.effective(klass, {})}
    for name, preset in presets.items():
        data[name] = source.effective(klass, preset.get("hydra", {}).get("sweeper", {}))
    intro = (
        "medexp's Optuna sweeper (`hydra/sweeper=medexp_optuna`, set by every `hparams_search` preset), used "
        "with `--multirun`. Its values come from `conf/hparams_search/<preset>.yaml`; override one with "
        "`hydra.sweeper.<key>=<value>`."
    )
    return Section("hydra.sweeper", intro, rows(source, klass, "hydra.sweeper.", data, {}), {})


def preset_lines(root: Path) -> list[str]:
    out = ["## Presets", ""]
    out += ["Presets are not schema groups: each file overrides keys of the groups above.", ""]
    for folder, usage in (
        ("experiment", "experiment=<name>"),
        ("hparams_search", "--multirun hparams_search=<name>"),
    ):
        out += [f"**`{folder}`** (`{usage}`)", ""]
        out += [
            f"- `{p.stem}`: {prose(description(p))}" for p in sorted((root / "conf" / folder).glob("*.yaml"))
        ]
        out.append("")
    launchers = sorted((root / "conf" / "hydra" / "launcher").glob("*.yaml"))
    if launchers:
        out += ["**`hydra/launcher`** (`hydra/launcher=<name>`, besides the installed launcher plugins)", ""]
        out += [f"- `{p.stem}`: {prose(description(p))}" for p in launchers] + [""]
    return out


def sections(root: Path) -> list[Section]:
    source = Source(root)
    groups, by_class = group_sections(source, root)
    return [*groups, *root_sections(source, root, by_class), sweeper_section(source, root)]


def generate(root: Path) -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the schema (`medexp/config/schema.py`, `medexp/config/commands.py`, "
        "`medexp/sweep/schema.py`) and the option files under `conf/` each time the docs are built. A value "
        "`???` must be set by an option, a preset or the command line; `null` means off or detect, as the help "
        "says; `—` is not set (its parent is null, or the key is a name you choose). Enum values are listed in "
        "the type column; unknown keys and wrong types are refused while Hydra composes the config.",
        "",
    ]
    all_sections = sections(root)
    out += ["| section | what it configures |", "|---|---|"]
    out += [f"| [`{s.title}`](#{anchor(s.title)}) | {cell(s.intro)} |" for s in all_sections]
    out.append("")
    for section in all_sections:
        out += [f"## {section.title}", "", section.intro, ""]
        if section.options:
            out += ["Options (the first is the default):", ""]
            out += [f"- `{o}`: {prose(text)}" for o, text in section.options.items()] + [""]
        out += [*table(section), ""]
        out += [*allowed(section), ""] if allowed(section) else []
    return "\n".join(out + preset_lines(root))


def on_files(files: Any, config: Any) -> Any:
    """mkdocs: add the generated page to the site's files."""
    from mkdocs.structure.files import File

    content = generate(Path(config.config_file_path).resolve().parent)
    files.append(File.generated(config, PAGE, content=content))
    return files


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    """mkdocs serve: rebuild when the schema or an option file changes."""
    root = Path(config.config_file_path).resolve().parent
    for path in WATCHED:
        server.watch(str(root / path))
    return server


if __name__ == "__main__":
    sys.stdout.write(generate(Path(__file__).resolve().parents[2]))
