"""Cocktail catalogue of the demo benchmark: what each drink should look like.

Every cocktail has an expected liquid colour (sRGB), clarity, serving temperature,
glass and garnish, plus a `family` of look-alikes (used for confusable candidates
and for the shared component of the CLIP-like identity vectors).
"""
from __future__ import annotations

from dataclasses import dataclass

CLARITIES = ("clear", "cloudy", "opaque")
TEMPERATURES = ("rocks", "up", "hot", "frozen")
GLASSES = ("rocks", "highball", "collins", "martini", "coupe", "wine", "mug", "hurricane", "flute")
GARNISHES = (
    "none", "orange_peel", "lemon_twist", "lime_wedge", "lemon_wheel", "orange_wheel", "cherry",
    "olive", "mint", "raspberry", "coffee_beans", "pineapple_wedge", "celery",
)
# The five fine attributes a query may constrain besides the cocktail itself.
ATTRIBUTES = ("colour", "clarity", "temperature", "glass", "garnish")


@dataclass(frozen=True)
class Cocktail:
    name: str
    rgb: tuple[int, int, int]
    clarity: str
    temperature: str
    glass: str
    garnish: str
    family: str


def _c(name: str, rgb: tuple[int, int, int], clarity: str, temperature: str, glass: str,
       garnish: str, family: str) -> Cocktail:
    return Cocktail(name, rgb, clarity, temperature, glass, garnish, family)


CATALOGUE: tuple[Cocktail, ...] = (
    _c("negroni", (170, 30, 35), "clear", "rocks", "rocks", "orange_peel", "bitter_red"),
    _c("boulevardier", (140, 40, 30), "clear", "rocks", "rocks", "orange_peel", "bitter_red"),
    _c("americano", (185, 60, 40), "clear", "rocks", "highball", "orange_wheel", "bitter_red"),
    _c("old fashioned", (175, 95, 35), "clear", "rocks", "rocks", "orange_peel", "whiskey"),
    _c("manhattan", (150, 55, 30), "clear", "up", "coupe", "cherry", "whiskey"),
    _c("sazerac", (165, 85, 40), "clear", "up", "rocks", "lemon_twist", "whiskey"),
    _c("whiskey sour", (225, 180, 90), "cloudy", "rocks", "rocks", "cherry", "sour"),
    _c("amaretto sour", (225, 150, 60), "cloudy", "rocks", "rocks", "cherry", "sour"),
    _c("pisco sour", (235, 225, 170), "cloudy", "up", "coupe", "none", "sour"),
    _c("margarita", (205, 215, 120), "cloudy", "up", "coupe", "lime_wedge", "lime_sour"),
    _c("daiquiri", (220, 225, 175), "cloudy", "up", "coupe", "lime_wedge", "lime_sour"),
    _c("gimlet", (190, 220, 140), "cloudy", "up", "coupe", "lime_wedge", "lime_sour"),
    _c("caipirinha", (215, 220, 160), "cloudy", "rocks", "rocks", "lime_wedge", "lime_sour"),
    _c("paloma", (245, 170, 150), "cloudy", "rocks", "highball", "lime_wedge", "lime_sour"),
    _c("mojito", (205, 230, 185), "clear", "rocks", "highball", "mint", "highball"),
    _c("gin and tonic", (220, 232, 215), "clear", "rocks", "highball", "lime_wedge", "highball"),
    _c("tom collins", (235, 230, 190), "cloudy", "rocks", "collins", "lemon_wheel", "highball"),
    _c("moscow mule", (210, 185, 120), "cloudy", "rocks", "highball", "lime_wedge", "mule"),
    _c("dark n stormy", (110, 60, 30), "clear", "rocks", "highball", "lime_wedge", "mule"),
    _c("cuba libre", (80, 35, 20), "clear", "rocks", "highball", "lime_wedge", "mule"),
    _c("long island iced tea", (160, 90, 40), "clear", "rocks", "collins", "lemon_wheel", "mule"),
    _c("dry martini", (232, 232, 205), "clear", "up", "martini", "olive", "martini"),
    _c("vesper", (235, 220, 165), "clear", "up", "martini", "lemon_twist", "martini"),
    _c("cosmopolitan", (225, 80, 110), "clear", "up", "martini", "orange_peel", "pink"),
    _c("clover club", (230, 130, 150), "cloudy", "up", "coupe", "raspberry", "pink"),
    _c("aviation", (185, 170, 220), "clear", "up", "coupe", "cherry", "pink"),
    _c("french 75", (240, 220, 140), "clear", "up", "flute", "lemon_twist", "sparkling"),
    _c("bellini", (245, 185, 135), "cloudy", "up", "flute", "none", "sparkling"),
    _c("kir royale", (150, 30, 70), "clear", "up", "flute", "none", "sparkling"),
    _c("mimosa", (250, 165, 45), "cloudy", "up", "flute", "orange_wheel", "sparkling"),
    _c("aperol spritz", (240, 110, 30), "clear", "rocks", "wine", "orange_wheel", "spritz"),
    _c("hugo spritz", (225, 235, 180), "clear", "rocks", "wine", "mint", "spritz"),
    _c("sangria", (130, 25, 40), "clear", "rocks", "wine", "orange_wheel", "spritz"),
    _c("espresso martini", (60, 35, 25), "opaque", "up", "martini", "coffee_beans", "creamy"),
    _c("white russian", (215, 190, 160), "opaque", "rocks", "rocks", "none", "creamy"),
    _c("grasshopper", (150, 210, 130), "opaque", "up", "coupe", "mint", "creamy"),
    _c("pina colada", (245, 235, 195), "opaque", "frozen", "hurricane", "pineapple_wedge", "tropical"),
    _c("strawberry daiquiri", (220, 50, 70), "opaque", "frozen", "hurricane", "lime_wedge", "tropical"),
    _c("mai tai", (210, 120, 50), "clear", "rocks", "rocks", "mint", "tropical"),
    _c("hurricane", (220, 60, 50), "clear", "rocks", "hurricane", "orange_wheel", "tropical"),
    _c("blue lagoon", (40, 140, 220), "clear", "rocks", "hurricane", "cherry", "tropical"),
    _c("bloody mary", (180, 40, 30), "opaque", "rocks", "highball", "celery", "savory"),
    _c("irish coffee", (70, 40, 25), "opaque", "hot", "mug", "none", "hot"),
    _c("hot toddy", (200, 130, 50), "clear", "hot", "mug", "lemon_wheel", "hot"),
    _c("mulled wine", (110, 20, 35), "clear", "hot", "mug", "orange_wheel", "hot"),
)
BY_NAME = {c.name: c for c in CATALOGUE}
FAMILIES = tuple(sorted({c.family for c in CATALOGUE}))

