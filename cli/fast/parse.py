"""Reading a command line the way the click command would, or declining to.

Each command the fast path serves has a ``Spec``: its words, its arguments, and its
flags and options with the values click would accept. ``parse`` takes a command line
only when it can read it exactly as click would, with no usage error to report; for
anything else (``--help``, an unknown or repeated option, a value click would refuse
or convert differently, ``--``, a value that looks like an option, a prompt to make)
it returns None and the click CLI reads the line itself. Standard library only.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable

GLOBAL_OPTIONS = {"--db": "db", "--server": "server", "--as": "as_engineer"}
KINDS = ("equipment", "service", "other")  # as vault.cli.secrets.KINDS
MAX_DIGITS = 18  # a longer number is left to click (and the library) to refuse


def number(low: int | None = None, high: int | None = None) -> Callable[[str], int | None]:
    """An ``int`` option as click reads it, restricted to plain ASCII digits (anything
    else, or a number outside [low, high], is click's usage error to report)."""

    def read(text: str) -> int | None:
        if not text.isascii() or not text.isdigit() or len(text) > MAX_DIGITS:
            return None
        value = int(text)
        if (low is not None and value < low) or (high is not None and value > high):
            return None
        return value

    return read


def choice(*allowed: str) -> Callable[[str], str | None]:
    return lambda text: text if text in allowed else None


def pair() -> Callable[[str], tuple[str, str] | None]:
    """``KEY=VALUE`` as the click callbacks of ``secret add`` read it (``_parse_fields``,
    ``_parse_sensitive``); ``KEY`` alone (a prompt, for a sensitive field) is left to click."""

    def read(text: str) -> tuple[str, str] | None:
        key, sep, value = text.partition("=")
        if not key or not sep:
            return None
        return key, value

    return read


class Spec:
    """One served command: its words, positional arguments (name, required), flags,
    options (name -> (attribute, reader, default)) and repeatable KEY=VALUE options."""

    def __init__(
        self,
        words: tuple[str, ...],
        args: tuple[tuple[str, bool], ...] = (),
        flags: dict[str, str] | None = None,
        options: dict[str, tuple[str, Callable[[str], object]]] | None = None,
        pairs: dict[str, tuple[str, Callable[[str], tuple[str, str] | None]]] | None = None,
        defaults: dict[str, object] | None = None,
    ) -> None:
        self.words, self.args = words, args
        self.flags, self.options, self.pairs = flags or {}, options or {}, pairs or {}
        self.defaults: dict[str, object] = {"db": None, "server": None, "as_engineer": None}
        self.defaults.update({name: None for name, _ in args})
        self.defaults.update({name: False for name in self.flags.values()})
        self.defaults.update({name: None for name, _ in self.options.values()})
        self.defaults.update({name: {} for name, _ in self.pairs.values()})
        self.defaults.update(defaults or {})


JSON_FLAG = {"--json": "as_json"}
TEXT = str  # an option whose value is any text (click's default type)
SPECS = {
    spec.words: spec
    for spec in (
        Spec(("whoami",), flags=JSON_FLAG),
        Spec(("status",), flags=JSON_FLAG),
        Spec(("client", "list"), flags=JSON_FLAG),
        Spec(("secret", "list"), args=(("client", False),), flags=JSON_FLAG),
        Spec(("secret", "show"), args=(("ref", True),), flags=JSON_FLAG),
        Spec(("secret", "history"), args=(("ref", True),), flags=JSON_FLAG),
        Spec(("checkouts",), flags=JSON_FLAG),
        Spec(
            ("checkout",),
            args=(("ref", True),),
            flags={"--show": "show", "--json": "as_json"},
            options={
                "--reason": ("reason", TEXT),
                "-r": ("reason", TEXT),
                "--field": ("field", TEXT),
                "--for": ("hold_for", TEXT),
                "--version": ("version", number()),
                "--clear-after": ("clear_after", number(5, 600)),
            },
            defaults={"field": "password", "clear_after": 30},  # as vault.cli.access.checkout
        ),
        Spec(
            ("audit", "log"),
            flags=JSON_FLAG,
            options={"--limit": ("limit", number(1)), "--client": ("client", TEXT), "--engineer": ("engineer", TEXT)},
        ),
        Spec(
            ("checkin",),
            args=(("ref", True),),
            flags={"--new-password-stdin": "new_password_stdin", "--generate": "generate"},
            options={"--length": ("length", number())},
        ),
        Spec(
            ("secret", "add"),
            args=(("ref", True),),
            flags={"--password-stdin": "password_stdin", "--generate": "generate"},
            options={
                "--kind": ("kind", choice(*KINDS)),
                "--username": ("username", TEXT),
                "--url": ("url", TEXT),
                "--host": ("host", TEXT),
                "--note": ("note", TEXT),
                "--length": ("length", number()),
            },
            pairs={
                "--field": ("fields", pair()),
                "--sensitive-field": ("sensitive_fields", pair()),
                "--public-field": ("public_fields", pair()),
            },
        ),
    )
}


class Order:
    """A command line the fast path can answer: the command's words and every value,
    defaults filled in (a plain class: importing dataclasses costs milliseconds)."""

    def __init__(self, words: str | tuple[str, ...], **values: object) -> None:
        self.words = tuple(words.split()) if isinstance(words, str) else words
        spec = SPECS[self.words]
        unknown = set(values) - set(spec.defaults)
        if unknown:
            raise TypeError(sorted(unknown))
        self.values: dict[str, object] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.defaults.items()}
        self.values.update(values)

    def __getattr__(self, name: str) -> object:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Order) and (self.words, self.values) == (other.words, other.values)

    def __repr__(self) -> str:  # no value: a reason may name a person, a field may be a secret
        return f"Order({' '.join(self.words)!r}, {sorted(k for k, v in self.values.items() if v)})"

    __hash__ = None  # type: ignore[assignment]


