"""roma_ros: ROMA real-time omni-multimodal perception for ROS 2."""
import pkgutil

# The generated interface modules (roma_ros.msg, .srv, .action and their type-support libraries)
# may be installed in another directory than these sources (an editable install); let Python find
# both halves of the package.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