# Named colours: the colour words of queries and the coarse colour concepts of embeddings.
COLOUR_NAMES: dict[str, tuple[int, int, int]] = {
    "ruby red": (160, 25, 40), "bright red": (220, 50, 50), "orange": (240, 120, 35),
    "amber": (180, 100, 35), "golden": (225, 180, 80), "pale yellow": (235, 228, 170),
    "pale green": (200, 228, 170), "bright green": (140, 210, 120), "pink": (230, 110, 140),
    "violet": (180, 160, 220), "blue": (40, 140, 220), "dark brown": (75, 40, 25),
    "cream": (225, 205, 170), "water clear": (225, 232, 220),
}

TEMPERATURE_PHRASES = {"rocks": "on the rocks", "up": "served up", "hot": "served hot",
                       "frozen": "frozen"}
CLARITY_WORDS = {"clear": "crystal clear", "cloudy": "cloudy", "opaque": "opaque"}
GARNISH_PHRASES = {
    "none": "with no garnish", "orange_peel": "with an orange peel",
    "lemon_twist": "with a lemon twist", "lime_wedge": "with a lime wedge",
    "lemon_wheel": "with a lemon wheel", "orange_wheel": "with an orange wheel",
    "cherry": "with a cherry", "olive": "with an olive", "mint": "with a mint sprig",
    "raspberry": "with raspberries", "coffee_beans": "with coffee beans",
    "pineapple_wedge": "with a pineapple wedge", "celery": "with a celery stalk",
}

# Plausible alternatives a query may ask for instead of the house default.
SWAPS: dict[str, dict[str, tuple[str, ...]]] = {
    "temperature": {"rocks": ("up",), "up": ("rocks",), "hot": ("up",), "frozen": ("rocks", "up")},
    "glass": {"rocks": ("coupe", "highball"), "coupe": ("martini", "rocks"), "martini": ("coupe",),
              "highball": ("collins", "rocks"), "collins": ("highball",), "wine": ("rocks", "highball"),
              "mug": ("rocks",), "hurricane": ("collins", "highball"), "flute": ("coupe", "wine")},
    "garnish": {g: alt for g, alt in {
        "none": ("lemon_twist", "orange_peel"), "orange_peel": ("lemon_twist", "cherry", "orange_wheel"),
        "lemon_twist": ("orange_peel", "olive"), "lime_wedge": ("lemon_wheel", "mint"),
        "lemon_wheel": ("lime_wedge", "orange_wheel"), "orange_wheel": ("orange_peel", "cherry"),
        "cherry": ("orange_peel", "orange_wheel"), "olive": ("lemon_twist",), "mint": ("lime_wedge",),
        "raspberry": ("lemon_twist", "cherry"), "coffee_beans": ("none",),
        "pineapple_wedge": ("cherry", "orange_wheel"), "celery": ("lemon_wheel", "olive"),
    }.items()},
    "clarity": {"clear": ("cloudy",), "cloudy": ("clear",), "opaque": ("cloudy",)},
}


def nearest_colour_name(rgb: tuple[int, int, int] | list[int]) -> str:
    """Named colour closest (Euclidean sRGB) to `rgb`."""
    return min(COLOUR_NAMES, key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOUR_NAMES[n], rgb)))


def look_alike_score(a: Cocktail, b: Cocktail) -> float:
    """How easily b is mistaken for a: shared family, glass, garnish, close colour."""
    colour_close = sum((x - y) ** 2 for x, y in zip(a.rgb, b.rgb)) ** 0.5 < 70
    return (2.0 * (a.family == b.family) + 1.0 * (a.glass == b.glass) + 0.5 * (a.garnish == b.garnish)
            + 1.0 * colour_close + 0.5 * (a.temperature == b.temperature))
