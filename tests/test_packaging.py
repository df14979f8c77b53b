"""A normal (non-editable) install ships the kernels as alexnet_triton.kernels, never as `kernels`."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_kernels_under_the_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("alexnet_triton-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"alexnet_triton", wheel.name.split("-")[0] + "-" +
                         wheel.name.split("-")[1] + ".dist-info"}
    packaged = {name for name in names if name.endswith(".py")}
    for module in ROOT.glob("kernels/**/*.py"):
        assert f"alexnet_triton/{module.relative_to(ROOT).as_posix()}" in packaged
    for module in ROOT.glob("alexnet_triton/**/*.py"):
        assert module.relative_to(ROOT).as_posix() in packaged
