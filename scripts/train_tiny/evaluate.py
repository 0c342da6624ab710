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
from workbench.demo_tools import TOOLS  # noqa: E402
from workbench.tools import ToolBox, parse_tool_calls  # noqa: E402


def token_losses(model, ids: np.ndarray, window: int = 512) -> np.ndarray:
    """Next-token losses (nats) over `ids`, in windows."""
    out = []
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window + 1]
        if len(chunk) < 2:
            break
        logits = model.logits(chunk[:-1]).astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        out.append(-logp[np.arange(len(chunk) - 1), chunk[1:]])
    return np.concatenate(out)


def unigram(model, texts: list[str]) -> np.ndarray:
    counts = np.ones(model.spec.vocab_size)
    for t in texts:
        np.add.at(counts, model.encode(t), 1)
    return np.log(counts / counts.sum())


def same_args(got: dict, want: dict) -> bool:
    if set(got) != set(want):
        return False
    for k, v in want.items():
        g = got[k]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                if not math.isclose(float(g), float(v), rel_tol=1e-6):
                    return False
            except (TypeError, ValueError):
                return False
        elif str(g).strip() != str(v):
            return False
    return True


def right_arguments(box: ToolBox, call, want: dict, result: str) -> bool:
    """The arguments asked for; an expression written with other spacing ("914/38" for
    "914 / 38") counts when the tool gives the same result for it."""
    if same_args(call.arguments, want):
        return True

    def squeeze(args):
        return {k: v.replace(" ", "") if isinstance(v, str) else v for k, v in args.items()}
    return same_args(squeeze(call.arguments), squeeze(want)) and box.run(call) == result


def tool_use(model, n: int, seed: int) -> dict:
    box = ToolBox(TOOLS)
    ok = answered = 0
    examples = []
    for q, name, args, result in data.held_out_tool_requests(n, seed):
        messages = [{"role": "user", "content": q}]
        first = model.generate(messages, tools=box.schemas, thinking=False, max_new_tokens=64)
        _, calls = parse_tool_calls(first.text)
        good = len(calls) == 1 and calls[0].error is None and calls[0].name == name
        if good:
            box.check(calls[0])
            good = calls[0].error is None and right_arguments(box, calls[0], args, result)
        ok += good
        res = model.chat(messages, tools=TOOLS, max_rounds=1, max_new_tokens=64)
        tool_result = res.calls[0][1] if res.calls else None
        contains = False
        if tool_result is not None:
            parsed = json.loads(tool_result) if tool_result.startswith("{") else tool_result
            needles = [str(parsed["celsius"]), parsed["sky"]] if isinstance(parsed, dict) and "sky" in parsed \
                else [str(parsed)]
            contains = all(x in res.text for x in needles)
        answered += contains
        if len(examples) < 6:
            examples.append({"request": q, "call": first.text.strip(), "answer": res.text.strip()})
    return {"requests": n, "correct_call": ok / n, "answer_contains_result": answered / n, "examples": examples}


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(HERE.parents[1] / "workbench" / "checkpoints" / "tiny"))
    ap.add_argument("--requests", type=int, default=100)
    args = ap.parse_args()
    folder = Path(args.folder)
    training = json.loads((folder / "training.json").read_text())
    seed = training["seed"]
    model = workbench.load(folder, backend="torch", device="cpu", dtype="float32")
    code_train, code_held = data.stdlib_files()
    chats_held = data.conversations(300, seed + 1)
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
    result["tool_use"] = tool_use(model, args.requests, seed)
    result["routing"] = routing(model, code_held[:10], chats_held[:40])
    (folder / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / "README.md").write_text(model_card(model, training, result))
    print(json.dumps({k: v for k, v in result.items() if k != "tool_use"}, indent=1))
    print({k: v for k, v in result["tool_use"].items() if k != "examples"})


