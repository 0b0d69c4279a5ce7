"""Print `name==version` for every distribution installed by pip in this environment.

Unlike `pip freeze`, leaves out the egg-info records that ROS wheels and rosidl builds drop into
site-packages (action_msgs, audio_common_msgs, ...): they are not on any package index.
"""
import importlib.metadata as md

pins = set()
for dist in md.distributions():
    path = getattr(dist, "_path", None)
    if path is None or not str(path).endswith(".dist-info"):
        continue
    if (path / "direct_url.json").exists():  # editable or local installs (roma_ros itself)
        continue
    pins.add(f"{dist.metadata['Name']}=={dist.version.replace('+cpu', '')}")
print("\n".join(sorted(pins, key=str.lower)))
