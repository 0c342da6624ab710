"""Requests in many phrasings, for the tool-use training data and its honest evaluation.

Every request is built from a *frame* (the words around the task: "Can you work out {m}?"), a task
phrase ("900 divided by 36", "divide 900 by 36", "the weather in {city}", "{v} {from} in {to}") and
values, then roughened the way people type (lower case, no final punctuation, a typo in a frame
word, a greeting or a thank-you around it).

Two splits that share no frame and no filler words: `split="train"` for training and
`split="heldout"` for evaluation only. The held-out frames, openers and closers, and a fifth of the
cities (by a hash of the name), never appear in training; the task words ("plus", "divided by",
"kilometres") are shared, since the model can only map words it has seen to a call. So the held-out
split measures phrasing the model never saw, not merely values it never saw. A third set,
`handwritten.json`, was written by hand and is never used for training.

    req = request(random.Random(0), split="train")  # -> Request(text, name, arguments)
"""
from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from workbench.demo_tools import MORE_CITIES, UNIT_NAMES, WEATHER  # noqa: E402

SPLITS = ("train", "heldout")
MADE_UP_SHARE = 0.5  # of the training split's weather requests: names to copy, not to recall


@dataclass
class Request:
    """One user request and the call it asks for (`name` None: no tool, a plain answer)."""
    text: str
    name: str | None
    arguments: dict = field(default_factory=dict)
    answer: str | None = None  # the plain answer of a request that needs no tool


def _heldout_city(city: str) -> bool:
    return int(hashlib.sha1(city.encode()).hexdigest(), 16) % 5 == 0


CITIES = {"train": [c for c in WEATHER if not _heldout_city(c)],
          "heldout": [c for c in WEATHER if _heldout_city(c)]}
assert set(MORE_CITIES) <= set(WEATHER)

# ---- frames: the words around a task, disjoint between the splits ------------------------------
OPENERS = {"train": ["Hi! ", "Hello, ", "Hey, ", "Quick question: ", "Hi there. ", "Excuse me, ", "OK so ",
                     "Good morning! ", "hey ", "Question: "],
           "heldout": ["Hiya, ", "Yo, ", "Good evening. ", "Sorry to bother you, ", "Greetings! ", "Um, "]}
CLOSERS = {"train": [" Thanks!", " Thank you.", " Please.", " thx", " Cheers.", " Thanks in advance.",
                     " Use the tool.", " ty"],
           "heldout": [" Much appreciated.", " Many thanks!", " Ta.", " That would help a lot."]}

CALC_FRAMES = {  # {m}: a noun phrase of arithmetic ("900 divided by 36", "45 * 12")
    "train": ["What is {m}?", "what's {m}", "What's {m}?", "Compute {m}.", "Calculate {m}", "calculate {m} please",
              "Can you work out {m}?", "how much is {m}", "How much is {m}?", "{m} = ?", "{m}?", "{m}",
              "Solve {m}.", "Tell me {m}.", "Find {m}.", "I need {m}.", "Quick math: {m}", "What do you get for {m}?",
              "Could you calculate {m} for me?", "Please figure out {m}.", "Work out {m}.", "what does {m} come to",
              "Evaluate {m}", "Can you tell me what {m} is?", "whats {m}", "How much does {m} make?",
              "What is the result of {m}?", "Use the calculator for {m}."],
    "heldout": ["What does {m} equal?", "Help me with {m}.", "Do the math: {m}", "What's the answer to {m}?",
                "Mind computing {m}?", "I'd like to know {m}.", "Give me {m}.", "{m}, what is it?",
                "Can you crunch {m}?", "So what's {m} then?", "Need the total of {m}"]}
CALC_COMMAND_FRAMES = {  # {c}: an imperative ("divide 900 by 36")
    "train": ["{c}", "{c} please", "Please {c}.", "Can you {c}?", "{c} for me.", "Could you {c}?", "{c}.",
              "I want you to {c}.", "can u {c}"],
    "heldout": ["Would you {c}?", "Kindly {c}.", "Go ahead and {c}.", "Let's {c}."]}
