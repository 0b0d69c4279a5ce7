"""The engine's session without rclpy: its parameter table, the EngineConfig and StreamSession
built from parameter values, and the alert log. The node (roma_ros.nodes.engine_node), the
offline evaluator and `roma doctor` build the very same session from one YAML file."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from roma_ros.engine.config import EngineConfig
from roma_ros.engine.session import AlertEvent, StreamSession
from roma_ros.params import qos_parameters

# name -> (default, description); dotted names nest in YAML (`default_task: {id: ...}`).
PARAMETERS: dict[str, tuple[object, str]] = {
    "model_path": ("embedded", "checkpoint directory, or 'embedded' for the packaged ROMA-tiny"),
    "backend": ("torch", "torch | onnxruntime | tensorrt"),
    "device": ("cpu", "cpu | cuda | cuda:N"),
    "dtype": ("float32", "float32 | bfloat16 | float16"),
    "threads": (0, "CPU threads of the model (torch intra-op, ONNX Runtime); 0 = auto: 1 on up to 2 cores, "
                   "else half the cores, at most 4 (the engine shares the CPU with the robot's other nodes)"),
    "export_dir": ("", "onnxruntime/tensorrt: graphs from `roma export`; empty = <model_path>/onnx"),
    "tensorrt_precision": ("fp16", "tensorrt: engine precision fp16 | bf16 | fp32 | int8"),
    "engine_cache_dir": ("", "tensorrt: built engines; empty = <export_dir>/tensorrt"),
    "max_context_tokens": (8192, "KV-cache bound: prefix + instructions + recent units + answers"),
    "segment_tokens": (25, "tokens per generation segment (about one second of speech)"),
    "max_answer_tokens": (512, "hard stop for one answer"),
    "answer_policy": ("forced", "forced: answer questions at the next unit | gated: speak head decides"),
    "query_threshold": (0.5, "gated answer_policy: answer at the first unit whose speak probability reaches this"),
    "model_profile": ("auto", "what the checkpoint expects (frames, audio, prompt): auto | roma-release | "
                      "roma-tiny | path of a roma_profile.json; auto = the file beside the checkpoint, "
                      "else roma-tiny for the embedded model, else roma-release"),
    "speak_head": ("", "speak-head overlay (safetensors from `roma tune`) deciding instead of the checkpoint's "
                   "own head; refused on another base checkpoint; empty = the checkpoint's head"),
    "speech_gate": ("profile", "profile | on | off: keep only speech in the audio (silero-vad), the rest "
                    "becomes the noise bed"),
    "prompt_file": ("", "legacy JSON prompt/scaffolding file overlaying the profile's prompt"),
    "alert_text": ("instruction", "instruction | generate (first generated segment)"),
    "default_task.id": ("", "a standing task set at start; empty = none"),
    "default_task.instruction": ("", "its instruction, e.g. 'alert me when someone falls'"),
    "default_task.mode": ("alert", "alert | narration"),
    "default_task.threshold": (0.5, "speak probability to reach"),
    "default_task.window": (1, "consecutive units at or above the threshold"),
    "default_task.cooldown": (0.0, "seconds of stream time before the task can fire again"),
    "queue_size": (2, "units waiting for the model (bounded)"),
    "overload_policy": ("skip", "skip: drop the oldest waiting unit | block: wait for room"),
    "max_query_chars": (2000, "longest accepted question or task instruction"),
    "max_pending_queries": (16, "questions waiting to enter the context"),
    "max_query_lead": (10.0, "seconds a question may be stamped ahead of the stream (later: refused; "
                             "waiting ones that fall further ahead expire); 0 = no bound"),
    "max_tasks": (32, "standing tasks at once (set_task beyond it is refused)"),
    "max_queries_per_minute": (60, "questions accepted per minute (query topic + ask action); 0 = no limit"),
    "ask_timeout": (120.0, "seconds an ask goal waits for its final answer"),
    "max_concurrent_asks": (4, "ask goals answered at once (each holds an executor thread); more are rejected"),
    "stall_timeout": (30.0, "seconds without progress while units wait (or one unit runs) before /diagnostics "
                            "reports ERROR; at least 20 median unit latencies (4x for the first unit)"),
    "alert_log": ("", "append-only JSONL file recording every alert (flushed per alert); empty = off"),
    "autostart": (True, "configure and activate on start"),
    "topics.units": ("units", "roma_ros/MultimodalUnit input"),
    "topics.query": ("query", "roma_ros/Query input"),
    "topics.alert": ("alert", "roma_ros/Alert output"),
    "topics.reply": ("reply", "roma_ros/Reply output"),
    "topics.speak_score": ("speak_score", "roma_ros/SpeakScore output"),
    **qos_parameters("qos.units", "reliable", "volatile", 10),
    # deeper than a minute of max_queries_per_minute: a burst the node would accept is never lost in DDS
    **qos_parameters("qos.query", "reliable", "volatile", 100),
    **qos_parameters("qos.alert", "reliable", "transient_local", 10),
    **qos_parameters("qos.reply", "reliable", "volatile", 100),
    **qos_parameters("qos.speak_score", "reliable", "volatile", 10),
    **qos_parameters("qos.services", "reliable", "volatile", 0),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
}


def engine_config(p: Callable[[str], object]) -> EngineConfig:
    """EngineConfig from parameter values (`p(name)`)."""
    return EngineConfig(
        model_path=str(p("model_path")), dtype=str(p("dtype")), device=str(p("device")),
        max_context_tokens=int(p("max_context_tokens")), segment_tokens=int(p("segment_tokens")),
        max_answer_tokens=int(p("max_answer_tokens")), answer_policy=str(p("answer_policy")),
        query_threshold=float(p("query_threshold")), threads=int(p("threads")),
        prompt_file=str(p("prompt_file")), export_dir=str(p("export_dir")),
        model_profile=str(p("model_profile")), speech_gate=str(p("speech_gate")),
        tensorrt_precision=str(p("tensorrt_precision")), engine_cache_dir=str(p("engine_cache_dir")),
        speak_head=str(p("speak_head")),
    )


def build_session(p: Callable[[str], object], model=None) -> StreamSession:
    """Load the model (unless given) and wrap it in a session with the default task: what the
    node does on configure, and what the offline evaluator does per bag."""
    if model is None:
        from roma_ros.engine.factory import load_model

        model = load_model(engine_config(p), str(p("backend")))
    session = StreamSession(model, alert_text=str(p("alert_text")),
                            max_query_chars=int(p("max_query_chars")),
                            max_pending_queries=int(p("max_pending_queries")),
                            max_query_lead_s=float(p("max_query_lead")),
                            max_tasks=int(p("max_tasks")))
    if p("default_task.id"):
        session.set_task(str(p("default_task.id")), str(p("default_task.instruction")),
                         str(p("default_task.mode")), float(p("default_task.threshold")),
                         int(p("default_task.window")), float(p("default_task.cooldown")))
    return session


class AlertLog:
    """Append-only JSONL record of alerts, flushed (and fsynced) per alert."""

    def __init__(self, path: str):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def write(self, alert: AlertEvent) -> None:
        record = {"task_id": alert.task_id, "instruction": alert.instruction, "text": alert.text,
                  "probability": round(alert.probability, 6), "unit_index": alert.unit_index,
                  "stamp_ns": alert.time_ns, "window_start_ns": alert.window_start_ns,
                  "mode": alert.mode, "wall_time": time.time()}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
