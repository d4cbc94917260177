"""Organizer rules, written in YAML or JSON, and what each file matches.

    destination: file:///srv/sorted        # optional; default: the scanned location
    rules:
      - name: images
        match: {category: disk-image, format: [qcow2, vmdk], min_size: 1M, older_than: 30d}
        action: move                        # move | copy | delete | hardlink | import
        destination: "{category}/{format}/{name}"
        on_conflict: rename                 # rename | skip; never overwrite

The first rule that matches a file decides its action; files matching no rule
are left alone. Destination templates may use {category}, {format}, {name},
{stem}, {ext}, {dir}, {path}, {year}, {month} and {rule}, and must stay inside
the destination (``..`` and absolute results are refused).
"""

from __future__ import annotations

import fnmatch
import json
import re
import string
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from diskvault.organizer.categorize import CATEGORIES, Category
from diskvault.organizer.errors import InvalidRules
from diskvault.schemas_base import RequestModel, describe, explain
from diskvault.storage import StorageFile
from diskvault.storage.base import normalize_key
from diskvault.storage.errors import InvalidKey

FIELDS = ("category", "format", "name", "stem", "ext", "dir", "path", "year", "month", "rule")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_size(value: int | str) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", value.lower())
    if not m:
        raise ValueError(f"{value!r} is not a size (use bytes or 10K, 5M, 2G, 1T)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def parse_duration(value: int | float | str) -> float:
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwy]?)\s*", value.lower())
    if not m:
        raise ValueError(f"{value!r} is not a duration (use seconds or 90m, 12h, 30d, 2w, 1y)")
    return float(m.group(1)) * _DURATIONS[m.group(2) or "s"]


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class FileModel(RequestModel):
    """A rules file: strict like a request body; nothing in it is read-only."""

    read_only: ClassVar[frozenset[str]] = frozenset()


class Match(FileModel):
    category: list[str] | None = None
    format: list[str] | None = None
    name: list[str] | None = None  # globs on the file name
    path: list[str] | None = None  # globs on the whole key
    min_size: int | None = None
    max_size: int | None = None
    older_than: float | None = None  # seconds
    newer_than: float | None = None

    _lists = field_validator("category", "format", "name", "path", mode="before")(_listify)

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: list[str] | None) -> list[str] | None:
        for c in value or []:
            if c not in CATEGORIES:
                raise ValueError(f"unknown category {c!r}; one of {', '.join(CATEGORIES)}")
        return value

    @field_validator("min_size", "max_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_size(value)

    @field_validator("older_than", "newer_than", mode="before")
    @classmethod
    def _age(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    def matches(self, f: StorageFile, cat: Category, now: float) -> bool:
        name = f.key.rsplit("/", 1)[-1]
        age = now - f.mtime
        return (
            (self.category is None or cat.category in self.category)
            and (self.format is None or (cat.format or "") in self.format)
            and (self.name is None or any(fnmatch.fnmatchcase(name, g) for g in self.name))
            and (self.path is None or any(fnmatch.fnmatchcase(f.key, g) for g in self.path))
            and (self.min_size is None or f.size >= self.min_size)
            and (self.max_size is None or f.size <= self.max_size)
            and (self.older_than is None or age >= self.older_than)
            and (self.newer_than is None or age <= self.newer_than)
        )


class Rule(FileModel):
    name: str = Field(default="", max_length=200)
    match: Match = Field(default_factory=Match)
    action: Literal["move", "copy", "delete", "hardlink", "import"]
    destination: str | None = Field(default=None, max_length=1000)
    on_conflict: Literal["rename", "skip"] = "rename"

    @field_validator("destination")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        for _, field, _, _ in string.Formatter().parse(value):
            if field is not None and field not in FIELDS:
                raise ValueError(f"unknown template field {{{field}}}; use {', '.join(FIELDS)}")
        return value


class RuleSet(FileModel):
    destination: str | None = Field(default=None, max_length=2000)
    rules: list[Rule] = Field(min_length=1, max_length=500)

    def first_match(self, f: StorageFile, cat: Category, now: float | None = None) -> Rule | None:
        now = time.time() if now is None else now
        return next((r for r in self.rules if r.match.matches(f, cat, now)), None)


def load_rules(source: str | dict[str, Any] | list[Any]) -> RuleSet:
    """Parse rules from YAML/JSON text or an already decoded object."""
    data: Any = source
    if isinstance(source, str):
        try:
            data = json.loads(source)
        except ValueError:
            try:
                data = yaml.safe_load(source)
            except yaml.YAMLError as exc:
                raise InvalidRules(detail=f"neither JSON nor YAML: {exc}") from None
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, dict):
        raise InvalidRules(detail="expected a mapping with 'rules' (or a list of rules)")
    try:
        ruleset = RuleSet.model_validate(data)
    except ValidationError as exc:
        errors = explain(exc.errors(include_url=False), RuleSet)
        lines = _line_numbers(source) if isinstance(source, str) else {}
        parts = []
        for err in errors:
            loc = tuple(err["loc"])
            line = lines.get(loc) or lines.get(loc[:-1])
            parts.append((f"line {line}: " if line else "") + describe(err))
        raise InvalidRules(detail="; ".join(parts)) from None
    for i, rule in enumerate(ruleset.rules):
        if rule.action in ("move", "copy", "hardlink") and not rule.destination:
            raise InvalidRules(detail=f"rules.{i}: action {rule.action} needs a destination")
        if rule.destination:
            sample = Category("disk-image", "qcow2")
            render(rule, StorageFile(key="a/b.qcow2", size=1, mtime=0.0), sample)
    return ruleset


def _line_numbers(text: str) -> dict[tuple[str, ...], int]:
    """Each key's and item's line in the YAML (or JSON, which YAML reads too) text,
    by its location as pydantic reports it (list indexes as strings)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node | None, loc: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*loc, str(key.value))
                lines[here] = key.start_mark.line + 1
                walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*loc, str(i))] = item.start_mark.line + 1
                walk(item, (*loc, str(i)))

    walk(root, ())
    if isinstance(root, yaml.SequenceNode):  # a bare list of rules is read as {rules: [...]}
        lines = {("rules", *k): v for k, v in lines.items()} | lines
    return lines


def render(rule: Rule, f: StorageFile, cat: Category) -> str:
    """The destination key for ``f`` under ``rule``; InvalidRules if it leaves the root."""
    template = rule.destination or "{path}"
    directory, _, name = f.key.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem:  # ".bashrc" or "README": no extension
        stem, ext = name, ""
    when = datetime.fromtimestamp(f.mtime, UTC)
    values = {
        "category": cat.category,
        "format": cat.format or "unknown",
        "name": name,
        "stem": stem,
        "ext": ext if dot else "",
        "dir": directory,
        "path": f.key,
        "year": f"{when.year:04d}",
        "month": f"{when.month:02d}",
        "rule": rule.name or rule.action,
    }
    rendered = template.format(**values)
    try:
        return normalize_key(rendered)
    except InvalidKey as exc:
        why = exc.fields["detail"]
        raise InvalidRules(
            detail=f"destination {template!r} gives {rendered!r} for {f.key}: {why}"
        ) from None
