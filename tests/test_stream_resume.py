"""A streamed run killed mid-model (SIGKILL, a real process) resumes at its first unfinished block
with the result an uninterrupted run gives, recorded as one run in the catalogue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_stream import METHODS, recipe, tiny_folder

from slimkit import run_recipe
from slimkit.core.catalogue import Catalogue

LAYERS = 8


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("deep") / "model"
    tiny_folder(folder)
    config = LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=LAYERS, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, max_position_embeddings=256, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder, max_shard_size="3MB")
    return folder


def _recipe(name: str):
    return recipe(METHODS[name], calibration={"n_samples": 16, "seq_len": 128})


def _progress(out: Path) -> int:
    for file in out.parent.glob(f".{out.name}.stream-*/progress.json"):
        try:
            return len(json.loads(file.read_text())["blocks"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


@pytest.mark.parametrize("name", ["gptq", "wanda"])
def test_a_killed_streamed_run_resumes_with_the_same_result(name, deep, tmp_path, host):
    whole = run_recipe(_recipe(name), deep, out=tmp_path / "whole", catalogue=False, host=host)
    (tmp_path / "r.yaml").write_text(_recipe(name).to_yaml())
    out = tmp_path / "out"
    env = {**os.environ, "SLIMKIT_CATALOGUE": str(tmp_path / "catalogue.db")}
    command = [sys.executable, "-m", "slimkit", "run", str(tmp_path / "r.yaml"), "-m", str(deep), "--stream",
               "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _progress(out) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    done = _progress(out)
    assert process.returncode == -signal.SIGKILL and 3 <= done < LAYERS and not out.exists(), \
        f"not killed mid-model ({done} of {LAYERS} blocks done)"

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"of {LAYERS} blocks were finished by an interrupted run: resuming after them" in again.stderr
    provenance = json.loads((out / "slimkit.json").read_text())
    assert provenance["content_id"] == whole.steps[0].child_id
    assert provenance["steps"][0]["summary"] == whole.steps[0].summary
    assert not list(tmp_path.glob(".out.stream-*"))  # the checkpoints went with the finished step
    assert not {"progress.json", "hidden.safetensors"} & {p.name for p in out.iterdir()}
    with Catalogue(str(tmp_path / "catalogue.db")) as cat:
        runs = cat.runs()
        assert [run.status for run in runs] == ["done"]
        assert cat.step(whole.steps[0].id).run_id == runs[0].id