WEATHER_FRAMES = {
    "train": ["What's the weather in {c}?", "weather {c}", "{c} weather", "How's the weather in {c} today?",
              "What is the weather like in {c}?", "Is it raining in {c}?", "What's the temperature in {c}?",
              "How hot is it in {c}?", "How cold is it in {c} right now?", "Tell me the weather for {c}.",
              "Check the weather in {c}.", "Do I need an umbrella in {c}?", "Is it sunny in {c}?",
              "forecast for {c}", "What's it like outside in {c}?", "I'm flying to {c} tomorrow. What's the weather there?",
              "Is it warm in {c}?", "Can you get me the weather in {c}?", "weather in {c} please",
              "What's the weather forecast for {c}?", "Do I need a coat in {c}?", "How's {c} looking weather-wise?",
              "Temperature in {c}?", "whats the weather in {c}", "Is it snowing in {c}?",
              "Tell me about the weather in {c}.", "What's the weather doing in {c} right now?",
              # the city in mid-sentence, before more words, as people often put it
              "Is {c} sunny right now?", "What's {c} like today?", "Will it rain in {c} tomorrow?",
              "How is the weather in {c} this week?", "{c}: weather please", "Any rain in {c} today?",
              "I'm in {c}. Is it hot?", "Weather for {c}, thanks.", "Is the sun out in {c} today?",
              "Tell me how {c} is doing weather-wise.", "Is it windy in {c} this morning?",
              "How's it looking in {c}, weather-wise?", "Check {c} for rain, please."],
    "heldout": ["Any idea what the weather's like in {c}?", "Weather report for {c}, please.",
                "Should I pack a jacket for {c}?", "Current conditions in {c}?", "How warm is {c} at the moment?",
                "Look up the weather in {c}.", "Is {c} cold today?", "Planning a walk in {c}. Will it be nice out?",
                "What are the skies like over {c}?", "Give me the {c} weather."]}
# Training weather requests also come composed from three parts, an ask around a weather phrase with
# the city somewhere inside it and a time after it ("Could you tell me the {c} forecast this weekend?"):
# hundreds of frames, with the city before, between and after other words, so that the model learns
# the name's span from the name rather than from a frame's position (measured on stage 5: held-out
# frames got the word after "the" or before "at", "skies" or "moment", as the city). None of their
# words is a held-out frame's own ("over", "skies", "warm", "moment", "conditions", "look up").
WEATHER_ASKS = ["Tell me {w}.", "What's {w}?", "I want to know {w}.", "Can you check {w}?", "{w}, please.",
                "Show me {w}.", "Get me {w}.", "Find out {w} for me.", "Do you know {w}?", "Need {w}.",
                "Please fetch {w}.", "Any news about {w}?", "Let me know {w}.", "What about {w}?",
                "Could you tell me {w}?", "Quickly check {w}.", "{w}?", "Curious about {w}."]
WEATHER_CORES = ["the weather in {c}", "the weather for {c}", "the forecast for {c}", "the temperature in {c}",
                 "{c}'s weather", "the weather around {c}", "how the weather is in {c}", "what it's like in {c}",
                 "the {c} forecast", "the rain situation in {c}", "the weather near {c}", "how hot {c} is",
                 "whether it's sunny in {c}", "if it rains in {c}", "the weather at {c}", "the {c} temperature",
                 "{c} weather", "the weather of {c}"]
WEATHER_TAILS = ["", "", "", " today", " right now", " this afternoon", " tonight", " tomorrow", " this weekend",
                 " later", " before I head out", " for my trip", " in the morning"]
COMPOSED_SHARE = 0.5  # of the training split's weather requests


def _weather_frame(rng: random.Random, split: str) -> str:
    if split == "train" and rng.random() < COMPOSED_SHARE:
        return rng.choice(WEATHER_ASKS).format(w=rng.choice(WEATHER_CORES) + rng.choice(WEATHER_TAILS))
    return rng.choice(WEATHER_FRAMES[split])


CONVERT_FRAMES = {  # {v} {f} {t}: value, from-unit name, to-unit name
    "train": ["Convert {v} {f} to {t}.", "How many {t} is {v} {f}?", "What is {v} {f} in {t}?", "{v} {f} to {t}",
              "{v} {f} in {t}?", "How much is {v} {f} in {t}?", "how many {t} are in {v} {f}",
              "Change {v} {f} into {t}.", "{v} {f} equals how many {t}?", "I have {v} {f}. How many {t} is that?",
              "What's {v} {f} in {t}?", "convert {v} {f} into {t} please", "{v} {f} = ? {t}",
              "Please convert {v} {f} to {t}.", "What's {v} {f} expressed in {t}?", "{v} {f} in {t} please",
              "Can you convert {v} {f} to {t}?", "how many {t} in {v} {f}?", "It's {v} {f}. What is that in {t}?"],
    "heldout": ["Turn {v} {f} into {t}.", "{v} {f} is how many {t}?", "Express {v} {f} in {t}.",
                "What do {v} {f} come to in {t}?", "If something is {v} {f}, how many {t} is it?",
                "Translate {v} {f} to {t} for me.", "I'd like {v} {f} in {t}."]}

