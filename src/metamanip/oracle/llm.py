"""The LLM oracle's decider: a Hugging Face causal LM reads the chat and names the next instruction.

The chat is the setting's environment description (a user/assistant preamble) followed, at every
decision point, by the setting's `lm_feedback` message and the model's reply. The reply should follow
`Explanation: ... Notes: ... Instruction: ...`; the text after the last `Instruction:` is grounded to one
of the episode's feasible tasks (`Grounder`). A reply that cannot be parsed or grounded is logged and
retried with a reminder; after `retries` failures the decider falls back to the scripted decision, so a
garbage-talking model never stops a collection.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping

from metamanip.oracle.grounder import Grounder
from metamanip.oracle.scripted import Decision, ScriptedDecider

log = logging.getLogger(__name__)

ACKNOWLEDGEMENT = "I understand your instructions and will follow the template."
RETRY_REMINDER = ("Your last answer could not be understood. Answer again with the template "
                  "'Explanation: <..> Notes: <..> Instruction: <..>' and pick one of the possible instructions.")


def parse_instruction(reply: str) -> str | None:
    """The instruction of a template reply (text after the last `Instruction:`), or None."""
    if not reply or not re.search(r"instruction\s*:", reply, flags=re.IGNORECASE):
        return None
    tail = re.split(r"instruction\s*:", reply, flags=re.IGNORECASE)[-1]
    tail = tail.strip().splitlines()[0] if tail.strip() else ""
    tail = tail.strip().strip("\"'`*").strip()
    return tail or None


def render_chat(tokenizer: Any, messages: list[Mapping[str, str]]) -> str:
    """The prompt text: the tokenizer's chat template when it has one, else plain `role: content` turns."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    turns = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(turns) + "\nassistant:"


class LLMDecider:
    """Decides with a causal LM (any Hub name or local path); see the module docstring."""

    def __init__(self, model: str, grounder: Grounder | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.8, do_sample: bool = True, retries: int = 2, device: str = "auto",
                 dtype: str = "auto", quantization: str | None = None, max_prompt_tokens: int | None = None,
                 seed: int = 0, fallback: Any = None, grounding_threshold: float = 0.5):
        if not model:
            raise ValueError("oracle.model is empty: give a Hugging Face model name or a local path "
                             "(e.g. oracle.model=google/gemma-2-27b-it)")
        self.model_name = str(model)
        self.grounder = grounder if grounder is not None else Grounder(threshold=grounding_threshold)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.do_sample = bool(do_sample)
        self.retries = int(retries)
        self.device = device
        self.dtype = dtype
        self.quantization = quantization
        self.max_prompt_tokens = max_prompt_tokens
        self.seed = int(seed)
        self.fallback = fallback if fallback is not None else ScriptedDecider()
        self._model = None
        self._tokenizer = None
        self.history: list[dict[str, str]] = []
        self.stats = {"queries": 0, "grounded": 0, "retries": 0, "fallbacks": 0}

    # ---- model ----------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.dtype
        if dtype == "auto":
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        kwargs: dict[str, Any] = {"dtype": dtype}
        if self.quantization == "8bit":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            kwargs["device_map"] = "auto"
        elif self.quantization not in (None, "none"):
            raise ValueError(f"oracle.quantization={self.quantization!r}: use null or '8bit'")
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            model = AutoModelForCausalLM.from_pretrained(self.model_name, **kwargs)
        except OSError as e:
            raise OSError(f"could not load the oracle LM {self.model_name!r}: {e}. Give a local directory with "
                          f"config and weights, or a Hub name on a machine that can reach the Hub") from e
        if "device_map" not in kwargs:
            model = model.to(device)
        model.eval()
        self._model = model
        self._device = device
        log.info("oracle LM %s loaded on %s", self.model_name, device)

    def generate(self, messages: list[Mapping[str, str]]) -> str:
        """The model's reply to a chat."""
        import torch

        self._load()
        tok, model = self._tokenizer, self._model
        prompt = render_chat(tok, messages)
        enc = tok(prompt, return_tensors="pt", add_special_tokens=not getattr(tok, "chat_template", None))
        ids = enc["input_ids"]
        if self.max_prompt_tokens and ids.shape[1] > self.max_prompt_tokens:
            ids = ids[:, -self.max_prompt_tokens:]
        ids = ids.to(self._device)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                                      "attention_mask": torch.ones_like(ids)}
        if self.do_sample:
            gen_kwargs["temperature"] = self.temperature
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if pad is not None:
            gen_kwargs["pad_token_id"] = pad
        torch.manual_seed(self.seed + self.stats["queries"])
        with torch.inference_mode():
            out = model.generate(ids, **gen_kwargs)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

    # ---- decider API ----------------------------------------------------------------------------
    def reset_episode(self, env: Any, info: Mapping[str, Any]) -> None:
        self.history = [dict(m) for m in env.environment_description()]
        if not self.history or self.history[-1].get("role") != "assistant":
            self.history.append({"role": "assistant", "content": ACKNOWLEDGEMENT})
        self.fallback.reset_episode(env, info)

    def decide(self, env: Any, info: Mapping[str, Any]) -> Decision:
        feedback = dict(info["feedback"]["lm_feedback"])
        self.history.append(feedback)
        candidates = sorted({t for t in env.feasible_tasks.values() if t})
        messages = list(self.history)
        for attempt in range(self.retries + 1):
            self.stats["queries"] += 1
            try:
                reply = self.generate(messages)
            except Exception as e:  # a generation error must not stop a collection
                log.warning("oracle LM failed to generate (%s: %s)", type(e).__name__, e)
                reply = ""
            instruction = parse_instruction(reply)
            grounding = self.grounder.ground(instruction, candidates) if instruction else None
            if grounding is not None and grounding.task is not None:
                self.stats["grounded"] += 1
                self.history.append({"role": "assistant", "content": reply})
                return Decision(grounding.task, instruction, reply, "llm")
            log.warning("oracle LM reply %d/%d not usable (%s): %r", attempt + 1, self.retries + 1,
                        "no 'Instruction:'" if instruction is None else f"ungroundable {instruction!r}",
                        reply[:200])
            if attempt < self.retries:
                self.stats["retries"] += 1
                messages = messages + [{"role": "assistant", "content": reply},
                                       {"role": "user", "content": RETRY_REMINDER}]
        self.stats["fallbacks"] += 1
        decision = self.fallback.decide(env, info)
        log.warning("oracle LM gave no usable instruction; falling back to %s", decision.task)
        self.history.append({"role": "assistant", "content": decision.text})
        return Decision(decision.task, decision.instruction, decision.text, "fallback")


def llm_oracle(env: Any = None, model: str = "", grounder: Grounder | None = None, fallback: Any = None,
               **decider_kwargs: Any) -> Any:
    """An `OracleAgent` deciding with an `LLMDecider` (what `oracle=llm` builds; `oracle.model=` picks
    the LM). Keyword arguments go to `LLMDecider`."""
    from metamanip.oracle.agent import OracleAgent

    return OracleAgent(env=env, decider=LLMDecider(model, grounder=grounder, fallback=fallback, **decider_kwargs))
