"""The roma_ros graph: synchronizer (camera + mic -> units) and engine (ROMA -> alerts, replies).

    ros2 launch roma_ros roma.launch.py image_topic:=/camera/image_raw audio_topic:=/audio/audio \
        model_path:=/models/ROMA model_profile:=auto device:=cuda dtype:=bfloat16

Every parameter lives in params_file (default: the installed config/roma.yaml). The arguments
below that name parameters override the file only when given: left empty, the file decides (so
a params_file of your own can set model_path, backend, device, dtype, compressed, use_sim_time).
The topic arguments are remappings. The engine is a lifecycle node (it configures and activates
itself unless its `autostart` parameter is false). Unless FASTDDS_DEFAULT_PROFILES_FILE is already
set, the processes use roma_ros's large-image Fast DDS profile.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from roma_ros.params import OVERRIDABLE, REPLAY_ENGINE, REPLAY_SYNC

ARGUMENTS = {
    "namespace": ("roma", "namespace of both nodes and their topics"),
    "params_file": (None, "YAML parameter file (default: share/roma_ros/config/roma.yaml)"),
    "model_path": ("", "checkpoint directory, or \"embedded\" for the packaged ROMA-tiny"),
    "model_profile": ("", "auto | roma-release | roma-tiny | path to a roma_profile.json"),
    "backend": ("", "torch | onnxruntime | tensorrt"),
    "device": ("", "cpu | cuda | cuda:N"),
    "dtype": ("", "float32 | bfloat16 | float16"),
    "speak_head": ("", "speak-head overlay from `roma tune` (a .safetensors file)"),
    "image_topic": ("image", "camera topic (raw Image; with compressed:=true, its /compressed)"),
    "compressed": ("", "true: subscribe sensor_msgs/CompressedImage on <image_topic>/compressed"),
    "audio_topic": ("audio", "audio_common_msgs/AudioDataStamped topic"),
    "audio_info_topic": ("audio_info", "audio_common_msgs/AudioInfo topic"),
    "use_sim_time": ("", "true: follow /clock (bag replay)"),
    "replay": ("false", "true: exact bag replay (reliable deep sensor queues; the engine never skips a unit)"),
}


def given(context, names) -> dict:
    """The named launch arguments that were set, as substitutions (launch_ros then parses each
    value as YAML, so "true" becomes a bool)."""
    return {name: LaunchConfiguration(name) for name in names
            if LaunchConfiguration(name).perform(context) != ""}


def nodes(context):
    arg = LaunchConfiguration
    params_file = arg("params_file")
    replay = arg("replay").perform(context).strip().lower() in ("true", "1", "yes")
    return [
        Node(
            package="roma_ros",
            executable="synchronizer_node",
            name="synchronizer",
            namespace=arg("namespace"),
            parameters=[params_file, given(context, OVERRIDABLE["synchronizer"]), REPLAY_SYNC if replay else {}],
            remappings=[
                ("image", arg("image_topic")),
                ("image/compressed", [arg("image_topic"), "/compressed"]),
                ("audio", arg("audio_topic")),
                ("audio_info", arg("audio_info_topic")),
            ],
            output="screen",
        ),
        LifecycleNode(
            package="roma_ros",
            executable="engine_node",
            name="engine",
            namespace=arg("namespace"),
            parameters=[params_file, given(context, OVERRIDABLE["engine"]), REPLAY_ENGINE if replay else {}],
            output="screen",
        ),
    ]


def generate_launch_description():
    share = get_package_share_directory("roma_ros")
    actions = []
    for name, (default, description) in ARGUMENTS.items():
        if name == "params_file":
            default = os.path.join(share, "config", "roma.yaml")
        elif default == "":
            description = f"{description} (empty: from params_file)"
        actions.append(DeclareLaunchArgument(name, default_value=default, description=description))
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        actions.append(SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds.xml")))
    actions.append(OpaqueFunction(function=nodes))
    return LaunchDescription(actions)
