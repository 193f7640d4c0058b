"""Early checks of a composed config, before torch is imported or any data is read.

Hydra already rejects unknown group options and unknown keys. This module rejects values
of the wrong type or out of range, and names the key and what is allowed.

Each rule belongs to the node it checks. A node with a `_target_` is checked by the rules that
its class declares in its own body, merged over those of its base classes (in genexp, or in the
class's own top-level package; a class's rule for a key replaces its bases', None drops it):

    class VAE(AutoEncoder):
        config_rules = {"beta": "number >= 0", "iwae_samples": "int >= 0"}

A rule applies to that key of that node only (`model.beta`, not `callbacks.x.beta`), or, named
by a dotted path with `*` for any key, to a key of a nested node without a `_target_`
(`"optimizers.*.lr"`); a nested node with a `_target_` has its own class's rules. The class is
found without importing its module, which would import torch: the module's file is located on
the import path, parsed with `ast`, and `config_rules` read as a literal. A `_target_` whose class
cannot be found so (a class made at run time, a module not on the path) gets no rules here and
no message: Hydra reports a target it cannot import when it instantiates it. Targets outside
genexp (torch optimizers, Lightning) have their rules in EXTERNAL_RULES, and the root's keys and
its nodes without a `_target_` (`seed`, `trainer`) in ROOT_RULES.

A rule's text says what is allowed; the message says it after "it must be":
    int, number                        any integer, any number (a bool is neither)
    int >= 1, number > 0               also <, <= ; the bound as written ("an integer >= 1")
    number in [0, 1)                   an interval: [ ] closed ends, ( ) open ends
    bool                               true or false
    list of int >= 1                   a non-empty list of such values
    one of 32-true, bf16-mixed         the value's text is one of these
    -1 for no limit                    that value; words after it are part of the message
    int >= 1 or -1 for no limit        either
    list of int >= 1; e.g. [256, 128]  words after ";" follow the message after a comma
"""

import ast
import functools
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from genexp.errors import ConfigError

PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32", "16", "bf16")

# The root config's own keys and the nodes without a `_target_` under it (Lightning's Trainer
# arguments), by their path from the root.
ROOT_RULES = {
    "seed": "int >= 0",
    "compile": "one of default, reduce-overhead, max-autotune; or null to train eagerly",  # genexp.compilation.MODES
    "trainer.max_epochs": "int >= 1 or -1 for no limit",
    "distributed.timeout_s": "number > 0",
    "trainer.precision": "one of " + ", ".join(PRECISIONS),
}

# Targets outside genexp, by prefix (a prefix ending in "." covers a package, otherwise it is a
# whole target; the longest one that matches wins). Their modules are never parsed.
EXTERNAL_RULES: dict[str, dict[str, str]] = {
    "torch.": {},
    "torch.optim.": {"lr": "number > 0", "weight_decay": "number >= 0", "momentum": "number >= 0"},
    "torch.optim.lr_scheduler.": {},
    "lightning.": {},
    "pytorch_lightning.": {},
    "lightning.pytorch.callbacks.ModelCheckpoint": {"every_n_epochs": "int >= 1"},
}

# Packages whose base classes are followed, besides the target's own top-level package.
RULE_PACKAGES = ("genexp",)


class Rule(NamedTuple):
    check: Callable[[Any], bool]
    allowed: str  # the message's "it must be <allowed>"