# ---- task phrases (shared: the words a model must map to the call) -----------------------------
OPERATIONS = {  # op -> (noun phrases, imperatives); {a} {b} the operands, the expression is "{a} op {b}"
    "+": (["{a} plus {b}", "{a} + {b}", "{a}+{b}", "the sum of {a} and {b}", "{a} and {b} added together",
           "{a} added to {b}"], ["add {a} and {b}", "add {b} to {a}", "sum {a} and {b}"]),
    "-": (["{a} minus {b}", "{a} - {b}", "{a}-{b}", "the difference between {a} and {b}", "{a} take away {b}",
           "{a} less {b}"], ["subtract {b} from {a}", "take {b} away from {a}", "take {b} from {a}"]),
    "*": (["{a} times {b}", "{a} * {b}", "{a}*{b}", "{a} x {b}", "{a} multiplied by {b}", "the product of {a} and {b}"],
          ["multiply {a} by {b}", "multiply {a} and {b}", "times {a} by {b}"]),
    "/": (["{a} divided by {b}", "{a} / {b}", "{a}/{b}", "{a} over {b}", "the quotient of {a} and {b}"],
          ["divide {a} by {b}", "split {a} into {b} equal parts"]),
    "**": (["{a} to the power of {b}", "{a} ** {b}", "{a}^{b}", "{a} raised to the power of {b}", "{a} to the power {b}",
            "{a} raised to {b}"], ["raise {a} to the power of {b}", "raise {a} to the {b}"]),
}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]


def _number(rng: random.Random, small: bool = False) -> str:
    if small:
        return str(rng.randint(2, 12))
    r = rng.random()
    if r < 0.55:
        return str(rng.randint(2, 999))
    if r < 0.75:
        return str(rng.randint(1000, 99999))
    return str(round(rng.uniform(0.5, 500), rng.choice([1, 2])))


def _math(rng: random.Random) -> tuple[str, str, bool]:
    """(phrase, expression, is_imperative): one arithmetic task in words or symbols."""
    r = rng.random()
    if r < 0.12:  # a longer symbolic expression, as people type them
        a, b, c = _number(rng), str(rng.randint(2, 99)), str(rng.randint(2, 9))
        o1, o2 = rng.choice("+-*/"), rng.choice("+-*")
        expr = rng.choice([f"{a} {o1} {b} {o2} {c}", f"({a} {o2} {b}) {o1} {c}"])
        return (expr.replace(" ", "") if rng.random() < 0.3 else expr), expr, False
    if r < 0.16:  # a list of numbers to add up
        terms = [_number(rng) if rng.random() < 0.5 else str(rng.randint(2, 99)) for _ in range(rng.randint(3, 4))]
        listed = ", ".join(terms[:-1]) + rng.choice([" and ", ", and ", ", "]) + terms[-1]
        imperative = rng.random() < 0.5
        phrase = (rng.choice(["add up {l}", "sum up {l}", "total {l}", "add {l} together"]) if imperative else
                  rng.choice(["the sum of {l}", "the total of {l}", "{l} added up", "{p}"])).format(
            l=listed, p=" plus ".join(terms))
        return phrase, " + ".join(terms), imperative
    if r < 0.24:  # the special forms
        a = _number(rng)
        kind = rng.choice(["squared", "cubed", "sqrt", "percent", "half", "double"])
        if kind == "squared":
            return rng.choice([f"{a} squared", f"the square of {a}"]), f"{a} ** 2", False
        if kind == "cubed":
            return rng.choice([f"{a} cubed", f"the cube of {a}"]), f"{a} ** 3", False
        if kind == "sqrt":
            return rng.choice([f"the square root of {a}", f"square root of {a}", f"sqrt {a}"]), f"{a} ** 0.5", False
        if kind == "percent":
            p = str(rng.choice([5, 10, 12, 15, 18, 20, 25, 30, 40, 50, 75, rng.randint(1, 99)]))
            return rng.choice([f"{p}% of {a}", f"{p} percent of {a}"]), f"{p} / 100 * {a}", False
        if kind == "half":
            return rng.choice([f"half of {a}", f"half {a}"]), f"{a} / 2", False
        return rng.choice([f"double {a}", f"twice {a}"]), f"{a} * 2", False
    op = rng.choice(list(OPERATIONS))
    a = _number(rng, small=op == "**")
    b = str(rng.randint(2, 10)) if op == "**" else _number(rng)
    if rng.random() < 0.25 and op != "**":  # small numbers in words
        i, j = rng.randint(2, 20), rng.randint(2, 20)
        a, b, a_word, b_word = str(i), str(j), NUMBER_WORDS[i], NUMBER_WORDS[j]
    else:
        a_word, b_word = (f"{int(x):,}" if x.isdigit() and int(x) >= 1000 and rng.random() < 0.3 else x
                          for x in (a, b))
    nouns, commands = OPERATIONS[op]
    imperative = rng.random() < 0.35
    phrase = rng.choice(commands if imperative else nouns).format(a=a_word, b=b_word)
    return phrase, f"{a} {op} {b}", imperative


