"""`roma`: one command for everything that is not a ROS node."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roma_ros import __version__
from roma_ros.dds import apply_dds_defaults


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check this environment as the nodes will see it (see roma_ros/doctor.py); exit 1 on a failure."""
    from roma_ros import doctor
    from roma_ros.pipeline.engine import PARAMETERS
    from roma_ros.params import node_parameters

    params = Path(args.params) if args.params else default_params_file()
    from_file = node_parameters(params, "engine", PARAMETERS)
    given = {name: getattr(args, name) for name in MODEL_OPTIONS
             if getattr(args, name) is not None}
    return doctor.run(lambda name: given[name] if name in given else from_file(name), skip_model=args.no_model)


def default_params_file() -> Path:
    from roma_ros.dds import default_fastdds_profile

    return default_fastdds_profile().parent / "roma.yaml"


def cmd_run(args: argparse.Namespace) -> int:
    """Synchronizer and engine in one process (MultiThreadedExecutor), for machines without
    `ros2 launch`. Parameters come from the same YAML file the launch file uses."""
    apply_dds_defaults()
    from roma_ros.memory import map_large_buffers

    map_large_buffers()
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from roma_ros.nodes.engine_node import EngineNode
    from roma_ros.nodes.process import SHUTDOWN_EXCEPTIONS, RCLError, is_shutdown_race, quiet_cleanup, spin_until_shutdown
    from roma_ros.nodes.synchronizer_node import SynchronizerNode

    params = Path(args.params) if args.params else default_params_file()
    if not params.is_file():
        print(f"roma run: no parameter file {params}", file=sys.stderr)
        return 1
    ros_args = ["--ros-args", "--params-file", str(params)]
    for remap in args.remap + run_remaps(args):  # rcl uses the first matching rule
        ros_args += ["-r", remap]
    rclpy.init(args=ros_args)
    sync_overrides, engine_overrides = run_overrides(args)
    executor = None
    nodes = []
    try:
        nodes.append(SynchronizerNode(namespace=args.namespace, parameter_overrides=sync_overrides))
        nodes.append(EngineNode(namespace=args.namespace, parameter_overrides=engine_overrides))
        if nodes[1].configure_error and nodes[1].get_parameter("autostart").value:
            print(f"roma run: model failed to load: {nodes[1].configure_error}", file=sys.stderr)
            return 1
        executor = MultiThreadedExecutor(num_threads=2 + nodes[1].executor_threads)
        for node in nodes:
            executor.add_node(node)
        spin_until_shutdown(executor)
    except (*SHUTDOWN_EXCEPTIONS, RCLError) as exc:  # a signal while the model loads
        if not is_shutdown_race(exc, rclpy.get_default_context()):
            raise
    finally:
        steps = [nodes[1].stop_for_exit] if len(nodes) == 2 else []
        steps += [node.destroy_node for node in nodes]
        if executor is not None:
            steps.append(lambda: executor.shutdown(timeout_sec=1.0))
        quiet_cleanup(*steps, rclpy.try_shutdown)
    return 0


def run_remaps(args: argparse.Namespace) -> list[str]:
    """The remappings the launch file's topic arguments make."""
    remaps = []
    if args.image_topic:
        remaps += [f"image:={args.image_topic}", f"image/compressed:={args.image_topic}/compressed"]
    if args.audio_topic:
        remaps.append(f"audio:={args.audio_topic}")
    if args.audio_info_topic:
        remaps.append(f"audio_info:={args.audio_info_topic}")
    return remaps