def parse(argv: list[str]) -> Order | None:
    """The order ``argv`` gives, or None if the click CLI should read it."""
    values: dict[str, object] = {}
    args = list(argv)
    while args and args[0].startswith("-"):  # global options come before the command
        name, value, args = _option(args, GLOBAL_OPTIONS)
        if name is None or name in values or value is None:
            return None
        values[name] = value
    if "db" in values and "server" in values:
        return None  # click refuses both (cli/context.py `AppContext.server_url`)
    spec = SPECS.get(tuple(args[:1])) or SPECS.get(tuple(args[:2]))
    if spec is None:
        return None
    args = args[len(spec.words) :]
    positional: list[str] = []
    while args:
        head = args[0]
        if head in spec.flags:
            name = spec.flags[head]
            if name in values:
                return None  # given twice: click takes the last; not worth the doubt
            values[name], args = True, args[1:]
        elif not head.startswith("-"):
            positional.append(head)
            args = args[1:]
        elif (head.partition("=")[0] if head.startswith("--") else head) in spec.pairs:
            flag, text, args = _raw_option(args)
            if text is None:
                return None
            name, read_pair = spec.pairs[flag]
            read = read_pair(text)
            if read is None:
                return None
            found = values.setdefault(name, {})
            assert isinstance(found, dict)
            found[read[0]] = read[1]
        else:
            known = {flag: name for flag, (name, _reader) in spec.options.items()}
            name, text, args = _option(args, known)
            if name is None or name in values or text is None:
                return None
            reader = next(r for _flag, (n, r) in spec.options.items() if n == name)
            converted = reader(text)
            if converted is None:
                return None
            values[name] = converted
    if len(positional) > len(spec.args):
        return None
    for (name, required), given in zip(spec.args, [*positional, *[None] * len(spec.args)], strict=False):
        if given is None and required:
            return None  # a missing argument: click's usage error
        values[name] = given
    return Order(spec.words, **values)


def _raw_option(args: list[str]) -> tuple[str, str | None, list[str]]:
    """(flag, value, rest) for ``--opt VALUE`` or ``--opt=VALUE`` at the front of ``args``."""
    head = args[0]
    flag, eq, inline = head.partition("=")
    if eq and flag.startswith("--"):
        return flag, inline, args[1:]
    if eq or len(args) < 2 or args[1].startswith("-"):
        return head, None, args  # no value, or one that looks like an option: click says what it makes of it
    return head, args[1], args[2:]


def _option(args: list[str], known: dict[str, str]) -> tuple[str | None, str | None, list[str]]:
    """(attribute, value, rest) for a known option at the front of ``args``."""
    flag, value, rest = _raw_option(args)
    if flag not in known:
        return None, None, args
    return known[flag], value, rest
