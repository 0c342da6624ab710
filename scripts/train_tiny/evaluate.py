"""Measure the trained tiny model on its held-out split and write its model card.

    python scripts/train_tiny/evaluate.py [checkpoint folder] [--requests 100]

Held-out loss and perplexity (code and chat) against a unigram baseline; tool use (a well-formed call
to the right function with the right arguments, then a final answer that contains the tool's result);
routing (Jensen-Shannon divergence between the expert loads of code and chat tokens per layer,
against two random halves of the code). Results go to `evaluation.json` and `README.md` (the model
card) in the checkpoint folder.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import data  # noqa: E402
import train  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

import workbench  # noqa: E402
from workbench import Trace  # noqa: E402
from workbench.analysis.routing import expert_load, jensen_shannon  # noqa: E402
from workbench.demo_tools import TOOLS, unit_code  # noqa: E402
from workbench.spec import ModelSpec  # noqa: E402
from workbench.tools import ToolBox, parse_tool_calls  # noqa: E402


def token_losses(model, ids: np.ndarray, window: int = 1024, context: int = 512) -> np.ndarray:
    """Next-token losses (nats) `[len(ids) - 1]`, each predicted with at least `context` tokens before
    it (all there are near the start), in windows of `window` (the training rows' length) that overlap
    by `context`. Windows that do not overlap leave the tokens at each window's start with no context
    at all: measured on the held-out chats, those first 60 positions of each 512-token window held all
    of stage 12's rise in chat perplexity over stage 9 (the model guessing the middle of a tools
    prompt it could not see), while every other position was better."""
    if not 0 <= context < window:
        raise ValueError(f"context ({context}) must be at least 0 and less than the window ({window})")
    out, n, step = [], len(ids) - 1, window - context
    for start in range(0, n, step):
        chunk = ids[start:start + window + 1]
        logits = model.logits(chunk[:-1]).astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        losses = -logp[np.arange(len(chunk) - 1), chunk[1:]]
        out.append(losses if start == 0 else losses[context:])  # the first `context` were kept already
        if start + window >= n:
            break
    return np.concatenate(out) if out else np.zeros(0)  # fewer than two ids: nothing to predict


def unigram(model, texts: list[str]) -> np.ndarray:
    counts = np.ones(model.spec.vocab_size)
    for t in texts:
        np.add.at(counts, model.encode(t), 1)
    return np.log(counts / counts.sum())


def right_call(box: ToolBox, calls: list, want: "data.phrasing.Request") -> bool:
    """The criterion: a request that needs no tool gets no call; one that does gets exactly one
    well-formed call to the right function with the right arguments, as the tool reads them: an
    expression with the wanted value ("914/38" for "914 / 38", "2**10" for "2 ** 10"), the city
    (case and spacing aside), the value and the unit codes ("kilometres" reads as "km")."""
    if want.name is None:
        return not calls
    if len(calls) != 1 or calls[0].error is not None or calls[0].name != want.name:
        return False
    call = calls[0]
    box.check(call)
    if call.error is not None or set(call.arguments) != set(want.arguments):
        return False
    got, wanted = call.arguments, want.arguments
    if want.name == "calculator":
        result = box.run(call)
        return not result.startswith('{"error"') and result == data.run_tool("calculator", wanted)
    if want.name == "get_weather":
        return " ".join(str(got["city"]).split()).casefold() == " ".join(wanted["city"].split()).casefold()
    try:
        same_value = math.isclose(float(got["value"]), float(wanted["value"]), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False
    return same_value and all(unit_code(str(got[k])) == wanted[k] for k in ("from_unit", "to_unit"))


def tool_use(model, requests: list, thinking: bool = False) -> dict:
    """Each request through `model.chat` with the demo tools (one tool round): whether the first
    reply is the right call (`right_call`), and whether the final answer carries the tool's result."""
    box = ToolBox(TOOLS)
    ok, answered, asked = 0, 0, 0
    by_kind: dict[str, list[int]] = {}
    examples, misses = [], []
    for req in requests:
        res = model.chat([{"role": "user", "content": req.text}], tools=TOOLS, max_rounds=1, max_new_tokens=96,
                         thinking=thinking)
        _, calls = parse_tool_calls(res.generations[0].text)
        good = right_call(box, calls, req)
        ok += good
        kind = req.name or "no tool"
        by_kind.setdefault(kind, [0, 0])
        by_kind[kind][0] += good
        by_kind[kind][1] += 1
        if good and req.name is not None:
            asked += 1
            tool_result = res.calls[0][1]
            parsed = json.loads(tool_result) if tool_result.startswith("{") else tool_result
            needles = [str(parsed["celsius"]), parsed["sky"]] if isinstance(parsed, dict) and "sky" in parsed \
                else [str(parsed)]
            answered += all(x in res.text for x in needles)
        row = {"request": req.text, "want": req.name, "reply": res.generations[0].text.strip(), "answer": res.text.strip()}
        if good and len(examples) < 6 and req.name is not None:
            examples.append(row)
        if not good:
            misses.append(row)
    n = len(requests)
    return {"requests": n, "correct_call": ok / n, "tool_requests": sum(r.name is not None for r in requests),
            "answer_contains_result": answered / max(asked, 1),
            "by_kind": {k: f"{a}/{b}" for k, (a, b) in sorted(by_kind.items())}, "examples": examples,
            "misses": misses}


