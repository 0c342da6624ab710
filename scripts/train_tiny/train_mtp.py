"""Train the multi-token-prediction (MTP) layer of a trained tiny checkpoint, the text model frozen.

    python scripts/train_tiny/train_mtp.py [--model workbench/checkpoints/tiny] [--minutes 15]

The layer is the one the workbench drafts with (workbench/backends/torch_mtp.py, loaded from the
checkpoint): for each position i it reads the text model's final hidden state h[i] and the next
token t[i+1] and learns to predict t[i+2] through the shared lm_head: by default the text model's
own distribution there (`--target model`), or the data's token (`--target data`). The rows are train.py's
(every conversation whole, code filling the rest), the loss counts what the assistant writes and
the code, as in train.py (tool calls 1x here: the draft should follow the text as it comes).
The text model's weights are not touched: only the `mtp.*` tensors of model.safetensors change.

A run continues from the layer the checkpoint holds (its rounds are kept in order in training.json),
or with `--head-from OTHER` from OTHER's layer and rounds: after the text model was retrained
(train.py writes a fresh, untrained layer), the old layer is a far better start than that one.
Then it measures what matters, on text the model was not trained on: greedy speculative decoding
with 3 drafts on held-out conversations and held-out standard-library files, the share of
drafts accepted at each draft position, and writes it with the settings and loss curve under "mtp"
in training.json (evaluate.py puts it on the model card).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT)]
import data  # noqa: E402
from train import N_CONVERSATIONS, SEED, SEQ, encode_documents, pack_rows, stages  # noqa: E402

BATCH = 4
LR = 2e-3
DRAFTS = 3


def mtp_loss(lm, head, ids: torch.Tensor, weight: torch.Tensor, target: str = "model",
             chain: tuple[float, ...] = (1.0,)) -> torch.Tensor:
    """Weighted cross-entropy of the head's predictions over rows `ids [B, T]` (loss weights `[B, T]`,
    read at the predicted token). Step 1 predicts t[i+2] from (h[i], t[i+1]); step s > 1 predicts
    t[i+s+1] from the head's own step s-1 output and t[i+s], as chained drafts do; `chain` weighs
    the steps (FastMTP-style shared-weight recursion). `target`: "data" learns the text's own token;
    "model" the text model's distribution there (its logits one position earlier), which is what a
    draft is judged against: a verify accepts the text model's choice, not the data's
    (self-distillation, as Medusa-2 and EAGLE train their heads)."""
    from transformers import DynamicCache

    with torch.no_grad():
        hidden = lm.model(input_ids=ids, use_cache=False).last_hidden_state      # [B, T, H]
        teacher = torch.log_softmax(lm.lm_head(hidden).float(), -1) if target == "model" else None
    total, count = 0.0, 0.0
    n = ids.shape[1]
    for b in range(ids.shape[0]):  # the head takes one sequence (its own cache, as when drafting)
        prev = hidden[b, :-1]                                                    # [T - 1, H] at positions 0..
        for s, share in enumerate(chain, start=1):
            # rows j = 0..T-1-s: position j + s - 1, reading (prev[j], t[j + s]), predicting t[j + s + 1]
            out = head(ids[b, s:], prev[:n - s], torch.arange(s - 1, n - 1), DynamicCache())   # [T - s, H]
            logits = head.logits(out[:-1]).float()                                # predicts t[s + 1:]
            w = (weight[b, s + 1:] > 0).float()
            if teacher is None:
                loss = torch.nn.functional.cross_entropy(logits, ids[b, s + 1:], reduction="none")
            else:  # cross-entropy against the teacher's distribution (its KL up to a constant)
                loss = -(teacher[b, s:-1].exp() * torch.log_softmax(logits, -1)).sum(-1)
            total = total + share * (loss * w).sum()
            count += share * float(w.sum())
            prev = out
    return total / max(count, 1.0)


def acceptance(model, prompts: list, max_new_tokens: int = 48) -> dict:
    """Greedy speculative decoding with DRAFTS drafts over `prompts`: drafts proposed and accepted
    at each draft position, summed, and the mean tokens per verify forward."""
    proposed, accepted, steps, tokens = np.zeros(DRAFTS, int), np.zeros(DRAFTS, int), 0, 0
    for p in prompts:
        g = model.generate(p, max_new_tokens=max_new_tokens, ignore_eos=True, thinking=False, speculative=DRAFTS)
        proposed += g.stats.proposed_by_position
        accepted += g.stats.accepted_by_position
        steps += g.stats.verify_steps
        tokens += g.stats.accepted_tokens + g.stats.verify_steps
    return {"prompts": len(prompts), "new_tokens_each": max_new_tokens, "drafts": DRAFTS,
            "proposed_by_position": proposed.tolist(), "accepted_by_position": accepted.tolist(),
            "acceptance_by_position": [round(a / p, 3) if p else None for a, p in zip(accepted, proposed)],
            "tokens_per_verify": round(tokens / max(steps, 1), 3)}


def held_out_prompts(n: int) -> dict[str, list]:
    """Conversation openings (held-out split: other names, phrasings) and the first lines of
    held-out standard-library files."""
    chats = [[{"role": "user", "content": r.text}] for r in data.heldout_requests(n, SEED + 7)]
    _, code = data.stdlib_files()
    rng = random.Random(SEED + 7)
    code = ["\n".join(f.splitlines()[:12]) for f in rng.sample(code, min(n, len(code)))]
    return {"conversations": chats, "code": code}


def save_head(folder: Path, head) -> None:
    """Write the head's tensors into the checkpoint's model.safetensors, under their `mtp.` names."""
    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    state = load_file(weights)
    new = {f"mtp.{k}": v.detach().to(state[f"mtp.{k}"].dtype).contiguous() for k, v in head.state_dict().items()}
    missing = set(new) - set(state)
    assert not missing, missing
    state.update(new)
    save_file({k: v.contiguous() for k, v in sorted(state.items())}, weights, metadata={"format": "pt"})


def carry_head(source: Path, folder: Path) -> tuple[dict, int]:
    """Copy `source`'s mtp.* tensors into `folder`'s model.safetensors (same shapes) -> its MTP
    record (training.json's "mtp": the rounds that trained it) and the stage of the text model
    they were trained against (for the card's retrain commands)."""
    from safetensors.torch import load_file, save_file

    theirs = {k: v for k, v in load_file(source / "model.safetensors").items() if k.startswith("mtp.")}
    weights = folder / "model.safetensors"
    state = load_file(weights)
    wrong = [k for k, v in theirs.items() if k not in state or state[k].shape != v.shape]
    if wrong or not theirs:
        raise SystemExit(f"{source}'s MTP layer does not fit {folder}: {wrong or 'no mtp.* tensors'}")
    state.update(theirs)
    save_file({k: v.contiguous() for k, v in sorted(state.items())}, weights, metadata={"format": "pt"})
    training = json.loads((source / "training.json").read_text())
    return training.get("mtp", {}), len(stages(training))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "workbench" / "checkpoints" / "tiny"))
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--eval-prompts", type=int, default=40)
    ap.add_argument("--chain", default="0.6,0.4", help="loss weight of each chained draft step, comma-separated")
    ap.add_argument("--target", choices=["model", "data"], default="model",
                    help="learn the text model's own next-next distribution (default) or the data's token")
    ap.add_argument("--head-from", default=None,
                    help="start from this checkpoint's MTP layer and rounds (same shapes), not the model's own")
    args = ap.parse_args()
    chain = tuple(float(x) for x in args.chain.split(","))
    from tokenizers import Tokenizer

    import workbench

    random.seed(SEED)
    torch.manual_seed(SEED)
    folder = Path(args.model)
    carried, head_stage = carry_head(Path(args.head_from), folder) if args.head_from else (None, None)
    model = workbench.load(folder, backend="torch", device="cpu", dtype="float32")
    lm, head = model.engine.model, model.engine.mtp
    if head is None:
        raise SystemExit(f"{folder} has no mtp.* weights to train")
    prompts = held_out_prompts(args.eval_prompts)
    before = {k: acceptance(model, v) for k, v in prompts.items()}
    print("before", json.dumps(before), flush=True)

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    code_train, _ = data.stdlib_files()
    chats = data.conversations(N_CONVERSATIONS, SEED + 5)  # another draw than the text model's rows
    rows, weights = pack_rows(encode_documents(tok, chats, eot), encode_documents(tok, code_train, eot), SEQ,
                              random.Random(SEED + 5))
    rows, weights = torch.as_tensor(rows), torch.as_tensor(weights)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(SEED))

    for p in lm.parameters():
        p.requires_grad_(False)
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    head.train()
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    budget, start, step, curve = args.minutes * 60, time.time(), 0, []
    while time.time() - start < budget:
        progress = (time.time() - start) / budget
        lr = args.lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = order[(step * BATCH) % len(rows):][:BATCH]
        loss = mtp_loss(lm, head, rows[idx], weights[idx], args.target, chain)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 10 == 0:
            curve.append({"step": step, "loss": round(loss.item(), 4), "lr": lr,
                          "minutes": round((time.time() - start) / 60, 2)})
            print(curve[-1], flush=True)
        step += 1
    head.eval()
    for p in params:
        p.requires_grad_(False)
    after = {k: acceptance(model, v) for k, v in prompts.items()}
    print("after", json.dumps(after), flush=True)
    save_head(folder, head)
    training = json.loads((folder / "training.json").read_text())
    this = {"steps": step, "batch": BATCH, "seq": SEQ, "lr": args.lr, "minutes": args.minutes, "seed": SEED + 5,
            "text_model": "frozen", "target": args.target, "chain": list(chain), "curve": curve,
            "held_out_acceptance": {"before": before, "after": after}}
    if carried is not None:  # the earlier rounds trained this layer against the text model before this one
        this["head_from"] = Path(args.head_from).name
        this["head_stage"] = head_stage
    # Each run continues from the layer the checkpoint holds: the rounds are kept in order.
    earlier = training.get("mtp", {}) if carried is None else carried
    rounds = earlier.get("rounds", [earlier] if earlier else [])
    training["mtp"] = {"rounds": rounds + [this]}
    (folder / "training.json").write_text(json.dumps(training, indent=1) + "\n")
    print("saved", folder, flush=True)


if __name__ == "__main__":
    main()
