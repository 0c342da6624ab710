"""Train the tiny Qwen3.5-MoE that becomes the bundled "tiny" model, on this machine's CPU, from a
fixed seed, with transformers' own Qwen3.5-MoE model (router auxiliary loss on).

    python scripts/train_tiny/train.py [--minutes 45] [--out workbench/checkpoints/tiny]

Writes the checkpoint in the release layout (as scripts/make_bundled_checkpoints.py does) and
`training.json` (the loss curve and settings) next to it. Then run evaluate.py for the model card.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
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
SEQ = 512
BATCH = 8
BPE_VOCAB = 8000
N_CONVERSATIONS = 12_000
ARCH = dict(hidden_size=128, num_hidden_layers=8, full_attention_interval=4,
            layer_types=(["linear_attention"] * 3 + ["full_attention"]) * 2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32, linear_value_head_dim=32,
            num_experts=16, num_experts_per_tok=4, moe_intermediate_size=96, shared_expert_intermediate_size=128,
            router_aux_loss_coef=0.01, output_router_logits=True)


ASSISTANT = re.compile(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", re.S)


def token_stream(tokenizer, texts: list[str], eot: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """(ids, learn) of the shuffled, concatenated documents. learn is False on the prompt side of a
    conversation (system, user, tool turns): the loss then goes to what the assistant writes, not
    to the long tool instructions every dialogue repeats. Code is learned whole."""
    texts = list(texts)
    rng.shuffle(texts)
    ids, learn = [], []
    for text, enc in zip(texts, tokenizer.encode_batch(texts)):
        if "<|im_start|>" in text:
            spans = [m.span(1) for m in ASSISTANT.finditer(text)]
            keep = [any(a <= start < b for a, b in spans) for start, _ in enc.offsets]
        else:
            keep = [True] * len(enc.ids)
        ids.extend(enc.ids)
        learn.extend(keep)
        ids.append(eot)
        learn.append(True)
    return np.asarray(ids, dtype=np.int64), np.asarray(learn, dtype=bool)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=45)
    ap.add_argument("--out", default=str(ROOT / "workbench" / "checkpoints" / "tiny"))
    ap.add_argument("--max-steps", type=int, default=100_000)
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
    for f in out.iterdir():
        if args.init is None or Path(args.init).resolve() != out.resolve():
            f.unlink()

    code_train, _ = data.stdlib_files()
    chats = data.conversations(N_CONVERSATIONS, SEED)
    n_ids = build_tokenizer(out, code_train + chats[:3000], bpe_vocab=BPE_VOCAB)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tokens = {t["content"]: t["id"] for t in json.loads((out / "tokenizer.json").read_text())["added_tokens"]}
    stream, learn = token_stream(tok, code_train + chats, tokens["<|endoftext|>"], random.Random(SEED))
    n_seq = len(stream) // SEQ
    seqs = torch.as_tensor(stream[: n_seq * SEQ].reshape(n_seq, SEQ))
    targets = torch.where(torch.as_tensor(learn[: n_seq * SEQ].reshape(n_seq, SEQ)), seqs, -100)
    print(f"{len(stream):,} training tokens, {n_seq} sequences of {SEQ}", flush=True)

    vocab = -(-n_ids // 64) * 64
    text = text_config(vocab, True, tokens, **{k: v for k, v in ARCH.items() if k != "output_router_logits"})
    config = Qwen3_5MoeConfig(text_config=dict(text, output_router_logits=True),
                              vision_config=dict(VISION, model_type="qwen3_5_moe"), tie_word_embeddings=False,
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
                            lr=2e-3, betas=(0.9, 0.95))
    budget = args.minutes * 60
    start = time.time()
    order = torch.randperm(n_seq, generator=torch.Generator().manual_seed(SEED))
    curve, step, cursor = [], 0, 0
    est_steps = None
    while step < args.max_steps:
        elapsed = time.time() - start
        if elapsed > budget:
            break
        if step == 20:
            est_steps = int(budget / (elapsed / 20))
        total = est_steps or 1000
        lr = 2e-3 * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = order[cursor:cursor + BATCH]
        cursor += BATCH
        if cursor >= n_seq:
            cursor = 0
        out_ = model(input_ids=seqs[idx], labels=targets[idx], use_cache=False)  # transformers shifts the labels
        loss = out_.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 10 == 0:
            aux = float(out_.aux_loss) if getattr(out_, "aux_loss", None) is not None else float("nan")
            curve.append({"step": step, "loss": round(float(loss), 4), "aux_loss": round(aux, 4), "lr": lr,
                          "tokens": (step + 1) * BATCH * SEQ, "minutes": round((time.time() - start) / 60, 2)})
            print(curve[-1], flush=True)
        step += 1
    model.eval()
    save_release(out, model, text, tokens, torch.Generator().manual_seed(SEED))
    (out / "training.json").write_text(json.dumps({
        "seed": SEED, "steps": step, "batch": BATCH, "seq": SEQ, "tokens_seen": step * BATCH * SEQ,
        "train_tokens": int(len(stream)), "minutes": round((time.time() - start) / 60, 1),
        "threads": torch.get_num_threads(), "arch": ARCH, "bpe_vocab": BPE_VOCAB,
        "conversations": N_CONVERSATIONS, "init": args.init, "loss": "assistant turns and code",
        "curve": curve}, indent=1) + "\n")
    print("saved", out, flush=True)


if __name__ == "__main__":
    main()
