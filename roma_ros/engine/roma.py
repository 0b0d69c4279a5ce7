"""RomaModel: the streaming ROMA runtime (Qwen2.5-Omni Thinker + speak head) on upstream transformers.

Per unit: encode (vision tower + audio tower, unit_encoder.py) -> chunked TMRoPE positions for the
new unit only, offset by the running maximum (positions.py) -> ONE prefill of the unit's tokens
through the HF text model on the persistent, bounded KV cache (kv_cache.py) -> speak probability
from the K=4 layer mix at `<|vision_eos|>` (speak_head.py). The past is never recomputed.

Context layout (all scaffolding strings come from the model profile's PromptConfig):
    prefix (system turn + opening user turn)         pinned
    standing instructions                            pinned, appended where they were set
    unit unit unit ... [query text] unit             evictable, oldest first
    assistant_prefix seg1 <|endoftext|> unfinished_close unit continue_prefix seg2 <|im_end|> resume_user unit ...
(roma-release closes the turn after an unfinished segment and opens a new assistant turn after the
next unit; roma-tiny has both strings empty: docs/model.md section 5.)

Answers: `respond()` (the caller's decision rule fired) or a text query (`ask()`), answered at the
next unit boundary by default (`answer_policy="forced"`, the released evaluation's rule) or at the
first unit whose speak probability passes `query_threshold` (`"gated"`). Generation runs in
segments (generation.py); an unfinished answer continues automatically after the next unit, and
its chunks come back in that unit's `UnitResult.chunks` (and through `on_text`). Queries asked
while an answer is running are inserted when it finishes. Spoken queries need nothing special:
they are inside the audio.

The runtime (runtime.py) does all the math: the HF modules on torch (visual, audio_tower,
language_model, lm_head), exported graphs on ONNX Runtime / TensorRT. This file only orders
calls, passes `position_ids` (3, 1, n) and an explicit attention mask, and owns the cache, so
every backend streams identically.
"""
from __future__ import annotations

import logging
import math
import string
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from roma_ros.core.unit import Unit
from roma_ros.engine.config import EngineConfig, PromptConfig
from roma_ros.engine.generation import Response, decode_segment, visible_text
from roma_ros.engine.interface import StreamingModel, TextChunk, UnitRefused, UnitResult
from roma_ros.engine.kv_cache import BoundedKVCache
from roma_ros.engine.positions import text_positions, unit_positions
from roma_ros.engine.runtime import Runtime, TorchRuntime
from roma_ros.engine.speak_head import SpeakHead
from roma_ros.engine.turns import Question, Turn, Turns
from roma_ros.engine.unit_encoder import EncodedUnit, SpecialIds, UnitEncoder, read_preprocessor_config

log = logging.getLogger(__name__)