def _unit_name(rng: random.Random, code: str, value: float) -> str:
    names = [n for n in UNIT_NAMES[code] if n != "in"]  # "45 in in ft" reads badly; "inches" it is
    name = rng.choice(names)
    singular = [n for n in names if n + "s" in names or n + "es" in names]
    if value == 1 and name.endswith("s") and len(name) > 3 and name[:-1] in names:
        name = name[:-1]  # "1 mile", not "1 miles"
    elif value != 1 and name in singular and rng.random() < 0.85:
        name = next(n for n in names if n in (name + "s", name + "es"))  # mostly "15 gallons"
    if len(name) > 2 and rng.random() < 0.3:
        name = name.title() if not name.startswith("°") else name.upper()
    elif name in ("°c", "°f", "c", "f", "k"):
        name = name.upper()
    return name


PAIRS = [(a, b) for table in (["m", "km", "cm", "mm", "mi", "ft", "in", "yd"], ["kg", "g", "lb", "oz"],
                             ["l", "ml", "gal"], ["c", "f", "k"]) for a in table for b in table if a != b]
COMMON_PAIRS = [("km", "mi"), ("mi", "km"), ("kg", "lb"), ("lb", "kg"), ("m", "ft"), ("ft", "m"), ("c", "f"),
                ("f", "c"), ("l", "gal"), ("gal", "l"), ("in", "cm"), ("cm", "in"), ("oz", "g"), ("g", "oz")]


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.random()
    if kind < 0.4:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # swap
    if kind < 0.7:
        return word[:i] + word[i + 1:]  # drop
    return word[:i] + word[i] + word[i:]  # double


def _roughen(rng: random.Random, frame: str, split: str) -> str:
    """The frame as people type it: sometimes a typo in one of its own words, lower case, no final
    punctuation, an opener or a closer. Only the frame's words: the task's values are filled in after."""
    words = frame.split(" ")
    if rng.random() < 0.15:
        candidates = [i for i, w in enumerate(words) if "{" not in w and len(w) >= 4 and w.isalpha()]
        if candidates:
            i = rng.choice(candidates)
            words[i] = _typo(rng, words[i])
    frame = " ".join(words)
    if rng.random() < 0.2:
        frame = frame.lower()
    if rng.random() < 0.15 and frame[-1:] in ".?!":
        frame = frame[:-1]
    if rng.random() < 0.25:
        opener = rng.choice(OPENERS[split])
        frame = opener + (frame[0].lower() + frame[1:] if opener.endswith(", ") and frame[:1] != "{" else frame)
    if rng.random() < 0.2:
        frame += rng.choice(CLOSERS[split])
    return frame


def calculator_request(rng: random.Random, split: str) -> Request:
    phrase, expr, imperative = _math(rng)
    if imperative:
        frame = _roughen(rng, rng.choice(CALC_COMMAND_FRAMES[split]), split)
        text = frame.format(c=phrase)
        if text[:1].islower() and frame.startswith("{c}"):
            text = text[0].upper() + text[1:] if rng.random() < 0.5 else text
    else:
        text = _roughen(rng, rng.choice(CALC_FRAMES[split]), split).format(m=phrase)
    return Request(text, "calculator", {"expression": expr})