def routing(model, code: list[str], chats: list[str]) -> dict:
    def trace(texts):
        return [model.generate(model.encode(t)[:256], max_new_tokens=1, trace=Trace(routing=True)).routing
                for t in texts]
    code_traces, chat_traces = trace(code), trace(chats)
    rng = random.Random(0)
    shuffled = code_traces[:]
    rng.shuffle(shuffled)
    half = len(shuffled) // 2
    between = jensen_shannon(expert_load(code_traces).load, expert_load(chat_traces).load)
    within = jensen_shannon(expert_load(shuffled[:half]).load, expert_load(shuffled[half:]).load)
    return {"layers": [int(x) for x in code_traces[0].layers], "jsd_code_vs_chat": between.round(4).tolist(),
            "jsd_code_half_vs_half": within.round(4).tolist()}


def measure(folder: Path, seed: int, requests: int, with_routing: bool = True) -> dict:
    """Held-out perplexities, tool use on the phrasing split and the hand-written set, routing."""
    model = workbench.load(folder, backend="torch", device="cpu", dtype="float32")
    code_train, code_held = data.stdlib_files()
    chats_held = data.conversations(300, seed + 1, split="heldout")
    uni = unigram(model, code_train + data.conversations(3000, seed))
    result = {}
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for name, texts in (("code", code_held), ("chat", chats_held)):
        # Measured on what training teaches: all of the code, the assistant turns of the chats (the
        # tools prompt, requests and tool responses are context, never predicted; see train.py).
        docs = train.encode_documents(tok, texts, tok.token_to_id("<|endoftext|>"))
        ids = np.concatenate([d[0] for d in docs])[:40_000]
        taught = np.concatenate([d[1] for d in docs])[1:len(ids)] > 0
        losses = token_losses(model, ids)[taught]
        base = -uni[ids[1:]][taught]
        result[name] = {"tokens": int(len(losses)), "loss": float(losses.mean()), "perplexity": float(np.exp(losses.mean())),
                        "unigram_loss": float(base.mean()), "unigram_perplexity": float(np.exp(base.mean()))}
    result["tool_use"] = {"phrasing": tool_use(model, data.heldout_requests(requests, seed)),
                          "handwritten": tool_use(model, data.handwritten_requests()),
                          "handwritten_thinking": tool_use(model, data.handwritten_requests(), thinking=True)}
    if with_routing:
        result["routing"] = routing(model, code_held[:10], chats_held[:40])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(HERE.parents[1] / "workbench" / "checkpoints" / "tiny"))
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--before", default=None,
                    help="also measure this earlier checkpoint on the same data, for the card's comparison")
    ap.add_argument("--card-only", action="store_true",
                    help="write the card from the evaluation.json and training.json already there")
    args = ap.parse_args()
    folder = Path(args.folder)
    training = json.loads((folder / "training.json").read_text())
    if args.card_only:
        result = json.loads((folder / "evaluation.json").read_text())
        (folder / "README.md").write_text(model_card(ModelSpec.from_file(folder / "config.json"), training, result))
        return
    result = measure(folder, training["seed"], args.requests)
    if args.before:
        result["before"] = measure(Path(args.before), training["seed"], args.requests, with_routing=False)
    elif (folder / "evaluation.json").exists():  # measured when this checkpoint was made: kept
        result["before"] = json.loads((folder / "evaluation.json").read_text()).get("before")
    (folder / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / "README.md").write_text(model_card(ModelSpec.from_file(folder / "config.json"), training, result))
    for who, r in (("after", result), ("before", result.get("before"))):
        if r:
            print(who, {k: round(r[k]["perplexity"], 3) for k in ("code", "chat")})
            for name, tu in r["tool_use"].items():
                print(who, name, {k: v for k, v in tu.items() if k not in ("examples", "misses")})


