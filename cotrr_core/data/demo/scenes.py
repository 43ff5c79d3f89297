"""Queries, candidate render specs and ground-truth compliance of the demo benchmark."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from .catalogue import (
    CATALOGUE,
    CLARITIES,
    CLARITY_WORDS,
    GARNISH_PHRASES,
    GARNISHES,
    GLASSES,
    SWAPS,
    TEMPERATURE_PHRASES,
    TEMPERATURES,
    Cocktail,
    look_alike_score,
    nearest_colour_name,
)
from .features import ciede2000, rgb_to_lab

IDENTITY_WEIGHT = 0.25  # the rest (0.75) is shared by the fine constraints
N_EXACT_MAX, N_VARIANT_MAX = 5, 4
MULTI_WRONG_P = 0.35  # share of wrong-attribute candidates with two wrong attributes
WRONG_COCKTAIL_CREDIT = 0.5  # "with an orange peel" on the wrong drink only half-satisfies
MENTIONABLE = ("temperature", "glass", "garnish", "clarity")
_MENTION_P = np.array([0.35, 0.2, 0.35, 0.1])
_VALUES = {"clarity": CLARITIES, "temperature": TEMPERATURES, "glass": GLASSES, "garnish": GARNISHES}
_GLASS_PHRASES = {"rocks": "in a rocks glass", "highball": "in a highball", "collins": "in a collins glass",
                  "martini": "in a martini glass", "coupe": "in a coupe", "wine": "in a wine glass",
                  "mug": "in a mug", "hurricane": "in a hurricane glass", "flute": "in a champagne flute"}
_BACKGROUNDS = ((205, 195, 180), (90, 100, 120), (60, 62, 70), (170, 180, 190), (120, 90, 70),
                (215, 210, 200), (70, 95, 80), (150, 130, 160))


@dataclass(frozen=True)
class Query:
    cocktail: Cocktail
    constraints: dict  # mentioned attribute -> required value (subset of MENTIONABLE)
    colour_word: str | None
    text: str

    @property
    def colour(self) -> tuple[int, int, int]:
        return self.cocktail.rgb


def make_query(rng: np.random.Generator) -> Query:
    """A random cocktail with 1-2 mentioned constraints (30% of them off the house default)."""
    cocktail = CATALOGUE[int(rng.integers(len(CATALOGUE)))]
    k = int(rng.choice([1, 2], p=[0.35, 0.65]))
    attrs = rng.choice(MENTIONABLE, size=k, replace=False, p=_MENTION_P)
    constraints = {}
    for attr in sorted(attrs, key=MENTIONABLE.index):
        value = getattr(cocktail, attr)
        if rng.random() < 0.3:
            value = str(rng.choice(SWAPS[attr][value]))
        constraints[str(attr)] = value
    colour_word = nearest_colour_name(cocktail.rgb) if rng.random() < 0.25 else None
    return Query(cocktail, constraints, colour_word, query_text(cocktail, constraints, colour_word))


def query_text(cocktail: Cocktail, constraints: dict, colour_word: str | None) -> str:
    """E.g. 'ruby red negroni on the rocks in a rocks glass with an orange peel'."""
    words = [CLARITY_WORDS[constraints["clarity"]]] if "clarity" in constraints else []
    words += [colour_word] if colour_word else []
    words.append(cocktail.name)
    if "temperature" in constraints:
        words.append(TEMPERATURE_PHRASES[constraints["temperature"]])
    if "glass" in constraints:
        words.append(_GLASS_PHRASES[constraints["glass"]])
    if "garnish" in constraints:
        words.append(GARNISH_PHRASES[constraints["garnish"]])
    return " ".join(words)


# --- candidates --------------------------------------------------------------------------

def base_spec(cocktail: Cocktail, rng: np.random.Generator) -> dict:
    """House-default spec of `cocktail` with random photo conditions."""
    bg = np.asarray(_BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]) + rng.integers(-12, 13, 3)
    return {
        "cocktail": cocktail.name, "liquid_rgb": _jitter(cocktail.rgb, 4.0, rng),
        "clarity": cocktail.clarity, "temperature": cocktail.temperature, "glass": cocktail.glass,
        "garnish": cocktail.garnish, "background_rgb": [int(v) for v in bg.clip(0, 255)],
        "fill": round(float(rng.uniform(0.6, 0.85)), 3), "scale": round(float(rng.uniform(0.85, 1.0)), 3),
        "dx": round(float(rng.uniform(-4, 4)), 2), "dy": round(float(rng.uniform(-3, 3)), 2),
        "noise_std": round(float(rng.uniform(2.0, 7.0)), 2), "size": 64, "seed": int(rng.integers(2 ** 31)),
    }


def _jitter(rgb, std: float, rng: np.random.Generator) -> list[int]:
    return [int(v) for v in np.clip(np.asarray(rgb) + rng.normal(0, std, 3), 0, 255).round()]


def _other_value(attr: str, value: str, rng: np.random.Generator) -> str:
    """A wrong value: usually a plausible swap, sometimes any other value."""
    pool = SWAPS[attr][value] if rng.random() < 0.6 else tuple(v for v in _VALUES[attr] if v != value)
    return str(rng.choice(pool))


def _tinted(rgb, rng: np.random.Generator) -> list[int]:
    """A clearly wrong tint of `rgb` (CIEDE2000 > 25): first of 16 random RGB shifts that qualifies."""
    step = rng.normal(0, 1, (16, 3))
    cand = np.clip(np.asarray(rgb) + step / np.linalg.norm(step, axis=1, keepdims=True)
                   * rng.uniform(60, 110, (16, 1)), 0, 255).round()
    ok = np.nonzero(ciede2000(rgb_to_lab(np.asarray(rgb, float)), rgb_to_lab(cand)) > 25)[0]
    return [int(v) for v in cand[ok[0]]] if ok.size else [int(255 - v) for v in rgb]


def exact_spec(query: Query, rng: np.random.Generator) -> dict:
    spec = base_spec(query.cocktail, rng)
    spec.update(query.constraints)
    return spec


def variant_spec(query: Query, rng: np.random.Generator) -> dict:
    """Right cocktail, one attribute the query does not mention changed (still relevant)."""
    spec = exact_spec(query, rng)
    free = [a for a in MENTIONABLE if a not in query.constraints]
    attr = str(rng.choice(free))
    spec[attr] = _other_value(attr, spec[attr], rng)
    return spec


def wrong_spec(query: Query, rng: np.random.Generator) -> tuple[dict, str]:
    """Right cocktail with one (sometimes two) constrained attributes wrong: colour or a mentioned one."""
    spec = exact_spec(query, rng)
    constrained = ["colour", *query.constraints]
    n_wrong = 2 if rng.random() < MULTI_WRONG_P else 1
    attrs = [str(a) for a in rng.choice(constrained, size=min(n_wrong, len(constrained)), replace=False)]
    for attr in attrs:
        if attr == "colour":
            spec["liquid_rgb"] = _tinted(query.colour, rng)
        else:
            spec[attr] = _other_value(attr, spec[attr], rng)
    return spec, f"wrong_{attrs[0]}" if len(attrs) == 1 else "wrong_multi"


@cache
def look_alikes(cocktail: Cocktail) -> tuple[Cocktail, ...]:
    """Other cocktails, most easily confused with `cocktail` first."""
    return tuple(sorted((c for c in CATALOGUE if c is not cocktail), key=lambda c: -look_alike_score(cocktail, c)))


def similar_spec(query: Query, rng: np.random.Generator) -> dict:
    """One of the 6 closest look-alike cocktails, served as the query asks half of the time."""
    spec = base_spec(look_alikes(query.cocktail)[int(rng.integers(6))], rng)
    if rng.random() < 0.5:
        spec.update(query.constraints)
    return spec


def distractor_spec(query: Query, rng: np.random.Generator) -> dict:
    others = [c for c in CATALOGUE if c is not query.cocktail]
    spec = base_spec(others[int(rng.integers(len(others)))], rng)
    if rng.random() < 0.3:
        spec["glass"] = str(rng.choice(GLASSES))
    return spec


def candidate_specs(query: Query, n: int, rng: np.random.Generator) -> list[tuple[dict, str]]:
    """n (spec, kind) pairs: exact, variant, wrong_*, similar and distractor candidates."""
    n_exact = 0 if rng.random() < 0.05 else int(rng.integers(1, N_EXACT_MAX + 1))  # first stage may miss all
    n_variant = int(rng.integers(0, N_VARIANT_MAX + 1))
    n_wrong = int(round(0.3 * n))
    n_similar = int(round(0.3 * n))
    n_distractor = max(0, n - n_exact - n_variant - n_wrong - n_similar)
    out = [(exact_spec(query, rng), "exact") for _ in range(n_exact)]
    out += [(variant_spec(query, rng), "variant") for _ in range(n_variant)]
    out += [wrong_spec(query, rng) for _ in range(n_wrong)]
    out += [(similar_spec(query, rng), "similar") for _ in range(n_similar)]
    out += [(distractor_spec(query, rng), "distractor") for _ in range(n_distractor)]
    return out[:n]


def colour_delta_e(specs: list[dict], queries: list[Query]) -> np.ndarray:
    """CIEDE2000 between each spec's liquid colour and its query's colour: (n,)."""
    have = rgb_to_lab(np.array([s["liquid_rgb"] for s in specs], float))
    want = rgb_to_lab(np.array([q.colour for q in queries], float))
    return ciede2000(have, want)


def compliance(spec: dict, query: Query, colour_de: float | None = None) -> float:
    """Weighted share of the query's constraints the rendered candidate satisfies, in [0, 1].

    colour_de: precomputed colour_delta_e of (spec, query), to batch the colour maths.
    """
    same = spec["cocktail"] == query.cocktail.name
    de = float(colour_delta_e([spec], [query])[0]) if colour_de is None else colour_de
    scores = [float(np.clip((25.0 - de) / 15.0, 0.0, 1.0))]  # colour: full credit under dE 10, none over 25
    scores += [float(spec[a] == v) for a, v in query.constraints.items()]
    fine = float(np.mean(scores)) * (1.0 if same else WRONG_COCKTAIL_CREDIT)
    return IDENTITY_WEIGHT * same + (1 - IDENTITY_WEIGHT) * fine


def expected_for_detectors(query: Query) -> dict:
    """What the conflict detectors compare against: the colour plus the mentioned constraints."""
    return {"colour": query.colour, **{a: query.constraints.get(a) for a in ("clarity", "temperature", "garnish")}}