class RomaModel(StreamingModel):
    """The ROMA implementation of StreamingModel. Build with `RomaModel.load(config)` or directly
    from an in-memory thinker + speak head (tests, benchmarks)."""

    def __init__(self, config: EngineConfig, thinker, speak_head: SpeakHead | None, tokenizer,
                 prompt: PromptConfig | None = None, profile: bool = False, trace: bool = False,
                 runtime: Runtime | None = None):
        """`thinker` and `speak_head` are the torch modules (None with another `runtime`)."""
        config.validate()
        self.config = config
        if runtime is None:
            thinker = thinker.eval().requires_grad_(False)
            speak_head = speak_head.to(thinker.device).float().eval().requires_grad_(False)
            runtime = TorchRuntime(thinker, speak_head)
        self.runtime = runtime
        self.thinker = thinker
        self.head = speak_head
        self._speak_override = None  # an overlay head deciding for every task, else the runtime's
        self.speak_head_source = "checkpoint"
        self._task_heads: dict[str, SpeakHead] = {}  # instruction -> the tuned head deciding for it
        self.anchor_states: torch.Tensor | None = None  # (K, 1, H): the speak head's input of the last unit
        if isinstance(runtime, TorchRuntime):  # the HF text model, for reference forwards
            self.lm, self.lm_head = runtime.lm, runtime.lm_head
        self.device = runtime.device
        self.dtype = runtime.dtype
        self.tokenizer = tokenizer
        model_profile = config.resolve_profile()
        if prompt is not None:  # an explicit scaffolding (tests, benchmarks) replaces the profile's
            model_profile.prompt, model_profile.prompt_source = prompt, "caller"
            model_profile.warnings = [w for w in model_profile.warnings if "system prompt" not in w]
        for warning in model_profile.warnings:
            log.warning(warning)
        log.info(model_profile.describe())
        self.model_profile = model_profile
        self.prompt = prompt = model_profile.prompt
        self.special = SpecialIds.from_config(runtime.config, tokenizer)
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self._control_ids = {int(i) for i in added} | set(getattr(tokenizer, "all_special_ids", []) or [])
        self._control_strings = [str(getattr(t, "content", t)) for t in added.values()]
        self._check_special_ids()
        tcfg = runtime.config.text_config
        self.max_position_embeddings = int(tcfg.max_position_embeddings)
        limit = config.position_limit or (self.max_position_embeddings - 1)
        if limit >= self.max_position_embeddings:
            raise ValueError(f"position_limit {limit} must be < max_position_embeddings {self.max_position_embeddings}")
        head_dim = getattr(tcfg, "head_dim", None) or tcfg.hidden_size // tcfg.num_attention_heads
        self.cache = BoundedKVCache(tcfg.num_hidden_layers, tcfg.num_key_value_heads, head_dim,
                                    config.max_context_tokens, runtime.inv_freq, limit,
                                    dtype=self.dtype, device=self.device)
        self.encoder = UnitEncoder(runtime, self.special, read_preprocessor_config(config.model_path),
                                   config.frames_per_unit, config.blank_frame_hw, keep_inputs=trace,
                                   time_it=profile, profile=model_profile, seed=config.seed)
        self.profile = profile
        self.trace = trace
        self.trace_log: list[dict] = []  # with trace=True: every forward's embeds/positions/kind
        self.logits_processor = None
        self.on_text = None
        self._ids = {name: self._encode(getattr(prompt, name)) for name in
                     ("assistant_prefix", "resume_user", "unfinished_marker", "unfinished_close",
                      "continue_prefix")}
        end = self._encode(prompt.end_token)
        if len(end) != 1:
            raise ValueError(f"end_token {prompt.end_token!r} must be one token, got {end}")
        self.end_id = end[0]
        self._skip_ids = set(self._ids["unfinished_marker"]) | {self.end_id}
        self._instruction_groups: list[tuple[str, int]] = []  # (text, cache group), in stream order
        self.turns = Turns()
        self._start_stream()

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, config: EngineConfig, profile: bool = False) -> "RomaModel":
        from roma_ros.engine.checkpoint import load_thinker, load_tokenizer

        if not config.model_path:
            raise ValueError("EngineConfig.model_path is empty")
        config.validate()
        torch.manual_seed(config.seed)
        thinker, gate, info = load_thinker(config.model_path, config.torch_dtype(), config.device,
                                           config.attn_implementation)
        layer_ids = config.gate_layer_ids or info.gate_layer_ids
        head = SpeakHead.from_gate_tensors(gate, thinker.config.text_config.hidden_size, layer_ids,
                                           config.head_variant)
        if info.gate_hidden_dim and head.variant == "mlp" and head.fc1.out_features != info.gate_hidden_dim:
            raise ValueError(f"gate_hidden_dim {info.gate_hidden_dim} != fc1 size {head.fc1.out_features}")
        return cls(config, thinker, head, load_tokenizer(config.model_path), profile=profile)

    @classmethod
    def from_runtime(cls, config: EngineConfig, runtime: Runtime) -> "RomaModel":
        """A model on an exported backend (ONNX Runtime, TensorRT): tokenizer and prompt from the
        checkpoint directory, all compute in `runtime`."""
        from roma_ros.engine.checkpoint import load_tokenizer

        config.validate()
        return cls(config, None, None, load_tokenizer(config.model_path), runtime=runtime)

    def use_speak_head(self, head: SpeakHead, source: str, instructions: list[str] | None = None) -> None:
        """Decide with `head` (a tuned overlay, engine/head_overlay.py), on every backend: the
        head is tiny and runs in torch on the runtime's layer states. `instructions` None: it
        replaces the checkpoint's head for every task; else it decides only for tasks with one of
        these instructions (UnitResult.task_probs), and the checkpoint's head for the others."""
        head = head.float().eval().requires_grad_(False)
        if instructions is None:
            self._speak_override = lambda states: head(states.float().cpu())
        else:
            for text in instructions:
                self._task_heads[text] = head
        self.speak_head_source = source
        log.info("speak head: %s", source)

    def _check_special_ids(self):
        tok = self.tokenizer
        for name, t in (("vision_bos", "<|vision_bos|>"), ("vision_eos", "<|vision_eos|>"),
                        ("audio_bos", "<|audio_bos|>"), ("audio_eos", "<|audio_eos|>"),
                        ("video", "<|VIDEO|>"), ("audio", "<|AUDIO|>")):
            tid = tok.convert_tokens_to_ids(t)
            if tid is not None and tid != tok.unk_token_id and tid != getattr(self.special, name):
                log.warning("tokenizer id of %s is %s but the model config says %s: using the config",
                            t, tid, getattr(self.special, name))

    def _encode(self, text: str) -> list[int]:
        """Scaffolding (ours or the profile's): control tokens such as <|im_end|> are parsed."""
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def _encode_plain(self, text: str) -> list[int]:
        """Text from outside (instructions, questions): a control token's spelling stays text."""
        if not text:
            return []
        ids = list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        if self._control_ids.intersection(ids):  # a tokenizer that ignores split_special_tokens
            raise ValueError("the tokenizer turned user text into control tokens; refusing it")
        return ids

    def _encode_user(self, template: str, **fields: str) -> list[int]:
        """`template` filled with user text, which can never become control tokens. Encoded as one
        string when the template itself has none (the tokens training saw); otherwise the
        template's pieces as scaffolding and the user text as plain text."""
        if not any(control in template for control in self._control_strings):
            return self._encode_plain(template.format(**fields))
        ids: list[int] = []
        for literal, name, _spec, _conversion in string.Formatter().parse(template):
            ids += self._encode(literal)
            if name is not None:
                ids += self._encode_plain(fields[name])
        return ids

    # ---- low-level forwards -----------------------------------------------------------------
    def _sync(self):
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def _forward(self, embeds: torch.Tensor, positions: np.ndarray, gid: int, kind: str,
                 hidden: bool = False, token_ids=None):
        """Append n tokens; returns (speak-head layer states at the last token or None, info)."""
        order = self.cache.counter
        info = self.cache.append(positions, gid)
        states = self.runtime.step(embeds, info, self.cache, head_states=hidden)
        if self.trace:
            self.trace_log.append({"kind": kind, "order": order, "embeds": embeds.detach().clone(),
                                   "positions": info.positions.copy(),
                                   "token_ids": None if token_ids is None else list(token_ids)})
        return states, info

    def _feed_ids(self, ids: list[int], gid: int, kind: str):
        if not ids:
            return None
        t = torch.tensor(ids, device=self.device)
        pos, _ = text_positions(self.cache.next_start, len(ids))
        return self._forward(self.runtime.embed(t)[None], pos, gid, kind, token_ids=ids)

    @torch.no_grad()
    def next_token_logits(self) -> torch.Tensor:
        """Logits for the token after everything fed so far (float32, (vocab,))."""
        return self.runtime.next_logits()

    def _step(self, ids: list[int]) -> torch.Tensor:
        self._feed_ids(ids, self.turns.response.gid, "answer")
        return self.next_token_logits()

    # ---- stream lifecycle -----------------------------------------------------------------------
    def _start_stream(self):
        self.cache.clear()
        self.encoder.reset()
        # instructions set during an answer cut short by the restart are the standing ones now
        held_instructions = self.turns.held_instructions
        self.turns = Turns()
        self._last_prob = 0.0
        self._last_unit = -1
        self._n_units = 0
        self._response_count = 0
        gid = self.cache.new_group("prefix", pinned=True)
        prefix = self._encode(self.prompt.prefix_template.format(system=self.prompt.system_prompt))
        self._prefix_tokens = len(prefix)
        self._feed_ids(prefix, gid, "prefix")
        instructions = held_instructions if held_instructions is not None else self._instructions
        self._instruction_groups = []  # their groups were cleared
        self._insert_instructions(instructions)

    def _instruction_ids(self, text: str) -> list[int]:
        return self._encode_user(self.prompt.instruction_template, instruction=text)

    def _insert_instructions(self, texts: list[str]):
        """Make the pinned instructions `texts`: instructions that stay keep their place and
        positions, removed ones are dropped, new ones are appended at the end of the stream."""
        wanted = Counter(texts)
        kept: list[tuple[str, int]] = []
        for text, gid in self._instruction_groups:
            if wanted[text] > 0:
                wanted[text] -= 1
                kept.append((text, gid))
            else:
                self.cache.drop_group(gid)
        self._instruction_groups = kept
        for text in texts:  # `wanted` now counts the ones not in the cache yet
            if wanted[text] == 0:
                continue
            wanted[text] -= 1
            gid = self.cache.new_group("instruction", pinned=True)
            try:
                self._feed_ids(self._instruction_ids(text), gid, "instruction")
            except Exception:
                self.cache.drop_group(gid)
                raise
            self._instruction_groups.append((text, gid))

    @property
    def _instructions(self) -> list[str]:
        return [text for text, _ in self._instruction_groups]

    def reset(self) -> None:
        self._start_stream()

    def set_instructions(self, instructions: list[str]) -> None:
        """ValueError, changing nothing, when the instructions would pin more than half of
        `max_context_tokens` (the rest must hold units and answers)."""
        pinned = self._prefix_tokens + sum(len(self._instruction_ids(t)) for t in instructions)
        limit = self.cache.capacity // 2
        if pinned > limit:
            raise ValueError(f"the standing instructions would pin {pinned} tokens with the prompt; at most "
                             f"{limit} (half of max_context_tokens) may be pinned: shorten or clear tasks")
        if self.turns.set_instructions(instructions):
            self._insert_instructions(list(instructions))

    @property
    def answering(self) -> bool:
        return self.turns.state is Turn.ANSWERING

    # ---- units ------------------------------------------------------------------------------
    @torch.no_grad()
    def ingest(self, unit: Unit) -> UnitResult:
        t0 = time.perf_counter()
        enc = self.encoder.encode(unit)
        self._sync()
        return self.ingest_encoded(enc, unit.index, t0)

    @torch.no_grad()
    def ingest_encoded(self, enc: EncodedUnit, index: int, t0: float | None = None) -> UnitResult:
        """The LM half of `ingest`: append an already encoded unit (benchmarks and long tests
        reuse encodings; positions are assigned here, from the running maximum)."""
        t1 = time.perf_counter()
        t0 = t1 if t0 is None else t0
        if not bool(torch.isfinite(enc.embeds).all()):
            raise UnitRefused("nonfinite_features", f"unit {index}: its encoded features are not finite; "
                                                    f"it was not added to the context")
        positions, _, _ = unit_positions(self.cache.next_start, enc.layout)
        gid = self.cache.new_group("unit")
        states, info = self._forward(enc.embeds, positions, gid, "unit", hidden=True, token_ids=enc.token_ids)
        self._sync()
        t2 = time.perf_counter()
        self.anchor_states = states
        prob = float((self._speak_override or self.runtime.speak_prob)(states)[0])
        self._sync()
        if not math.isfinite(prob):
            self._refuse_poisoned(gid, index, prob)
        task_probs = {text: float(self._task_heads[text](states.float().cpu())[0])
                      for text in self._instructions if text in self._task_heads} if self._task_heads else {}
        t3 = time.perf_counter()
        if self.trace:
            self.trace_log[-1].update(pixel_values=enc.pixel_values, input_features=enc.input_features,
                                      grid=(enc.layout.grid_t, enc.layout.grid_h, enc.layout.grid_w), prob=prob)
        self._last_prob, self._last_unit = prob, index
        self._n_units += 1
        evicted, rebased = info.evicted_tokens, info.rebased

        chunks: list[TextChunk] = []
        if self.answering:
            self._feed_ids(self._ids["continue_prefix"], self.turns.response.gid, "answer")
            chunks += self._segment()
        elif (q := self.turns.next_question(prob, self.config.query_threshold)) is not None:
            chunks += self._begin_response(q.query_id, q.gid)
        t4 = time.perf_counter()
        timings = dict(enc.timings_ms)
        timings.update(prefill=(t2 - t1) * 1e3, head=(t3 - t2) * 1e3, decode=(t4 - t3) * 1e3,
                       encode_total=(t1 - t0) * 1e3, total=(t4 - t0) * 1e3)
        return UnitResult(index, prob, chunks, self.answering, self.cache.used, evicted, rebased,
                          int(self.cache.max_pos or 0), timings, list(enc.notes), task_probs)

    def _refuse_poisoned(self, gid: int, index: int, prob: float) -> None:
        """A unit gave a non-finite speak probability: take its keys/values out again, and if the
        context still holds non-finite state, start the stream over (instructions stay)."""
        self.cache.drop_group(gid)
        if self.cache.is_finite():
            raise UnitRefused("nonfinite_state", f"unit {index}: speak probability {prob}; the unit was "
                                                 f"taken out of the context")
        self.reset()
        raise UnitRefused("nonfinite_state", f"unit {index}: speak probability {prob} and non-finite "
                                             f"state in the context; the context was restarted", restarted=True)

    # ---- responses --------------------------------------------------------------------------
    def respond(self, response_id: str = "") -> list[TextChunk]:
        if self.answering:
            return []
        q = self.turns.next_question(None, 0.0)  # the model answers whatever question is waiting
        if q is not None:
            return self._begin_response(q.query_id or response_id, q.gid)
        return self._begin_response(response_id, self.cache.new_group("answer", active=True))

    def ask(self, text: str, query_id: str = "", gated: bool | None = None) -> None:
        gated = (self.config.answer_policy == "gated") if gated is None else bool(gated)
        q = Question(query_id, text, gated)
        if self.turns.ask(q):
            self._insert_query(q)

    def _insert_query(self, q: Question):
        q.gid = self.cache.new_group("query", active=True)
        self._feed_ids(self._encode_user(self.prompt.query_template, query=q.text), q.gid, "query")
        self.turns.inserted(q)

    def _begin_response(self, query_id: str, gid: int) -> list[TextChunk]:
        self.cache.set_active(gid, True)
        self.turns.start(Response(query_id, gid))
        self._response_count += 1
        self._feed_ids(self._ids["assistant_prefix"], gid, "answer")
        return self._segment()

    def _segment(self) -> list[TextChunk]:
        r = self.turns.response
        res = decode_segment(self.next_token_logits(), self._step, max_tokens=self.config.segment_tokens,
                             end_id=self.end_id, marker_ids=self._ids["unfinished_marker"],
                             resume_ids=self._ids["resume_user"], generated=r.tokens,
                             budget=self.config.max_answer_tokens - len(r.tokens),
                             logits_processor=self.logits_processor)
        pending = res.pending if res.finished else res.pending + self._ids["unfinished_close"]
        self._feed_ids(pending, r.gid, "answer")
        r.tokens += res.new_tokens
        r.segments += 1
        text = visible_text(self.tokenizer, r.tokens, self._skip_ids)
        # hold back an incomplete multi-byte character until the next segment
        if not res.finished and text.endswith("\ufffd"):
            text = text.rstrip("\ufffd")
        delta = text[len(r.emitted):] if text.startswith(r.emitted) else text
        r.emitted = text
        chunk = TextChunk(r.query_id, delta, res.finished, self._last_unit, list(res.new_tokens), r.segments - 1)
        if res.finished:
            r.finished = True
            self.cache.set_active(r.gid, False)
            held = self.turns.finish()
            if held.instructions is not None:
                self._insert_instructions(held.instructions)
            for q in held.questions:
                self._insert_query(q)
        if self.on_text is not None:
            self.on_text(chunk)
        return [chunk]

    # ---- diagnostics ------------------------------------------------------------------------
    def stats(self) -> dict:
        s = self.cache.stats()
        s.update(units=self._n_units, responses=self._response_count, answering=self.answering,
                 waiting_queries=self.turns.pending_questions, last_prob=self._last_prob)
        return s