class RuleError(ValueError):
    """A class declares `config_rules` that are not a dict literal of key -> rule text, or a rule
    text that does not parse: a bug in that class, not in the user's config."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SCALAR = re.compile(rf"(int|number)(?:\s*(>=|<=|>|<)\s*({_NUM})|\s+in\s*([\[(])\s*({_NUM})\s*,\s*({_NUM})\s*([\])]))?")
_LITERAL = re.compile(rf"({_NUM})(\s+.+)?")
_NOUNS = {"int": ("an integer", "integers"), "number": ("a number", "numbers")}
_COMPARE = {">": lambda v, b: v > b, ">=": lambda v, b: v >= b, "<": lambda v, b: v < b, "<=": lambda v, b: v <= b}


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _scalar(text: str, plural: bool = False) -> Rule:
    match = _SCALAR.fullmatch(text)
    if match is None:
        raise ValueError(f"cannot parse {text!r}: expected int or number, optionally followed by "
                         f">, >=, <, <= a bound or by in [low, high] (brackets ( ) for open ends)")
    kind, op, bound, left, low, high, right = match.groups()
    is_kind = _is_int if kind == "int" else _is_number
    noun = _NOUNS[kind][plural]
    if op:
        limit, compare = _number(bound), _COMPARE[op]
        return Rule(lambda v: is_kind(v) and compare(v, limit), f"{noun} {op} {bound}")
    if left:
        lo, hi = _number(low), _number(high)
        closed_lo, closed_hi = left == "[", right == "]"
        return Rule(lambda v: is_kind(v) and (lo <= v if closed_lo else lo < v) and (v <= hi if closed_hi else v < hi),
                    f"{noun} in {left}{low}, {high}{right}")
    return Rule(is_kind, noun)


def _alternative(text: str) -> Rule:
    if text == "bool":
        return Rule(lambda v: isinstance(v, bool), "true or false")
    if text.startswith("one of "):
        options = tuple(o.strip() for o in text[len("one of "):].split(","))
        return Rule(lambda v: str(v) in options, "one of " + ", ".join(options))
    if text.startswith("list of "):
        item = _scalar(text[len("list of "):].strip(), plural=True)
        return Rule(lambda v: isinstance(v, (list, tuple, ListConfig)) and len(v) > 0 and all(item.check(i) for i in v),
                    f"a non-empty list of {item.allowed}")
    literal = _LITERAL.fullmatch(text)
    if literal:
        value = _number(literal.group(1))
        is_kind = _is_int if isinstance(value, int) else _is_number
        return Rule(lambda v: is_kind(v) and v == value, text)
    return _scalar(text)


@functools.cache
def parse_rule(text: str) -> Rule:
    """A rule from its text (see the module's docstring for the language)."""
    spec, _, note = (part.strip() for part in text.partition(";"))
    alternatives = [_alternative(" ".join(alt.split())) for alt in spec.split(" or ")]
    allowed = ", or ".join(rule.allowed for rule in alternatives) + (f", {note}" if note else "")
    if len(alternatives) == 1:
        return Rule(alternatives[0].check, allowed)
    return Rule(lambda v: any(rule.check(v) for rule in alternatives), allowed)


class Rules:
    """The parsed rules of one node, by key path relative to the node ("*" matches any key)."""

    def __init__(self, texts: Mapping[str, str], where: str) -> None:
        self.exact: dict[tuple[str, ...], Rule] = {}
        self.patterns: list[tuple[tuple[str, ...], Rule]] = []
        for key, text in texts.items():
            try:
                rule = parse_rule(text)
            except ValueError as error:
                raise RuleError(f"{where}: the rule for {key!r}: {error}") from None
            parts = tuple(key.split("."))
            if "*" in parts:
                self.patterns.append((parts, rule))
            else:
                self.exact[parts] = rule

    def match(self, path: tuple[str, ...]) -> Rule | None:
        rule = self.exact.get(path)
        if rule is None:
            rule = next((r for p, r in self.patterns
                         if len(p) == len(path) and all(q in ("*", k) for q, k in zip(p, path))), None)
        return rule


NO_RULES = Rules({}, "")


# Finding a class's `config_rules` without importing its module.

class _Module(NamedTuple):
    name: str
    classes: dict[str, ast.ClassDef]
    imports: dict[str, str]  # local name -> dotted name


def _external(target: str) -> dict[str, str] | None:
    prefixes = [p for p in EXTERNAL_RULES if target == p or (p.endswith(".") and target.startswith(p))]
    return EXTERNAL_RULES[max(prefixes, key=len)] if prefixes else None


def _module_file(module: str) -> str | None:
    """The source file of a module, found on the import path without importing any package."""
    top, *rest = module.split(".")
    loaded = sys.modules.get(top)
    try:
        spec = getattr(loaded, "__spec__", None) or importlib.util.find_spec(top)  # a top-level find runs nothing
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None:
        return None
    if not rest:
        return spec.origin if spec.origin and spec.origin.endswith(".py") else None
    locations = list(spec.submodule_search_locations or [])
    for i, part in enumerate(rest):
        last, namespace = i == len(rest) - 1, []
        for location in locations:
            package = os.path.join(location, part)
            if os.path.isfile(os.path.join(package, "__init__.py")):
                if last:
                    return os.path.join(package, "__init__.py")
                locations = [package]
                break
            if last and os.path.isfile(package + ".py"):
                return package + ".py"
            if os.path.isdir(package):
                namespace.append(package)
        else:
            if last or not namespace:
                return None
            locations = namespace
    return None


@functools.cache
def _parse_module(name: str, path: str) -> _Module | None:
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    package = name if os.path.basename(path) == "__init__.py" else name.rpartition(".")[0]
    classes: dict[str, ast.ClassDef] = {}
    imports: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef):
            classes[stmt.name] = stmt
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                local = alias.asname or alias.name.split(".")[0]
                imports[local] = alias.name if alias.asname else local
        elif isinstance(stmt, ast.ImportFrom):
            source = stmt.module or ""
            if stmt.level:
                parts = package.split(".")
                parts = parts[:len(parts) - stmt.level + 1]
                source = ".".join([*parts, *([stmt.module] if stmt.module else [])])
            for alias in stmt.names:
                if alias.name != "*":
                    imports[alias.asname or alias.name] = f"{source}.{alias.name}"
    return _Module(name, classes, imports)


