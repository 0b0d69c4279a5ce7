"""ROMA's speak head (docs/model.md section 4): p(speak) from the last K layers at `<|vision_eos|>`.

    x = sum_k softmax(mixer_logits)_k * hidden_states[layer_ids[k]][:, last]
    p = sigmoid(fc2(gelu(fc1(x))))          (variant "mlp", checkpoint keys gate_head_pro_fc1/fc2)
    p = sigmoid(head(x))                    (variant "linear", checkpoint key gate_head)

Hidden-state convention (settled by tests/test_engine_parity.py, not guessed): `layer_ids` index
the tuple that Hugging Face returns for `output_hidden_states=True`, which has L+1 entries:
entry 0 is the input embeddings, entry i the output of decoder layer i, and the LAST entry is the
output of the final RMSNorm (transformers' `capture_outputs` replaces the raw last-layer output
with `last_hidden_state`). So the default [-4, -3, -2, -1] means: raw outputs of layers L-3, L-2,
L-1 and the final-norm output. This is the convention of the reference forward (the HF thinker
called with output_hidden_states=True), which is what the released training code consumed.

The head runs in float32 regardless of the model dtype (it is tiny; this keeps the probability
stable in bf16); its parameters are stored in float32.
"""
from __future__ import annotations

import torch
from torch import nn

GATE_KEYS_MLP = ("gate_head_pro_fc1.weight", "gate_head_pro_fc1.bias", "gate_head_pro_fc2.weight", "gate_head_pro_fc2.bias")
GATE_KEYS_LINEAR = ("gate_head.weight", "gate_head.bias")
GATE_MIXER_KEY = "gate_mixer.logits"
DEFAULT_LAYER_IDS = (-4, -3, -2, -1)


class SpeakHead(nn.Module):
    def __init__(self, hidden_size: int, layer_ids=DEFAULT_LAYER_IDS, variant: str = "mlp",
                 hidden_dim: int | None = None):
        super().__init__()
        if variant not in ("mlp", "linear"):
            raise ValueError(f"speak head variant must be mlp or linear, got {variant!r}")
        self.layer_ids = [int(i) for i in layer_ids]
        self.variant = variant
        self.mixer_logits = nn.Parameter(torch.zeros(len(self.layer_ids)))
        if variant == "mlp":
            hidden_dim = hidden_dim or hidden_size // 4
            self.fc1 = nn.Linear(hidden_size, hidden_dim)
            self.fc2 = nn.Linear(hidden_dim, 1)
        else:
            self.head = nn.Linear(hidden_size, 1)

    def mix(self, states: torch.Tensor) -> torch.Tensor:
        """states: (K, N, H) -> (N, H) softmax-weighted sum, float32."""
        w = torch.softmax(self.mixer_logits.float(), dim=0)
        return torch.einsum("k,knh->nh", w, states.float())

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """states: (K, N, H) -> (N,) logits (what training's BCE takes)."""
        x = self.mix(states)
        if self.variant == "mlp":
            logit = self.fc2(nn.functional.gelu(self.fc1(x)))
        else:
            logit = self.head(x)
        return logit.squeeze(-1)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """states: (K, N, H) hidden states of the chosen layers at N positions -> (N,) probabilities."""
        return torch.sigmoid(self.logits(states))

    def from_hidden_states(self, hidden_states, index: int | torch.Tensor = -1) -> torch.Tensor:
        """Apply to an HF `hidden_states` tuple at sequence position(s) `index` (batch 0)."""
        states = torch.stack([hidden_states[i][0, index] for i in self.layer_ids])
        if states.dim() == 2:
            states = states.unsqueeze(1)
        return self(states)

    # ---- checkpoint I/O in ROMA's key layout ---------------------------------------------
    def roma_state_dict(self, prefix: str = "thinker.") -> dict[str, torch.Tensor]:
        out = {prefix + GATE_MIXER_KEY: self.mixer_logits.detach().clone()}
        if self.variant == "mlp":
            out[prefix + "gate_head_pro_fc1.weight"] = self.fc1.weight.detach().clone()
            out[prefix + "gate_head_pro_fc1.bias"] = self.fc1.bias.detach().clone()
            out[prefix + "gate_head_pro_fc2.weight"] = self.fc2.weight.detach().clone()
            out[prefix + "gate_head_pro_fc2.bias"] = self.fc2.bias.detach().clone()
        else:
            out[prefix + "gate_head.weight"] = self.head.weight.detach().clone()
            out[prefix + "gate_head.bias"] = self.head.bias.detach().clone()
        return out

    @classmethod
    def from_gate_tensors(cls, gate: dict[str, torch.Tensor], hidden_size: int, layer_ids=None,
                          variant: str = "auto") -> "SpeakHead":
        """Build from ROMA `gate_*` tensors (keys without the `thinker.` prefix)."""
        has_mlp = all(k in gate for k in GATE_KEYS_MLP)
        has_linear = all(k in gate for k in GATE_KEYS_LINEAR)
        if variant == "auto":
            variant = "mlp" if has_mlp else "linear" if has_linear else ""
        if variant == "mlp" and not has_mlp:
            raise ValueError(f"speak head variant 'mlp' needs {list(GATE_KEYS_MLP)} in the checkpoint; found {sorted(gate)}")
        if variant == "linear" and not has_linear:
            raise ValueError(f"speak head variant 'linear' needs {list(GATE_KEYS_LINEAR)} in the checkpoint; found {sorted(gate)}")
        if not variant:
            raise ValueError(
                "the checkpoint has no ROMA speak head: expected thinker.gate_mixer.logits and "
                "thinker.gate_head_pro_fc1/fc2.* (MLP head) or thinker.gate_head.* (linear head); "
                f"gate keys found: {sorted(gate) or 'none'}"
            )
        if GATE_MIXER_KEY in gate:
            k = gate[GATE_MIXER_KEY].numel()
        else:
            k = len(layer_ids) if layer_ids is not None else len(DEFAULT_LAYER_IDS)
        if layer_ids is None:
            layer_ids = DEFAULT_LAYER_IDS[-k:] if k <= 4 else list(range(-k, 0))
        if len(layer_ids) != k:
            raise ValueError(f"gate_mixer.logits has {k} values but gate_layer_ids is {list(layer_ids)}")
        hidden_dim = gate["gate_head_pro_fc1.weight"].shape[0] if variant == "mlp" else None
        head = cls(hidden_size, layer_ids, variant, hidden_dim)
        sd = {"mixer_logits": gate[GATE_MIXER_KEY].reshape(k)} if GATE_MIXER_KEY in gate else {}
        if variant == "mlp":
            sd.update({"fc1.weight": gate["gate_head_pro_fc1.weight"], "fc1.bias": gate["gate_head_pro_fc1.bias"],
                       "fc2.weight": gate["gate_head_pro_fc2.weight"].reshape(1, -1),
                       "fc2.bias": gate["gate_head_pro_fc2.bias"].reshape(1)})
        else:
            sd.update({"head.weight": gate["gate_head.weight"].reshape(1, -1), "head.bias": gate["gate_head.bias"].reshape(1)})
        if sd["fc1.weight" if variant == "mlp" else "head.weight"].shape[-1] != hidden_size:
            raise ValueError(f"speak head input size does not match the text hidden size {hidden_size}")
        missing, unexpected = head.load_state_dict({k2: v.float() for k2, v in sd.items()}, strict=False)
        if unexpected or [m for m in missing if m != "mixer_logits"]:
            raise ValueError(f"speak head keys do not fit: missing {missing}, unexpected {unexpected}")
        return head.float()
