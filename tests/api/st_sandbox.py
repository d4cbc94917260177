"""schemathesis hooks (``SCHEMATHESIS_HOOKS=st_sandbox``): keep the fuzzer in its sandbox.

Generated paths would make directories anywhere (a repository path is created)
and generated URLs would be fetched (an import URL is). Every path-like field is
moved under ``DV_FUZZ_SANDBOX`` and every URL pointed at 127.0.0.1 port 1 (closed),
keeping the generated text in it, so validation still sees odd input but nothing
leaves the sandbox or the machine.
"""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis

PATHS = {"path", "socket", "disks"}
LOCATIONS = {"location", "destination"}


def _tail(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", value)[:40].lstrip(".") or "x"


def _safe(key: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_safe(key, v) for v in value]
    if isinstance(value, dict):
        return {k: _safe(k, v) for k, v in value.items()}
    if not isinstance(value, str) or not value:
        return value
    sandbox = os.environ["DV_FUZZ_SANDBOX"]
    if key in PATHS:
        return f"{sandbox}/{_tail(value)}"
    if key in LOCATIONS:
        return f"file://{sandbox}/{_tail(value)}"
    if key == "url":
        if value.startswith("s3"):
            return f"s3://bucket/{_tail(value)}?endpoint_url=http://127.0.0.1:1"
        if value.startswith("nbd"):
            return f"nbd://127.0.0.1:1/{_tail(value)}"
        return f"http://127.0.0.1:1/{_tail(value)}"
    return value


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    if isinstance(case.body, dict | list):
        case.body = _safe("", case.body)
    # Changing one's own password logs the fuzzer out (by design): aim elsewhere.
    own = os.environ.get("DV_FUZZ_SELF_ID")
    if own and (case.path_parameters or {}).get("user_id") == own:
        case.path_parameters["user_id"] = "0" * 32


# Errors a request model raises for what its published schema already states
# (types, bounds, lengths, required fields): a schema-valid case must not get one.
# ``value_error`` is a rule the schema can only describe in words (cross-field,
# NUL bytes), so it may refuse schema-valid input.
SCHEMA_LEVEL = {
    "int_type",
    "float_type",
    "bool_type",
    "string_type",
    "missing",
    "extra_forbidden",
    "read_only",
    "less_than_equal",
    "greater_than_equal",
    "greater_than",
    "string_too_long",
    "string_too_short",
    "too_long",
    "too_short",
    "enum",
    "literal_error",
    "int_from_float",
}


@schemathesis.check
def model_matches_schema(ctx: Any, response: Any, case: Any) -> bool | None:
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    body = response.json()
    if body.get("type") != "urn:diskvault:error:validation":
        return None
    wrong = [e for e in body.get("errors", []) if e.get("type") in SCHEMA_LEVEL]
    if wrong:
        raise AssertionError(f"schema-valid input refused by the request model: {wrong}")
    return None
