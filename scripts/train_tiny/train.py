"""Train the tiny Qwen3.5-MoE that becomes the bundled "tiny" model, on this machine's CPU, from a
fixed seed, with transformers' own Qwen3.5-MoE model (router auxiliary loss on).

    python scripts/train_tiny/train.py [--minutes 60] [--out workbench/checkpoints/tiny]

Two kinds of rows. Drills (data.drills: tool exchanges without the long tools prompt, echo requests,
a few questions; 8 rows of 160 tokens a step) come first, alone for DRILL_MINUTES and then every
DRILL_EVERY-th step: they put copying from the prompt into most of the loss, and copying is what a
tool call hinges on. Measured: with the whole prompt in every example, runs of 30-45 minutes never
copied an argument (0/20 calls right); on drills, copying appeared between steps 525 and 1017
(echo and call arguments exact), and the main rows (4 of 1024 tokens: every conversation whole,
tools prompt included, code filling the rest) then teach the full format.

Writes the checkpoint in the release layout (as scripts/make_bundled_checkpoints.py does) and
`training.json` (the loss curve and settings) next to it. Then run evaluate.py for the model card.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "scripts")]
import data  # noqa: E402
from make_bundled_checkpoints import VISION, build_tokenizer, save_release, text_config  # noqa: E402

SEED = 2026
SEQ = 1024
BATCH = 4
BPE_VOCAB = 8000
N_CONVERSATIONS = 10_000
N_DRILLS = 20_000
DRILL_MINUTES = 20
DRILL_EVERY = 3  # after the drill phase, every third step is still a drill
DRILL_SEQ, DRILL_BATCH = 160, 8  # drills are short: shorter rows, same tokens a step, faster steps
LR = 4e-3
# Eight attention heads and RoPE base 10k (the releases use 10M for 262k contexts): at 2k tokens this
# gives the two attention layers sharper positions and more heads to find what a call must copy.
ARCH = dict(hidden_size=128, num_hidden_layers=8, full_attention_interval=4,
            layer_types=(["linear_attention"] * 3 + ["full_attention"]) * 2,
            num_attention_heads=8, num_key_value_heads=4, head_dim=32,
            rope_parameters={"mrope_interleaved": True, "mrope_section": [2, 1, 1], "rope_type": "default",
                             "rope_theta": 10_000, "partial_rotary_factor": 0.5},
            linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32, linear_value_head_dim=32,
            num_experts=16, num_experts_per_tok=4, moe_intermediate_size=96, shared_expert_intermediate_size=128,
            router_aux_loss_coef=0.01, output_router_logits=True)


ASSISTANT = re.compile(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", re.S)
CALL = re.compile(r"<tool_call>.*?</tool_call>", re.S)
CALL_WEIGHT = 5.0  # a call's few argument tokens are what tool use hinges on: their loss counts 5x


def encode_documents(tokenizer, texts: list[str], eot: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, loss weight) per document, each ending in `eot`. The weight is 0 on the prompt side of
    a conversation (system, user, tool turns): the loss goes to what the assistant writes, not to
    the long tool instructions every dialogue repeats; CALL_WEIGHT inside tool calls (all of them,
    so also the constant format example in the tools prompt: the shipped checkpoint was trained so);
    1 elsewhere (code is learned whole)."""
    docs = []
    for text, enc in zip(texts, tokenizer.encode_batch(texts)):
        if "<|im_start|>" in text:
            spans = [m.span(1) for m in ASSISTANT.finditer(text)]
            calls = [m.span() for m in CALL.finditer(text)]
            weight = [CALL_WEIGHT if any(a <= start < b for a, b in calls)
                      else float(any(a <= start < b for a, b in spans)) for start, _ in enc.offsets]
        else:
            weight = [1.0] * len(enc.ids)
        docs.append((np.asarray(enc.ids + [eot], dtype=np.int64), np.asarray(weight + [1.0], dtype=np.float32)))
    return docs


