"""DDS environment defaults shared by roma_ros's tools and tests."""
import os
from pathlib import Path

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def default_fastdds_profile() -> Path:
    """The large-image Fast DDS profile: the installed share/ copy, else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("roma_ros")) / "config" / "fastdds.xml"
        if installed.is_file():
            return installed
    except (ImportError, LookupError, ValueError, OSError):
        pass
    return Path(__file__).resolve().parent.parent / "config" / "fastdds.xml"


def apply_dds_defaults(env=None) -> dict:
    """Point Fast DDS at our profile unless the user already chose one. Must run before rclpy
    creates its first participant. Returns the environment it changed (os.environ by default)."""
    env = os.environ if env is None else env
    if not env.get(PROFILE_ENV):
        profile = default_fastdds_profile()
        if profile.is_file():
            env[PROFILE_ENV] = str(profile)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return env
