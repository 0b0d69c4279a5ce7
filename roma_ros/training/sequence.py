"""Training sequences laid out exactly as the runtime (roma_ros.engine.roma.RomaModel) lays out a
stream: the same scaffolding strings encoded piece by piece, the same unit layout and chunked
TMRoPE positions (roma_ros.engine.positions), the same order of units, queries and answers.

    prefix (system turn + user turn)  | instruction lines | unit 0 | unit 1 | [query text] | unit k |
    assistant_prefix answer <|im_end|> resume_user | unit k+1 | ...

A query asked during unit k enters after unit k; its answer follows unit k+1 (the engine's
"forced" answer policy). A narration follows the unit it describes. Speak-head labels sit on each
unit's last token (<|vision_eos|>); the LM loss covers the answer tokens and their <|im_end|>.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from roma_ros.engine.config import PromptConfig
from roma_ros.engine.positions import UnitLayout, text_positions, unit_positions


@dataclass
class EncodedStream:
    """A stream's units after the (frozen) towers: token ids and tower features per unit."""

    token_ids: list[np.ndarray]  # per unit (n,) placeholder ids
    features: list[torch.Tensor]  # per unit (n, H): tower rows at VIDEO/AUDIO slots (others unused)
    layouts: list[UnitLayout]


@dataclass
class Plan:
    """What surrounds the units: instructions, queries (after unit k), answers (after unit k)."""

    instructions: list[str] = field(default_factory=list)
    queries: dict[int, str] = field(default_factory=dict)  # unit index -> query text inserted after it
    answers: dict[int, str] = field(default_factory=dict)  # unit index -> answer text spoken after it
    labels: np.ndarray | None = None  # per-unit speak labels (None: no head loss)


@dataclass
class Sequence:
    ids: torch.Tensor  # (n,) token ids (placeholders at unit slots)
    mm_mask: torch.Tensor  # (n,) bool: rows taken from tower features
    mm_features: torch.Tensor  # (m, H)
    positions: torch.Tensor  # (3, 1, n)
    targets: torch.Tensor  # (n,) next-token targets for the LM loss (-100: none)
    gate_index: torch.Tensor  # (units,) index of each unit's last token
    labels: torch.Tensor | None


class SequenceBuilder:
    def __init__(self, tokenizer, prompt: PromptConfig, video_id: int, audio_id: int):
        self.tok = tokenizer
        self.prompt = prompt
        self.video_id, self.audio_id = video_id, audio_id
        self._cache: dict[str, list[int]] = {}
        end = self.enc(prompt.end_token)
        assert len(end) == 1
        self.end_id = end[0]

    def enc(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = list(self.tok.encode(text, add_special_tokens=False)) if text else []
        return self._cache[text]

    def build(self, stream: EncodedStream, plan: Plan) -> Sequence:
        p = self.prompt
        ids: list[np.ndarray] = []
        pos: list[np.ndarray] = []
        tgt: list[np.ndarray] = []
        feats: list[torch.Tensor] = []
        mm: list[np.ndarray] = []
        gate: list[int] = []
        state = {"n": 0, "next": 0}

        def text(tokens: list[int], targets: list[int] | None = None):
            if not tokens:
                return
            t = np.asarray(tokens, np.int64)
            pp, mx = text_positions(state["next"], len(t))
            ids.append(t); pos.append(pp); mm.append(np.zeros(len(t), bool))
            tgt.append(np.asarray(targets if targets is not None else [-100] * len(t), np.int64))
            state["n"] += len(t); state["next"] = mx + 1

        text(self.enc(p.prefix_template.format(system=p.system_prompt)))
        for ins in plan.instructions:
            text(self.enc(p.instruction_template.format(instruction=ins)))
        for k, (tids, f, layout) in enumerate(zip(stream.token_ids, stream.features, stream.layouts)):
            pp, _, eos = unit_positions(state["next"], layout)
            ids.append(np.asarray(tids, np.int64)); pos.append(pp)
            m = (tids == self.video_id) | (tids == self.audio_id)
            mm.append(m); feats.append(f[torch.from_numpy(m)])
            tgt.append(np.full(len(tids), -100, np.int64))
            state["n"] += len(tids); state["next"] = eos + 1
            gate.append(state["n"] - 1)
            if k in plan.answers:
                # assistant prefix: its last token predicts the first answer token, and so on;
                # the answer's last token predicts <|im_end|>; the resume scaffolding is context.
                pre = self.enc(p.assistant_prefix)
                ans = self.enc(plan.answers[k])
                seq = pre + ans + [self.end_id]
                targets = [-100] * (len(pre) - 1) + ans + [self.end_id] + [-100]
                text(seq, targets)
                text(self.enc(p.resume_user))
            if k in plan.queries:
                text(self.enc(p.query_template.format(query=plan.queries[k])))
        ids_t = torch.from_numpy(np.concatenate(ids))
        return Sequence(
            ids=ids_t, mm_mask=torch.from_numpy(np.concatenate(mm)),
            mm_features=torch.cat(feats) if feats else torch.zeros(0),
            positions=torch.from_numpy(np.concatenate(pos, axis=1))[:, None, :],
            targets=torch.from_numpy(np.concatenate(tgt)), gate_index=torch.tensor(gate),
            labels=None if plan.labels is None else torch.as_tensor(plan.labels, dtype=torch.float32))


def encode_stream(encoder, units) -> EncodedStream:
    """Run the runtime's UnitEncoder (frozen towers) over the units."""
    tids, feats, layouts = [], [], []
    encoder.reset()
    for u in units:
        e = encoder.encode(u)
        tids.append(e.token_ids)
        feats.append(e.embeds[0].detach().clone())
        layouts.append(e.layout)
    return EncodedStream(tids, feats, layouts)


def forward(thinker, head, seq: Sequence):
    """(speak probabilities per unit (logits), LM logits at target rows, targets) for one sequence."""
    emb = thinker.get_input_embeddings()(seq.ids)
    emb = emb.masked_scatter(seq.mm_mask[:, None].expand_as(emb), seq.mm_features.to(emb.dtype))
    out = thinker.model.language_model(inputs_embeds=emb[None], position_ids=seq.positions,
                                       output_hidden_states=True, use_cache=False)
    states = torch.stack([out.hidden_states[i][0, seq.gate_index] for i in head.layer_ids])
    x = head.mix(states)
    gate_logits = head.fc2(torch.nn.functional.gelu(head.fc1(x))).squeeze(-1)
    rows = seq.targets >= 0
    lm_logits = thinker.lm_head(out.last_hidden_state[0, rows[:]]) if rows.any() else None
    # targets are "next token" at each row: row i predicts targets[i]
    return gate_logits, lm_logits, seq.targets[rows]