ONSETS = ["b", "d", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "gr", "st", "tr", "sh", "ch", "h", "j",
          "c", "f", "g", "w", "y", "bl", "cl", "dr", "fr", "kr", "pl", "sl", "sp", "th", "wr", "x", "q", "kv", "zh",
          "ts", "sv", "gl", "sn", "dn", "ny"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "y", "ei", "ie", "oo", "au", "io", "ue", "ia", "oa", "ae"]
CODAS = ["", "", "", "n", "r", "s", "l", "m", "k", "th", "rg", "nd", "t", "d", "g", "x", "ck", "ng", "nn", "ll",
         "rt", "st", "sk", "v", "z", "ff", "mb"]
PLACE_WORDS = ["San", "Port", "New", "Lake", "Saint", "El", "Fort", "North", "Upper", "Santa", "Cape", "Los",
               "West", "Old", "Le", "Bay", "Mount", "Rio"]
PLACE_SUFFIXES = ["burg", "ville", "ton", "ford", "holm", "grad", "pur", "abad", "stadt", "haven", "field", "polis",
                  "dorf", "mouth", "wick", "by", "sk", "ia", "heim", "berg"]


def _syllable_name(rng: random.Random) -> str:
    syllables = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.randint(1, 3)))
    return syllables + rng.choice(CODAS)


def _spliced_name(rng: random.Random) -> str:
    """The start of one training city's name and the end of another's ("Mad" + "onto"): real
    names' letters, so real names' subword pieces, in no order a table holds."""
    a, b = rng.sample([c for c in CITIES["train"] if " " not in c], 2)
    i, j = rng.randint(2, max(2, len(a) - 1)), rng.randint(1, max(1, len(b) - 2))
    return a[:i] + b[j:].lower()