STAGES = [  # what each training stage was (recorded in training.json's "init" chain)
    "the first release, commit 272ed49: template-phrased requests; copying from the prompt, which every "
    "call argument needs, appeared only once short drills without the tools prompt were in the mix",
    "commit 65ffbcf's data: the varied phrasing below, without made-up places",
    "commit cb46bb5's data: as stage 2, plus made-up place names in 40% of the weather requests and echo drills, "
    "so that a name is copied from the request, not recalled; at the end of stage 2 the held-out phrasing "
    "split had shown recall (Bucharest asked, Budapest called; 3 of 25 weather requests right)",
    "commit 6dbc9e3's data: as stage 3, plus lists of numbers to add up and more numbers in words; with thinking "
    "on, the answer after a tool response thinks too (an empty thinking block ends in tokens no prompt ends "
    "in, and most answers then lost the result); the learning rate's cosine runs on the clock (stages 1-3 "
    "guessed the step count from the fast drill steps and ended at about 40% of the peak rate)",
    "commit f9e3ade's data: as stage 4, with made-up place names of three kinds (syllables, splices of two "
    "training cities' names, free letters) in half of the weather requests, since at the end of stage 4 "
    "held-out names came back as stage 3's made-up syllables (\"Winnipeg\" as \"Winvirouquuchrou\"); 13 more "
    "training weather frames with the city mid-sentence; numbers in words in a quarter of the arithmetic; "
    "more greetings, thanks and questions about the assistant",
    "commit 2bf8d46's data: as stage 5, plus weather frames composed of an ask, a weather phrase and a time "
    "(hundreds of frames, the city before, between and after other words), weather in 43% of the tool "
    "requests and a fifth of the names in lower case, since at the end of stage 5 held-out frames had the "
    "word after \"the\" or before \"at\" copied as the city (\"What are the skies like over Dubai\" -> \"skies\")",
    "commit 46cba3b's data: as stage 6, plus a sentence about something else (a docstring sentence of the "
    "training code) before or after 30% of the training requests, since at the end of stage 6 held-out "
    "requests had a neighbouring word copied into the city (\"Dubai Moment\", \"Copenhagen Ta\", \"skies\")",
    "commit b92bcbc's data: as stage 7, plus a drill that writes names and words given in a sentence back one "
    "per line (a word after a space and the same word at a line's start are different tokens), echo words "
    "in lower case, made-up two-word names whose words rhyme or repeat, no-tool questions that name a capital, "
    "and weather in half of the tool requests, since at the end of stage 7 held-out cities lost their first "
    "piece (\"Manchester\" -> \"Aanchester\", \"beirut\" -> \"sirut\") and \"Hong Kong\" came out \"Hong Kong Kong Kong\"",
    "commit fab1563's data: as stage 8, with 8% more requests that need no tool, questions about "
    "Python code that say \"in Python\" and comparisons in more words, since at the end of stage 8 held-out "
    "questions about Python code got get_weather calls (\"Could you code up an addition function in Python?\" "
    "-> get_weather(\"ic\"))",
    "commit 4c4097a's data: as stage 9, with a third of the made-up names built of the tokenizer's letter pieces "
    "drawn evenly and a drill that writes such words one per line, since at the end of stage 9 held-out names "
    "lost a piece that had seldom been a loss target (\"Odesa\" -> \"Opera\": \"des\" a target 24 times in all "
    "the data, against 1,782 for \"ou\" of \"Houston\")",
    "commit b570653's data: as stage 10, with no English word among the pieces, since at the end of stage 10 names "
    "ran on into the words after them (\"How warm is Dubai at the moment?\" -> \"Dubai at\")",
    "this commit's data: as stage 11, with a short function word and up to two other words right after 30% of the "
    "training names, and the question drill back to 15% of drills, since at the end of stage 11 names ran on by "
    "a piece the request does not hold (\"Is Rabat cold today?\" -> \"Rabat ab\") and 13 of 19 requests that need "
    "no tool were answered without one",
]
# The commit whose scripts/train_tiny trained each stage after the first (stage 1: the release 272ed49);
# None: this commit's.
STAGE_COMMITS = [None, "65ffbcf", "cb46bb5", "6dbc9e3", "f9e3ade", "2bf8d46", "46cba3b", "b92bcbc", "fab1563",
                 "4c4097a", "b570653", None]


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _tool_rows(r: dict) -> str:
    """One table row per evaluation set: right calls overall and by kind."""
    names = {"phrasing": "held-out phrasing split", "handwritten": "hand-written set",
             "handwritten_thinking": "hand-written set, thinking on"}
    out = []
    for key, label in names.items():
        tu = r["tool_use"][key]
        before = (r.get("before") or {}).get("tool_use", {}).get(key)
        kinds = ", ".join(f"{k} {v}" for k, v in tu["by_kind"].items())
        out.append(f"| {label} | {tu['requests']} | **{_pct(tu['correct_call'])}** | "
                   f"{_pct(before['correct_call']) if before else '-'} | {kinds} | {_pct(tu['answer_contains_result'])} |")
    return "\n".join(out)


