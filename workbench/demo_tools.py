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
# and more, many of them in two or three words, so a name is copied whole however it is spelled
MORE_CITIES += [c.strip() for c in """Buenos Aires, Rio de Janeiro, São Paulo, Mexico City, Los Angeles,
San Francisco, San Diego, Las Vegas, New Orleans, Salt Lake City, Kansas City, St. Louis, Hong Kong,
Kuala Lumpur, Ho Chi Minh City, Cape Town, Tel Aviv, Abu Dhabi, Addis Ababa, Dar es Salaam, New Delhi,
Rio Branco, Santo Domingo, San Juan, Panama City, Guatemala City, Kuwait City, Quebec City, St. Petersburg,
Nizhny Novgorod, The Hague, Frankfurt am Main, La Paz, Port Louis, Port of Spain, Phnom Penh, Colombo,
Kathmandu, Dhaka, Islamabad, Lahore, Chennai, Kolkata, Bangalore, Hyderabad, Pune, Ahmedabad, Jaipur,
Yangon, Vientiane, Ulaanbaatar, Almaty, Tashkent, Baku, Tbilisi, Yerevan, Ankara, Izmir, Amman, Riyadh,
Jeddah, Muscat, Manama, Casablanca, Marrakesh, Rabat, Tripoli, Khartoum, Kigali, Lusaka, Harare, Maputo,
Luanda, Abuja, Ibadan, Durban, Windhoek, Gaborone, Antananarivo, Montevideo, Asunción, Caracas, Medellín,
Cali, Guayaquil, Cusco, Valparaíso, Córdoba, Rosario, Brasília, Salvador, Recife, Fortaleza, Manaus,
Curitiba, Porto Alegre, Kingston, Nassau, Reno, Portland, Atlanta, Detroit, Philadelphia, Pittsburgh,
Cleveland, Nashville, Memphis, Orlando, Tampa, Honolulu, Anchorage, Sacramento, Oakland, Albuquerque,
Edmonton, Winnipeg, Halifax, Victoria, Adelaide, Brisbane, Auckland, Christchurch, Hobart, Darwin, Canberra,
Osaka, Kyoto, Sapporo, Nagoya, Fukuoka, Busan, Incheon, Shenzhen, Guangzhou, Chengdu, Wuhan, Xi'an,
Nanjing, Hangzhou, Harbin, Macau, Kaohsiung, Cebu, Surabaya, Bandung, Denpasar, Chiang Mai, Phuket,
Gothenburg, Malmö, Bergen, Trondheim, Aarhus, Tampere, Turku, Gdańsk, Wrocław, Poznań, Łódź, Brno,
Bratislava, Ljubljana, Belgrade, Sarajevo, Skopje, Tirana, Bucharest, Chișinău, Odesa, Lviv, Kharkiv,
Thessaloniki, Nicosia, Valletta, Palermo, Bologna, Genoa, Verona, Seville, Bilbao, Granada, Málaga,
Zaragoza, Toulouse, Bordeaux, Lille, Strasbourg, Nantes, Montpellier, Grenoble, Cologne, Düsseldorf,
Stuttgart, Leipzig, Dresden, Nuremberg, Hanover, Bremen, Salzburg, Innsbruck, Graz, Basel, Lausanne,
Lucerne, Luxembourg, Liège, Ghent, Bruges, Utrecht, Eindhoven, Cork, Galway, Belfast, Cardiff, Liverpool,
Birmingham, Newcastle, Oxford, Cambridge, Aberdeen, Inverness""".split(",")]
_SKIES = ["sunny", "rainy", "cloudy", "windy", "foggy", "snowy", "clear", "humid", "misty", "stormy", "hazy", "mild"]
for _city in MORE_CITIES:
    _h = int(hashlib.sha1(_city.encode()).hexdigest(), 16)
    WEATHER.setdefault(_city, (_SKIES[_h % len(_SKIES)], (_h >> 8) % 41 - 5))

# Units by dimension, each as its factor to the dimension's base unit; temperatures convert by formula.
UNITS = {"length": {"m": 1.0, "km": 1000.0, "cm": 0.01, "mm": 0.001, "mi": 1609.344, "ft": 0.3048, "in": 0.0254,
                    "yd": 0.9144},
         "mass": {"kg": 1.0, "g": 0.001, "lb": 0.45359237, "oz": 0.028349523125},
         "volume": {"l": 1.0, "ml": 0.001, "gal": 3.785411784},
         "temperature": {"c": None, "f": None, "k": None}}