def _letters_name(rng: random.Random) -> str:
    """Letters in no pattern at all ("Qwizt", "Ofalbrexu"): the pieces of a name the model can only copy."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vowels = "aeiou"
    return "".join(rng.choice(vowels) if rng.random() < 0.35 else rng.choice(letters)
                   for _ in range(rng.randint(3, 10)))


BUNDLED_TOKENIZER = Path(__file__).resolve().parents[2] / "workbench" / "checkpoints" / "tiny" / "tokenizer.json"


FUNCTION_WORDS = ["am", "an", "as", "at", "be", "by", "do", "go", "he", "hi", "if", "in", "is", "it", "me", "my",
                  "no", "of", "ok", "on", "or", "so", "to", "up", "us", "we"]


def name_pieces() -> tuple[list[str], list[str]]:
    """(word starts, word insides): the bundled tokenizer's letter pieces a name on a line of its own is
    written with, "Au", "Cal" and "des", "stan", "eed" (2 to 4 letters, capitalised or lower case).
    Stage 9 missed held-out cities where a piece had seldom been a target: "Odesa" -> "Opera" ("des":
    24 targets in all the training data, against 1,782 for "ou" of "Houston"), "Leeds" -> "Lany" ("eed":
    8), "Istanbul" -> "Irubul" ("stan": 2); 2,881 of the vocabulary's 3,327 letter pieces had been a
    target fewer than 50 times, since the vocabulary was learned mostly on code. No piece that is an
    English word the data writes on its own ("at", "the", "form"): with them (stage 10), names ran on into
    the words after them, "How warm is Dubai at the moment?" -> "Dubai at", "Is Hong Kong cold today?"
    -> "Hong Kongform".
    Measured, neither shipped: 60 minutes from stage 9 with these names (English words among the
    pieces), held-out phrasing split 86% -> 86% (weather 52/74 -> 52/74, hand-written 93% -> 95%); 30
    more without English words, 86% (weather 55/74, no tool 16/19 -> 13/19, hand-written 93%): fewer
    names lost a piece, more ran on by a piece the request does not hold ("Is Rabat cold today?" ->
    "Rabat ab"), and "Where is the seat of government of Japan?" got get_weather("eavernment")."""
    if not hasattr(name_pieces, "pieces"):
        words = set(_aside_words()) | set(FUNCTION_WORDS)
        vocab = _bundled_tokenizer().get_vocab(with_added_tokens=False)
        letters = sorted(t for t in vocab if t.isascii() and t.isalpha() and 2 <= len(t) <= 4
                         and t.lower() not in words)
        name_pieces.pieces = ([t for t in letters if t[0].isupper() and t[1:].islower()],
                              [t for t in letters if t.islower()])
    return name_pieces.pieces


def _pieces_name(rng: random.Random) -> str:
    """A start piece and one or two inside pieces of the tokenizer, drawn evenly ("Au" + "des" + "ck"),
    so that every piece a real name can be cut into is, as often as any other, a piece to copy. Drawn
    again while the word, on a line of its own, would be cut into other pieces than those drawn (BPE
    merges across a seam: "Au" + "des" is "Aud" + "es"); after a few tries the last draw stands."""
    starts, insides = name_pieces()
    for _ in range(6):
        start = rng.choice(starts) if rng.random() < 0.7 else rng.choice("BCDFGHKLMNPRSTVZAEIOU")
        pieces = [start] + [rng.choice(insides) for _ in range(rng.choice([1, 1, 2]))]
        if _bundled_tokenizer().encode("\n" + "".join(pieces)).tokens[1:] == pieces:
            break
    return "".join(pieces)


def _bundled_tokenizer():
    if not hasattr(_bundled_tokenizer, "tokenizer"):
        from tokenizers import Tokenizer
        _bundled_tokenizer.tokenizer = Tokenizer.from_file(str(BUNDLED_TOKENIZER))
    return _bundled_tokenizer.tokenizer


def _rhyme(rng: random.Random, word: str) -> str:
    """`word` with its onset changed, or itself ("Kota" -> "Bota", "Kota"): the second word of a name
    like "Hong Kong" or "Walla Walla" (measured on stage 7: "Hong Kong" came out "Hong Kong Kong Kong",
    a copy that no longer knew which of two like words it had written)."""
    vowel = next((i for i, ch in enumerate(word.lower()) if ch in "aeiouy"), 0)
    return word if rng.random() < 0.3 else (rng.choice(ONSETS) + word[vowel:].lower()).capitalize()


def made_up_city(rng: random.Random) -> str:
    """A place name no table holds ("Velmora", "Port Tasiki", "Osloronto", "Qwizt"): asked about in
    training so that the model learns to copy a name from the request, never to recall one it knows
    (measured: without them, held-out cities came out as known ones, "Bucharest" as "Budapest").
    Four kinds of word, so that no one kind's letters become a prior of their own: syllables from
    small tables (stage 4's only kind; measured: held-out names then came back as those syllables,
    "Winnipeg" as "Winvirouquuchrou"), splices of training cities' names, free letters, and (from
    stage 10) the tokenizer's own letter pieces drawn evenly (`_pieces_name`). (Splices of English
    words, tried from stage 9 for 70 minutes, loosened where a name ends: "How warm is Odesa at the
    moment?" -> "Otea at", "Is Rabat cold today?" -> "Rabatber"; the phrasing split fell 86% -> 82%.)"""
    def word() -> str:
        kind = rng.random()
        w = (_syllable_name(rng) if kind < 0.25 else _spliced_name(rng) if kind < 0.5 else
             _letters_name(rng) if kind < 0.65 else _pieces_name(rng))
        if rng.random() < 0.15:
            w += rng.choice(PLACE_SUFFIXES)
        return w.capitalize()
    while True:
        words = [word() for _ in range(rng.choice([1, 1, 1, 1, 2, 2, 3]))]
        if len(words) == 2 and rng.random() < 0.25:
            words[1] = _rhyme(rng, words[0])
        if rng.random() < 0.15:
            words.insert(0, rng.choice(PLACE_WORDS))
        name = " ".join(words)
        if name not in WEATHER:  # never a real table city by accident (a held-out one least of all)
            return name


WORDS_AFTER_NAME_SHARE = 0.3  # of training weather requests whose name is written as given


def _words_after_name(rng: random.Random) -> str:
    """A short function word, then up to two words from the docstrings ("at", "of split path"): put
    right after a name in training requests, so that where a name ends is told by the words after it,
    not by what the name looks like. Names of the tokenizer's pieces (stages 10 and 11) cost that: the
    names ran on, "Is Rabat cold today?" -> "Rabat ab", "How warm is Dubai at the moment?" -> "Dubai at".
    Measured from stage 11: with docstring words only (3 letters or more) after names, 30 minutes took
    the held-out phrasing split from 86% to 84% (weather 55/74 -> 46/74; "X at the moment" came out
    "X at" every time); with a function word first, 18 minutes took it to 90% (weather 59/74, no tool
    13/19 -> 16/19, hand-written 93% -> 95%): stage 12."""
    return " ".join([rng.choice(FUNCTION_WORDS)] + [rng.choice(_aside_words()) for _ in range(rng.randint(0, 2))])


