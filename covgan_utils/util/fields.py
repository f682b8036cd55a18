"""Declared, checked dataclass fields: every field of a config dataclass names its type and range beside its
definition, `name: int = field(100, Int(1, 4096))`, and `@checked` refuses a class with a field that does not.

One set of functions then checks every way a config is made, each with a one-line `ConfigError` (a
ValueError) naming the field, its value, the allowed range and the source when there is one:
- in code and presets: the class's `__post_init__` (so `replace` and `dataclasses.replace` too);
- `--set KEY=VALUE`: `overrides(obj, pairs)`, values parsed by the field's check;
- JSON (`config.json` on load and on resume): `from_json(cls, raw, source)`, lists read as tuples.
A class may add checks between fields in a `check_together(self)` method that raises ValueError.
"""
import dataclasses
import json
import math
import numbers

NO_FIX = "fix it or restore the file"
SEED_MAX = 2**32 - 1  # every seed (noise, split, training) is a numpy.random.RandomState seed: [0, 2**32 - 1]


class ConfigError(ValueError):
    """A config value outside its declared type or range (one line)."""


class _Bad(Exception):
    """A value that does not fit a check (internal: turned into a ConfigError with its context)."""


def _shown(value, limit=60):
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    text = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}.get(text, text)
    return text if len(text) <= limit else text[:limit] + "..."


def _num(x):
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _bounds(lo, hi, lo_open=False, hi_open=False):
    if hi is None:
        return f"> {_num(lo)}" if lo_open else f">= {_num(lo)}"
    return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"


# ---------------------------------------------------------------- checks

class Check:
    """A field's type and range: `describe()` for messages, `valid(value)`, `from_json(value)`, `parse(text)`."""

    def describe(self):
        raise NotImplementedError

    def valid(self, value):
        raise NotImplementedError

    def from_json(self, value):
        if not self.valid(value):
            raise _Bad
        return value

    def parse(self, text):
        raise _Bad


class Int(Check):
    """A whole number in [lo, hi] (hi None: no upper bound); `off` names 0 as "off" in the message."""

    def __init__(self, lo=0, hi=None, off=False):
        self.lo, self.hi, self.off = lo, hi, off

    def describe(self):
        return f"a whole number {_bounds(self.lo, self.hi)}" + (" (0 = off)" if self.off else "")

    def valid(self, value):
        return isinstance(value, int) and not isinstance(value, bool) and self.lo <= value and (self.hi is None or value <= self.hi)

    def parse(self, text):
        try:
            return int(text)
        except ValueError:
            raise _Bad from None