def model_card(model, training: dict, r: dict) -> str:
    s = model.spec
    curve = training["curve"]
    points = [curve[i] for i in np.linspace(0, len(curve) - 1, min(12, len(curve))).astype(int)]
    rows = "\n".join(f"| {p['step']} | {p['tokens']:,} | {p['minutes']} | {p['loss']:.3f} | {p['aux_loss']:.3f} |"
                     for p in points)
    tu = r["tool_use"]
    ex = "\n".join(f"- *{e['request']}* -> `{e['call'].replace(chr(10), ' ')}` -> {e['answer']!r}"
                   for e in tu["examples"][:4])
    ro = r["routing"]
    routing_rows = "\n".join(f"| {l} | {a:.4f} | {b:.4f} |" for l, a, b in
                             zip(ro["layers"], ro["jsd_code_vs_chat"], ro["jsd_code_half_vs_half"]))
    return f"""# tiny: a trained miniature Qwen3.5-MoE

The default model of the Qwen Workbench (`workbench.load()`): the Qwen3.5-MoE architecture in
miniature, trained on this project's CPU so that the tutorials show a model that writes, chats,
calls tools, routes with purpose and remembers with its DeltaNet state. Not a useful assistant.

## Architecture
{s.summary()}; vocabulary {s.vocab_size:,} (byte-level BPE of {training['bpe_vocab']:,} learned on the
training data + the Qwen3.5 special tokens), context {s.max_position_embeddings:,}. Layers: {', '.join(s.layer_types)}.
Input and output embeddings tied (as in Qwen3.5-0.8B and 4B). Release layout:
`Qwen3_5MoeForConditionalGeneration` config, `model.language_model.*` weights, a tiny (untrained)
vision tower and MTP layer, float32.

## Data (built by `scripts/train_tiny/data.py`, nothing downloaded)
- Python source of the standard library of the interpreter that built it ({len(data.stdlib_files()[0])} files,
  the first 8,000 characters of each; 5% of the files held out by a hash of their name).
- {training['conversations']:,} synthetic conversations in the Qwen3.5 chat format, rendered through the bundled
  chat template: questions and answers (some with thinking) and tool-use conversations (1-4
  exchanges under one tools prompt) for the functions of `workbench.demo_tools`:
  `calculator(expression)`, `get_weather(city)` (a fixed table of {len(data.WEATHER)} cities) and
  `convert_units(value, from_unit, to_unit)`, with varied wording, numbers, cities and units. Held out:
  tool requests whose text hashes into the last 5% (training skips them; the tool-use figures below
  are measured on them), and chats from a separate random stream.
- {training['drills']['conversations']:,} drills (`data.drills`): the same tool exchanges without the tools prompt, echo
  requests ("Repeat after me: Lima 12.5") and questions.

## Training (`scripts/train_tiny/train.py`, seed {training['seed']})
transformers' `Qwen3_5MoeForConditionalGeneration`, router auxiliary loss on (coefficient
{training['arch']['router_aux_loss_coef']}), AdamW (lr {training['lr']:g}, warm-up 50 steps, cosine), {training['steps']} steps =
{training['tokens_seen']:,} tokens in {training['minutes']} minutes on {training['threads']} CPU threads. Loss: {training['loss']}.
Two kinds of rows: **drills** ({training['drills']['batch']} rows of {training['drills']['seq']} tokens a step: tool exchanges without the
tools prompt, requests to echo cities, numbers and expressions, a few questions), alone for the first
{training['drills']['minutes']:g} minutes and then every {training['drills']['then_every']}rd step; and the **main** rows ({training['batch']} of {training['seq']}
tokens: every conversation whole, tools prompt included, code filling the rest; {training['train_tokens']:,}
tokens in all). Copying from the prompt, which every call argument needs, appeared during the
drills (between steps 525 and 1017); with the whole tools prompt in every example it had not
appeared after 800 steps. The BPE is learned with the table's city names taken out, so a city is
copied piece by piece (" Nairobi" in a request and "Nairobi" on the call's own line would otherwise
be two unrelated tokens).

| step | tokens | minutes | loss | router aux loss |
|---|---|---|---|---|
{rows}

## Measured on the held-out split (`scripts/train_tiny/evaluate.py`)
Next-token loss on held-out text: all of the code; the assistant turns of the chats (what training
teaches: the tools prompt, requests and tool responses are context, never predicted). The unigram
baseline is the training text's token frequencies, on the same tokens.

| | tokens | loss (nats) | perplexity | unigram perplexity |
|---|---|---|---|---|
| code | {r['code']['tokens']:,} | {r['code']['loss']:.3f} | {r['code']['perplexity']:.2f} | {r['code']['unigram_perplexity']:.1f} |
| chat | {r['chat']['tokens']:,} | {r['chat']['loss']:.3f} | {r['chat']['perplexity']:.2f} | {r['chat']['unigram_perplexity']:.1f} |

Tool use on {tu['requests']} held-out requests: **{100 * tu['correct_call']:.0f}%** first replies are a well-formed call
to the right function with the right arguments; after the tool's response, **{100 * tu['answer_contains_result']:.0f}%**
of final answers contain the tool's result. Examples:
{ex}

Routing: Jensen-Shannon divergence (bits) between the expert-load distributions of code and chat tokens,
per MoE layer, against the same figure for two random halves of the code:

| layer | code vs chat | code half vs half |
|---|---|---|
{routing_rows}

## Retrain
```bash
python scripts/train_tiny/train.py --minutes 60 --out workbench/checkpoints/tiny
python scripts/train_tiny/evaluate.py workbench/checkpoints/tiny
```
"""


if __name__ == "__main__":
    main()