def _mtp_rounds(training: dict) -> list[dict]:
    """train_mtp.py's runs in order (a checkpoint from before rounds were kept holds one)."""
    m = training.get("mtp") or {}
    return m.get("rounds", [m] if m else [])


def _mtp_command(m: dict, model: str, head_from: str | None = None) -> str:
    """The train_mtp.py command of MTP run `m` on the checkpoint `model`."""
    return (f"python scripts/train_tiny/train_mtp.py --model {model} --minutes {m['minutes']:g} --lr {m['lr']:g} "
            f"--target {m.get('target', 'data')} --chain {','.join(f'{w:g}' for w in m.get('chain', [1.0]))}"
            + (f" --head-from {head_from}" if head_from else ""))


def _retrain_commands(training: dict, chain: list[dict]) -> str:
    """The commands that retrain every stage of `chain` (oldest first, `training` the last) and its
    MTP runs: runs before a `head_from` one trained the layer on that one's `head_stage` (recorded by
    train_mtp.py)."""
    n = len(chain)
    rounds = _mtp_rounds(training)
    carried = next((i for i, m in enumerate(rounds) if m.get("head_from")), 0)
    head_stage = rounds[carried]["head_stage"] if carried else None  # the stage its layer trained against
    lines = [" && ".join([f"git worktree add /tmp/at-{c} {c}" for c in STAGE_COMMITS[1:n] if c] + ["mkdir -p /tmp/stage1"]),
             "git archive 272ed49 workbench/checkpoints/tiny | tar -x -C /tmp/stage1",
             f"python /tmp/at-{STAGE_COMMITS[1]}/scripts/train_tiny/train.py --init /tmp/stage1/workbench/checkpoints/tiny \\",
             "    --out /tmp/stage2 --minutes 60 --snapshot-minutes 20 --drill-minutes 0 --drill-every 2 --lr 0.002",
             "# stage 2 is that run's 40-minute snapshot: stop it once /tmp/stage2-snapshot holds the second one"]
    init = "/tmp/stage2-snapshot"
    for i in range(2, n):
        last = i == n - 1
        at = STAGE_COMMITS[i] if i < len(STAGE_COMMITS) else None  # None: this commit's scripts
        script = f"/tmp/at-{at}/scripts/train_tiny/train.py" if at else "scripts/train_tiny/train.py"
        out = "workbench/checkpoints/tiny" if last else f"/tmp/stage{i + 1}"
        drills = training["drills"] if last else {"minutes": 0, "then_every": 2}
        lines += [f"python {script} --init {init} --out {out} \\",
                  f"    --minutes {chain[i]['minutes']:.0f} --drill-minutes {drills['minutes']:g} "
                  f"--drill-every {drills['then_every']} --lr {chain[i]['lr']:g}"]
        if head_stage == i + 1:
            lines += [_mtp_command(m, out) for m in rounds[:carried]]
        init = out
    lines.append("python scripts/train_tiny/evaluate.py workbench/checkpoints/tiny --before /tmp/stage1/workbench/checkpoints/tiny")
    lines += [_mtp_command(m, "workbench/checkpoints/tiny", f"/tmp/stage{head_stage}" if m.get("head_from") else None)
              for m in rounds[carried:]]
    return "\n".join(lines)