class Float(Check):
    """A finite number in the interval lo..hi (open ends where asked; hi None: no upper bound)."""

    def __init__(self, lo=0.0, hi=None, lo_open=False, hi_open=False, off=False):
        self.lo, self.hi, self.lo_open, self.hi_open, self.off = lo, hi, lo_open, hi_open, off

    def describe(self):
        return f"a finite number {_bounds(self.lo, self.hi, self.lo_open, self.hi_open)}" + (" (0 = off)" if self.off else "")

    def valid(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        try:
            v = float(value)
        except OverflowError:  # an integer past float range
            return False
        if not math.isfinite(v) or v < self.lo or (self.lo_open and v == self.lo):
            return False
        return self.hi is None or v < self.hi or (v == self.hi and not self.hi_open)

    def from_json(self, value):
        return float(super().from_json(value))

    def parse(self, text):
        try:
            return float(text)
        except ValueError:
            raise _Bad from None


class Bool(Check):
    def describe(self):
        return "true or false"

    def valid(self, value):
        return isinstance(value, bool)

    def parse(self, text):
        if text.lower() not in ("true", "false", "1", "0"):
            raise _Bad
        return text.lower() in ("true", "1")


class Choice(Check):
    """One of `options` (strings or whole numbers)."""

    def __init__(self, *options):
        self.options = options

    def describe(self):
        return "one of " + ", ".join(str(o) for o in self.options)

    def valid(self, value):
        return type(value) is type(self.options[0]) and value in self.options

    def parse(self, text):
        try:
            return type(self.options[0])(text)
        except ValueError:
            raise _Bad from None


class Text(Check):
    """A string of at most `max_len` characters (`optional`: or None, written null in JSON)."""

    def __init__(self, max_len=200, optional=False):
        self.max_len, self.optional = max_len, optional

    def describe(self):
        return f"a string of at most {self.max_len} characters" + (" or null" if self.optional else "")

    def valid(self, value):
        return (value is None and self.optional) or (isinstance(value, str) and len(value) <= self.max_len)

    def parse(self, text):
        return None if self.optional and text.lower() in ("none", "null") else text


class Names(Check):
    """A comma list of names from `options` (or `aliases`), in a string; "" when `empty` is allowed."""

    def __init__(self, options, aliases=(), empty=True):
        self.options, self.aliases, self.empty = tuple(options), tuple(aliases), empty

    def describe(self):
        return (f"a comma list of {', '.join(self.options)}" + (f" or the alias {', '.join(self.aliases)}" if self.aliases else "")
                + (" (empty = none)" if self.empty else ""))

    def valid(self, value):
        if not isinstance(value, str):
            return False
        names = [n.strip() for n in value.split(",") if n.strip()]
        return (bool(names) or self.empty) and all(n in self.options + self.aliases for n in names)

    def parse(self, text):
        return text


class Items(Check):
    """A tuple of `min_len`..`max_len` values, each fitting `item` (`unique`: no repeats); a list in JSON,
    a comma list after --set."""

    def __init__(self, item, min_len=1, max_len=None, unique=False):
        self.item, self.min_len, self.max_len, self.unique = item, min_len, max_len, unique

    def describe(self):
        count = (f"{self.min_len}" if self.max_len == self.min_len else
                 f"{self.min_len} or more" if self.max_len is None else f"{self.min_len} to {self.max_len}")
        return f"a list of {count} {'distinct ' if self.unique else ''}values, each {self.item.describe()}"

    def valid(self, value):
        if not isinstance(value, (tuple, list)) or len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            return False
        return all(self.item.valid(v) for v in value) and (not self.unique or len(set(value)) == len(value))

    def from_json(self, value):
        if not isinstance(value, list):
            raise _Bad
        value = tuple(self.item.from_json(v) for v in value)
        return super().from_json(value)

    def parse(self, text):
        return tuple(self.item.parse(v.strip()) for v in text.split(",") if v.strip())


class Nested(Check):
    """A nested checked dataclass (a JSON object in config.json; not settable with --set)."""

    def __init__(self, cls):
        self.cls = cls

    def describe(self):
        return f"a JSON object of {self.cls.__name__} fields"

    def valid(self, value):
        return isinstance(value, self.cls)


class Anything(Check):
    """A value the class checks itself in `check_together` (say, a model object); never read from JSON."""

    def describe(self):
        return "a value of the documented kind"

    def valid(self, value):
        return True


# ---------------------------------------------------------------- declaring

def field(default=dataclasses.MISSING, check=None, default_factory=dataclasses.MISSING):
    """A dataclass field with its check: `latent_dim: int = field(100, Int(1, 4096))`."""
    if not isinstance(check, Check):
        raise TypeError("field() needs a check: Int, Float, Bool, Choice, Text, Names, Items, Nested or Anything")
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"check": check})


def checked(cls=None, **dataclass_options):
    """Class decorator: a dataclass (with `dataclass_options`) whose every field declares a check, checked
    on creation. A field without one is a TypeError when the class is defined."""
    def wrap(cls):
        missing = [name for name in cls.__dict__.get("__annotations__", {})
                   if not isinstance(cls.__dict__.get(name), dataclasses.Field) or "check" not in cls.__dict__[name].metadata]
        if missing:
            raise TypeError(f"{cls.__name__}: field(s) {', '.join(missing)} declare no check; "
                            f"define each with covgan_utils.util.fields.field(default, check)")
        cls.__post_init__ = _post_init
        return dataclasses.dataclass(cls, **dataclass_options)
    return wrap if cls is None else wrap(cls)


