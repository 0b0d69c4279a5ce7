"""The roma_ros graph: synchronizer (camera + mic -> units) and engine (ROMA -> alerts, replies).

    ros2 launch roma_ros roma.launch.py image_topic:=/camera/image_raw audio_topic:=/audio/audio \
        model_path:=/models/ROMA model_profile:=auto device:=cuda dtype:=bfloat16

Every parameter lives in params_file (default: the installed config/roma.yaml); the arguments
below override the few that change per robot. Unless FASTDDS_DEFAULT_PROFILES_FILE is already
set, the processes use roma_ros's large-image Fast DDS profile.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = {
    "namespace": ("roma", "namespace of both nodes and their topics"),
    "params_file": (None, "YAML parameter file (default: share/roma_ros/config/roma.yaml)"),
    "model_path": ("embedded", "checkpoint directory, or \"embedded\" for the packaged ROMA-tiny"),
    "model_profile": ("auto", "auto | roma-release | roma-tiny | path to a roma_profile.json"),
    "backend": ("torch", "torch | onnxruntime | tensorrt"),
    "device": ("cpu", "cpu | cuda | cuda:N"),
    "dtype": ("float32", "float32 | bfloat16 | float16"),
    "image_topic": ("image", "camera topic (raw Image; with compressed:=true, its /compressed)"),
    "compressed": ("false", "subscribe sensor_msgs/CompressedImage on <image_topic>/compressed"),
    "audio_topic": ("audio", "audio_common_msgs/AudioDataStamped topic"),
    "audio_info_topic": ("audio_info", "audio_common_msgs/AudioInfo topic"),
    "use_sim_time": ("false", "follow /clock (bag replay)"),
}


def generate_launch_description():
    share = get_package_share_directory("roma_ros")
    actions = []
    for name, (default, description) in ARGUMENTS.items():
        if name == "params_file":
            default = os.path.join(share, "config", "roma.yaml")
        actions.append(DeclareLaunchArgument(name, default_value=default, description=description))
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        actions.append(SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds.xml")))

    arg = LaunchConfiguration
    use_sim_time = {"use_sim_time": arg("use_sim_time")}
    actions.append(Node(
        package="roma_ros",
        executable="synchronizer_node",
        name="synchronizer",
        namespace=arg("namespace"),
        parameters=[arg("params_file"), use_sim_time, {
            "compressed": arg("compressed"),
            # the synchronizer sizes frames by the model profile's rule, as the engine expects
            "model_path": arg("model_path"),
            "model_profile": arg("model_profile"),
        }],
        remappings=[
            ("image", arg("image_topic")),
            ("image/compressed", [arg("image_topic"), "/compressed"]),
            ("audio", arg("audio_topic")),
            ("audio_info", arg("audio_info_topic")),
        ],
        output="screen",
    ))
    actions.append(Node(
        package="roma_ros",
        executable="engine_node",
        name="engine",
        namespace=arg("namespace"),
        parameters=[arg("params_file"), use_sim_time, {
            "model_path": arg("model_path"),
            "model_profile": arg("model_profile"),
            "backend": arg("backend"),
            "device": arg("device"),
            "dtype": arg("dtype"),
        }],
        output="screen",
    ))
    return LaunchDescription(actions)