def _mtp_section(training: dict) -> str:
    """The MTP layer's training and its acceptance on held-out text (train_mtp.py), or ''."""
    rounds = _mtp_rounds(training)
    if not rounds:
        return ""

    def row(when: str, acceptance: dict) -> list[str]:
        out = []
        for kind, a in acceptance.items():
            shares = " / ".join(_pct(x) if x is not None else "-" for x in a["acceptance_by_position"])
            out.append(f"| {when} | {kind} ({a['prompts']} prompts) | {shares} | {a['tokens_per_verify']:.2f} |")
        return out

    rows = row("untrained", rounds[0]["held_out_acceptance"]["before"])
    runs = []
    for i, m in enumerate(rounds, start=1):
        target = m.get("target", "data")
        chain = m.get("chain", [1.0])
        last = float(np.mean([c["loss"] for c in m["curve"][-5:]]))
        what = ("the data's token after next" if target == "data" else
                "the text model's own distribution over the token after next (self-distillation)")
        steps = "one draft step" if len(chain) == 1 else f"{len(chain)} chained draft steps weighted {' / '.join(f'{w:g}' for w in chain)}"
        runs.append(f"{i}. {m['steps']} steps of {m['batch']} rows of {m['seq']} tokens, {m['minutes']:g} minutes, peak lr "
                    f"{m['lr']:g}: learns {what}, {steps}; loss {last:.2f} over its last five logged batches.")
        if m.get("head_from"):
            runs[-1] += (f" It started from the layer of stage {m['head_stage']}'s "
                         f"checkpoint (`{m['head_from']}`), trained by the runs above against that stage's text model; "
                         "its `before` row below is that layer on this text model.")
            rows += row(f"before run {i}", m["held_out_acceptance"]["before"])
        rows += row(f"after run {i}", m["held_out_acceptance"]["after"])
    first = rounds[-1]["held_out_acceptance"]["after"]["code"]
    return f"""
## MTP layer (`scripts/train_tiny/train_mtp.py`)
The multi-token-prediction layer (`mtp.*`, what `speculative=k` drafts with), trained with the text
model frozen on train.py's rows (another draw), each run continuing from the last:
{chr(10).join(runs)}

Acceptance: greedy speculative decoding with {first['drafts']} drafts per step, {first['new_tokens_each']} new tokens per
prompt, on held-out requests (chat template, thinking off) and the openings of held-out
standard-library files; the share of drafts accepted at draft position 1 / 2 / 3 (a draft counts as
proposed whenever it was drafted, so later positions read lower), and the tokens each verify
forward yields.

| | prompts | accepted at position 1 / 2 / 3 | tokens per verify |
|---|---|---|---|
{chr(10).join(rows)}
"""


def _frame_counts() -> str:
    """How many training frames each tool's requests are drawn from (phrasing.py)."""
    ph = data.phrasing
    composed = len(ph.WEATHER_ASKS) * len(ph.WEATHER_CORES) * len(set(ph.WEATHER_TAILS))
    return (f"training frames: {len(ph.CALC_FRAMES['train']) + len(ph.CALC_COMMAND_FRAMES['train'])} for arithmetic, "
            f"{len(ph.WEATHER_FRAMES['train'])} for weather plus {composed:,} composed of an ask, a weather phrase "
            f"and a time, {len(ph.CONVERT_FRAMES['train'])} for conversions")


