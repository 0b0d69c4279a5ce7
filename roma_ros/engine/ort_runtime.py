"""ONNX Runtime backend: the graphs of onnx_export.py behind the Runtime interface.

RomaModel keeps the streaming logic (positions, bounded cache, eviction, re-basing, segments); this
runtime runs the towers, the LM step and the speak head as ONNX graphs. The KV cache stays a
float32 torch tensor on the CPU (owned by kv_cache.BoundedKVCache), so the memory bound and
eviction are the torch backend's. Each LM step binds the cache's occupied slots [0, hi) of every
layer and KV head as graph inputs in place (I/O binding to the buffer's own memory: no copy of
the past per token), and writes the graph's `new_*` outputs (the n new tokens) into the slots
`append()` reserved. TensorRT binds the same views as device addresses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from roma_ros.engine.kv_cache import AppendInfo, BoundedKVCache
from roma_ros.engine.onnx_export import kv_input_names
from roma_ros.engine.runtime import ExportedRuntime


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


class OrtRuntime(ExportedRuntime):
    name = "onnxruntime"

    def __init__(self, export_dir: str | Path, thinker_config, threads: int = 0, providers=None,
                 fingerprint: str | None = None, spin: bool = False):
        """`spin`: let ONNX Runtime's worker threads busy-wait between runs (its default). Off
        here: a robot's engine runs one unit a second beside other nodes, and spinning workers
        (one pool per graph) take whole cores from them; on a 2-core machine a torch model in the
        same process took 8x as long per unit beside a spinning one."""
        import onnxruntime as ort

        self.export_dir = Path(export_dir)
        self.manifest = self.read_export(self.export_dir, fingerprint)
        self.config = thinker_config
        tcfg = thinker_config.text_config
        for key, want in (("hidden_size", tcfg.hidden_size), ("num_layers", tcfg.num_hidden_layers),
                          ("num_kv_heads", tcfg.num_key_value_heads)):
            if int(self.manifest[key]) != int(want):
                raise ValueError(f"{self.export_dir}: {key} {self.manifest[key]} does not match the model's {want}")
        self.layer_ids = list(self.manifest["layer_ids"])
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._options = ort.SessionOptions()
        if threads:
            self._options.intra_op_num_threads = int(threads)
        self._options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        available = ort.get_available_providers()
        self._providers = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
        self._ort = ort
        graphs = self.manifest["graphs"]
        self._sessions = {name: self._session(graphs[name]["file"]) for name in ("embed", "audio", "lm_step", "speak_head")}
        self._vision: dict[str, object] = {}
        self._logits: torch.Tensor | None = None
        keys, values = kv_input_names(int(self.manifest["num_layers"]), int(self.manifest["num_kv_heads"]))
        self._kv_names = keys + values
        self._lm_outputs = [o.name for o in self._sessions["lm_step"].get_outputs()]

    def _session(self, file: str):
        return self._ort.InferenceSession(str(self.export_dir / file), self._options, providers=self._providers)

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    # ---- Runtime ----------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        (out,) = self._sessions["embed"].run(None, {"input_ids": _np(ids.long())})
        return torch.from_numpy(out)

    def video_features(self, pixels: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        key = f"{grid[1]}x{grid[2]}"
        session = self._vision.get(key)
        if session is None:
            entry = self.manifest["vision"].get(key)
            if entry is None:
                patch = int(self.config.vision_config.patch_size)
                have = ", ".join(f"{v['frame_size'][0]}x{v['frame_size'][1]}" for v in self.manifest["vision"].values())
                raise ValueError(f"no vision graph for {grid[1] * patch}x{grid[2] * patch} frames in "
                                 f"{self.export_dir} (exported: {have or 'none'}); re-run roma export with "
                                 f"--frame-size {grid[1] * patch}x{grid[2] * patch}")
            session = self._vision[key] = self._session(entry["file"])
        (out,) = session.run(None, {"pixel_values": _np(pixels.float())})
        return torch.from_numpy(out)

    def audio_features(self, feats: torch.Tensor) -> torch.Tensor:
        (out,) = self._sessions["audio"].run(None, {"input_features": _np(feats.float())})
        return torch.from_numpy(out)

    def step(self, embeds: torch.Tensor, info: AppendInfo, cache: BoundedKVCache, head_states: bool = False):
        past_k, past_v, mask = cache.explicit_inputs(info)
        session = self._sessions["lm_step"]
        binding = session.io_binding()
        inputs = {"inputs_embeds": _np(embeds.float()), "position_ids": _np(info.position_ids.long()),
                  "attention_mask": _np(mask.float())}
        for name, array in inputs.items():
            binding.bind_cpu_input(name, array)
        if cache.k.dtype != torch.float32 or cache.k.device.type != "cpu":
            raise ValueError(f"the ONNX Runtime backend binds a float32 CPU cache in place, got {cache.k.dtype} "
                             f"on {cache.k.device}")
        for name, view in zip(self._kv_names, past_k + past_v):  # contiguous views of the cache
            binding.bind_input(name, "cpu", 0, np.float32, tuple(view.shape), view.data_ptr())
        for name in self._lm_outputs:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        logits, states, new_k, new_v = binding.copy_outputs_to_cpu()
        cache.write_new(info, torch.from_numpy(new_k), torch.from_numpy(new_v))
        self._logits = torch.from_numpy(logits[0])
        return torch.from_numpy(states) if head_states else None

    def next_logits(self) -> torch.Tensor:
        return self._logits.float()

    def speak_prob(self, states: torch.Tensor) -> torch.Tensor:
        (out,) = self._sessions["speak_head"].run(None, {"head_states": _np(states.float())})
        return torch.from_numpy(out)
