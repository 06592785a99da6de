"""Every exception of the gateway has one home (policy/exceptions.py), and is
imported from there only; what each says, and how it fails closed."""

from __future__ import annotations

import ast
from pathlib import Path

from policy import exceptions
from policy.exceptions import ConfigError, InvalidToken, Misconfigured, Unavailable, Unseeded

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO / "policy").rglob("*.py")) + sorted((REPO / "addons").rglob("*.py"))
HOME = REPO / "policy" / "exceptions.py"
NAMES = {name for name, value in vars(exceptions).items() if isinstance(value, type) and issubclass(value, Exception)}


def test_every_exception_class_is_defined_in_policy_exceptions():
    elsewhere = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and path != HOME and any(
                    isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id in NAMES)
                    for b in node.bases):
                elsewhere.append(f"{path.relative_to(REPO)}: {node.name}")
    assert not elsewhere
    assert NAMES == {"ConfigError", "InvalidToken", "Unavailable", "Misconfigured", "Unseeded"}


def test_each_exception_is_imported_from_its_home_only():
    astray = []
    for path in SOURCES + sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "policy.exceptions":
                astray += [f"{path.relative_to(REPO)}: {a.name} from {node.module}" for a in node.names
                           if a.name in NAMES]
            if isinstance(node, ast.Attribute) and node.attr in NAMES and not (
                    isinstance(node.value, ast.Name) and node.value.id == "exceptions"):
                astray.append(f"{path.relative_to(REPO)}: {ast.unparse(node)}")
    assert not astray


def test_a_misconfiguration_is_unavailable_that_says_what_to_fix():
    e = Misconfigured("keystone", "the service login answered 401", "check [keystone] username")
    assert isinstance(e, Unavailable)  # every decision fails closed, 503
    assert (e.reason, e.dependency, e.fix) == ("misconfigured", "keystone", "check [keystone] username")
    assert e.detail == "the service login answered 401; check [keystone] username"
    plain = Unavailable("glance", "timeout")
    assert (plain.reason, str(plain)) == ("upstream_unavailable", "glance: timeout")


def test_a_config_error_is_a_value_error_and_the_others_are_not():
    assert issubclass(ConfigError, ValueError)
    assert not any(issubclass(e, ValueError) for e in (InvalidToken, Unavailable, Unseeded))
