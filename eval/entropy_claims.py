"""Check the paper's claims 1 and 2 on SFT checkpoints: where does each one keep its token entropy?

    python eval/entropy_claims.py --base outputs/tiny/base --models outputs/tiny/sft-nll outputs/tiny/sft-curiosft

Teacher-forced on held-out demonstrations, every completion token is put in a bucket by the *base* model's entropy
there: "forks" (base entropy >= --fork, where the base was genuinely choosing) and "determined" (base entropy <
--determined). Claim 1: CurioSFT's mean entropy is higher than vanilla SFT's. Claim 2: the difference sits at the
forks, while determined tokens stay about as confident as under vanilla SFT.
"""

import argparse
import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from curiosft_trl.sft.data import load_sft_dataset
from curiosft_trl.sft.losses import entropy_from_logits
from curiosft_trl.tiny.task import TINY_SYSTEM_PROMPT


def completion_entropies(model, tokenizer, rows) -> list[torch.Tensor]:
    """Per-row `(completion tokens,)` entropies (nats) of the next-token distribution, teacher-forced."""
    out = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        ids = tokenizer(full, return_tensors="pt", add_special_tokens=False).input_ids
        start = len(tokenizer(prompt, add_special_tokens=False).input_ids)
        with torch.no_grad():
            logits = model(ids).logits[0, start - 1 : -1].float()
        out.append(entropy_from_logits(logits))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--data", default="outputs/tiny/data/test.jsonl")
    parser.add_argument("--system_prompt", default=TINY_SYSTEM_PROMPT)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--fork", type=float, default=0.5)
    parser.add_argument("--determined", type=float, default=0.1)
    args = parser.parse_args()
    rows = load_sft_dataset(args.data, system_prompt=args.system_prompt, max_samples=args.rows)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    base = torch.cat(completion_entropies(AutoModelForCausalLM.from_pretrained(args.base), tokenizer, rows))
    forks, determined = base >= args.fork, base < args.determined
    print(f"{len(base)} completion tokens: {int(forks.sum())} forks (base H >= {args.fork}), "
          f"{int(determined.sum())} determined (base H < {args.determined})")
    print(f"{'model':40s} {'mean H':>8s} {'H forks':>8s} {'H determined':>13s}")
    results = {}
    for path in [args.base, *args.models]:
        h = base if path == args.base else torch.cat(
            completion_entropies(AutoModelForCausalLM.from_pretrained(path), tokenizer, rows))
        results[path] = {"mean": h.mean().item(), "forks": h[forks].mean().item(),
                         "determined": h[determined].mean().item()}
        r = results[path]
        print(f"{path:40s} {r['mean']:8.3f} {r['forks']:8.3f} {r['determined']:13.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