def _find_class(dotted: str, depth: int = 0) -> tuple[_Module, ast.ClassDef] | None:
    """The module and class statement that `dotted` names, following re-exports."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        path = _module_file(".".join(parts[:i]))
        if path is None:
            continue
        module = _parse_module(".".join(parts[:i]), path)
        if module is None:
            return None
        name, *nested = parts[i:]
        if name in module.classes:
            node: ast.ClassDef | None = module.classes[name]
            for inner in nested:
                node = next((n for n in node.body if isinstance(n, ast.ClassDef) and n.name == inner), None)
                if node is None:
                    return None
            return module, node
        if name in module.imports and depth < 20:
            return _find_class(".".join([module.imports[name], *nested]), depth + 1)
        return None
    return None


def _dotted(expr: ast.expr, module: _Module) -> str | None:
    """The dotted name of a base class expression (`Base`, `L.LightningModule`, `Generic[T]`)."""
    if isinstance(expr, ast.Name):
        return f"{module.name}.{expr.id}" if expr.id in module.classes else module.imports.get(expr.id)
    if isinstance(expr, ast.Attribute):
        owner = _dotted(expr.value, module)
        return f"{owner}.{expr.attr}" if owner else None
    if isinstance(expr, ast.Subscript):
        return _dotted(expr.value, module)
    return None


def _own_rules(cls: ast.ClassDef, where: str) -> dict[str, str | None]:
    rules: dict[str, str | None] = {}
    for stmt in cls.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "config_rules" for t in stmt.targets):
            value = stmt.value
        elif (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
              and stmt.target.id == "config_rules" and stmt.value is not None):
            value = stmt.value
        else:
            continue
        try:
            rules = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError):
            rules = None
        if not (isinstance(rules, dict)
                and all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in rules.items())):
            raise RuleError(f"{where}.config_rules must be a dict literal of key -> rule text, "
                            f"e.g. {{'latent_dim': 'int >= 1'}}")
    return rules


def _class_rules(module: _Module, cls: ast.ClassDef, home: str, depth: int = 0) -> dict[str, str | None]:
    """The class's own rules over those of its bases (the first base's over the later ones')."""
    rules: dict[str, str | None] = {}
    for base in reversed(cls.bases):
        dotted = _dotted(base, module)
        if (dotted is None or depth > 20 or dotted.split(".")[0] not in (*RULE_PACKAGES, home)
                or _external(dotted) is not None):
            continue
        found = _find_class(dotted)
        if found is not None:
            rules.update(_class_rules(*found, home, depth + 1))
    rules.update(_own_rules(cls, f"{module.name}.{cls.name}"))
    return rules


@functools.cache
def declared_rules(target: str) -> dict[str, str] | None:
    """The rule texts that the class named by `target` declares in `config_rules`, merged with
    its base classes' (None: a rule maps to none, which drops a base's rule); None where the class
    cannot be found without importing it."""
    found = _find_class(target)
    if found is None:
        return None
    return {k: v for k, v in _class_rules(*found, home=target.split(".")[0]).items() if v is not None}


@functools.cache
def rules_for(target: str) -> Rules:
    """The rules that apply to the keys of a node with this `_target_`."""
    texts = _external(target)
    if texts is None:
        texts = declared_rules(target) or {}
    return Rules(texts, target)


def _check(node: DictConfig, path: str, rules: Rules, relative: tuple[str, ...]) -> None:
    for key in node.keys():
        key_path = f"{path}.{key}" if path else str(key)
        if OmegaConf.is_missing(node, key):
            raise ConfigError(f"{key_path} is required but has no value (??? in the config); set it with {key_path}=...")
        value = node[key]
        if isinstance(value, DictConfig):
            if "_target_" in value and not OmegaConf.is_missing(value, "_target_"):
                target = value["_target_"]
                _check(value, key_path, rules_for(target) if isinstance(target, str) else NO_RULES, ())
            else:  # a plain nested node: checked by the rules of the node above it
                _check(value, key_path, rules, (*relative, str(key)))
            continue
        rule = rules.match((*relative, str(key)))
        if rule is not None and value is not None and not rule.check(value):
            raise ConfigError(f"{key_path}={value!r} is not allowed: it must be {rule.allowed}")


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key; resolves interpolations on the way."""
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg
    _check(cfg, "", Rules(ROOT_RULES, "genexp.validate.ROOT_RULES"), ())