def run_overrides(args: argparse.Namespace) -> tuple[list, list]:
    """Parameter overrides of (synchronizer, engine): only the options given, as in the launch file."""
    from rclpy.parameter import Parameter

    from roma_ros.params import OVERRIDABLE

    given = {name: getattr(args, name) for name in MODEL_OPTIONS}
    given.update(use_sim_time=args.use_sim_time or None, compressed=args.compressed or None)
    sync, engine = ([Parameter(name, value=given[name]) for name in OVERRIDABLE[node] if given[name] is not None]
                    for node in ("synchronizer", "engine"))
    if getattr(args, "replay", False):
        from roma_ros.params import REPLAY_ENGINE, REPLAY_SYNC

        sync += [Parameter(k, value=v) for k, v in REPLAY_SYNC.items()]
        engine += [Parameter(k, value=v) for k, v in REPLAY_ENGINE.items()]
    return sync, engine


def cmd_play(args: argparse.Namespace) -> int:
    """Publish a rosbag2 bag on its topics, like `ros2 bag play`, for graphs without rosbag2."""
    apply_dds_defaults()
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from roma_ros.bagio import BagError
    from roma_ros.nodes.bag_player import BagPlayer, parse_remaps

    try:
        remaps = parse_remaps(args.remap)
    except ValueError as exc:
        print(f"roma play: {exc}", file=sys.stderr)
        return 2
    # rclpy must not parse this command's own options: it reads --remap as a deprecated ROS
    # remapping argument.
    rclpy.init(args=sys.argv[:1])
    node = rclpy.create_node("roma_player")
    try:
        try:
            player = BagPlayer(node, Path(args.bag), rate=args.rate, loop=args.loop, clock=args.clock,
                               topics=args.topics, remaps=remaps, clock_tail=args.clock_tail)
        except BagError as exc:
            print(f"roma play: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"playing {args.bag}: {', '.join(player.topics)}", flush=True)
        wait_for = [] if args.no_wait else (args.wait_for or player.topics)
        if wait_for and not player.wait_for_subscribers(wait_for, args.wait_timeout):
            lonely = player.topics_without_subscribers(wait_for)
            print(f"roma play: no subscriber on {', '.join(lonely)} after {args.wait_timeout} s; playing anyway",
                  file=sys.stderr, flush=True)
        try:
            stats = player.run(stop=lambda: not rclpy.ok())
        except BagError as exc:
            print(f"roma play: {exc}", file=sys.stderr, flush=True)
            return 1
        counts = ", ".join(f"{t}: {n}" for t, n in sorted(stats.published.items())) or "no messages"
        print(f"done: {counts} in {stats.wall_seconds:.1f} s ({stats.publish_errors} publish errors)")
        return 0 if stats.published else 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def cmd_record(args: argparse.Namespace) -> int:
    """Convert a video file with audio into a rosbag2 bag of Image + AudioDataStamped + AudioInfo."""
    from roma_ros.eval.media_to_bag import RecordOptions, record_media

    opts = RecordOptions(
        image_topic=args.image_topic, audio_topic=args.audio_topic,
        audio_info_topic=args.audio_info_topic, compressed=args.compressed,
        max_pixels=args.max_pixels, fps=args.fps, audio_chunk_ms=args.chunk_ms,
        start_ns=None if args.start_time is None else int(args.start_time * 1e9),
        storage=args.storage,
    )
    try:
        stats = record_media(Path(args.media), Path(args.output), opts)
    except (OSError, ValueError) as exc:
        print(f"roma record: {exc} (no bag written)", file=sys.stderr)
        return 1
    if stats.truncated_at_s is not None:
        print(f"roma record: warning: {args.media} is cut short; recorded the {stats.truncated_at_s:.1f} s "
              "before the cut", file=sys.stderr)
    if stats.damaged_packets:
        print(f"roma record: warning: skipped {stats.damaged_packets} damaged packets of {args.media}",
              file=sys.stderr)
    print(f"wrote {args.output}: {stats.frames} frames, {stats.audio_chunks} audio chunks "
          f"({stats.sample_rate} Hz x {stats.channels}), {stats.duration_s:.1f} s on {', '.join(stats.topics)}")
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _frame_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"frame size must look like HEIGHTxWIDTH (e.g. 360x640), got {text!r}") from None
    if h < 28 or w < 28:
        raise argparse.ArgumentTypeError(f"frame size {text!r} is too small (at least 28x28)")
    return h, w