def checks(cls):
    """{field name: check} of a checked dataclass."""
    return {f.name: f.metadata["check"] for f in dataclasses.fields(cls)}


def _post_init(self):
    for name, check in checks(type(self)).items():
        value = getattr(self, name)
        if isinstance(value, list) and isinstance(check, Items):  # lists given in code are kept as tuples
            value = tuple(value)
            object.__setattr__(self, name, value)
        if isinstance(check, Int) and isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):  # numpy integers
            value = int(value)
            object.__setattr__(self, name, value)
        if not check.valid(value):
            raise ConfigError(f"{_label(self)} field {name!r} must be {check.describe()}, got {_shown(value)}")
    together = getattr(self, "check_together", None)
    if together is not None:
        try:
            together()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"{_label(self)}: {err}") from None


def _label(obj):
    cls = obj if isinstance(obj, type) else type(obj)
    return getattr(cls, "LABEL", cls.__name__)


# ---------------------------------------------------------------- the three ways in

def replace(obj, **changes):
    """Copy of `obj` with some fields changed; unknown names raise a one-line ConfigError listing the fields."""
    known = [f.name for f in dataclasses.fields(obj)]
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise ConfigError(f"unknown {_label(obj)} field(s) {unknown}; choose from {', '.join(known)}")
    return dataclasses.replace(obj, **changes)


def overrides(obj, pairs):
    """Copy of `obj` with `KEY=VALUE` strings applied (the CLI's --set), each parsed and checked by its field."""
    all_checks = checks(type(obj))
    changes, sources = {}, []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or key not in all_checks or isinstance(all_checks[key], (Nested, Anything)):
            raise ConfigError(f"--set expects KEY=VALUE with KEY a config field, got {pair!r}; see the fields in config.json or "
                              f"{type(obj).__module__}.{type(obj).__name__}")
        check = all_checks[key]
        try:
            value = check.parse(text)
            ok = check.valid(value)
        except _Bad:
            ok = False
        if not ok:
            raise ConfigError(f"--set {key}={text}: {key} must be {check.describe()} (like {_shown(getattr(obj, key))})")
        changes[key] = value
        sources.append(f"--set {key}={text}")
    try:
        return dataclasses.replace(obj, **changes)
    except ConfigError as err:
        raise ConfigError(f"{'; '.join(sources)}: {err}") from None


def from_json(cls, raw, source, where="", fix=NO_FIX, what=None, hint=""):
    """`cls` from a parsed JSON object: missing fields take their defaults, every value is checked by its
    field; errors are one line naming `source` (the file), the field (`where` prefixes nested ones) and `fix`
    (`hint`: a question added when a field is unknown, such as whether the folder is of the right kind)."""
    what = what or f"{cls.__name__} fields"
    if not isinstance(raw, dict):
        place = f"{where.rstrip('.')!r} must be" if where else "expected"
        raise ConfigError(f"{source}: {place} a JSON object of {what}, got {type(raw).__name__}; {fix}")
    all_checks = checks(cls)
    values = {}
    for key, value in raw.items():
        if key not in all_checks or isinstance(all_checks[key], Anything):
            raise ConfigError(f"{source}: unknown {_label(cls)} field {where + key!r}, not one of {cls.__module__}.{cls.__name__}'s{hint}; "
                              f"remove it or {fix}")
        check = all_checks[key]
        if isinstance(check, Nested):
            values[key] = from_json(check.cls, value, source, f"{where}{key}.", fix, what, hint)
            continue
        try:
            values[key] = check.from_json(value)
        except _Bad:
            raise ConfigError(f"{source}: field {where + key!r} must be {check.describe()}, got {_shown(value)}; {fix}") from None
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}; {fix}") from None
