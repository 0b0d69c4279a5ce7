"""Sensor ingest alone: camera + microphone -> `units` (1-second ROMA multimodal units).

    ros2 launch roma_ros synchronizer.launch.py image_topic:=/camera/image_raw audio_topic:=/audio
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("roma_ros")
    arg = LaunchConfiguration
    arguments = [
        DeclareLaunchArgument("namespace", default_value="roma"),
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(share, "config", "roma.yaml")
        ),
        DeclareLaunchArgument("image_topic", default_value="image"),
        DeclareLaunchArgument("compressed", default_value="false"),
        DeclareLaunchArgument("audio_topic", default_value="audio"),
        DeclareLaunchArgument("audio_info_topic", default_value="audio_info"),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
    ]
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        arguments.append(SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds.xml")))
    synchronizer = Node(
        package="roma_ros",
        executable="synchronizer_node",
        name="synchronizer",
        namespace=arg("namespace"),
        parameters=[
            arg("params_file"),
            {"use_sim_time": arg("use_sim_time"), "compressed": arg("compressed")},
        ],
        remappings=[
            ("image", arg("image_topic")),
            ("image/compressed", [arg("image_topic"), "/compressed"]),
            ("audio", arg("audio_topic")),
            ("audio_info", arg("audio_info_topic")),
        ],
        output="screen",
    )
    return LaunchDescription(arguments + [synchronizer])
