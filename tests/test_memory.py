"""Large frame buffers come from their own mappings once map_large_buffers ran: freeing them
gives the memory back at once instead of leaving it in a growing heap."""
import subprocess
import sys

CHILD = r"""
import numpy as np
from roma_ros.memory import map_large_buffers

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

map_large_buffers()
base = rss_kb()
for _ in range(3):  # a big free first: without the pin glibc raises its threshold here
    frame = np.ones(6 * 1024 * 1024, np.uint8)
    del frame
frames, keep = [], []
for _ in range(20):  # 120 MB of 1080p frames, each followed by a small long-lived object
    frames.append(np.ones(6 * 1024 * 1024, np.uint8))
    keep.append(np.ones(4096, np.uint8))  # from malloc, not pymalloc
peak = rss_kb()
del frames
print(base, peak, rss_kb())
"""


def test_freed_frames_leave_the_process():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    base, peak, after = map(int, out.stdout.split())
    assert peak - base > 100_000  # the frames were really resident
    assert after - base < 20_000, (base, peak, after)
