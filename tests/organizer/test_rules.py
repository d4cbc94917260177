from __future__ import annotations

import pytest

from diskvault.organizer.categorize import Category
from diskvault.organizer.errors import InvalidRules
from diskvault.organizer.rules import load_rules, parse_duration, parse_size, render
from diskvault.storage import StorageFile

NOW = 1_700_000_000.0
YAML = """
destination: file:///srv/sorted
rules:
  - name: big old images
    match: {category: disk-image, format: [qcow2, vmdk], min_size: 1M, older_than: 30d}
    action: move
    destination: "{category}/{format}/{year}/{name}"
  - match: {name: ["*.iso", "*.ISO"]}
    action: copy
    destination: "isos/{stem}.{ext}"
    on_conflict: skip
"""


def f(key: str, size: int = 2 << 20, age: float = 40 * 86400) -> StorageFile:
    return StorageFile(key=key, size=size, mtime=NOW - age)


def test_yaml_and_json_give_the_same_rules() -> None:
    rules = load_rules(YAML)
    assert load_rules(rules.model_dump_json()) == rules
    assert rules.destination == "file:///srv/sorted"
    assert rules.rules[0].match.min_size == 1 << 20
    assert rules.rules[0].match.older_than == 30 * 86400
    assert load_rules([{"action": "delete"}]).rules[0].action == "delete"


def test_first_matching_rule_wins_and_filters_apply() -> None:
    rules = load_rules(YAML)
    qcow2 = Category("disk-image", "qcow2")
    assert rules.first_match(f("a.qcow2"), qcow2, NOW) is rules.rules[0]
    assert rules.first_match(f("a.qcow2", size=10), qcow2, NOW) is None  # too small
    assert rules.first_match(f("a.qcow2", age=86400), qcow2, NOW) is None  # too new
    assert rules.first_match(f("x/a.ISO"), Category("iso", "iso"), NOW) is rules.rules[1]
    assert rules.first_match(f("a.txt"), Category("other"), NOW) is None


def test_templates_render_inside_the_destination() -> None:
    rules = load_rules(YAML)
    key = render(rules.rules[0], f("deep/dir/web.qcow2"), Category("disk-image", "qcow2"))
    assert key == "disk-image/qcow2/2023/web.qcow2"
    iso = render(rules.rules[1], f("a/b.iso"), Category("iso", "iso"))
    assert iso == "isos/b.iso"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("rules: [{action: move}]", "needs a destination"),
        ("rules: [{action: move, destination: '{nope}'}]", "unknown template field"),
        ("rules: [{action: move, destination: '../{name}'}]", "'..'"),
        ("rules: [{action: move, destination: '/abs/{name}'}]", "absolute"),
        ("rules: [{action: burn}]", "rules.0.action"),
        ("rules: [{action: copy, destination: x, match: {category: movie}}]", "unknown category"),
        ("rules: [{action: copy, destination: x, match: {min_size: lots}}]", "not a size"),
        ("rules: []", "rules"),
        ("just text", "expected a mapping"),
        ("a: [", "neither JSON nor YAML"),
    ],
)
def test_bad_rules_say_what_is_wrong(rules: str, message: str) -> None:
    with pytest.raises(InvalidRules, match=message) as err:
        load_rules(rules)
    assert err.value.status == 400


def test_sizes_and_durations() -> None:
    assert parse_size("1.5G") == int(1.5 * 1024**3) and parse_size("10KiB") == 10240
    assert parse_duration("2w") == 14 * 86400 and parse_duration(90) == 90.0


def test_every_unknown_key_is_named_with_its_line() -> None:
    text = (
        "destination: file:///srv/out\n"
        "rules:\n"
        "  - action: copy\n"
        "    destinaton: x\n"
        "    match:\n"
        "      catgory: iso\n"
        "      min_sise: 1M\n"
    )
    with pytest.raises(InvalidRules) as err:
        load_rules(text)
    detail = err.value.message
    assert "line 4: rules.0.destinaton: unknown field; did you mean `destination`?" in detail
    assert "line 6: rules.0.match.catgory: unknown field; did you mean `category`?" in detail
    assert "line 7: rules.0.match.min_sise: unknown field; did you mean `min_size`?" in detail


def test_json_rules_get_line_numbers_too() -> None:
    text = '{\n  "rules": [\n    {"action": "delete",\n     "id": 3}\n  ]\n}\n'
    with pytest.raises(InvalidRules, match=r"line 4: rules\.0\.id: unknown field") as err:
        load_rules(text)
    assert "read-only" not in err.value.message  # a file has no server-set fields
