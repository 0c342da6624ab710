"""Three small tools for tutorials and tests of the tool loop: `calculator`, `get_weather`
(answered from a fixed table, no network) and `convert_units`. scripts/train_tiny builds the
trained tiny model's tool dialogues from these very functions, so the model sees the same schemas
in training and in use.

    result = model.chat(messages, tools=workbench.demo_tools.TOOLS)
"""
from __future__ import annotations

import ast
import hashlib
import json
import operator

WEATHER = {  # city -> (sky, °C): the fixed table get_weather answers from
    "Paris": ("sunny", 21), "London": ("rainy", 14), "Tokyo": ("cloudy", 18), "New York": ("windy", 16),
    "Berlin": ("foggy", 11), "Madrid": ("sunny", 27), "Rome": ("sunny", 25), "Sydney": ("stormy", 19),
    "Cairo": ("hot", 35), "Moscow": ("snowy", -4), "Toronto": ("cloudy", 9), "Lima": ("misty", 17),
    "Oslo": ("cold", 2), "Delhi": ("hazy", 31), "Seoul": ("clear", 15), "Lagos": ("humid", 29),
    "Dublin": ("drizzly", 12), "Vienna": ("breezy", 20), "Lisbon": ("bright", 23), "Prague": ("grey", 10),
}
# Many more cities, so the model learns to copy a name from the request rather than recall a few
# memorised ones; their rows are fixed by a hash of the name.
MORE_CITIES = """Amsterdam Athens Bangkok Barcelona Beijing Beirut Bogota Boston Brussels Budapest Chicago
Copenhagen Dakar Denver Dubai Edinburgh Florence Geneva Hamburg Hanoi Havana Helsinki Istanbul Jakarta
Johannesburg Kabul Karachi Kyiv Lyon Manila Marseille Melbourne Miami Milan Montreal Mumbai Munich Nairobi
Naples Osaka Ottawa Perth Porto Quito Riga Santiago Seattle Shanghai Singapore Stockholm Tallinn Tehran
Tunis Valencia Venice Warsaw Zagreb Zurich Accra Algiers Antwerp Austin Baghdad Bern Bristol Calgary
Dallas Doha Glasgow Houston Kampala Kinshasa Kraków Leeds Lyon Manchester Minsk Nantes Nice Phoenix
Reykjavik Rotterdam Sofia Taipei Turin Vancouver Vilnius Wellington Yokohama""".split()
_SKIES = ["sunny", "rainy", "cloudy", "windy", "foggy", "snowy", "clear", "humid", "misty", "stormy", "hazy", "mild"]
for _city in MORE_CITIES:
    _h = int(hashlib.sha1(_city.encode()).hexdigest(), 16)
    WEATHER.setdefault(_city, (_SKIES[_h % len(_SKIES)], (_h >> 8) % 41 - 5))

FACTORS = {("km", "mi"): 0.621371, ("mi", "km"): 1.609344, ("kg", "lb"): 2.204623, ("lb", "kg"): 0.453592,
           ("m", "ft"): 3.28084, ("ft", "m"): 0.3048, ("l", "gal"): 0.264172, ("gal", "l"): 3.785412,
           ("c", "f"): None, ("f", "c"): None}  # temperatures convert by formula
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.USub: operator.neg}


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: e.g. 12 * (3 + 4)
    """
    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError(f"unsupported expression: {expression!r} (numbers and + - * / only)")
    result = value(ast.parse(expression, mode="eval").body)  # parsed, never eval'd
    return str(round(result, 4)) if isinstance(result, float) and not result.is_integer() else str(int(result))


def get_weather(city: str) -> str:
    """Current weather in a city.

    Args:
        city: the city's name
    """
    if city not in WEATHER:
        return json.dumps({"error": f"unknown city {city}"})
    sky, celsius = WEATHER[city]
    return json.dumps({"city": city, "sky": sky, "celsius": celsius})


def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a value from one unit to another."""
    key = (from_unit, to_unit)
    if key == ("c", "f"):
        out = value * 9 / 5 + 32
    elif key == ("f", "c"):
        out = (value - 32) * 5 / 9
    elif key in FACTORS:
        out = value * FACTORS[key]
    else:
        return json.dumps({"error": f"cannot convert {from_unit} to {to_unit}"})
    return f"{out:.2f}"


TOOLS = [calculator, get_weather, convert_units]
