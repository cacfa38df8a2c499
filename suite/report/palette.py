"""One colour per method, the same in every figure.

BP is always black; each family of methods has its own hue and its members related shades of it:

* BP and its instrumented twin (`bp`, `bp-sparsity`): black, grey;
* feedback alignment through the layers (`fa`): blue;
* sign-symmetric feedback (`usf`, `brsf`, `frsf`): greens;
* direct feedback alignment (`dfa`, `bdfa`, `hybrid-dfa`): oranges;
* layer-parallel training (`penalty`, `augmented-lagrangian`, `mgrit`): purples and magenta;
* local learning (`local` and its schedules): browns.

`color(name)` gives a method's colour, and a deterministic colour for a name the suite does not
know (never one of the methods' colours). `colors(labels)` colours the labels of one figure: a
label that names a method's variant ("dfa [unit]", "mgrit 2+1 it") gets its method's colour, and
several variants of one method get distinct shades of it; no two labels of a figure share a
colour.
"""

from __future__ import annotations

import colorsys
import re
import zlib
from collections.abc import Callable, Iterable

from matplotlib.colors import to_hex, to_rgb

# method -> (family, colour)
METHOD_COLORS: dict[str, tuple[str, str]] = {
    "bp": ("bp", "#000000"),
    "bp-sparsity": ("bp", "#7f7f7f"),
    "fa": ("feedback alignment", "#1f5fbf"),
    "usf": ("sign symmetry", "#00702e"),
    "brsf": ("sign symmetry", "#3aa655"),
    "frsf": ("sign symmetry", "#8fce3c"),
    "dfa": ("direct feedback alignment", "#e06000"),
    "bdfa": ("direct feedback alignment", "#a33a00"),
    "hybrid-dfa": ("direct feedback alignment", "#f5a623"),
    "penalty": ("layer-parallel", "#5b2a96"),
    "augmented-lagrangian": ("layer-parallel", "#9b6fd4"),
    "mgrit": ("layer-parallel", "#c2188b"),
    "local": ("local learning", "#8c5a2b"),
}
FAMILIES = tuple(dict.fromkeys(family for family, _ in METHOD_COLORS.values()))

# colours for names the suite does not know: none is a method's colour, none close to BP's black
FALLBACK = ("#17becf", "#d62728", "#bcbd22", "#e377c2", "#1a9e9e", "#ff7f7f", "#6b6ecf", "#b5cf6b",
            "#ce6dbd", "#9edae5", "#843c39", "#637939")


def family(name: str) -> str | None:
    """The family of a method (or of a label that names one of its variants); None if unknown."""
    method = method_of(name)
    return METHOD_COLORS[method][0] if method else None


def method_of(label: str) -> str | None:
    """The method a figure label names: the label itself, or the longest method name it starts
    with followed by a separator ("dfa [unit]" -> dfa, "mgrit 2+1 it" -> mgrit, "bp (SGD)" -> bp)."""
    label = str(label)
    if label in METHOD_COLORS:
        return label
    for name in sorted(METHOD_COLORS, key=len, reverse=True):
        if re.match(re.escape(name) + r"(?![\w-])", label):
            return name
    return None


def _fallback(name: str, taken: set[str] = frozenset()) -> str:
    start = zlib.crc32(str(name).encode()) % len(FALLBACK)
    for i in range(len(FALLBACK)):
        c = FALLBACK[(start + i) % len(FALLBACK)]
        if c not in taken:
            return c
    return FALLBACK[start]


def color(name: str) -> str:
    """A method's colour as '#rrggbb'; a variant label gets its method's; an unknown name a fixed
    colour from FALLBACK (the same every call, never a method's)."""
    method = method_of(name)
    return METHOD_COLORS[method][1] if method else _fallback(name)


# the steps from a method's colour to its variants' shades: (lightness, hue) offsets, in turn darker,
# lighter, then the hue turned a little either way (related hues, told apart beyond lightness alone)
SHADE_STEPS = ((-0.16, 0.0), (0.2, 0.0), (0.0, 0.08), (0.0, -0.08), (0.2, -0.08), (-0.16, 0.08),
               (0.32, 0.0), (-0.16, -0.08), (0.2, 0.08), (0.32, 0.08), (0.32, -0.08))


def shades(base: str, n: int) -> list[str]:
    """n distinct shades of `base`: `base` itself first, then darker, lighter and slightly turned
    ones (SHADE_STEPS); a grey (BP's black) varies in lightness only."""
    h, lum, s = colorsys.rgb_to_hls(*to_rgb(base))
    low = 0.0 if lum < 0.15 else 0.2  # no shade of a hue so dark it reads as BP's black
    out = [to_hex(to_rgb(base))]
    steps = SHADE_STEPS if s > 0.05 else tuple((0.14 * i, 0.0) for i in range(1, 7))
    for dl, dh in steps:
        if len(out) == n:
            break
        c = to_hex(colorsys.hls_to_rgb((h + dh) % 1.0, min(0.85, max(low, lum + dl)), s))
        if c not in out:
            out.append(c)
    return out + [_fallback(f"{base}/{i}", set(out)) for i in range(n - len(out))]


def colors(labels: Iterable[str], method_of_label: Callable[[str], str | None] | None = None) -> dict[str, str]:
    """{label: colour} for the labels of one figure, all distinct. Each label gets the colour of
    the method `method_of_label(label)` names (default: `method_of`); the variants of one method
    get shades of its colour, the one that is the method itself (or else the first) its exact
    colour; labels of no known method get FALLBACK colours."""
    labels = list(dict.fromkeys(str(label) for label in labels))
    of = method_of_label or method_of
    groups: dict[str | None, list[str]] = {}
    for label in labels:
        method = of(label)
        groups.setdefault(method if method in METHOD_COLORS else None, []).append(label)
    out: dict[str, str] = {}
    for method, members in groups.items():
        if method is None:
            continue
        members = sorted(members, key=lambda m: m != method)  # the plain method first: its exact colour
        for label, c in zip(members, shades(METHOD_COLORS[method][1], len(members))):
            out[label] = c
    taken = set(out.values()) | {c for _, c in METHOD_COLORS.values()}
    for label in groups.get(None, []):
        out[label] = _fallback(label, taken)
        taken.add(out[label])
    for label in labels:  # a shade that met another method's colour: move it to a fallback
        if list(out.values()).count(out[label]) > 1:
            out[label] = _fallback(label, set(out.values()) | taken)
    return {label: out[label] for label in labels}