def pack_rows(conversations: list[tuple[np.ndarray, np.ndarray]], code: list[tuple[np.ndarray, np.ndarray]],
              seq: int, rng: random.Random, code_rows: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Training rows (ids, loss weight) `[row, seq]`. Every conversation lies whole inside one row, so a
    tool call is always learned with the request it answers in view (a dialogue cut across two rows
    teaches the model to guess arguments); code, where any window is a fine example, fills the rest
    of each row (then padding no loss reads) and what is left makes rows of its own."""
    conversations, code = conversations[:], code[:]
    rng.shuffle(conversations)
    rng.shuffle(code)
    code_ids = np.concatenate([c[0] for c in code])
    code_learn = np.concatenate([c[1] for c in code])
    rows_ids, rows_learn, cursor = [], [], 0
    row_ids, row_learn, used = [], [], 0

    def close_row():
        nonlocal cursor, row_ids, row_learn, used
        gap = seq - used
        piece = code_ids[cursor:cursor + gap]
        row_ids += [piece, np.full(gap - len(piece), code_ids[-1])]  # once the code runs out: padding
        row_learn += [code_learn[cursor:cursor + gap], np.zeros(gap - len(piece), dtype=np.float32)]
        cursor += len(piece)
        rows_ids.append(np.concatenate(row_ids))
        rows_learn.append(np.concatenate(row_learn))
        row_ids, row_learn, used = [], [], 0

    for ids, learn in conversations:
        if len(ids) > seq:
            continue
        if used + len(ids) > seq:
            close_row()
        row_ids.append(ids)
        row_learn.append(learn)
        used += len(ids)
    close_row()
    while code_rows and cursor + seq <= len(code_ids):
        rows_ids.append(code_ids[cursor:cursor + seq])
        rows_learn.append(code_learn[cursor:cursor + seq])
        cursor += seq
    return np.stack(rows_ids), np.stack(rows_learn)


def stages(training: dict) -> list[dict]:
    """The train.py stages a training.json records (its "init" chain), oldest first."""
    chain, t = [], training
    while t:
        chain.insert(0, t)
        t = t.get("init")
    return chain


def save(out: Path, model, text: dict, tokens: dict, info: dict) -> None:
    """The checkpoint in the release layout and `training.json` (settings and loss curve)."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    save_release(out, model, text, tokens, torch.Generator().manual_seed(SEED))
    model.train()
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--snapshot-minutes", type=float, default=0,
                    help="also save the model so far every this many minutes, to OUT-snapshot")
    ap.add_argument("--out", default=str(ROOT / "workbench" / "checkpoints" / "tiny"))
    ap.add_argument("--max-steps", type=int, default=100_000)
    ap.add_argument("--lr", type=float, default=LR, help="peak learning rate")
    ap.add_argument("--drill-minutes", type=float, default=DRILL_MINUTES,
                    help="first train this long on tool drills: the exchanges without the tools prompt")
    ap.add_argument("--drill-every", type=int, default=DRILL_EVERY,
                    help="after the drill phase, every this many steps is a drill")
    ap.add_argument("--init", default=None, help="continue from this checkpoint (same tokenizer and shapes)")
    args = ap.parse_args()
    from tokenizers import Tokenizer
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.init and Path(args.init).resolve() == out.resolve():
        raise SystemExit("--init and --out must be different folders (the output folder is emptied first)")
    init_training = json.loads((Path(args.init) / "training.json").read_text()) if args.init else None
    for f in out.iterdir():
        f.unlink()

    code_train, _ = data.stdlib_files()
    chats = data.conversations(N_CONVERSATIONS, SEED)
    if args.init:  # the weights' own tokenizer: a new BPE would give the embeddings other meanings
        for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copy(Path(args.init) / f, out / f)
        n_ids = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    else:
        n_ids = build_tokenizer(out, code_train + [data.without_cities(c) for c in chats[:3000]],
                                bpe_vocab=BPE_VOCAB)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tokens = {t["content"]: t["id"] for t in json.loads((out / "tokenizer.json").read_text())["added_tokens"]}
    eot = tokens["<|endoftext|>"]
    code_docs = encode_documents(tok, code_train, eot)  # pack_rows shuffles copies: one encoding serves both
    rows, weights = pack_rows(encode_documents(tok, chats, eot), code_docs, SEQ, random.Random(SEED))
    drills = data.drills(N_DRILLS, SEED + 2)
    drill_rows, drill_weights = pack_rows(encode_documents(tok, drills, eot), code_docs, DRILL_SEQ,
                                          random.Random(SEED), code_rows=False)
    print(f"{rows.size:,} training tokens, {len(rows)} rows of {SEQ}; {drill_rows.size:,} tokens of drills",
          flush=True)
    phases = {"drill": (torch.as_tensor(drill_rows), torch.as_tensor(drill_weights), DRILL_BATCH),
              "main": (torch.as_tensor(rows), torch.as_tensor(weights), BATCH)}
    orders = {k: torch.randperm(len(v[0]), generator=torch.Generator().manual_seed(SEED)) for k, v in phases.items()}
    cursors = dict.fromkeys(phases, 0)

    vocab = -(-n_ids // 64) * 64
    text = text_config(vocab, True, tokens, tie_word_embeddings=True,
                       **{k: v for k, v in ARCH.items() if k != "output_router_logits"})
    config = Qwen3_5MoeConfig(text_config=dict(text, output_router_logits=True),
                              vision_config=dict(VISION, model_type="qwen3_5_moe"), tie_word_embeddings=True,
                              image_token_id=tokens["<|image_pad|>"], video_token_id=tokens["<|video_pad|>"],
                              vision_start_token_id=tokens["<|vision_start|>"],
                              vision_end_token_id=tokens["<|vision_end|>"])
    if args.init:
        model = Qwen3_5MoeForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32)
        model.config.text_config.output_router_logits = True
    else:
        model = Qwen3_5MoeForConditionalGeneration(config).float()
    model.train()
    params = [p for n, p in model.named_parameters() if not n.startswith("model.visual")]
    print(f"{sum(p.numel() for p in params) / 1e6:.2f}M trained parameters", flush=True)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))  # set again every step by the schedule
    budget = args.minutes * 60
    start = time.time()
    curve, step, seen = [], 0, 0
    next_snapshot = args.snapshot_minutes * 60 or float("inf")

    def info() -> dict:
        return {"seed": SEED, "steps": step, "batch": BATCH, "seq": SEQ, "tokens_seen": seen,
                "train_tokens": int(rows.size), "minutes": round((time.time() - start) / 60, 1),
                "threads": torch.get_num_threads(), "arch": ARCH, "bpe_vocab": BPE_VOCAB,
                "conversations": N_CONVERSATIONS, "lr": args.lr,
                "init": init_training and {k: init_training.get(k)  # the earlier stages, newest first
                                           for k in ("steps", "tokens_seen", "minutes", "lr", "seed", "init")},
                "drills": {"conversations": N_DRILLS, "minutes": args.drill_minutes, "then_every": args.drill_every,
                           "batch": DRILL_BATCH, "seq": DRILL_SEQ},
                "loss": f"assistant turns (tool calls x{CALL_WEIGHT}) and code; every conversation whole in one row",
                "tied_embeddings": True, "curve": curve}
    while step < args.max_steps:
        elapsed = time.time() - start
        if elapsed > budget:
            break
        # The cosine runs on the clock: drill steps are several times faster than main ones, so a
        # step count guessed from the first steps would end the run with the rate barely lowered.
        progress = min(1.0, max(elapsed / budget, step / args.max_steps))
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        phase = "drill" if elapsed < args.drill_minutes * 60 or step % args.drill_every == 0 else "main"
        seqs, weights, batch = phases[phase]
        idx = orders[phase][cursors[phase]:cursors[phase] + batch]
        cursors[phase] += batch
        if cursors[phase] >= len(seqs):
            cursors[phase] = 0
        out_ = model(input_ids=seqs[idx], use_cache=False)
        seen += seqs[idx].numel()
        logits = out_.logits[:, :-1].float()
        token_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                       seqs[idx][:, 1:].reshape(-1), reduction="none")
        w = weights[idx][:, 1:].reshape(-1)
        loss = (token_loss * w).sum() / w.sum() + ARCH["router_aux_loss_coef"] * out_.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 10 == 0:
            aux = float(out_.aux_loss) if getattr(out_, "aux_loss", None) is not None else float("nan")
            curve.append({"step": step, "phase": phase, "loss": round(float(loss), 4), "aux_loss": round(aux, 4), "lr": lr,
                          "tokens": seen, "minutes": round((time.time() - start) / 60, 2)})
            print(curve[-1], flush=True)
        step += 1
        if time.time() - start > next_snapshot:
            snapshot = out.with_name(out.name + "-snapshot")
            save(snapshot, model, text, tokens, info())
            for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
                shutil.copy(out / f, snapshot / f)
            next_snapshot += args.snapshot_minutes * 60
            print("snapshot at step", step, flush=True)
    save(out, model, text, tokens, info())
    print("saved", out, flush=True)


if __name__ == "__main__":
    main()