def cmd_export(args: argparse.Namespace) -> int:
    from roma_ros.engine.factory import resolve_model_path
    from roma_ros.engine.onnx_export import DEFAULT_FRAME_SIZES, export_checkpoint

    try:
        model = resolve_model_path(args.model)
    except FileNotFoundError as exc:
        print(f"roma export: {exc}", file=sys.stderr)
        return 1
    out = Path(args.output) if args.output else Path(model) / "onnx"
    sizes = args.frame_size or list(DEFAULT_FRAME_SIZES)
    result = export_checkpoint(model, out, frame_sizes=sizes, opset=args.opset, max_pixels=args.max_pixels,
                               model_profile=args.model_profile, progress=lambda name: print(f"exporting {name} ...", flush=True))
    for f in result.files:
        print(f"  {f} ({f.stat().st_size / 1e6:.1f} MB, onnx.checker ok)")
    print(f"manifest: {out / 'roma_export.json'}; use with backend:=onnxruntime (export_dir:={out})")
    if args.tensorrt:
        from roma_ros.engine.factory import load_model
        from roma_ros.engine.config import EngineConfig

        load_model(EngineConfig(model_path=model, device="cuda", export_dir=str(out),
                                tensorrt_precision=args.precision), "tensorrt")
        print(f"TensorRT engines ({args.precision}) built into {out / 'tensorrt'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Replay bags through the synchronizer and engine code offline and score them."""
    from roma_ros.eval.evaluate_bags import run_eval
    from roma_ros.eval.runner import TopicChoice

    params = args.params or str(default_params_file())
    overrides = {name: getattr(args, name) for name in MODEL_OPTIONS
                 if getattr(args, name) is not None}
    topics = TopicChoice(args.image_topic, args.audio_topic, args.audio_info_topic)
    return run_eval(args.bags, args.annotations, params, args.output, topics, overrides, args.jobs,
                    args.compare_head or "")


def cmd_tune(args: argparse.Namespace) -> int:
    """Train the speak head on annotated bags into an overlay (roma_ros/tuning/)."""
    from roma_ros.tuning.command import run_tune

    args.params = args.params or str(default_params_file())
    return run_tune(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole system on the bundled scene: bag -> synchronizer -> engine -> alerts, replies."""
    from roma_ros.demo import SAMPLE_DIR, run_demo

    bag = Path(args.bag) if args.bag else SAMPLE_DIR / "bag"
    annotations = Path(args.annotations) if args.annotations else (
        SAMPLE_DIR / "annotations.yaml" if not args.bag else bag / "annotations.yaml")
    for path, what in ((bag, "bag"), (annotations, "annotation file")):
        if not path.exists():
            print(f"roma demo: no {what} at {path}", file=sys.stderr)
            return 1
    params = Path(args.params) if args.params else default_params_file()
    from roma_ros.bagio import BagError, open_bag
    from roma_ros.eval.annotations import AnnotationError, load_annotations

    try:
        open_bag(bag).close()
        load_annotations(annotations)
    except (BagError, AnnotationError, OSError) as exc:
        print(f"roma demo: {exc}", file=sys.stderr)
        return 1
    return run_demo(bag, annotations, params, Path(args.output), args.model_path, args.rate, args.timeout,
                    model_profile=args.model_profile, speak_head=args.speak_head)


FROM_PARAMS = "default: the parameter file's value"
# options naming engine parameters (launch arguments too: roma_ros.params.OVERRIDABLE)
MODEL_OPTIONS = ("model_path", "model_profile", "backend", "device", "dtype", "speak_head")
SPEAK_HEAD_HELP = "speak-head overlay (.safetensors from `roma tune`); " + FROM_PARAMS


class HelpWithDefaults(argparse.HelpFormatter):
    """Help texts end with the option's default, when it has one worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default == []
                or default == argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: {default})"


def _with_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.formatter_class = HelpWithDefaults
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _with_defaults(child)
    return parser


def _model_options(parser: argparse.ArgumentParser, speak_head: bool = True) -> None:
    """The options naming the engine's model parameters (MODEL_OPTIONS), each overriding the file."""
    parser.add_argument("--model-path", dest="model_path", help="checkpoint directory or 'embedded'; " + FROM_PARAMS)
    parser.add_argument("--model-profile", dest="model_profile",
                        help="auto | roma-release | roma-tiny | path to a roma_profile.json; " + FROM_PARAMS)
    parser.add_argument("--backend", choices=["torch", "onnxruntime", "tensorrt"], help=FROM_PARAMS)
    parser.add_argument("--device", help="cpu | cuda | cuda:N; " + FROM_PARAMS)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help=FROM_PARAMS)
    if speak_head:
        parser.add_argument("--speak-head", dest="speak_head", help=SPEAK_HEAD_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roma", description=__doc__)
    parser.add_argument("--version", action="version", version=f"roma_ros {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="check this environment: packages, DDS, device, backends, the model",
                            description="Check what matters here: the packages roma_ros imports, this shell's "
                                        "DDS settings, the device, ONNX Runtime/TensorRT, and the configured "
                                        "model (loaded and fed one unit, timed). Prints the fix for each failure.")
    doctor.add_argument("--params", help="YAML parameter file (default: the package's config/roma.yaml)")
    _model_options(doctor)
    doctor.add_argument("--no-model", dest="no_model", action="store_true", help="skip loading the model")
    doctor.set_defaults(func=cmd_doctor)

    run = sub.add_parser("run", help="run the synchronizer and engine nodes in one process")
    run.add_argument("--params", help="YAML parameter file (default: the package's config/roma.yaml)")
    run.add_argument("--namespace", default="roma", help="namespace of both nodes and their topics")
    _model_options(run)
    run.add_argument("--use-sim-time", action="store_true", help="follow /clock (bag replay)")
    run.add_argument("--replay", action="store_true",
                     help="exact bag replay: reliable deep sensor queues and an engine that never skips a unit "
                          "(the units, probabilities and alerts of roma eval on the same bag)")
    run.add_argument("--compressed", action="store_true",
                     help="subscribe sensor_msgs/CompressedImage on <image topic>/compressed")
    run.add_argument("--image-topic", dest="image_topic",
                     help="camera topic (raw Image; with --compressed, its /compressed) (default: image)")
    run.add_argument("--audio-topic", dest="audio_topic", help="AudioDataStamped topic (default: audio)")
    run.add_argument("--audio-info-topic", dest="audio_info_topic", help="AudioInfo topic (default: audio_info)")
    run.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                     help="topic remapping for both nodes, e.g. image:=/camera/image_raw")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="run the whole system on the bundled sample scene")
    demo.add_argument("--bag", help="another bag (default: the bundled sample)")
    demo.add_argument("--annotations", help="its annotation file (default: BAG/annotations.yaml)")
    demo.add_argument("--params", help="YAML parameter file (default: the package's config/roma.yaml)")
    demo.add_argument("--model-path", dest="model_path", help="checkpoint (default: the embedded ROMA-tiny)")
    demo.add_argument("--model-profile", dest="model_profile",
                      help="auto | roma-release | roma-tiny | path to a roma_profile.json")
    demo.add_argument("--speak-head", dest="speak_head", help=SPEAK_HEAD_HELP)
    demo.add_argument("--rate", type=_positive, default=1.0, help="playback speed")
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the engine after the bag")
    demo.add_argument("-o", "--output", default="roma_demo",
                      help="output directory: the timeline PNG and the files roma eval writes")
    demo.set_defaults(func=cmd_demo)

    ev = sub.add_parser("eval", help="evaluate rosbag2 bags offline against annotations")
    ev.add_argument("bags", nargs="+", metavar="BAG")
    ev.add_argument("--annotations", action="append", default=[], metavar="FILE",
                    help="annotation file (YAML/JSON; see docs/annotations.md): one for all bags or one "
                         "per bag; default: BAG/annotations.yaml or BAG.yaml when present")
    ev.add_argument("--params", help="YAML parameter file (default: the package's config/roma.yaml)")
    ev.add_argument("-o", "--output", default="roma_eval", help="output directory")
    ev.add_argument("-j", "--jobs", type=int, default=1, help="bags evaluated in parallel")
    ev.add_argument("--image-topic", help="default: the bag's Image/CompressedImage topic")
    ev.add_argument("--audio-topic", help="default: the bag's AudioDataStamped topic")
    ev.add_argument("--audio-info-topic", help="default: the bag's AudioInfo topic")
    _model_options(ev)
    ev.add_argument("--compare-head", dest="compare_head", metavar="base|OVERLAY",
                    help="also score every bag with this speak head on the same replay (the checkpoint's "
                         "own: base), into BAG/compare/ and a before/after table")
    ev.set_defaults(func=cmd_eval)

    tune = sub.add_parser("tune", help="train the speak head on your own annotated bags (an overlay for speak_head)")
    tune.add_argument("bags", nargs="+", metavar="BAG", help="training bags")
    tune.add_argument("--annotations", action="append", default=[], metavar="FILE",
                      help="one file for all bags or one per bag (default: BAG/annotations.yaml)")
    tune.add_argument("--val", nargs="+", metavar="BAG", help="validation bags (early stopping, the report)")
    tune.add_argument("--val-annotations", dest="val_annotations", action="append", default=[], metavar="FILE",
                      help="as --annotations, for the --val bags")
    tune.add_argument("--val-split", dest="val_split", type=float, metavar="F",
                      help="instead of --val: hold out this fraction of the training bags")
    tune.add_argument("-o", "--output", required=True, help="output directory (overlay, report, feature cache)")
    tune.add_argument("--cache-dir", dest="cache_dir", help="feature cache (default: OUTPUT/features)")
    tune.add_argument("--scope", choices=["tasks", "all"], default="tasks",
                      help="tasks: the tuned head decides only for the trained tasks' instructions (the others "
                           "keep the checkpoint's head); all: it replaces the head for every task (mix base-task "
                           "bags in, or they are forgotten)")
    tune.add_argument("--variant", choices=["same", "mlp", "linear"], default="same",
                      help="head to train: same as the checkpoint's (starts from it), mlp or linear")
    tune.add_argument("--epochs", type=int, default=400, help="most training epochs")
    tune.add_argument("--patience", type=int, default=60, help="stop after this many epochs without a better validation loss")
    tune.add_argument("--lr", type=float, default=1e-3, help="learning rate (AdamW)")
    tune.add_argument("--seed", type=int, default=0, help="training seed (and --val-split's draw)")
    tune.add_argument("--force", action="store_true", help="replace an overlay already in OUTPUT")
    tune.add_argument("--params", help="YAML parameter file (default: the package's config/roma.yaml)")
    tune.add_argument("--image-topic", help="default: the bag's Image/CompressedImage topic")
    tune.add_argument("--audio-topic", help="default: the bag's AudioDataStamped topic")
    tune.add_argument("--audio-info-topic", help="default: the bag's AudioInfo topic")
    _model_options(tune, speak_head=False)
    tune.set_defaults(func=cmd_tune)

    export = sub.add_parser("export", help="export a checkpoint to ONNX graphs (and TensorRT engines)")
    export.add_argument("model", nargs="?", default="embedded", help="checkpoint directory or 'embedded'")
    export.add_argument("-o", "--output", help="output directory (default: MODEL/onnx)")
    export.add_argument("--frame-size", action="append", type=_frame_size, metavar="HxW",
                        help="camera frame size to export a vision graph for (repeatable; default: "
                             "360x640 and ROMA-tiny's 168x336)")
    export.add_argument("--max-pixels", type=int, default=None,
                        help="the synchronizer's max_pixels (default: the model profile's, 65536)")
    export.add_argument("--model-profile", default="auto",
                        help="model profile whose frame rule sizes the vision graphs (default: auto)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset of the exported graphs")
    export.add_argument("--tensorrt", action="store_true", help="also build the TensorRT engines (needs a GPU)")
    export.add_argument("--precision", choices=["fp16", "bf16", "fp32", "int8"], default="fp16",
                        help="TensorRT engine precision")
    export.set_defaults(func=cmd_export)

    play = sub.add_parser("play", help="publish a rosbag2 bag (sqlite3 or mcap) in real time")
    play.add_argument("bag", help="bag folder (with metadata.yaml)")
    play.add_argument("--rate", type=_positive, default=1.0, help="playback speed factor")
    play.add_argument("--loop", action="store_true", help="start over at the end (time jumps back)")
    play.add_argument("--clock", action="store_true", help="publish /clock from the bag's time")
    play.add_argument("--clock-tail", type=float, default=0.0, metavar="SECONDS",
                      help="with --clock: keep publishing /clock this long after the last message")
    play.add_argument("--topics", nargs="+", help="play only these topics")
    play.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                      help="publish a bag topic under another name")
    play.add_argument("--wait-for", nargs="+", metavar="TOPIC",
                      help="wait until these bag topics have a subscriber before starting (default: every "
                           "played topic, so the graph sees the bag from its first message)")
    play.add_argument("--wait-timeout", type=float, default=10.0, metavar="SECONDS",
                      help="give up waiting for subscribers after this long and play anyway")
    play.add_argument("--no-wait", action="store_true", help="start at once, subscribers or not")
    play.set_defaults(func=cmd_play)

    record = sub.add_parser("convert", aliases=["record"],
                            help="convert a video file with audio into a rosbag2 bag (alias: record)",
                            description="Convert a video file with audio into a rosbag2 bag of camera "
                                        "and microphone messages, stamped on the media's clock (to "
                                        "record live topics, use `ros2 bag record`).")
    record.add_argument("media", help="mp4, mkv, webm, ... (anything FFmpeg reads)")
    record.add_argument("-o", "--output", required=True, help="bag folder to create")
    record.add_argument("--image-topic", default="/roma/image",
                        help="topic of the frames (with --compressed, they go on <topic>/compressed)")
    record.add_argument("--audio-topic", default="/roma/audio", help="topic of the AudioDataStamped chunks")
    record.add_argument("--audio-info-topic", default="/roma/audio_info", help="topic of the AudioInfo")
    record.add_argument("--compressed", action="store_true", help="store jpeg CompressedImage")
    record.add_argument("--max-pixels", type=int, help="downscale larger frames to this area")
    record.add_argument("--fps", type=float, help="keep at most this many frames per second")
    record.add_argument("--chunk-ms", type=int, default=20, help="audio chunk length in milliseconds")
    record.add_argument("--start-time", type=float,
                        help="stamp of media time 0 in seconds (default: the file's creation time)")
    record.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3", help="rosbag2 storage format")
    record.set_defaults(func=cmd_record)

    from roma_ros.core import profile_import

    profile_import.add_cli(sub)
    return _with_defaults(parser)


def main(argv: list[str] | None = None) -> int:
    """Bad input (a file that is not what it should be, a value out of range) ends with one line
    naming it, exit 2; ROMA_DEBUG=1 shows the traceback instead."""
    import os

    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "params", None):
            from roma_ros.params import load_parameter_file

            load_parameter_file(args.params)  # before rclpy reads it, with the file's name in the error
        return args.func(args)
    except (ValueError, OSError) as exc:
        if os.environ.get("ROMA_DEBUG"):
            raise
        print(f"roma {args.command}: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