def model_card(s: ModelSpec, training: dict, r: dict) -> str:
    curve = training["curve"]
    points = [curve[i] for i in np.linspace(0, len(curve) - 1, min(12, len(curve))).astype(int)]
    rows = "\n".join(f"| {p['step']} | {p['tokens']:,} | {p['minutes']} | {p['loss']:.3f} | {p['aux_loss']:.3f} |"
                     for p in points)
    hand = r["tool_use"]["handwritten"]
    ex = "\n".join(f"- *{e['request']}* -> `{' '.join(e['reply'].split())}` -> {e['answer']!r}"
                   for e in hand["examples"][:5])
    misses = "\n".join(f"- *{m['request']}* (wanted {m['want'] or 'no call'}) -> `{' '.join(m['reply'].split())[:160]}`"
                       for m in hand["misses"][:8]) or "- none"
    ro = r["routing"]
    routing_rows = "\n".join(f"| {l} | {a:.4f} | {b:.4f} |" for l, a, b in
                             zip(ro["layers"], ro["jsd_code_vs_chat"], ro["jsd_code_half_vs_half"]))
    before = r.get("before")
    ppl_rows = "\n".join(
        f"| {k} | {r[k]['tokens']:,} | {r[k]['loss']:.3f} | {r[k]['perplexity']:.2f} | "
        f"{before[k]['perplexity'] if before else float('nan'):.2f} | {r[k]['unigram_perplexity']:.1f} |"
        for k in ("code", "chat"))
    chain = train.stages(training)
    stages = " ".join(f"**Stage {i + 1}** ({STAGES[i]}): {t['steps']} steps, {t['tokens_seen']:,} tokens, "
                      f"{t['minutes']} minutes, peak lr {t['lr']:g}." for i, t in enumerate(chain))
    total = sum(t["minutes"] for t in chain)
    return f"""# tiny: a trained miniature Qwen3.5-MoE

The default model of the Qwen Workbench (`workbench.load()`): the Qwen3.5-MoE architecture in
miniature, trained on this project's CPU so that the tutorials show a model that writes, chats,
calls tools, routes with purpose and remembers with its DeltaNet state. Not a useful assistant.

## Architecture
{s.summary()}; vocabulary {s.vocab_size:,} (byte-level BPE of {training['bpe_vocab']:,} learned on the
training data + the Qwen3.5 special tokens), context {s.max_position_embeddings:,}. Layers: {', '.join(s.layer_types)}.
Input and output embeddings tied (as in Qwen3.5-0.8B and 4B). Release layout:
`Qwen3_5MoeForConditionalGeneration` config, `model.language_model.*` weights, a tiny (untrained)
vision tower and {"an MTP layer (trained, below)" if training.get("mtp") else "an untrained MTP layer"}, float32.

## Data (built by `scripts/train_tiny/data.py` and `phrasing.py` from seed {training['seed']}, nothing downloaded)
- Python source of the standard library of the interpreter that built it ({len(data.stdlib_files()[0])} files,
  the first 8,000 characters of each; 5% of the files held out by a hash of their name).
- {training['conversations']:,} synthetic conversations in the Qwen3.5 chat format, rendered through the bundled
  chat template, under the tools prompt of `workbench.demo_tools` (`calculator`, `get_weather` over a
  table of {len(data.WEATHER)} cities, `convert_units` over 18 units): 1-4 requests each, most needing a tool
  (the call, the tool's response, an answer that carries it), some not (capitals, greetings, code
  questions: answered without a call); a quarter think first; plus questions and answers alone.
- {training['drills']['conversations']:,} drills (`data.drills`): the same exchanges without the tools prompt, echo
  requests ("Repeat after me: Lima 12.5") and questions.
- **Phrasing** (`phrasing.py`): each request is a frame ("Can you work out {{m}}?", "{{c}} weather",
  "I have {{v}} {{f}}. How many {{t}} is that?"; {_frame_counts()}) around a task phrase: arithmetic in
  symbols and in words ("900 divided by 36", "divide 900 by 36", "2 to the power of 10", "12 squared",
  "15% of 240", "the sum of 3 and 4", numbers up to twenty in words, "1,234"), cities of one to four
  words, unit names spelled out, abbreviated, singular or plural. Then roughened: a typo in a frame
  word (15%), lower case (20%), no final punctuation, a greeting or a thank-you around it.

## Training (`scripts/train_tiny/train.py`, seed {training['seed']})
transformers' `Qwen3_5MoeForConditionalGeneration`, router auxiliary loss on (coefficient
{training['arch']['router_aux_loss_coef']}), AdamW, warm-up 50 steps, cosine, on {training['threads']} CPU threads; each stage starts from the last one's
weights with the same tokenizer. {stages} {total:.0f} minutes of CPU in all. Loss: {training['loss']}. The
curve below is the last stage's. Every {training['drills']['then_every']}nd step is a drill
({training['drills']['batch']} rows of {training['drills']['seq']} tokens: exchanges without the tools prompt), the others are **main**
rows ({training['batch']} of {training['seq']} tokens: every conversation whole, tools prompt included, code filling
the rest). The BPE (stage 1) was learned with the first table's city names taken out, so a city is
copied piece by piece, like any name the model never saw.

| step | tokens | minutes | loss | router aux loss |
|---|---|---|---|---|
{rows}

## Measured (`scripts/train_tiny/evaluate.py`)
Next-token loss on held-out text: all of the code (the held-out stdlib files); the assistant turns
of 300 held-out conversations in the held-out phrasing (what training teaches: the tools prompt,
requests and tool responses are context, never predicted). Each token is predicted with at least 512
tokens before it (windows of 1,024, the training rows' length, overlapping by 512). "Before" is the
stage-1 checkpoint (the first release) on the same tokens; the unigram baseline is the training text's
token frequencies. Cards up to stage 9 cut the text into 512-token windows that did not overlap, so
the first tokens of each window were guessed with no context (a tools prompt's middle, say); measured
that way stage 9 had code 113.07 and chat 1.17, measured as here 112.74 and 1.08.

| | tokens | loss (nats) | perplexity | before | unigram perplexity |
|---|---|---|---|---|---|
{ppl_rows}

**Tool use.** Each request goes through `model.chat(..., tools=demo_tools.TOOLS)` (thinking off
unless said, greedy). A request is right when the model's first reply is exactly one well-formed
call to the right function with the right arguments as the tool reads them (an expression of the
wanted value, so "2**10" for "2 ** 10"; the city, case and spacing aside; the value and the unit
codes, so "kilometres" counts as "km"), and, for a request that needs no tool, no call at all.
- **Held-out phrasing split**: {r['tool_use']['phrasing']['requests']} requests from `phrasing.py`'s held-out
  frames, openers and closers (none of them appears in training) and its held-out fifth of the cities;
  the task words ("plus", "kilometres") are shared, since a model can only map words it has seen.
- **Hand-written set**: `scripts/train_tiny/handwritten.json`, {hand['requests']} requests written by hand in
  everyday phrasing, never used for training (a test checks that none of them appears in the data).

| set | requests | right | before | by kind | answers carry the result |
|---|---|---|---|---|---|
{_tool_rows(r)}

Examples from the hand-written set:
{ex}

Misses on the hand-written set:
{misses}

Where it falls short: copying a name it has not seen, which it does piece by piece. A piece can go
wrong: " beirut" in a request and "beirut" on the call's own line are different tokens, so the first
piece is a lookup learned token by token, not a copy, and a piece training seldom wrote is seldom
written back; stage 10 put the tokenizer's letter pieces, drawn evenly, into made-up names, yet held-out
"beirut" still comes out "birut" and "glasgow" "glaExow". The name's span, in frames of a shape
training never had: it stops short ("nizhny novgorod" -> "nizhny"), runs on ("Is Hong Kong cold
today?" -> "Hong Kongher"; "... like in Copenhagen Ta." -> "Copenhagen Ta"), or another word of the
request is copied ("What are the skies like over Dubai" -> "skies"). A greeting or thanks around a
request can take the reply's place ("Greetings! How warm is Innsbruck at the moment? Many thanks!"
-> "You're welcome!"), and a question that needs no tool, in a frame training never had, can get a
call ("Where is the seat of government of Vietnam?" -> get_weather("Vietnam")). Weather on the
phrasing split, whose cities and frames training never saw, is {r['tool_use']['phrasing']['by_kind']['get_weather']}.

Routing: Jensen-Shannon divergence (bits) between the expert-load distributions of code and chat tokens,
per MoE layer, against the same figure for two random halves of the code:

| layer | code vs chat | code half vs half |
|---|---|---|
{routing_rows}
{_mtp_section(training)}
## Retrain
Stage 1 is the checkpoint first released (commit 272ed49); each later stage starts from the one
before, with its commit's data. The last stage's schedule runs on the clock, so its step count
depends on the machine ({training['steps']} steps in {training['minutes']:.0f} minutes here):
```bash
{_retrain_commands(training, chain)}
python scripts/train_tiny/evaluate.py --card-only workbench/checkpoints/tiny  # the card with the MTP section
```
"""


if __name__ == "__main__":
    main()
