"""Parity with the published LLM-CXR: a model trained in its exact format answers the same through llmcxr.

No released weights are downloaded (nothing may be): a small GPT-NeoX is built and trained here in the
official folder layout, and the question is whether ``llmcxr convert official`` + our batched,
constrained generation reproduce, token for token, what the official pipeline produces with it.

1. Tokenizer in dolly-v2's layout: a byte-level BPE with the GPT-NeoX pre-tokenizer, trained offline on
   the prompt text and the reports, padded with unreachable entries to 50,277 tokens, then the four
   Dolly special tokens at 50,277-50,280 (len 50,281); image code c is id 50,281 + c, the embedding has
   51,305 rows.
2. VQ-GAN: a taming-layout RGB checkpoint (random weights, 64 px, 16 x 16 = 256 codes of 1,024) and
   its YAML. The official code's codes for an image: the JPEG decoded by PIL in full, ``convert("RGB")``,
   8-bit Lanczos to ``round(side * 64 / shortest)``, torchvision's crop (offsets rounded), through the
   RGB VQ-GAN -- written out here, independently of ``llmcxr.imaging``.
3. Examples laid out as hyn2028/llm-cxr ``training/trainer.py`` + ``mimiccxr_vq_dataset.py`` lay them out
   (written out here from the facts, not imported): the Dolly string with ``<image>``, tokenized whole,
   the ``image`` token replaced by the codes; loss after ``### Response:\\n``. Trained until greedy
   decoding reproduces every training response.
4. Expected ids: ``model.generate`` (greedy, stop at ``### End``) on the official prompt, as the official
   ``InstructionTextGenerationPipeline`` builds it. Ours: the converted folder through ``LLMCXR`` (greedy),
   the ``llmcxr`` CLI and the ``llmcxr serve`` app. Also recorded: what the prompts llmcxr used before
   this layout existed (piecewise tokenization, no ``<``/``>``) make the same model answer.

    nice -n 10 python benchmarks/official_parity.py     # ~3 min; benchmarks/results/official_parity.json
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from _repo import REPO, shown
from PIL import Image
from tokenizers import Tokenizer
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from llmcxr import atomic
from llmcxr.model.scratch import train_bpe_tokenizer
from llmcxr.vq import VQGAN, VQConfig

# --- the official format, written out from hyn2028/llm-cxr training/consts.py (Dolly's) -------------
INTRO = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
TRAIN_FORMAT = (
    INTRO + "\n\n### Instruction:\n{instruction}\n\nInput:\n{input}\n\n### Response:\n{response}\n\n### End"
)
PROMPT_FORMAT = INTRO + "\n\n### Instruction:\n{instruction}\n\nInput:\n{input}\n\n### Response:\n"
DOLLY_SPECIAL = ["### End", "### Instruction:", "### Response:", "### Response:\n"]
TOKENIZER_LEN, CODEBOOK, TOKENS = 50281, 1024, 256
TO_REPORT = "Generate free-text radiology reports for the entered chest X-ray images."  # lists' first
TO_IMAGE = "Generate a chest X-ray image that corresponds to the entered free-text radiology reports for the chest X-ray image."

REPORTS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "Moderate cardiomegaly. Small left pleural effusion with adjacent atelectasis.",
    "Right lower lobe consolidation, concerning for pneumonia. No pneumothorax.",
]
QUESTIONS = [("Is there cardiomegaly?", "Yes, moderate cardiomegaly."), ("Is there a pneumothorax?", "No.")]
DDCONFIG = {
    "double_z": False, "z_channels": 32, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 16,
    "ch_mult": [1, 2, 4], "num_res_blocks": 1, "attn_resolutions": [16], "dropout": 0.0,
}  # fmt: skip


def dolly_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """GPT-NeoX-style byte-level BPE in dolly-v2's id layout (module docstring, step 1)."""
    base = train_bpe_tokenizer(texts + ["<image>"] * 50, 2000)
    spec = json.loads(base.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    for i in range(len(vocab), 50277):  # GPT-NeoX has 50,277 tokens before Dolly's; no merge reaches these
        vocab[f"<|unused_{i}|>"] = i
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": DOLLY_SPECIAL})
    assert len(tokenizer) == TOKENIZER_LEN, len(tokenizer)
    assert [tokenizer.convert_tokens_to_ids(t) for t in DOLLY_SPECIAL] == [50277, 50278, 50279, 50280]
    assert len(tokenizer("<image>")["input_ids"]) == 3
    return tokenizer


def official_ids(tokenizer, text: str, codes: list[int] | None) -> list[int]:
    """The whole string tokenized; the ``image`` of ``<image>`` replaced by the shifted codes."""
    ids = tokenizer(text)["input_ids"]
    if codes is None:
        return ids
    triple = tokenizer("<image>")["input_ids"]
    at = next(i for i in range(len(ids)) if ids[i : i + 3] == triple)
    return ids[: at + 1] + [TOKENIZER_LEN + c for c in codes] + ids[at + 2 :]


def official_pixels(path: Path) -> torch.Tensor:
    """(3, 64, 64) in [-1, 1] as encode_cxr_all.py prepares an image (module docstring, step 2)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        r = 64 / min(image.size)
        image = image.resize((round(r * image.size[0]), round(r * image.size[1])), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
    top, left = int(round((pixels.shape[0] - 64) / 2.0)), int(round((pixels.shape[1] - 64) / 2.0))
    return torch.from_numpy(pixels[top : top + 64, left : left + 64].copy()).permute(2, 0, 1) * 2 - 1


def make_vq(folder: Path) -> tuple[Path, VQGAN]:
    """A taming-layout RGB VQ-GAN checkpoint + YAML (random weights), and the RGB model itself."""
    torch.manual_seed(0)
    cfg = VQConfig(
        resolution=64, in_channels=3, base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1,
        attn_resolutions=(16,), z_channels=32, codebook_size=CODEBOOK, codebook_dim=8,
        l2_normalized_codes=False, dead_code_threshold=0.0,
    )  # fmt: skip
    rgb = VQGAN(cfg).eval()
    with torch.no_grad():  # spread the code vectors over the range of encoder outputs
        rgb.quantize.embedding.weight.normal_(0, 0.05)
    state = {k: v for k, v in rgb.state_dict().items() if k != "quantize.usage"}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "global_step": 1}, folder / "vqgan.ckpt")
    params = {"embed_dim": 8, "n_embed": CODEBOOK, "ddconfig": DDCONFIG, "lossconfig": {"target": "x"}}
    document = {"model": {"target": "taming.models.vqgan.VQModel", "params": params}}
    (folder / "project.yaml").write_text(yaml.safe_dump(document))
    return folder / "vqgan.ckpt", rgb


def cxr_jpegs(folder: Path, n: int) -> list[Path]:
    """n CXRs as JPEG (the release's input format): real ones from ../shared where present."""
    folder.mkdir(parents=True, exist_ok=True)
    real = sorted((REPO.parent / "shared" / "data" / "cxr-real" / "images").glob("*.png"))[:n]
    paths = []
    for i in range(n):
        if i < len(real):
            image = Image.open(real[i]).convert("L")
        else:
            image = Image.fromarray(np.random.default_rng(i).integers(0, 256, (300, 280), dtype=np.uint8))
        paths.append(folder / f"cxr{i}.jpg")
        image.save(paths[-1], quality=92)
    return paths


def train(model, examples: list[tuple[list[int], int]], steps: int, log: list) -> None:
    """Full-batch AdamW on (ids, prompt length) pairs, loss on the response only."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for row, (seq, prompt) in enumerate(examples):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, prompt : len(seq)] = torch.tensor(seq[prompt:])
        mask[row, : len(seq)] = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    scored = labels[:, 1:] != -100  # (B, L-1): positions whose next token is in a response
    targets = labels[:, 1:][scored]
    for step in range(steps):
        # the 51k-way output layer only where a response token is predicted (the loss HF computes)
        hidden = model.gpt_neox(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][scored]
        loss = torch.nn.functional.cross_entropy(model.get_output_embeddings()(hidden), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done = loss.item() < 1e-3  # every response memorised well past greedy ties
        if step % 25 == 0 or step == steps - 1 or done:
            log.append({"step": step, "loss": round(loss.item(), 5)})
            print(f"step {step} loss {loss.item():.5f}", flush=True)
        if done:
            break
    model.eval()


@torch.no_grad()
def official_generate(model, prompt: list[int], end: int, max_new: int) -> list[int]:
    """model.generate, greedy, stopping at ``### End`` (the official pipeline with do_sample=False)."""
    out = model.generate(
        torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new, eos_token_id=end, pad_token_id=0
    )
    new = out[0, len(prompt) :].tolist()
    return new[: new.index(end)] if end in new else new


def cli(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "llmcxr.cli", *args, "--json"],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "official_parity")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "official_parity.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    work = args.work
    lm, vq_dir = work / "release" / "lm", work / "release" / "vq"

    # 1-2: tokenizer, VQ-GAN, images and their codes as the official code computes them
    tokenizer = dolly_tokenizer(
        [INTRO, TO_REPORT, TO_IMAGE, "Input:\n", *REPORTS, *(q + " " + a for q, a in QUESTIONS)]
    )
    end, response_nl = tokenizer.convert_tokens_to_ids(["### End", "### Response:\n"])
    ckpt, rgb = make_vq(vq_dir)
    images = cxr_jpegs(work / "images", len(REPORTS))
    with torch.no_grad():
        codes = [rgb.encode(official_pixels(p)[None]).reshape(-1).tolist() for p in images]

    # 3: the official training examples, the official model trained on them
    examples = []
    for report, image_codes in zip(REPORTS, codes, strict=True):
        examples.append(
            (TRAIN_FORMAT.format(instruction=TO_REPORT, input="<image>", response=report), image_codes)
        )
        examples.append(
            (TRAIN_FORMAT.format(instruction=TO_IMAGE, input=report, response="<image>"), image_codes)
        )
    for (question, answer), image_codes in zip(QUESTIONS, codes, strict=False):
        examples.append(
            (TRAIN_FORMAT.format(instruction=question, input="<image>", response=answer), image_codes)
        )
    encoded = [official_ids(tokenizer, text, image_codes) for text, image_codes in examples]
    pairs = [(ids, ids.index(response_nl) + 1) for ids in encoded]
    config = GPTNeoXConfig(
        vocab_size=TOKENIZER_LEN + CODEBOOK, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config)
    log: list[dict[str, Any]] = []
    train(model, pairs, args.steps, log)
    lm.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(lm)
    tokenizer.save_pretrained(lm)
    torch.save(model.state_dict(), lm / "pytorch_model.bin")  # as DeepSpeed's zero_to_fp32.py leaves it

    # 4: expected ids from the official prompts; ours from the converted folder
    tasks = []
    for report, image_codes in zip(REPORTS, codes, strict=True):
        tasks.append(
            ("report", PROMPT_FORMAT.format(instruction=TO_REPORT, input="<image>"), image_codes, report)
        )
        tasks.append(("image", PROMPT_FORMAT.format(instruction=TO_IMAGE, input=report), None, image_codes))
    for (question, answer), image_codes in zip(QUESTIONS, codes, strict=False):
        tasks.append(
            ("vqa", PROMPT_FORMAT.format(instruction=question, input="<image>"), image_codes, answer)
        )
    expected = []
    for _, prompt, image_codes, _ in tasks:
        new = official_generate(model, official_ids(tokenizer, prompt, image_codes), end, 300)
        expected.append(new)
    trained = {
        "responses_reproduced": sum(
            (e[1 : 1 + TOKENS] == [TOKENIZER_LEN + c for c in t])
            if k == "image"
            else (tokenizer.decode(e).strip() == t)
            for (k, _, _, t), e in zip(tasks, expected, strict=True)
        ),
        "of": len(tasks),
    }
    print("official greedy reproduces its training responses:", trained, flush=True)

    from llmcxr.generation import LLMCXR, SamplingConfig
    from llmcxr.training.official import convert_official

    folder = work / "converted"
    summary = convert_official(lm, ckpt, folder)
    llm = LLMCXR.from_pretrained(folder, device="cpu", dtype=torch.float32)
    greedy = SamplingConfig(do_sample=False, max_new_tokens=300)
    reports = llm.report(images, sampling=greedy)
    drawn = llm.generate_image(REPORTS, sampling=greedy)
    answers = [llm.answer(images[i], q, sampling=greedy) for i, (q, _) in enumerate(QUESTIONS)]
    ours = {"report": [r.tokens for r in reports], "vqa": [a.tokens for a in answers]}
    ours["image"] = [[TOKENIZER_LEN + int(c) for c in d.image_tokens.reshape(-1)] for d in drawn]
    input_codes = [llm.encode_images([p])[0].tolist() for p in images]

    rows, counts = (
        [],
        {
            k: {"match": 0, "tokens": 0, "examples_exact": 0, "examples": 0}
            for k in ("report", "image", "vqa")
        },
    )
    seen = {"report": 0, "image": 0, "vqa": 0}
    for (kind, _, _, _), want in zip(tasks, expected, strict=True):
        got = ours[kind][seen[kind]]
        seen[kind] += 1
        if kind == "image":  # official: '<' + codes + '>' + '\n\n' before ### End; the codes are compared
            want = [t for t in want if t >= TOKENIZER_LEN]
        same = sum(a == b for a, b in zip(got, want, strict=False)) if len(got) == len(want) else 0
        counts[kind]["match"] += same
        counts[kind]["tokens"] += len(want)
        counts[kind]["examples_exact"] += int(got == want)
        counts[kind]["examples"] += 1
        rows.append(
            {"task": kind, "expected_tokens": len(want), "ours_tokens": len(got), "exact": got == want}
        )

    # the CLI and the server give the ids the Python API gave
    model_arg = ["--model", str(folder), "--greedy", "--threads", "1"]
    cli_report = cli("report", str(images[0]), *model_arg, "--max-new-tokens", "300")
    cli_image = cli("image", REPORTS[1], *model_arg, "--out", str(work / "cli.png"))
    cli_vqa = cli("ask", str(images[0]), QUESTIONS[0][0], *model_arg, "--max-new-tokens", "300")
    from fastapi.testclient import TestClient

    from llmcxr.serve import ServeConfig, build_app

    with TestClient(build_app(ServeConfig(model=folder, ui=False, max_new_tokens=300), model=llm)) as client:
        with open(images[0], "rb") as f:
            served_report = client.post(
                "/v1/report", files={"image": ("cxr0.jpg", f.read())}, data={"greedy": "true"}
            ).json()
        with open(images[0], "rb") as f:
            served_vqa = client.post(
                "/v1/answer",
                files={"image": ("cxr0.jpg", f.read())},
                data={"question": QUESTIONS[0][0], "greedy": "true"},
            ).json()
        served_image = client.post("/v1/image", json={"report": REPORTS[1], "greedy": True})
    served_pixels = np.asarray(Image.open(io.BytesIO(served_image.content)))
    front_ends = {
        "cli_report_ids_equal_api": cli_report["tokens"] == ours["report"][0],
        "cli_image_codes_equal_api": cli_image["image_tokens"] == drawn[1].image_tokens.tolist(),
        "cli_vqa_ids_equal_api": cli_vqa["tokens"] == ours["vqa"][0],
        "serve_report_ids_equal_api": served_report["tokens"] == ours["report"][0],
        "serve_vqa_ids_equal_api": served_vqa["tokens"] == ours["vqa"][0],
        "serve_image_pixels_equal_api": bool(np.array_equal(served_pixels, np.asarray(drawn[1].image))),
    }

    # before this layout: the prompts llmcxr built (piecewise ids, no '<'/'>' around the block)
    from llmcxr.prompt import PromptParts, encode_parts

    old_map = dataclasses.replace(llm.image_tokens, prompt_layout="llmcxr")
    old_codes = 0
    for report, image_codes in zip(REPORTS, codes, strict=True):
        prompt = encode_parts(PromptParts(TO_IMAGE, report), llm.tokenizer, old_map).input_ids
        new = official_generate(model, prompt, end, TOKENS + 1)[:TOKENS]
        old_codes += sum(a == TOKENIZER_LEN + b for a, b in zip(new, image_codes, strict=False))

    result = {
        "command": "python benchmarks/official_parity.py",
        "what": __doc__.split("\n\n")[0],
        "tokenizer": {
            "len": len(tokenizer),
            "dolly_special_ids": [50277, 50278, 50279, 50280],
            "first_image_id": TOKENIZER_LEN,
        },
        "model": {
            "parameters": sum(p.numel() for p in model.parameters()),
            "embedding_rows": config.vocab_size,
        },
        "training": {
            "examples": len(pairs),
            "steps": args.steps,
            "log": log,
            "greedy_reproduces_training": trained,
        },
        "input_codes_equal_official_path": sum(
            a == b for x, y in zip(input_codes, codes, strict=True) for a, b in zip(x, y, strict=True)
        ),
        "input_codes_total": TOKENS * len(codes),
        "parity": {
            k: v | {"token_match_rate": round(v["match"] / max(1, v["tokens"]), 4)} for k, v in counts.items()
        },
        "rows": rows,
        "front_ends": front_ends,
        "before_this_layout": {
            "image_codes_matching_training": old_codes,
            "of": TOKENS * len(REPORTS),
            "what": "greedy report -> CXR codes when the same model gets llmcxr's piecewise prompt (no < > wrapper)",
        },
        "conversion": {
            k: summary[k]
            for k in ("prompt_layout", "tensors", "parameters", "tokenizer_tokens", "embedding_rows")
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "work": shown(work),
    }
    atomic.write_json(args.out, result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "parity",
                    "front_ends",
                    "before_this_layout",
                    "input_codes_equal_official_path",
                    "wall_s",
                )
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
