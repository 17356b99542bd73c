"""Convert the embedded SmolLM2-135M GGUF file into a Hugging Face model directory (once, at setup),
for servers that load HF-format models (vLLM). Runs with .venv-vllm's python (transformers + gguf).

    .venv-vllm/bin/python scripts/convert_gguf_to_hf.py GGUF_PATH OUT_DIR

transformers dequantises the Q4_1 weights to float32 (`from_pretrained(..., gguf_file=...)`); the
tokenizer and the chat template come from the same file, so the HF copy is the same model as the
one llama.cpp serves, up to the 4-bit quantisation being undone (not redone).
"""

import pathlib
import sys


def main() -> None:
    gguf, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    # the weights are dequantised already; transformers still marks the model "GGUF-quantised" and
    # refuses save_pretrained, so write the config (without that mark) and the tensors ourselves
    from safetensors.torch import save_file

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = "float32"
    config.architectures = [type(model).__name__]  # not in the GGUF-derived config; servers need it
    config.save_pretrained(out)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