_DIMENSION = {unit: dim for dim, table in UNITS.items() for unit in table}
# The names people write for each unit code; the tool reads any of them (case aside), the trained
# model is taught to write the codes.
UNIT_NAMES = {
    "m": ["meters", "metres", "meter", "metre", "m"], "km": ["kilometers", "kilometres", "kilometer", "km", "kms"],
    "cm": ["centimeters", "centimetres", "centimeter", "cm"], "mm": ["millimeters", "millimetres", "mm"],
    "mi": ["miles", "mile", "mi"], "ft": ["feet", "foot", "ft"], "in": ["inches", "inch", "in"],
    "yd": ["yards", "yard", "yd"], "kg": ["kilograms", "kilogram", "kilos", "kilo", "kg", "kgs"],
    "g": ["grams", "gram", "g"], "lb": ["pounds", "pound", "lbs", "lb"], "oz": ["ounces", "ounce", "oz"],
    "l": ["liters", "litres", "liter", "litre", "l"], "ml": ["milliliters", "millilitres", "ml"],
    "gal": ["gallons", "gallon", "gal"],
    "c": ["degrees celsius", "celsius", "°c", "c", "centigrade"],
    "f": ["degrees fahrenheit", "fahrenheit", "°f", "f"], "k": ["kelvin", "k"]}
_ALIASES = {name: code for code, names in UNIT_NAMES.items() for name in names}
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Mod: operator.mod, ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}
MAX_EXPONENT = 1000  # 9 ** 9 ** 9 would compute for hours: powers stay small


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: numbers with + - * / % ** and parentheses, e.g. 12 * (3 + 4) or 2 ** 10
    """
    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or abs(left) > 10 ** 12):
                raise ValueError(f"{left} ** {right} is too large to compute (exponent at most {MAX_EXPONENT})")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError(f"unsupported expression: {expression!r} (numbers, parentheses and + - * / % ** only)")
    try:
        result = value(ast.parse(expression.replace("^", "**"), mode="eval").body)  # parsed, never eval'd
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from e
    except ZeroDivisionError as e:
        raise ValueError(f"division by zero in {expression!r}") from e
    except OverflowError as e:
        raise ValueError(f"{expression!r} is too large to compute") from e
    if isinstance(result, complex):
        raise ValueError(f"{expression!r} has no real value")
    if isinstance(result, float) and not result.is_integer():
        return str(round(result, 4))
    if isinstance(result, float) and abs(result) >= 1e16:
        return f"{result:.6g}"
    return str(int(result))


def _city_key(city: str) -> str:
    return " ".join(city.split()).casefold()


_BY_KEY = {_city_key(c): c for c in WEATHER}


def get_weather(city: str) -> str:
    """Current weather in a city.

    Args:
        city: the city's name
    """
    name = _BY_KEY.get(_city_key(city))
    if name is None:
        return json.dumps({"error": f"unknown city {city}"})
    sky, celsius = WEATHER[name]
    return json.dumps({"city": name, "sky": sky, "celsius": celsius})


def unit_code(name: str) -> str | None:
    """The unit code (`"km"`) of a name people write ("Kilometres", "km", "°F"), or None."""
    return _ALIASES.get(" ".join(name.split()).casefold().replace("degree ", "degrees "))


def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a value from one unit to another.

    Args:
        value: the amount to convert
        from_unit: unit code: m km cm mm mi ft in yd, kg g lb oz, l ml gal, c f k
        to_unit: unit code, of the same kind as from_unit
    """
    src, dst = unit_code(from_unit), unit_code(to_unit)
    if src is None or dst is None:
        bad = from_unit if src is None else to_unit
        return json.dumps({"error": f"unknown unit {bad}; use one of {' '.join(_DIMENSION)}"})
    if _DIMENSION[src] != _DIMENSION[dst]:
        return json.dumps({"error": f"cannot convert {from_unit} to {to_unit}"})
    if _DIMENSION[src] == "temperature":
        celsius = {"c": value, "f": (value - 32) * 5 / 9, "k": value - 273.15}[src]
        out = {"c": celsius, "f": celsius * 9 / 5 + 32, "k": celsius + 273.15}[dst]
    else:
        table = UNITS[_DIMENSION[src]]
        out = value * table[src] / table[dst]
    return f"{out:.2f}"


TOOLS = [calculator, get_weather, convert_units]