def _aside_words() -> list[str]:
    """data.aside_words(), the docstring words; imported here, since data imports this module first."""
    import data
    return data.aside_words()


def weather_request(rng: random.Random, split: str) -> Request:
    city = made_up_city(rng) if split == "train" and rng.random() < MADE_UP_SHARE else rng.choice(CITIES[split])
    # training writes more names in lower case, as people type them (a held-out miss: "beirut" -> "tirut")
    written = city.lower() if rng.random() < (0.2 if split == "train" else 0.1) else city
    if split == "train" and written == city and rng.random() < WORDS_AFTER_NAME_SHARE:
        shown = f"{written} {_words_after_name(rng)}"
    else:
        shown = written
    text = _roughen(rng, _weather_frame(rng, split), split).format(c=shown)
    return Request(text, "get_weather", {"city": written})


def convert_request(rng: random.Random, split: str) -> Request:
    f, t = rng.choice(COMMON_PAIRS if rng.random() < 0.6 else PAIRS)
    value = rng.choice([rng.randint(1, 500), rng.randint(1, 500), round(rng.uniform(0.5, 100), 1)])
    if {f, t} <= {"c", "f", "k"} and rng.random() < 0.5:
        value = rng.choice([-10, 0, 15, 20, 25, 30, 37, 40, 72, 98.6, 100, 212, 300])
    text = _roughen(rng, rng.choice(CONVERT_FRAMES[split]), split).format(
        v=value, f=_unit_name(rng, f, value), t=_unit_name(rng, t, 2))
    return Request(text, "convert_units", {"value": value, "from_unit": f, "to_unit": t})


# ---- requests that need no tool --------------------------------------------------------------
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
            "Egypt": "Cairo", "Peru": "Lima", "Norway": "Oslo", "Austria": "Vienna", "Portugal": "Lisbon",
            "Ireland": "Dublin", "Canada": "Ottawa", "Kenya": "Nairobi", "Chile": "Santiago",
            "Greece": "Athens", "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw",
            "Hungary": "Budapest", "Belgium": "Brussels", "Denmark": "Copenhagen", "Thailand": "Bangkok",
            "Vietnam": "Hanoi", "Argentina": "Buenos Aires", "Colombia": "Bogota", "Mexico": "Mexico City",
            "Russia": "Moscow", "China": "Beijing", "India": "New Delhi", "Australia": "Canberra",
            "Iceland": "Reykjavik", "Cuba": "Havana", "Turkey": "Ankara", "Brazil": "Brasília"}
CAPITAL_FRAMES = {"train": ["What is the capital of {x}?", "capital of {x}?", "What's the capital city of {x}?",
                            "Which city is the capital of {x}?", "Name the capital of {x}.", "{x} capital?",
                            "Tell me the capital of {x}.", "whats the capital of {x}"],
                  "heldout": ["Where is the seat of government of {x}?", "Do you know {x}'s capital?",
                              "{x}: what's its capital city?"]}
