"""transformers' own text model for a spec, built on the meta device (no memory), to check
parameter counts against."""
import pytest


def meta_text_model(spec):
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = {k: v for k, v in spec.raw.items() if not k.startswith("_")}
    config = AutoConfig.for_model(**raw)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config.get_text_config() if "text_config" in raw else config)