SMALL_TALK = {  # (requests, answers)
    "greeting": ({"train": ["Hello!", "Hi", "hey", "Good morning!", "Hi there!", "hello there", "Hey, how are you?",
                            "hi, how's it going?", "Hey! What's up?", "Hello again", "Morning.",
                            "How are you today?", "Hey, good to see you"],
                  "heldout": ["Howdy!", "Good afternoon.", "Heya"]},
                 ["Hello! How can I help you today?", "Hi! What can I do for you?"]),
    "identity": ({"train": ["Who are you?", "What are you?", "what's your name?", "Are you a bot?", "Tell me about yourself.",
                               "Who is this?", "Are you human?", "Who made you?", "what should I call you"],
                  "heldout": ["Introduce yourself.", "What kind of assistant are you?"]},
                 ["I am a tiny Qwen3.5 model trained for the Qwen Workbench tutorials."]),
    "abilities": ({"train": ["What can you do?", "What tools do you have?", "How can you help me?", "what are you good for?",
                                "what are you able to do", "Which tools can you use?", "How do you work?"],
                   "heldout": ["What are your skills?", "What sort of things can you help with?"]},
                  ["I can do arithmetic, look up the weather in a city and convert units, with my tools."]),
    "thanks": ({"train": ["Thanks!", "Thank you.", "thx", "Great, thanks a lot!", "Perfect, thank you!",
                          "ok cool, thanks", "Nice, thanks!", "Awesome, thank you so much!", "Bye!", "great, bye",
                          "Thanks, see you later."],
                "heldout": ["Cheers, that helped.", "Appreciate it!"]},
               ["You're welcome!", "Glad I could help!"]),
    "code": ({"train": ["Write a Python function that adds two numbers.", "Show me a Python function to add two numbers.",
                        "python function for adding 2 numbers?", "How do I add two numbers in Python?",
                        "Write an add function in Python.", "add two numbers in python, as a function"],
              "heldout": ["Could you code up an addition function in Python?"]},
             ["def add(a, b):\n    return a + b"]),
    "len": ({"train": ["What does len() do in Python?", "Explain len in Python.", "what is len() for?",
                       "How does len work in Python?"],
             "heldout": ["In Python, what's the len builtin?"]},
            ["len() returns the number of items in a container, like a list or a string."]),
}


COUNTRY_OF_FRAMES = ["Which country is {y} in?", "{y} is in which country?", "What country is {y} the capital of?",
                     "which country has {y} as its capital", "Is {y} a capital city?", "{y} is the capital of what?"]


def plain_request(rng: random.Random, split: str) -> Request:
    if split == "train" and rng.random() < 0.15:  # a place named, and still no weather asked for (measured on
        # stage 7: held-out "Where is the seat of government of Japan?" got get_weather("seat of Kenya")).
        # They cost "how warm is Canberra at the moment?" (the capital answer), but 35 minutes from stage 9
        # without them gave 85.5% on the phrasing split against 86%: "How warm is Port Louis ...?" got a greeting
        country = rng.choice(list(CAPITALS))
        text = _roughen(rng, rng.choice(COUNTRY_OF_FRAMES), split).format(y=CAPITALS[country])
        return Request(text, None, answer=f"{CAPITALS[country]} is the capital of {country}.")
    if rng.random() < 0.45:
        country = rng.choice(list(CAPITALS))
        text = _roughen(rng, rng.choice(CAPITAL_FRAMES[split]), split).format(x=country)
        return Request(text, None, answer=f"The capital of {country} is {CAPITALS[country]}.")
    if rng.random() < 0.2:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        frames = {"train": ["Is {a} larger than {b}?", "Is {a} bigger than {b}?", "Which is larger, {a} or {b}?",
                            "Is {a} more than {b}?", "Which is bigger: {a} or {b}?", "Is {a} smaller than {b}?"],
                  "heldout": ["Is {a} greater than {b}?"]}[split]
        bigger = max(a, b)
        return Request(rng.choice(frames).format(a=a, b=b), None,
                       answer=f"{bigger} is the larger one." if a != b else f"They are equal: {a}.")
    requests, answers = SMALL_TALK[rng.choice(list(SMALL_TALK))]
    return Request(rng.choice(requests[split]), None, answer=rng.choice(answers))


KINDS = {"calculator": calculator_request, "get_weather": weather_request, "convert_units": convert_request}
TRAIN_KIND_WEIGHTS = {"calculator": 0.27, "get_weather": 0.5, "convert_units": 0.23}
# More training requests need no tool than the held-out split's 15%: measured on stage 8, with weather in
# half the tool requests, held-out questions about Python code got get_weather("ic") (7 of 19 right)
TRAIN_EXTRA_PLAIN = 0.08


def request(rng: random.Random, split: str = "train", tool_share: float = 0.85) -> Request:
    """One request of `split`: a tool request or, with 1 - tool_share (training: TRAIN_EXTRA_PLAIN
    more, unless tool_share is 1), one that needs no tool."""
    assert split in SPLITS, split
    if split == "train" and tool_share < 1:
        tool_share -= TRAIN_EXTRA_PLAIN
    if rng.random() >= tool_share:
        return plain_request(rng, split)
    if split == "train":  # weather oftener: copying a name is what held-out requests get wrong most
        return KINDS[rng.choices(list(KINDS), weights=[TRAIN_KIND_WEIGHTS[k] for k in KINDS])[0]](rng, split)
    return KINDS[rng.choice(list(KINDS))](rng, split)
